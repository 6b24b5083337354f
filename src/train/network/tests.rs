use super::*;
use crate::passes::{self, Stage};

fn graph(text: &str) -> Graph {
    let checked = crate::check_source(&crate::diagnostics::SourceFile::new("t.qat", text));
    assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
    passes::run(checked.graphs.into_iter().next().unwrap(), Stage::Quantized)
}

const NET: &str = "model M { input x: f32[2, 9, 9]
    let c = conv2d(x, filters = 4, kernel = 3, stride = 2, padding = same)
    let c = batch_norm(c)
    let c = relu(c)
    let p = max_pool2d(c, size = 2)
    let f = flatten(p)
    let o = dense(f, units = 3)
    output o }";

/// Trains BN statistics a little so that folding has something to fold.
fn warmed(net: &mut Network, xs: &Tensor) {
    for _ in 0..3 {
        let _ = net.forward(xs, Mode::Float, true);
    }
}

#[test]
fn every_new_op_runs_with_the_shape_the_checker_inferred() {
    tch::manual_seed(3);
    let text = "model M { input x: f32[4, 9, 9]
        let d = conv2d(x, filters = 4, kernel = 3, padding = same, groups = 4, dilation = 2)
        let a = avg_pool2d(d, size = 2)
        let p = pad(a, size = 1)
        let h = hardswish(p)
        let s = sigmoid(h)
        let c = concat(h, s, axis = 0)
        let g = global_avg_pool(c)
        let r = reshape(g, shape = [8, 1, 1])
        let m = mul(c, r)
        let six = relu6(m)
        let f = flatten(six)
        let o = dense(f, units = 5)
        let o = dropout(o, rate = 0.1)
        let o = softmax(o)
        output o }";
    let g = graph(text);
    let mut net = Network::new(&g, tch::Device::Cpu);
    let xs = Tensor::randn([2, 4, 9, 9], (Kind::Float, tch::Device::Cpu));
    let out = tch::no_grad(|| net.forward(&xs, Mode::Float, false));
    assert_eq!(out.size(), vec![2, 5]);
    let sums = out.sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    assert!(sums.allclose(
        &Tensor::ones([2], (Kind::Float, tch::Device::Cpu)),
        1e-5,
        1e-5,
        false
    ));
}

#[test]
fn float_forward_matches_libtorch_modules() {
    tch::manual_seed(0);
    let g = graph(NET);
    let mut net = Network::new(&g, tch::Device::Cpu);
    let xs = Tensor::randn([5, 2, 9, 9], (Kind::Float, tch::Device::Cpu));
    warmed(&mut net, &xs);
    let got = tch::no_grad(|| net.forward(&xs, Mode::Float, false));
    // The same network written directly against libtorch's functional ops.
    let v = net.vs.variables();
    let expected = xs
        .conv2d(
            &v["c.weight"],
            Some(&v["c.bias"]),
            [2, 2],
            [1, 1],
            [1, 1],
            1,
        )
        .batch_norm(
            Some(&v["c_1.weight"]),
            Some(&v["c_1.bias"]),
            Some(&v["c_1.running_mean"]),
            Some(&v["c_1.running_var"]),
            false,
            0.1,
            1e-5,
            false,
        )
        .relu()
        .max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
        .flatten(1, -1)
        .linear(&v["o.weight"], Some(&v["o.bias"]));
    assert!(got.allclose(&expected, 1e-5, 1e-6, false));
}

#[test]
fn folded_batch_norm_equals_float_when_nothing_is_quantized() {
    tch::manual_seed(1);
    // All ops in float: Quantized mode then only folds BN into the conv.
    let g = graph(&NET.replace("let ", "@float\n let "));
    let mut net = Network::new(&g, tch::Device::Cpu);
    let xs = Tensor::randn([5, 2, 9, 9], (Kind::Float, tch::Device::Cpu));
    warmed(&mut net, &xs);
    let float = tch::no_grad(|| net.forward(&xs, Mode::Float, false));
    let folded = tch::no_grad(|| net.forward(&xs, Mode::Quantized, false));
    let diff = (&float - &folded).abs().max().double_value(&[]);
    assert!(diff < 1e-4, "max difference {diff}");
}

