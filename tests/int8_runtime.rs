//! The int8 path without libtorch: lowering + runtime against a straightforward
//! float fake-quant simulation written here, artifact round trips, and the errors
//! a damaged artifact must give. Runs with `--no-default-features`.

mod common;

use std::collections::HashMap;

use qatc::diagnostics::SourceFile;
use qatc::int8::{self, IntOp, IntTensor, ValidationError};
use qatc::ir::ops::{Activation, RangeSource};
use qatc::ir::{Graph, NodeId, Op};
use qatc::lower::{self, F32Tensor, TensorMap};
use qatc::passes::{self, Stage};
use qatc::runtime::{self, Isa, Model};

const RESIDUAL: &str = r#"
quant default {
    weights     = int8(symmetric, per_channel)
    activations = int8(asymmetric, per_tensor)
}
model Residual {
    input image: f32[2, 10, 10]
    let a = conv2d(image, filters = 5, kernel = 3, padding = same)
    let a = batch_norm(a)
    let a = relu(a)
    let b = conv2d(a, filters = 5, kernel = 3, padding = same, bias = false)
    let c = conv2d(image, filters = 5, kernel = 1)
    let s = add(b, c)
    let s = relu(s)
    let p = max_pool2d(s, size = 2)
    let f = flatten(p)
    let h = dense(f, units = 12)
    let h = relu(h)
    let logits = dense(h, units = 4)
    output logits
}
"#;

/// Every op the int8 lowering gained for MobileNet- and Inception-like models: relu6,
/// concat along channels and along a vector, avg_pool2d, global_avg_pool and dropout.
const BRANCHES: &str = r#"
quant default {
    weights     = int8(symmetric, per_channel)
    activations = int8(asymmetric, per_tensor)
}
model Branches {
    input image: f32[1, 12, 12]
    let a = conv2d(image, filters = 4, kernel = 3, padding = same)
    let a = relu6(a)
    let b = conv2d(image, filters = 3, kernel = 1)
    let b = relu(b)
    let c = concat(a, b)
    let p = avg_pool2d(c, size = 2)
    let d = conv2d(p, filters = 6, kernel = 3)
    let d = relu6(d)
    let g = global_avg_pool(d)
    let g = dropout(g, rate = 0.3)
    let h = dense(g, units = 5)
    let v = concat(g, h, axis = -1)
    let logits = dense(v, units = 4)
    output logits
}
"#;

const CNN: &str = include_str!("../examples/fashion/cnn.qat");

/// hardswish after a conv2d and after a dense: int8 lookup tables.
const HARDSWISH: &str = include_str!("models/int8_runtime_hardswish.qat");

/// sigmoid after a conv2d and after a dense: tables into the fixed range [0, 1).
const SIGMOID: &str = include_str!("models/int8_runtime_sigmoid.qat");

/// Squeeze-and-excitation: sigmoid gates reshaped to [C, 1, 1] times a [C, H, W] value,
/// and a [W] vector times it.
const SQUEEZE_EXCITE: &str = include_str!("models/int8_runtime_se.qat");

/// MobileNetV3's squeeze-excitation (1x1 convolutions on [C, 1, 1], a hardsigmoid gate)
/// and a hardsigmoid after a dense: tables into observed parameters.
const HARDSIGMOID: &str = include_str!("models/int8_runtime_hardsigmoid.qat");

/// pad of the input, of a relu before a max pool, and of a conv2d without activation.
const PAD: &str = include_str!("models/int8_runtime_pad.qat");

/// The float functions int8 lookup tables stand for, written here as libtorch computes them.
fn hardswish(x: f32) -> f32 {
    x * (x + 3.0).clamp(0.0, 6.0) / 6.0
}

fn hardsigmoid(x: f32) -> f32 {
    (x + 3.0).clamp(0.0, 6.0) / 6.0
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn quantized(src: &str) -> Graph {
    let checked = qatc::check_source(&SourceFile::new("t.qat", src));
    assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
    passes::run(checked.graphs.into_iter().next().unwrap(), Stage::Quantized)
}

struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
    fn sym(&mut self, a: f32) -> f32 {
        (self.uniform() * 2.0 - 1.0) * a
    }
}

/// Random parameters for every node (as `train` names them), without observer ranges.
fn random_params(graph: &Graph, rng: &mut Rng) -> TensorMap {
    let mut t = TensorMap::new();
    let mut put = |name: String, shape: Vec<usize>, f: &mut dyn FnMut() -> f32| {
        let data = (0..shape.iter().product()).map(|_| f()).collect();
        t.insert(name, F32Tensor { shape, data });
    };
    for node in &graph.nodes {
        let (w_shape, out, bias, bn) = match &node.op {
            Op::Conv2d {
                filters,
                kernel,
                in_channels,
                bias,
                epilogue,
                ..
            } => (
                vec![*filters, *in_channels, *kernel, *kernel],
                *filters,
                *bias,
                epilogue.batch_norm.clone(),
            ),
            Op::Dense {
                units,
                in_features,
                bias,
                epilogue,
            } => (
                vec![*units, *in_features],
                *units,
                *bias,
                epilogue.batch_norm.clone(),
            ),
            _ => continue,
        };
        let fan_in: usize = w_shape[1..].iter().product();
        let a = (3.0 / fan_in as f32).sqrt();
        put(format!("{}.weight", node.name), w_shape, &mut || rng.sym(a));
        if bias {
            put(format!("{}.bias", node.name), vec![out], &mut || {
                rng.sym(0.2)
            });
        }
        if let Some(bn) = bn {
            put(format!("{}.weight", bn.name), vec![out], &mut || {
                0.5 + rng.uniform()
            });
            put(format!("{}.bias", bn.name), vec![out], &mut || rng.sym(0.3));
            put(format!("{}.running_mean", bn.name), vec![out], &mut || {
                rng.sym(0.3)
            });
            put(format!("{}.running_var", bn.name), vec![out], &mut || {
                0.5 + rng.uniform()
            });
        }
    }
    t
}

/// What [`simulate`] does.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Sim {
    /// Fake-quant nodes record min/max into `params`.
    Calibrate,
    /// Fake quantization as training runs it: an avg_pool2d outputs the un-rounded mean.
    FakeQuant,
    /// Fake quantization with each avg_pool2d mean rounded to its input's grid, half away
    /// from zero, as the int8 kernel (and TFLite's) does.
    RoundedPools,
}

/// The scale and zero point of a quantized value: those of the fake_quant that fixes it.
fn grid(graph: &Graph, params: &TensorMap, mut id: qatc::ir::NodeId) -> (f32, i64) {
    loop {
        let node = graph.node(id);
        match &node.op {
            Op::FakeQuant {
                range: RangeSource::Fixed { scale, zero_point },
                ..
            } => return (*scale, *zero_point),
            Op::FakeQuant { spec, .. } => {
                let get = |what: &str| params[&format!("{}.{what}", node.name)].data[0];
                return spec.params(get("min"), get("max"));
            }
            op if op.shares_input_quant() => id = node.inputs[0],
            other => panic!("{other:?} has no quantization grid"),
        }
    }
}

/// A float executor with fake quantization: the semantics the int8 model must reproduce.
fn simulate(graph: &Graph, params: &mut TensorMap, x: &[f32], mode: Sim) -> Vec<f32> {
    let calibrate = mode == Sim::Calibrate;
    let mut values: Vec<Vec<f32>> = Vec::new();
    for (node_index, node) in graph.nodes.iter().enumerate() {
        let input = |k: usize| &values[node.inputs[k].index()];
        let in_shape = |k: usize| graph.node(node.inputs[k]).shape.clone();
        let out = match &node.op {
            Op::Input => x.to_vec(),
            Op::Conv2d { .. } | Op::Dense { .. } => {
                let (w, b, activation) = folded(node, params);
                let spec = node.quant.weights;
                let o = node.shape[0];
                let per = w.len() / o;
                let mut wq = w.clone();
                for r in 0..o {
                    let row = &w[r * per..(r + 1) * per];
                    let lo = row.iter().copied().fold(f32::INFINITY, f32::min).min(0.0);
                    let hi = row
                        .iter()
                        .copied()
                        .fold(f32::NEG_INFINITY, f32::max)
                        .max(0.0);
                    let s = (lo.abs().max(hi) / spec.range().1 as f32).max(f32::EPSILON);
                    for (q, &v) in wq[r * per..(r + 1) * per].iter_mut().zip(row) {
                        *q = (v * (1.0 / s)).round_ties_even().clamp(-127.0, 127.0) * s;
                    }
                }
                let y = match &node.op {
                    Op::Conv2d {
                        kernel,
                        stride,
                        padding,
                        ..
                    } => {
                        let pad = if *padding == qatc::ir::ops::Padding::Same {
                            (kernel - 1) / 2
                        } else {
                            0
                        };
                        conv(
                            input(0),
                            &in_shape(0),
                            &wq,
                            &b,
                            *kernel,
                            *stride,
                            pad,
                            &node.shape,
                        )
                    }
                    _ => (0..o)
                        .map(|r| {
                            b[r] + wq[r * per..(r + 1) * per]
                                .iter()
                                .zip(input(0))
                                .map(|(w, x)| w * x)
                                .sum::<f32>()
                        })
                        .collect(),
                };
                y.into_iter()
                    .map(|v| match activation {
                        None => v,
                        Some(Activation::Relu) => v.max(0.0),
                        Some(Activation::Relu6) => v.clamp(0.0, 6.0),
                    })
                    .collect()
            }
            Op::Relu => input(0).iter().map(|v| v.max(0.0)).collect(),
            Op::Relu6 => input(0).iter().map(|v| v.clamp(0.0, 6.0)).collect(),
            Op::Hardswish => input(0).iter().map(|&v| hardswish(v)).collect(),
            Op::Hardsigmoid => input(0).iter().map(|&v| hardsigmoid(v)).collect(),
            Op::Sigmoid => input(0).iter().map(|&v| sigmoid(v)).collect(),
            Op::Dropout { .. } => input(0).clone(),
            Op::GlobalAvgPool => {
                let hw: usize = in_shape(0)[1..].iter().product();
                input(0)
                    .chunks(hw)
                    .map(|c| c.iter().sum::<f32>() / hw as f32)
                    .collect()
            }
            // FakeQuant: the mean of values on the input's grid, not rounded (the fake-quant
            // model has no fake_quant after an avg_pool2d: it keeps the input's parameters).
            // RoundedPools: the mean of the raw integers, rounded half away from zero.
            Op::AvgPool2d { size, stride } => {
                let s = in_shape(0);
                let (c, h, w) = (s[0], s[1], s[2]);
                let (oh, ow) = (node.shape[1], node.shape[2]);
                let (scale, zp) = match mode {
                    Sim::RoundedPools => grid(graph, params, node.inputs[0]),
                    _ => (1.0, 0),
                };
                let count = (size * size) as f64;
                let mut y = vec![0.0; c * oh * ow];
                for ci in 0..c {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let (mut sum, mut raw) = (0.0f32, 0.0f64);
                            for ky in 0..*size {
                                for kx in 0..*size {
                                    let v = input(0)
                                        [ci * h * w + (oy * stride + ky) * w + ox * stride + kx];
                                    sum += v;
                                    raw += ((v / scale).round() + zp as f32) as f64;
                                }
                            }
                            y[ci * oh * ow + oy * ow + ox] = match mode {
                                // f64::round: half away from zero; the sum is an exact integer.
                                Sim::RoundedPools => {
                                    ((raw / count).round() - zp as f64) as f32 * scale
                                }
                                _ => sum / count as f32,
                            };
                        }
                    }
                }
                y
            }
            Op::Concat { axis } => {
                let outer: usize = node.shape[..*axis].iter().product();
                let mut y = Vec::new();
                for o in 0..outer {
                    for k in 0..node.inputs.len() {
                        let inner: usize = in_shape(k)[*axis..].iter().product();
                        y.extend_from_slice(&input(k)[o * inner..(o + 1) * inner]);
                    }
                }
                y
            }
            Op::Add { activation } => input(0)
                .iter()
                .zip(input(1))
                .map(|(a, b)| match activation {
                    None => a + b,
                    Some(Activation::Relu) => (a + b).max(0.0),
                    Some(Activation::Relu6) => (a + b).clamp(0.0, 6.0),
                })
                .collect(),
            Op::Flatten | Op::Reshape { .. } => input(0).clone(),
            // NumPy broadcasting of row-major values, aligned from the right.
            Op::Mul => {
                let out = &node.shape;
                let at = |k: usize, i: usize| {
                    let s = in_shape(k);
                    let (mut rest, mut src, mut stride) = (i, 0, 1);
                    for (j, &o) in out.iter().enumerate().rev() {
                        let m = rest % o;
                        rest /= o;
                        let d = (j + s.len()).checked_sub(out.len()).map_or(1, |j| s[j]);
                        if d != 1 {
                            src += m * stride;
                        }
                        stride *= d;
                    }
                    input(k)[src]
                };
                (0..out.iter().product())
                    .map(|i| at(0, i) * at(1, i))
                    .collect()
            }
            // Zeros: real 0, which every quantization grid holds exactly.
            Op::Pad { size } => {
                let s = in_shape(0);
                let (c, h, w) = (s[0], s[1], s[2]);
                let (ph, pw) = (node.shape[1], node.shape[2]);
                let mut y = vec![0.0; c * ph * pw];
                for ci in 0..c {
                    for r in 0..h {
                        let at = ci * ph * pw + (r + size) * pw + size;
                        y[at..at + w].copy_from_slice(&input(0)[ci * h * w + r * w..][..w]);
                    }
                }
                y
            }
            Op::MaxPool2d { size, stride } => {
                let s = in_shape(0);
                let (c, h, w) = (s[0], s[1], s[2]);
                let (oh, ow) = (node.shape[1], node.shape[2]);
                let mut y = vec![f32::NEG_INFINITY; c * oh * ow];
                for ci in 0..c {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            for ky in 0..*size {
                                for kx in 0..*size {
                                    let v = input(0)
                                        [ci * h * w + (oy * stride + ky) * w + ox * stride + kx];
                                    let d = &mut y[ci * oh * ow + oy * ow + ox];
                                    *d = d.max(v);
                                }
                            }
                        }
                    }
                }
                y
            }
            Op::FakeQuant { spec, .. } => {
                let (min_name, max_name) =
                    (format!("{}.min", node.name), format!("{}.max", node.name));
                if calibrate {
                    let (lo, hi) = input(0)
                        .iter()
                        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                            (l.min(v), h.max(v))
                        });
                    let lo = params.get(&min_name).map_or(lo, |t| t.data[0].min(lo));
                    let hi = params.get(&max_name).map_or(hi, |t| t.data[0].max(hi));
                    params.insert(
                        min_name,
                        F32Tensor {
                            shape: vec![1],
                            data: vec![lo],
                        },
                    );
                    params.insert(
                        max_name,
                        F32Tensor {
                            shape: vec![1],
                            data: vec![hi],
                        },
                    );
                    input(0).clone()
                } else {
                    let (s, zp) = grid(graph, params, NodeId(node_index as u32));
                    let (qmin, qmax) = spec.range();
                    input(0)
                        .iter()
                        .map(|&v| {
                            ((v * (1.0 / s)).round_ties_even() + zp as f32)
                                .clamp(qmin as f32, qmax as f32)
                                - zp as f32
                        })
                        .map(|q| q * s)
                        .collect()
                }
            }
            other => panic!("simulate: {other:?}"),
        };
        values.push(out);
    }
    values[graph.output.index()].clone()
}