#[test]
fn fake_quant_output_lies_on_the_int8_grid() {
    tch::manual_seed(2);
    let g = graph(NET);
    let mut net = Network::new(&g, tch::Device::Cpu);
    let xs = Tensor::rand([8, 2, 9, 9], (Kind::Float, tch::Device::Cpu));
    warmed(&mut net, &xs);
    tch::no_grad(|| {
        let _ = net.forward(&xs, Mode::Calibrate, false);
    });
    let out = tch::no_grad(|| net.forward(&xs, Mode::Quantized, false));
    let (scale, zp) = net.observer(g.output).unwrap().params();
    let q = &out / scale as f64 + zp as f64;
    let off_grid = (&q - q.round()).abs().max().double_value(&[]);
    assert!(off_grid < 1e-3, "{off_grid}");
    let float = tch::no_grad(|| net.forward(&xs, Mode::Float, false));
    let err = (&out - &float).abs().max().double_value(&[]);
    assert!(err < 0.1, "fake-quant strays {err} from float");
}

#[test]
fn quantized_params_are_what_the_saved_state_reads_back_as_bit_for_bit() {
    // Training folds batch norm with libtorch, the reader of saved weights in f32: the
    // rule is one, and so must be the bits the int8 model gets.
    tch::manual_seed(4);
    let text = NET.replace(
        "stride = 2, padding = same)",
        "stride = 2, padding = same, bias = false)",
    );
    for g in [graph(NET), graph(&text)] {
        let mut net = Network::new(&g, tch::Device::Cpu);
        let xs = Tensor::randn([6, 2, 9, 9], (Kind::Float, tch::Device::Cpu));
        warmed(&mut net, &xs);
        tch::no_grad(|| {
            let _ = net.forward(&xs, Mode::Calibrate, false);
        });
        let saved: crate::quantized::TensorMap = net
            .named_tensors()
            .into_iter()
            .map(|(name, t)| {
                let shape = t.size().iter().map(|&d| d as usize).collect();
                let data = Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap();
                (name, crate::quantized::F32Tensor { shape, data })
            })
            .collect();
        let read = crate::quantized::QuantizedParams::from_tensors(&g, &saved).unwrap();
        let made = net.quantized_params();
        assert_eq!(made.linear.len(), 2);
        assert!(!made.ranges.is_empty());
        let bits = |p: &crate::quantized::QuantizedParams| {
            p.linear
                .iter()
                .map(|(n, l)| {
                    let b = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    (n.clone(), b(&l.weight), b(&l.bias), b(&l.weight_scales))
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&made), bits(&read));
        assert_eq!(made.ranges, read.ranges);
    }
}

#[test]
fn batch_norm_folds_to_the_same_bits_in_libtorch_and_in_f32() {
    // One fold rule, two arithmetics: libtorch's while training, f32 where saved weights
    // are read. 10,000 channels find any op that rounds differently (libtorch's f32 sqrt did).
    let n = 10_000;
    let gamma = Tensor::randn([n], (Kind::Float, tch::Device::Cpu));
    let var = Tensor::rand([n], (Kind::Float, tch::Device::Cpu)) * 4.0;
    let eps = 1e-5;
    let factor = Vec::<f32>::try_from(&crate::ir::ops::fold_factor(&gamma, &var, eps)).unwrap();
    let (g, v) = (
        Vec::<f32>::try_from(&gamma).unwrap(),
        Vec::<f32>::try_from(&var).unwrap(),
    );
    let differ = (0..n as usize)
        .filter(|&i| {
            crate::ir::ops::fold_factor(&g[i], &v[i], eps).to_bits() != factor[i].to_bits()
        })
        .count();
    assert_eq!(differ, 0, "{differ} of {n} fold factors differ");
}