fn folded(node: &qatc::ir::Node, p: &TensorMap) -> (Vec<f32>, Vec<f32>, Option<Activation>) {
    let (bias, epilogue) = match &node.op {
        Op::Conv2d { bias, epilogue, .. } | Op::Dense { bias, epilogue, .. } => {
            (*bias, epilogue.clone())
        }
        _ => unreachable!(),
    };
    let o = node.shape[0];
    let mut w = p[&format!("{}.weight", node.name)].data.clone();
    let per = w.len() / o;
    let mut b = if bias {
        p[&format!("{}.bias", node.name)].data.clone()
    } else {
        vec![0.0; o]
    };
    if let Some(bn) = &epilogue.batch_norm {
        let g = |s: &str| p[&format!("{}.{s}", bn.name)].data.clone();
        let (gamma, beta, mean, var) =
            (g("weight"), g("bias"), g("running_mean"), g("running_var"));
        // The one batch-norm fold rule, as training and the weight reader use it.
        for r in 0..o {
            let f = qatc::ir::ops::fold_factor(&gamma[r], &var[r], bn.eps);
            w[r * per..(r + 1) * per].iter_mut().for_each(|x| *x *= f);
            b[r] = qatc::ir::ops::folded_bias(bias.then_some(&b[r]), &beta[r], &mean[r], &f);
        }
    }
    (w, b, epilogue.activation)
}

#[allow(clippy::too_many_arguments)]
fn conv(
    x: &[f32],
    s: &[usize],
    w: &[f32],
    b: &[f32],
    k: usize,
    stride: usize,
    pad: usize,
    out: &[usize],
) -> Vec<f32> {
    let (c, h, wd) = (s[0], s[1], s[2]);
    let (o, oh, ow) = (out[0], out[1], out[2]);
    let mut y = vec![0.0; o * oh * ow];
    for r in 0..o {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = b[r];
                for ci in 0..c {
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) = (
                                (oy * stride + ky) as isize - pad as isize,
                                (ox * stride + kx) as isize - pad as isize,
                            );
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                acc += w[((r * c + ci) * k + ky) * k + kx]
                                    * x[ci * h * wd + iy as usize * wd + ix as usize];
                            }
                        }
                    }
                }
                y[r * oh * ow + oy * ow + ox] = acc;
            }
        }
    }
    y
}

/// Random [0, 1] inputs quantized to 1/255 steps, like pixels.
fn pixels(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.uniform() * 255.0).floor() / 255.0)
        .collect()
}

/// Builds a model with random weights calibrated on random inputs, lowers it, and
/// compares the int8 runtime with the simulation sample by sample: every output within
/// one unit.
fn check_against_simulation(src: &str, samples: usize, seed: u64) {
    check_within(src, samples, seed, 1);
}

/// Like [`check_against_simulation`], allowing outputs `max_units` away, as long as fewer
/// than 1% of them are more than one unit away.
fn check_within(src: &str, samples: usize, seed: u64, max_units: i32) {
    let graph = quantized(src);
    let mut rng = Rng(seed);
    let mut params = random_params(&graph, &mut rng);
    let per = graph.node(graph.inputs[0]).shape.iter().product::<usize>();
    let x = pixels(samples * per, &mut rng);
    for s in 0..samples.min(32) {
        simulate(
            &graph,
            &mut params,
            &x[s * per..(s + 1) * per],
            Sim::Calibrate,
        );
    }
    let model = Model::new(&lower::lower(&graph, &params, None).unwrap());
    let q = model.output_quant();
    let got = model.run(&x).unwrap();
    let portable = model.clone().with_isa(Isa::Portable).run(&x).unwrap();
    assert_eq!(
        got, portable,
        "SIMD and portable kernels must give identical integers"
    );
    let outs = model.output_len();
    let (mut off_by_one, mut further, mut same_argmax) = (0, 0, 0);
    let to_q = |v: Vec<f32>| -> Vec<i32> {
        v.iter()
            .map(|&v| (v / q.scale).round() as i32 + q.zero_point)
            .collect()
    };
    let first_max = |v: &[i32]| {
        v.iter()
            .enumerate()
            .fold((0, i32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
            .0
    };
    for s in 0..samples {
        let sample = &x[s * per..(s + 1) * per];
        // Integer for integer: the simulation with avg_pool2d rounded as the kernel does.
        let exact = to_q(simulate(&graph, &mut params, sample, Sim::RoundedPools));
        let row = &got[s * outs..(s + 1) * outs];
        for (g, e) in row.iter().zip(&exact) {
            let d = (*g as i32 - e).abs();
            assert!(
                d <= max_units,
                "sample {s}: int8 {row:?} vs fake-quant {exact:?}"
            );
            off_by_one += (d == 1) as usize;
            further += (d > 1) as usize;
        }
        // The decision: against fake quantization as training computes it.
        let trained = to_q(simulate(&graph, &mut params, sample, Sim::FakeQuant));
        same_argmax += (model.argmax(row)[0] == first_max(&trained)) as usize;
    }
    eprintln!(
        "{}: {off_by_one} of {} outputs off by one unit, {further} by more, argmax agrees on {same_argmax}/{samples}",
        graph.name,
        samples * outs
    );
    assert!(
        further * 100 < samples * outs,
        "{further} of {} outputs are more than one unit off",
        samples * outs
    );
    assert!(
        same_argmax * 100 >= samples * 95,
        "argmax agrees on only {same_argmax}/{samples}"
    );
}

#[test]
fn seed_cnn_int8_matches_the_fake_quant_simulation() {
    check_against_simulation(CNN, 40, 11);
}

#[test]
fn residual_model_with_same_padding_and_add_relu_matches_the_simulation() {
    check_against_simulation(RESIDUAL, 60, 5);
}

/// relu6 is fused into the conv2d before it (one clamp in the requantization). The
/// simulation sums in f32 where the kernels sum exact integers; after the requantizing
/// concat, the pools and the dense layers, a logit may be two units off (each op alone is
/// within one: see the runtime's unit tests and `branch_outputs_are_within_one_unit`).
#[test]
fn relu6_concat_and_average_pools_match_the_simulation() {
    check_within(BRANCHES, 120, 21, 2);
}

/// Cut after the new ops, the model's values agree within one unit: global_avg_pool,
/// the dense after it and the vector concat.
#[test]
fn branch_outputs_are_within_one_unit() {
    for out in ["b", "g", "h", "v"] {
        check_against_simulation(
            &BRANCHES.replace("output logits", &format!("output {out}")),
            80,
            21,
        );
    }
}

/// hardswish as an int8 table: the lone hardswish values agree with the simulation
/// integer for integer (tables are exact; the conv2d before may round a tie the other
/// way), and so do the logits within one unit.
#[test]
fn hardswish_matches_the_simulation() {
    check_against_simulation(HARDSWISH, 120, 8);
    check_against_simulation(&HARDSWISH.replace("output logits", "output h"), 120, 8);
}

/// Every table entry is `quantize(f(dequantize(q)))` with the input's and output's
/// parameters, rounded half to even as PyTorch's fake quantization rounds.
fn assert_tables_are_the_function(model: &int8::Model, name: &str, f: fn(f32) -> f32) {
    let g = model.graph();
    let mut tables = 0;
    for op in &g.ops {
        if let IntOp::Lookup {
            input,
            output,
            function,
            table,
            ..
        } = op
        {
            assert_eq!(function.name(), name);
            let (x, y) = (g.values[*input].quant, g.values[*output].quant);
            for (i, &t) in table.iter().enumerate() {
                let real = f((i as i32 - 128 - x.zero_point) as f32 * x.scale);
                let q = ((real * (1.0 / y.scale)).round_ties_even() + y.zero_point as f32)
                    .clamp(y.qmin as f32, y.qmax as f32);
                assert_eq!(t as f32, q, "{function:?} at {}", i as i32 - 128);
            }
            tables += 1;
        }
    }
    assert!(tables > 0, "no lookup tables");
}

#[test]
fn hardswish_lowers_to_a_table_of_the_function() {
    let model = lowered(HARDSWISH);
    assert_tables_are_the_function(&model, "hardswish", hardswish);
    let kinds: Vec<&str> = model.graph().ops.iter().map(IntOp::kind).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "lookup").count(),
        2,
        "{kinds:?}"
    );
}

/// ONNX Runtime computes hardswish itself, in f32 between a DequantizeLinear and a
/// QuantizeLinear, in libtorch's order: exact like the table.
#[test]
fn onnx_hardswish_agrees_with_the_table() {
    let int8_model = lowered(HARDSWISH);
    let model = qatc::export::onnx::model(&int8_model).unwrap();
    let nodes = onnx_nodes(&model);
    let std = |op: &str| (op.to_string(), String::new());
    for op in ["Add", "Clip", "Mul", "Div"] {
        assert_eq!(
            nodes.iter().filter(|n| **n == std(op)).count(),
            2,
            "{op}: {nodes:?}"
        );
    }
    onnx_runtime_agrees(&int8_model, 300);
    onnx_runtime_agrees(
        &lowered(&HARDSWISH.replace("output logits", "output h")),
        300,
    );
}

/// sigmoid's output parameters are fixed, not observed: TFLite LOGISTIC's 1/256 and -128,
/// decided by the fake-quant pass and kept by the lowering.
#[test]
fn sigmoid_lowers_to_a_table_into_its_fixed_range() {
    let graph = quantized(SIGMOID);
    let fixed = graph
        .nodes
        .iter()
        .filter(|n| {
            matches!(n.op, Op::FakeQuant { range: RangeSource::Fixed { scale, zero_point }, .. }
                if scale == 1.0 / 256.0 && zero_point == -128)
        })
        .count();
    assert_eq!(fixed, 2);
    let model = lowered(SIGMOID);
    assert_tables_are_the_function(&model, "sigmoid", sigmoid);
    let g = model.graph();
    for op in &g.ops {
        if let IntOp::Lookup { output, .. } = op {
            let q = g.values[*output].quant;
            assert_eq!((q.scale, q.zero_point), (1.0 / 256.0, -128));
        }
    }
}

#[test]
fn sigmoid_matches_the_simulation() {
    check_against_simulation(SIGMOID, 120, 9);
    check_against_simulation(&SIGMOID.replace("output logits", "output h"), 120, 9);
}

/// com.microsoft QLinearSigmoid: ONNX Runtime tabulates sigmoid itself.
#[test]
fn onnx_sigmoid_is_qlinear_sigmoid_and_agrees() {
    let int8_model = lowered(SIGMOID);
    let model = qatc::export::onnx::model(&int8_model).unwrap();
    let nodes = onnx_nodes(&model);
    let sigmoid = ("QLinearSigmoid".to_string(), "com.microsoft".to_string());
    assert_eq!(
        nodes.iter().filter(|n| **n == sigmoid).count(),
        2,
        "{nodes:?}"
    );
    onnx_runtime_agrees(&int8_model, 300);
    onnx_runtime_agrees(&lowered(&SIGMOID.replace("output logits", "output h")), 300);
}

/// mul: int8 product with one requantization, broadcasting [C, 1, 1] over H and W and a
/// lifted [1, 1, W] over C and H. The gates agree with the simulation within one unit; a
/// gate one unit off (the dense before the sigmoid rounds a tie the other way) moves a
/// product by up to (x - zp_x) / 256 units more, so products and logits may be two
/// units off, on fewer than 1% of the outputs.
#[test]
fn squeeze_and_excitation_matches_the_simulation() {
    check_against_simulation(
        &SQUEEZE_EXCITE.replace("output logits", "output s"),
        120,
        13,
    );
    for out in ["y", "z", "logits"] {
        check_within(
            &SQUEEZE_EXCITE.replace("output logits", &format!("output {out}")),
            120,
            13,
            2,
        );
    }
}

#[test]
fn mul_requantizes_once_and_lifts_the_lower_rank_input() {
    let (g, _) = lowered(SQUEEZE_EXCITE).into_parts();
    let kinds: Vec<&str> = g.ops.iter().map(IntOp::kind).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "mul").count(),
        2,
        "{kinds:?}"
    );
    for op in &g.ops {
        if let IntOp::Mul {
            inputs,
            output,
            requant,
            ..
        } = op
        {
            let [a, b] = inputs.map(|i| &g.values[i]);
            let y = &g.values[*output];
            assert_eq!(a.shape.len(), y.shape.len());
            assert_eq!(b.shape.len(), y.shape.len());
            let real = a.quant.scale as f64 * b.quant.scale as f64 / y.quant.scale as f64;
            assert!((requant.real() / real - 1.0).abs() < 1e-9);
        }
    }
    let shapes: Vec<&[usize]> = g.values.iter().map(|v| v.shape.as_slice()).collect();
    assert!(shapes.contains(&[6, 1, 1].as_slice()), "{shapes:?}");
    assert!(shapes.contains(&[1, 1, 10].as_slice()), "{shapes:?}");
}

/// com.microsoft QLinearMul with ONNX's broadcasting, and Reshape to [N, C, 1, 1].
#[test]
fn onnx_mul_is_qlinear_mul_and_agrees() {
    let int8_model = lowered(SQUEEZE_EXCITE);
    let model = qatc::export::onnx::model(&int8_model).unwrap();
    let nodes = onnx_nodes(&model);
    let mul = ("QLinearMul".to_string(), "com.microsoft".to_string());
    assert_eq!(nodes.iter().filter(|n| **n == mul).count(), 2, "{nodes:?}");
    onnx_runtime_agrees(&int8_model, 300);
}

/// hardsigmoid as an int8 table: the lone hardsigmoid agrees with the simulation within
/// one unit (an op before may round a tie the other way); a gate one unit off moves a
/// product of the squeeze-excitation (and what follows) by up to two units.
#[test]
fn hardsigmoid_matches_the_simulation() {
    check_against_simulation(&HARDSIGMOID.replace("output logits", "output h"), 120, 9);
    check_within(
        &HARDSIGMOID.replace("output logits", "output se"),
        120,
        9,
        2,
    );
    check_within(HARDSIGMOID, 120, 9, 2);
}

/// Two tables (the gate, the lone hardsigmoid) of exactly the function; ONNX Runtime
/// computes it itself in f32 as `clip(x + 3, 0, 6) / 6` between a DequantizeLinear and
/// a QuantizeLinear, like the table.
#[test]
fn hardsigmoid_lowers_to_a_table_and_onnx_agrees() {
    let int8_model = lowered(HARDSIGMOID);
    assert_tables_are_the_function(&int8_model, "hardsigmoid", hardsigmoid);
    let kinds: Vec<&str> = int8_model.graph().ops.iter().map(IntOp::kind).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "lookup").count(),
        2,
        "{kinds:?}"
    );
    let model = qatc::export::onnx::model(&int8_model).unwrap();
    let nodes = onnx_nodes(&model);
    let std = |op: &str| (op.to_string(), String::new());
    for op in ["Add", "Clip", "Div"] {
        assert_eq!(
            nodes.iter().filter(|n| **n == std(op)).count(),
            2,
            "{op}: {nodes:?}"
        );
    }
    assert!(!nodes.contains(&std("Mul")), "{nodes:?}");
    onnx_runtime_agrees(&int8_model, 300);
    onnx_runtime_agrees(
        &lowered(&HARDSIGMOID.replace("output logits", "output h")),
        300,
    );
}

/// Zero padding keeps its input's parameters and fills with its zero point: the int8
/// model is the fake-quant model's, integer for integer where nothing else rounds.
#[test]
fn pad_matches_the_simulation() {
    check_against_simulation(PAD, 120, 12);
    for out in ["x", "y"] {
        check_against_simulation(
            &PAD.replace(
                "output logits",
                &format!("let o = flatten({out})\n    output o"),
            ),
            60,
            12,
        );
    }
}

/// pad lowers to an int8 pad keeping its input's parameters, one of them with a zero
/// point inside the range; ONNX's Pad gets that zero point as its constant.
#[test]
fn pad_lowers_with_its_inputs_parameters_and_onnx_pads_with_the_zero_point() {
    let int8_model = lowered(PAD);
    let g = int8_model.graph();
    let pads: Vec<(usize, usize, usize)> = g
        .ops
        .iter()
        .filter_map(|op| match op {
            IntOp::Pad {
                input,
                output,
                size,
            } => Some((*input, *output, *size)),
            _ => None,
        })
        .collect();
    assert_eq!(pads.len(), 3, "{:?}", g.ops);
    for &(input, output, size) in &pads {
        let (x, y) = (&g.values[input], &g.values[output]);
        assert_eq!(x.quant, y.quant, "{}", y.name);
        assert_eq!(y.shape[1], x.shape[1] + 2 * size, "{}", y.name);
    }
    // The conv2d without activation: its zero point is not the lowest integer.
    let inner = pads
        .iter()
        .map(|&(input, ..)| g.values[input].quant.zero_point)
        .find(|&zp| zp > -128);
    assert!(inner.is_some(), "no pad of a value with zero point > -128");

    let model = qatc::export::onnx::model(&int8_model).unwrap();
    let nodes = onnx_nodes(&model);
    let pad = ("Pad".to_string(), String::new());
    assert_eq!(nodes.iter().filter(|n| **n == pad).count(), 3, "{nodes:?}");
    let graph = model.graph.as_ref().unwrap();
    for (node, &(input, ..)) in graph.node.iter().filter(|n| n.op_type == "Pad").zip(&pads) {
        assert_eq!(
            onnx_scalar(&model, &node.input[2]),
            g.values[input].quant.zero_point as f64,
            "{}",
            node.output[0]
        );
    }
    onnx_runtime_agrees(&int8_model, 200);
}

fn lowered(src: &str) -> int8::Model {
    let graph = quantized(src);
    let mut rng = Rng(3);
    let mut params = random_params(&graph, &mut rng);
    let per = graph.node(graph.inputs[0]).shape.iter().product::<usize>();
    let x = pixels(4 * per, &mut rng);
    for s in 0..4 {
        simulate(
            &graph,
            &mut params,
            &x[s * per..(s + 1) * per],
            Sim::Calibrate,
        );
    }
    lower::lower(&graph, &params, None).unwrap()
}

#[test]
fn lowering_follows_the_int8_spec() {
    let (g, t) = lowered(RESIDUAL).into_parts();
    for op in &g.ops {
        if let IntOp::Conv2d {
            weight,
            bias,
            requant,
            act_min,
            output,
            ..
        }
        | IntOp::Dense {
            weight,
            bias,
            requant,
            act_min,
            output,
            ..
        } = op
        {
            let IntTensor::I8 { data, .. } = &t[weight] else {
                panic!("weights are int8")
            };
            assert!(
                data.iter().all(|&w| w >= -127),
                "symmetric weights stay in [-127, 127]"
            );
            assert!(matches!(t[bias], IntTensor::I32 { .. }), "bias is int32");
            assert!(requant
                .iter()
                .all(|r| (1 << 30..=i32::MAX).contains(&r.multiplier)));
            let q = g.values[*output].quant;
            assert!(*act_min == q.qmin || *act_min == q.zero_point);
        }
    }
    let kinds: Vec<&str> = g.ops.iter().map(IntOp::kind).collect();
    assert_eq!(
        kinds,
        [
            "quantize",
            "conv2d",
            "conv2d",
            "conv2d",
            "add",
            "max_pool2d",
            "reshape",
            "dense",
            "dense"
        ]
    );
    // add → relu is one add whose clamp is the relu (no rounding in between).
    let add = g.ops.iter().find(|op| op.kind() == "add").unwrap();
    let IntOp::Add {
        output, act_min, ..
    } = add
    else {
        unreachable!()
    };
    let q = g.values[*output].quant;
    assert_eq!(*act_min, q.zero_point.max(q.qmin));
}

#[test]
fn artifact_round_trips_and_is_a_quarter_of_float() {
    let model = lowered(CNN);
    let dir = tempfile::tempdir().unwrap();
    int8::artifact::save(dir.path(), &model).unwrap();
    assert_eq!(int8::artifact::read(dir.path()).unwrap(), model);
    let t = model.tensors();
    let int8_bytes = std::fs::metadata(dir.path().join("weights.safetensors"))
        .unwrap()
        .len();
    let params: usize = t
        .values()
        .map(|t| t.shape().iter().product::<usize>())
        .sum();
    assert!(
        (int8_bytes as f64) < params as f64 * 4.0 * 0.3,
        "{int8_bytes} bytes for {params} parameters"
    );
}

fn expect_load_error(dir: &std::path::Path, needle: &str) {
    let err = runtime::load(dir)
        .expect_err("damaged artifact must not load")
        .to_string();
    assert!(
        err.contains(needle),
        "error `{err}` should mention `{needle}`"
    );
}

/// Rewrites an artifact's weights with `change` applied to its tensors (name, dtype, shape,
/// bytes; sorted by name): damage that `int8::artifact::save`, which takes only validated
/// models, cannot write.
#[allow(clippy::type_complexity)]
fn rewrite_weights(
    path: &std::path::Path,
    change: impl FnOnce(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = file
        .tensors()
        .into_iter()
        .map(|(name, t)| (name, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    change(&mut tensors);
    let views = tensors.iter().map(|(name, dtype, shape, data)| {
        let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap();
        (name.clone(), view)
    });
    std::fs::write(path, safetensors::serialize(views, &None).unwrap()).unwrap();
}

#[test]
fn damaged_artifacts_give_clear_errors() {
    let model = lowered(CNN);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let graph_path = d.join("graph.json");
    let weights_path = d.join("weights.safetensors");

    // Wrong version.
    int8::artifact::save(d, &model).unwrap();
    let text = std::fs::read_to_string(&graph_path).unwrap();
    std::fs::write(
        &graph_path,
        text.replace("\"version\": 1", "\"version\": 99"),
    )
    .unwrap();
    expect_load_error(d, "version 99");

    // Truncated weights.
    int8::artifact::save(d, &model).unwrap();
    let bytes = std::fs::read(&weights_path).unwrap();
    std::fs::write(&weights_path, &bytes[..bytes.len() / 2]).unwrap();
    expect_load_error(d, "truncated or corrupt");

    // Truncated graph.
    int8::artifact::save(d, &model).unwrap();
    std::fs::write(&graph_path, &text[..text.len() / 2]).unwrap();
    expect_load_error(d, "not valid JSON");

    // Missing tensor.
    int8::artifact::save(d, &model).unwrap();
    let name = model.tensors().keys().next().unwrap().clone();
    rewrite_weights(&weights_path, |tensors| tensors.retain(|t| t.0 != name));
    expect_load_error(d, &format!("`{name}` is missing"));

    // Mis-shaped tensor.
    int8::artifact::save(d, &model).unwrap();
    let name = model
        .tensors()
        .iter()
        .find(|(_, t)| matches!(t, IntTensor::I8 { .. }))
        .unwrap()
        .0
        .clone();
    rewrite_weights(&weights_path, |tensors| {
        let (_, _, shape, data) = tensors.iter_mut().find(|t| t.0 == name).unwrap();
        shape[0] -= 1;
        data.truncate(shape.iter().product());
    });
    expect_load_error(d, &name);

    // A graph whose ops do not fit together.
    int8::artifact::save(d, &model).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["values"][1]["shape"] = serde_json::json!([7, 7, 7]);
    std::fs::write(&graph_path, json.to_string()).unwrap();
    expect_load_error(d, "shape");

    // Missing files.
    let empty = tempfile::tempdir().unwrap();
    expect_load_error(empty.path(), "graph.json");
}

/// Validates RESIDUAL's lowered graph after `change`; the error it must give.
fn invalid_after(
    change: impl FnOnce(&mut int8::IntGraph, &mut int8::IntTensors),
) -> ValidationError {
    let (mut g, mut t) = lowered(RESIDUAL).into_parts();
    change(&mut g, &mut t);
    int8::Model::validate(g, t).expect_err("the damaged graph must not validate")
}

/// The first op of `kind` in `g`, to damage.
fn op_of<'a>(g: &'a mut int8::IntGraph, kind: &str) -> &'a mut IntOp {
    g.ops.iter_mut().find(|op| op.kind() == kind).unwrap()
}

/// One test per invariant the README states for the int8 artifact: each field corrupted
/// alone gives its own error (before, several of these ran with a wrong accuracy).
#[test]
fn loader_rejects_every_broken_invariant() {
    use ValidationError as E;
    let intact = lowered(RESIDUAL);
    assert!(int8::Model::validate(intact.graph().clone(), intact.tensors().clone()).is_ok());

    // The output pointing at the quantized input.
    let e = invalid_after(|g, _| g.output = g.ops[0].output());
    assert!(matches!(e, E::OutputIsInput { .. }), "{e}");
    // A requantization multiplier outside [2^30, 2^31).
    let e = invalid_after(|g, _| {
        if let IntOp::Conv2d { requant, .. } = op_of(g, "conv2d") {
            requant[0].multiplier = 1;
        }
    });
    assert!(matches!(e, E::RequantRange { multiplier: 1, .. }), "{e}");
    let e = invalid_after(|g, _| {
        if let IntOp::Dense { requant, .. } = op_of(g, "dense") {
            requant[0].shift = 0;
        }
    });
    assert!(matches!(e, E::RequantRange { shift: 0, .. }), "{e}");
    let e = invalid_after(|g, _| {
        if let IntOp::Add { multipliers, .. } = op_of(g, "add") {
            *multipliers = [5, 3];
        }
    });
    assert!(matches!(e, E::RequantRange { multiplier: 5, .. }), "{e}");
    let e = invalid_after(|g, _| {
        if let IntOp::Add { multipliers, .. } = op_of(g, "add") {
            multipliers[1] = -1;
        }
    });
    assert!(matches!(e, E::RequantRange { multiplier: -1, .. }), "{e}");
    // A clamp that does not keep real 0 (an activation minimum of 127).
    let e = invalid_after(|g, _| {
        if let IntOp::Conv2d { act_min, .. } = op_of(g, "conv2d") {
            *act_min = 127;
        }
    });
    assert!(matches!(e, E::Clamp { lo: 127, .. }), "{e}");
    let e = invalid_after(|g, _| {
        if let IntOp::Dense {
            act_min, act_max, ..
        } = op_of(g, "dense")
        {
            (*act_min, *act_max) = (10, -10);
        }
    });
    assert!(
        matches!(
            e,
            E::Clamp {
                lo: 10,
                hi: -10,
                ..
            }
        ),
        "{e}"
    );
    // Scales: absurd, zero, negative, not a number; zero point outside the range.
    for scale in [3e38, 0.0, -0.5, f32::NAN, f32::INFINITY, 1e-40] {
        let e = invalid_after(|g, _| g.values[0].quant.scale = scale);
        assert!(matches!(e, E::Quantization { .. }), "scale {scale}: {e}");
        assert!(e.to_string().contains("scale"), "{e}");
    }
    let e = invalid_after(|g, _| g.values[1].quant.zero_point = 200);
    assert!(e.to_string().contains("zero point"), "{e}");
    let e = invalid_after(|g, _| (g.values[1].quant.qmin, g.values[1].quant.qmax) = (5, 5));
    assert!(matches!(e, E::Quantization { .. }), "{e}");
    let e = invalid_after(|g, _| {
        if let IntOp::Conv2d { weight_scales, .. } = op_of(g, "conv2d") {
            weight_scales[0] = 3e38;
        }
    });
    assert!(matches!(e, E::WeightScales { .. }), "{e}");
    // Shapes: a value of absurd size, padding larger than the kernel.
    let e = invalid_after(|g, _| g.values[1].shape = vec![1 << 21, 1 << 21, 1 << 21]);
    assert!(matches!(e, E::ValueShape { .. }), "{e}");
    let e = invalid_after(|g, _| {
        if let IntOp::Conv2d { pad, .. } = op_of(g, "conv2d") {
            *pad = usize::MAX / 2;
        }
    });
    assert!(matches!(e, E::Shape { .. }), "{e}");
    // A pad whose output has other parameters, or a size that overflows.
    let padded = lowered(PAD);
    let pad_output = padded
        .graph()
        .ops
        .iter()
        .find_map(|op| match op {
            IntOp::Pad { output, .. } => Some(*output),
            _ => None,
        })
        .unwrap();
    let (g, t) = padded.into_parts();
    let mut broken = g.clone();
    broken.values[pad_output].quant.zero_point += 1;
    let e = int8::Model::validate(broken, t.clone()).unwrap_err();
    assert!(e.to_string().contains("must keep the input's"), "{e}");
    let mut broken = g;
    if let IntOp::Pad { size, .. } = op_of(&mut broken, "pad") {
        *size = usize::MAX / 2;
    }
    let e = int8::Model::validate(broken, t).unwrap_err();
    assert!(matches!(e, E::Shape { .. }), "{e}");
    // Weights: -128 (no symmetric partner), a tensor no op uses.
    let e = invalid_after(|g, t| {
        let IntOp::Conv2d { weight, .. } = op_of(g, "conv2d") else {
            unreachable!()
        };
        if let Some(IntTensor::I8 { data, .. }) = t.get_mut(weight.as_str()) {
            data[0] = -128;
        }
    });
    assert!(matches!(e, E::WeightRange { found: -128, .. }), "{e}");
    let e = invalid_after(|_, t| {
        t.insert(
            "stray.weight".into(),
            IntTensor::I8 {
                shape: vec![1],
                data: vec![0],
            },
        );
    });
    assert!(
        matches!(e, E::UnusedTensor { ref tensor } if tensor == "stray.weight"),
        "{e}"
    );
    // Class names that do not match the outputs.
    let e = invalid_after(|g, _| g.classes = Some(vec![0, 1, 2]));
    assert!(matches!(e, E::Classes { classes: 3, .. }), "{e}");
    let e = invalid_after(|g, _| g.classes = Some(vec![0, 1, 1, 2]));
    assert!(
        matches!(
            e,
            E::Classes {
                duplicate: true,
                ..
            }
        ),
        "{e}"
    );
}

/// A build killed between writing the int8 weights and the graph used to leave new weights
/// beside the old graph, which ran with a wrong accuracy; the content hash refuses it.
#[test]
fn weights_of_another_build_are_refused() {
    let model = lowered(CNN);
    let (g, mut t) = model.clone().into_parts();
    for tensor in t.values_mut() {
        if let IntTensor::I8 { data, .. } = tensor {
            data.iter_mut().for_each(|w| *w = -*w);
        }
    }
    let other = int8::Model::validate(g, t).expect("negated weights are still valid");
    let (old, new) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    int8::artifact::save(old.path(), &model).unwrap();
    int8::artifact::save(new.path(), &other).unwrap();
    assert_eq!(int8::artifact::read(new.path()).unwrap(), other);
    let weights = "weights.safetensors";
    std::fs::copy(new.path().join(weights), old.path().join(weights)).unwrap();
    expect_load_error(old.path(), "do not belong together");

    // A valid-looking edit of the graph is refused the same way.
    int8::artifact::save(old.path(), &model).unwrap();
    let graph_path = old.path().join("graph.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&graph_path).unwrap()).unwrap();
    let scale = json["values"][0]["quant"]["scale"].as_f64().unwrap();
    json["values"][0]["quant"]["scale"] = serde_json::json!(scale * 2.0);
    std::fs::write(&graph_path, json.to_string()).unwrap();
    expect_load_error(old.path(), "do not belong together");
    json.as_object_mut().unwrap().remove("content_sha256");
    std::fs::write(&graph_path, json.to_string()).unwrap();
    expect_load_error(old.path(), "records no `content_sha256`");

    // Saving over an artifact replaces it whole and leaves nothing else beside it.
    int8::artifact::save(old.path(), &other).unwrap();
    assert_eq!(int8::artifact::read(old.path()).unwrap(), other);
    let parent = old.path().parent().unwrap();
    let name = old
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| (n.starts_with(".tmp-") || n.starts_with(".old-")) && n.ends_with(&name))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `qatc run` with `args` after the artifact; must fail, naming `needle`.
fn run_fails(artifact: &std::path::Path, args: &[&str], needle: &str) -> String {
    let mut all = vec!["run", artifact.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = common::qatc(&all);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "qatc {all:?} must fail:\n{stderr}");
    assert!(
        stderr.contains(needle),
        "qatc {all:?}: `{stderr}` should name `{needle}`"
    );
    stderr
}

/// Images and labels `qatc run` used to accept silently (exit 0 with a meaningless
/// accuracy) and files it read whole before checking them.
#[test]
fn run_refuses_wrong_images_and_labels_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let artifact = d.join("int8");
    int8::artifact::save(&artifact, &lowered(CNN)).unwrap();
    let path = |name: &str| d.join(name).display().to_string();
    let good = path("images");
    qatc::data::write_images(d.join("images").as_path(), &[0; 784 * 2], 2, 28, 28).unwrap();
    qatc::data::write_labels(&d.join("labels"), &[3, 7]).unwrap();
    common::qatc_ok(&[
        "run",
        artifact.to_str().unwrap(),
        "--images",
        &good,
        "--labels",
        &path("labels"),
    ]);

    // 784×1 images are fitted to the model's 28×28 as training data is (shorter side
    // scaled, centre cropped), not refused.
    qatc::data::write_images(&d.join("tall"), &[0; 784 * 2], 2, 784, 1).unwrap();
    let (tall, _) = common::qatc_ok(&["run", artifact.to_str().unwrap(), &path("tall")]);
    assert_eq!(tall.lines().count(), 2, "{tall}");
    // A label the model has no class for.
    qatc::data::write_labels(&d.join("label200"), &[3, 200]).unwrap();
    let e = run_fails(
        &artifact,
        &["--images", &good, "--labels", &path("label200")],
        &path("label200"),
    );
    assert!(e.contains("200"), "{e}");
    // No images at all.
    qatc::data::write_images(&d.join("none"), &[], 0, 28, 28).unwrap();
    run_fails(&artifact, &["--images", &path("none")], &path("none"));
    // A header that promises more than any data set: refused before reading the body.
    let mut huge = Vec::new();
    for w in [0x0000_0803u32, 1_000_000_000, 1000, 1000] {
        huge.extend_from_slice(&w.to_be_bytes());
    }
    std::fs::write(d.join("huge"), &huge).unwrap();
    let e = run_fails(&artifact, &["--images", &path("huge")], &path("huge"));
    assert!(e.contains("more than"), "{e}");
    // A gzip stream with a valid header and far more data than it promises.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    use std::io::Write;
    for w in [0x0000_0803u32, 1, 28, 28] {
        gz.write_all(&w.to_be_bytes()).unwrap();
    }
    gz.write_all(&vec![0u8; 8 << 20]).unwrap();
    std::fs::write(d.join("bomb.gz"), gz.finish().unwrap()).unwrap();
    run_fails(
        &artifact,
        &["--images", &path("bomb.gz")],
        "truncated or corrupt",
    );
    // An endless file: read up to its header, not to the memory limit. (The limit on
    // the child's memory turns the old read-it-all into a failure, not a stalled machine.)
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 8000000; exec '{}' run '{}' --images /dev/zero",
            common::qatc_bin().display(),
            artifact.display()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("/dev/zero is not an IDX image file: magic number"),
        "{stderr}"
    );
    // Thousands of threads would stall the machine.
    let e = run_fails(
        &artifact,
        &["--images", &good, "--threads", "100000"],
        "--threads 100000",
    );
    assert!(e.contains("too many") && e.contains("per core"), "{e}");
}

/// `qatc inspect` and `qatc export` on damaged files say which file.
#[test]
fn inspect_and_export_name_the_damaged_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = lowered(CNN);
    let artifact = dir.path().join("int8");
    int8::artifact::save(&artifact, &model).unwrap();
    let weights = artifact.join("weights.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 3]).unwrap();
    for args in [
        vec!["inspect", artifact.to_str().unwrap()],
        vec!["export", artifact.to_str().unwrap(), "--format", "onnx"],
    ] {
        let out = common::qatc(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains(weights.to_str().unwrap()),
            "{args:?}: {stderr}"
        );
    }
    let tflite = dir.path().join("model.tflite");
    let bytes = qatc::export::tflite::to_bytes(&model).unwrap();
    std::fs::write(&tflite, &bytes[..bytes.len() / 2]).unwrap();
    let out = common::qatc(&["inspect", tflite.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(tflite.to_str().unwrap()), "{stderr}");
}

#[test]
fn wrong_input_size_is_an_error_not_a_panic() {
    let model = Model::new(&lowered(CNN));
    let err = model.run(&[0.5; 100]).unwrap_err().to_string();
    assert!(err.contains("784"), "{err}");
    assert!(model.run(&[]).unwrap().is_empty());
}

#[test]
fn lowering_reports_missing_calibration() {
    let graph = quantized(CNN);
    let mut rng = Rng(1);
    let params = random_params(&graph, &mut rng);
    let err = lower::lower(&graph, &params, None).unwrap_err().to_string();
    assert!(err.contains(".min") && err.contains("calibration"), "{err}");
}

#[test]
fn float_ops_cannot_be_lowered() {
    let src = CNN.replace(
        "@quant(activations = int8(asymmetric, per_tensor))",
        "@float",
    );
    let graph = quantized(&src);
    let params: TensorMap = HashMap::new();
    let err = lower::lower(&graph, &params, None).unwrap_err().to_string();
    assert!(err.contains("@float"), "{err}");
}

#[test]
fn new_ops_lower_as_tflite_wants_them() {
    let (g, _) = lowered(BRANCHES).into_parts();
    let kinds: Vec<&str> = g.ops.iter().map(IntOp::kind).collect();
    assert_eq!(
        kinds,
        [
            "quantize",
            "conv2d",
            "conv2d",
            "concat",
            "avg_pool2d",
            "conv2d",
            "global_avg_pool",
            "dense",
            "concat",
            "dense"
        ]
    );
    let relu6_convs: Vec<String> = quantized(BRANCHES)
        .nodes
        .iter()
        .filter(|n| matches!(&n.op, Op::Conv2d { epilogue, .. } if epilogue.activation == Some(Activation::Relu6)))
        .map(|n| n.name.clone())
        .collect();
    let mut relu6 = 0;
    for op in &g.ops {
        match op {
            // relu6 fused into the conv2d: its clamp is [real 0, real 6].
            IntOp::Conv2d {
                name,
                output,
                act_min,
                act_max,
                ..
            } if relu6_convs.contains(name) => {
                let q = g.values[*output].quant;
                assert_eq!(*act_min, q.zero_point.max(q.qmin));
                let six = q.zero_point + (6.0f32 / q.scale).round() as i32;
                assert_eq!(*act_max, six.min(q.qmax));
                relu6 += 1;
            }
            IntOp::AvgPool2d { input, output, .. } => {
                assert_eq!(g.values[*input].quant, g.values[*output].quant);
            }
            IntOp::GlobalAvgPool {
                input,
                output,
                requant,
                ..
            } => {
                let (x, y) = (&g.values[*input], &g.values[*output]);
                let hw = (x.shape[1] * x.shape[2]) as f64;
                let real = x.quant.scale as f64 / (hw * y.quant.scale as f64);
                assert!((requant.real() / real - 1.0).abs() < 1e-9);
            }
            IntOp::Concat {
                inputs,
                output,
                requant,
                axis,
                ..
            } => {
                let y = g.values[*output].quant;
                assert_eq!(*axis, 0, "axis -1 of a vector is 0");
                for (i, r) in inputs.iter().zip(requant) {
                    let real = g.values[*i].quant.scale as f64 / y.scale as f64;
                    assert!((r.real() / real - 1.0).abs() < 1e-9);
                }
            }
            _ => {}
        }
    }
    assert_eq!(relu6, 2);
}

/// An input read by two concats keeps its own range, so each concat requantizes it to
/// its own parameters (the other inputs share the concat's range and are copied).
const SHARED_INPUT: &str = r#"
quant default {
    weights     = int8(symmetric, per_channel)
    activations = int8(asymmetric, per_tensor)
}
model SharedInput {
    input image: f32[1, 10, 10]
    let a = conv2d(image, filters = 3, kernel = 3, padding = same)
    let a = relu(a)
    let b = conv2d(image, filters = 2, kernel = 1)
    let c = conv2d(image, filters = 4, kernel = 1)
    let c = relu6(c)
    let x = concat(a, b)
    let y = concat(c, a)
    let z = concat(x, y)
    let g = global_avg_pool(z)
    let logits = dense(g, units = 6)
    output logits
}
"#;

/// The ONNX model's nodes as (op_type, domain).
fn onnx_nodes(model: &qatc::export::onnx::proto::ModelProto) -> Vec<(String, String)> {
    model
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| (n.op_type.clone(), n.domain.clone()))
        .collect()
}

/// A scalar initializer: f32 scale or int8 zero point, as f64.
fn onnx_scalar(model: &qatc::export::onnx::proto::ModelProto, name: &str) -> f64 {
    use qatc::export::onnx::proto::{FLOAT, INT8};
    let t = model
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no initializer `{name}`"));
    assert!(t.dims.is_empty(), "`{name}` is not a scalar");
    match t.data_type {
        FLOAT => f32::from_le_bytes(t.raw_data[..4].try_into().unwrap()) as f64,
        INT8 => t.raw_data[0] as i8 as f64,
        other => panic!("`{name}` has data type {other}"),
    }
}

/// Exports the lowered graph, runs ONNX Runtime on `samples` random images and compares
/// its int8 logits with qatc's runtime (skipped when onnxruntime cannot be had).
fn onnx_runtime_agrees(int8_model: &int8::Model, samples: usize) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.onnx");
    qatc::export::onnx::write(&file, int8_model).unwrap();
    let model = Model::new(int8_model);
    let g = int8_model.graph();
    let x = pixels(samples * model.input_len(), &mut Rng(17));
    let Some(a) = common::onnx_runtime_agreement(&model, &file, &x, &g.input.shape, dir.path())
    else {
        return;
    };
    eprintln!(
        "{}: ONNX Runtime vs qatc on {samples} random images: {} of {} int8 outputs differ, by at most {} unit(s); argmax identical on {}",
        g.model, a.differ, a.outputs, a.worst, a.same_argmax
    );
    // Ties (x.5 units) round to even in ONNX Runtime, up or away from zero in qatc.
    assert!(a.worst <= 1, "int8 outputs differ by {} units", a.worst);
    assert!(
        a.same_argmax * 100 >= samples * 99,
        "argmax identical on only {}/{samples}",
        a.same_argmax
    );
}

/// avg_pool2d exports as an f32 `AveragePool` of the raw int8 values rounded half away
/// from zero (exact); global_avg_pool and concat (channels and vectors) as the
/// com.microsoft QLinear* ops; the concat axis is shifted past the batch dimension and
/// the pooled `[N, C, 1, 1]` is flattened to the `[N, C]` vector a dense layer reads.
#[test]
fn onnx_export_writes_pools_and_concats() {
    let int8_model = lowered(BRANCHES);
    let model = qatc::export::onnx::model(&int8_model).unwrap();
    let nodes = onnx_nodes(&model);
    let ms = |op: &str| (op.to_string(), "com.microsoft".to_string());
    let count = |n: &(String, String)| nodes.iter().filter(|m| *m == n).count();
    let std = |op: &str| (op.to_string(), String::new());
    assert_eq!(count(&std("AveragePool")), 1, "{nodes:?}");
    assert_eq!(count(&std("Floor")), 1, "{nodes:?}");
    assert_eq!(count(&ms("QLinearGlobalAveragePool")), 1, "{nodes:?}");
    assert_eq!(count(&ms("QLinearConcat")), 2, "{nodes:?}");
    let graph = model.graph.as_ref().unwrap();
    for node in &graph.node {
        let attr = |name: &str| node.attribute.iter().find(|a| a.name == name);
        match node.op_type.as_str() {
            "QLinearConcat" => {
                assert_eq!(
                    attr("axis").unwrap().i,
                    1,
                    "per-sample axis 0 is ONNX axis 1"
                );
                assert_eq!(node.input.len(), 2 + 3 * 2);
            }
            "AveragePool" => {
                assert_eq!(attr("kernel_shape").unwrap().ints, [2, 2]);
                assert_eq!(attr("strides").unwrap().ints, [2, 2]);
                // On the raw int8 values, cast to f32.
                let cast = graph
                    .node
                    .iter()
                    .find(|n| n.output[0] == node.input[0])
                    .unwrap();
                assert_eq!(cast.op_type, "Cast");
            }
            "QLinearGlobalAveragePool" => {
                let reader = graph
                    .node
                    .iter()
                    .find(|n| n.input.first() == Some(&node.output[0]))
                    .unwrap();
                assert_eq!(reader.op_type, "Flatten");
            }
            _ => {}
        }
    }
    onnx_runtime_agrees(&int8_model, 200);
}

/// A concat input with parameters of its own: QLinearConcat gets that input's scale and
/// zero point (ONNX Runtime requantizes it), the shared ones are the output's (copied).
#[test]
fn onnx_concat_requantizes_inputs_with_other_parameters() {
    let int8_model = lowered(SHARED_INPUT);
    let model = qatc::export::onnx::model(&int8_model).unwrap();
    let g = int8_model.graph();
    let graph = model.graph.as_ref().unwrap();
    let mut requantized = 0;
    for op in &g.ops {
        let IntOp::Concat { inputs, output, .. } = op else {
            continue;
        };
        let y = g.values[*output].quant;
        let node = graph
            .node
            .iter()
            .find(|n| {
                n.op_type == "QLinearConcat" && n.output[0].starts_with(&g.values[*output].name)
            })
            .unwrap();
        assert_eq!(onnx_scalar(&model, &node.input[0]), y.scale as f64);
        assert_eq!(onnx_scalar(&model, &node.input[1]), y.zero_point as f64);
        for (k, &i) in inputs.iter().enumerate() {
            let q = g.values[i].quant;
            assert_eq!(onnx_scalar(&model, &node.input[3 + 3 * k]), q.scale as f64);
            assert_eq!(
                onnx_scalar(&model, &node.input[4 + 3 * k]),
                q.zero_point as f64
            );
            requantized += (q != y) as usize;
        }
    }
    assert!(
        requantized >= 2,
        "the shared input is requantized by both concats"
    );
    onnx_runtime_agrees(&int8_model, 200);
    // Each concat's own int8 values, not only the logits.
    for op in &g.ops {
        if let IntOp::Concat { output, .. } = op {
            let (mut cut, t) = int8_model.clone().into_parts();
            cut.output = *output;
            onnx_runtime_agrees(&int8::Model::validate(cut, t).unwrap(), 100);
        }
    }
}

/// A damaged `.tflite` (truncated, bytes flipped, not a FlatBuffer at all) is an error
/// from `qatc inspect`'s reader, never a panic.
#[test]
fn damaged_tflite_files_give_errors_not_panics() {
    let bytes = qatc::export::tflite::to_bytes(&lowered(BRANCHES)).unwrap();
    let model = qatc::export::tflite::read(&bytes).unwrap();
    assert_eq!(model.inputs.len(), 1);
    assert!(model.operators.iter().any(|o| o.op == "CONCATENATION"));
    for cut in (0..bytes.len()).step_by(bytes.len() / 200 + 1) {
        let _ = qatc::export::tflite::read(&bytes[..cut]);
    }
    let mut rng = Rng(7);
    for _ in 0..300 {
        let mut damaged = bytes.clone();
        for _ in 0..4 {
            let at = (rng.uniform() * damaged.len() as f32) as usize % damaged.len();
            damaged[at] = (rng.uniform() * 256.0) as u8;
        }
        let _ = qatc::export::tflite::read(&damaged);
    }
    let err = qatc::export::tflite::read(b"definitely not a model").unwrap_err();
    assert!(err.to_string().contains("TFL3"), "{err}");
}
