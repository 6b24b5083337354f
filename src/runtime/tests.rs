//! The runtime's kernels on hand-built graphs, against references written here.

use super::*;
use crate::int8::{Input, IntTensors, Value};
use crate::lower::quantize_multiplier;

/// Deterministic integers in `[lo, hi]`.
struct Lcg(u64);
impl Lcg {
    fn range(&mut self, lo: i32, hi: i32) -> i32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + ((self.0 >> 33) % (hi - lo + 1) as u64) as i32
    }
}

fn q(scale: f32, zero_point: i32) -> QParams {
    QParams {
        scale,
        zero_point,
        qmin: -128,
        qmax: 127,
    }
}

/// A graph whose input quantizes at scale 1 and zero point `zp`, so that an input of
/// `v - zp` (an integer in float) becomes exactly the int8 value `v`.
fn graph(shape: &[usize], zp: i32) -> IntGraph {
    IntGraph {
        format: int8::FORMAT.into(),
        version: int8::VERSION,
        model: "t".into(),
        classes: None,
        class_names: None,
        input: Input {
            name: "x".into(),
            shape: shape.to_vec(),
            normalize: None,
        },
        values: vec![Value {
            name: "x".into(),
            shape: shape.to_vec(),
            quant: q(1.0, zp),
        }],
        ops: vec![IntOp::Quantize { output: 0 }],
        output: 0,
    }
}

fn push(g: &mut IntGraph, shape: &[usize], quant: QParams) -> usize {
    g.values.push(Value {
        name: format!("v{}", g.values.len()),
        shape: shape.to_vec(),
        quant,
    });
    g.values.len() - 1
}

/// Runs `samples` samples of int8 values `[C, H, W]` / `[F]` through the graph.
fn run(g: IntGraph, x: &[i32]) -> Vec<i8> {
    let zp = g.values[0].quant.zero_point;
    let model = Model::new(&int8::Model::validate(g, IntTensors::new()).unwrap());
    let input: Vec<f32> = x.iter().map(|&v| (v - zp) as f32).collect();
    let got = model.run(&input).unwrap();
    let portable = model.with_isa(Isa::Portable).run(&input).unwrap();
    assert_eq!(got, portable);
    got
}

#[test]
fn avg_pool_rounds_half_away_from_zero_on_raw_values() {
    // One channel, 2x2 windows: sums 2, -2, 3, -3, 6, -6 over 4 → 0.5, -0.5, 0.75, -0.75, 1.5, -1.5.
    let mut g = graph(&[1, 2, 12], 0);
    let y = push(&mut g, &[1, 1, 6], q(1.0, 0));
    g.ops.push(IntOp::AvgPool2d {
        input: 0,
        output: y,
        size: 2,
        stride: 2,
    });
    g.output = y;
    #[rustfmt::skip]
    let x = [
        1, 1, -1, -1, 1, 2, -1, -2, 3, 3, -3, -3,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(run(g, &x), [1, -1, 1, -1, 2, -2]);
}

#[test]
fn avg_pool_matches_a_reference_with_negative_sums() {
    let mut rng = Lcg(7);
    for (c, h, w, size, stride, zp) in
        [(3, 5, 5, 2, 2, -20), (2, 7, 6, 3, 1, 5), (4, 4, 4, 2, 1, 0)]
    {
        let (oh, ow) = ((h - size) / stride + 1, (w - size) / stride + 1);
        let mut g = graph(&[c, h, w], zp);
        let y = push(&mut g, &[c, oh, ow], q(1.0, zp));
        g.ops.push(IntOp::AvgPool2d {
            input: 0,
            output: y,
            size,
            stride,
        });
        g.output = y;
        let n = 3;
        let x: Vec<i32> = (0..n * c * h * w).map(|_| rng.range(-128, 127)).collect();
        let got = run(g, &x);
        let mut negative = 0;
        for s in 0..n {
            for ci in 0..c {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut sum = 0;
                        for ky in 0..size {
                            for kx in 0..size {
                                sum +=
                                    x[((s * c + ci) * h + oy * stride + ky) * w + ox * stride + kx];
                            }
                        }
                        negative += (sum < 0) as usize;
                        // f64::round rounds half away from zero.
                        let expected = (sum as f64 / (size * size) as f64).round() as i8;
                        assert_eq!(
                            got[((s * c + ci) * oh + oy) * ow + ox],
                            expected,
                            "sum {sum}"
                        );
                    }
                }
            }
        }
        assert!(negative > 0);
    }
}

#[test]
fn global_avg_pool_requantizes_the_channel_sums() {
    let mut rng = Lcg(3);
    let (c, h, w, zp_x) = (5, 4, 5, 7);
    let out = q(0.7, -3);
    let rq = quantize_multiplier(1.0 / ((h * w) as f64 * 0.7f32 as f64)).unwrap();
    let mut g = graph(&[c, h, w], zp_x);
    let y = push(&mut g, &[c], out);
    g.ops.push(IntOp::GlobalAvgPool {
        name: "gap".into(),
        input: 0,
        output: y,
        requant: rq,
        act_min: -128,
        act_max: 127,
    });
    g.output = y;
    let n = 4;
    let x: Vec<i32> = (0..n * c * h * w).map(|_| rng.range(-128, 127)).collect();
    let got = run(g, &x);
    for s in 0..n {
        for ci in 0..c {
            let sum: i32 = (0..h * w).map(|p| x[(s * c + ci) * h * w + p] - zp_x).sum();
            // The fixed-point product rounded half up, exactly (it fits f64's mantissa).
            let exact = (sum as f64 * rq.real() + 0.5).floor() as i32 + out.zero_point;
            assert_eq!(got[s * c + ci] as i32, exact.clamp(-128, 127), "sum {sum}");
            // And within one unit of the real mean, requantized.
            let mean = sum as f64 / (h * w) as f64 / 0.7f32 as f64 + out.zero_point as f64;
            assert!((got[s * c + ci] as f64 - mean.clamp(-128.0, 127.0)).abs() <= 0.5 + 1e-6);
        }
    }
}

/// Concatenation of `[C, H, W]` / `[F]` tensors (row-major in the model's layout).
fn reference_concat(parts: &[(Vec<i32>, Vec<usize>)], axis: usize) -> Vec<i32> {
    let outer: usize = parts[0].1[..axis].iter().product();
    let mut y = Vec::new();
    for o in 0..outer {
        for (x, shape) in parts {
            let inner: usize = shape[axis..].iter().product();
            y.extend_from_slice(&x[o * inner..(o + 1) * inner]);
        }
    }
    y
}

/// `v` at parameters `from` brought to `to` by the concat rule (copied when they are equal).
fn moved(v: i32, from: QParams, to: QParams) -> i32 {
    if from == to {
        return v;
    }
    let rq = quantize_multiplier(from.scale as f64 / to.scale as f64).unwrap();
    (((v - from.zero_point) as f64 * rq.real() + 0.5).floor() as i32 + to.zero_point)
        .clamp(-128, 127)
}

#[test]
fn concat_along_each_image_axis_rescales_and_copies() {
    let mut rng = Lcg(11);
    let out_q = q(1.5, 4);
    let shape = [2usize, 3, 4];
    let per = numel(&shape);
    // The input at scale 1, and two more quantizations of it: one needs rescaling,
    // one has the output's parameters and is copied.
    let params = [q(1.0, 0), q(2.0, 3), out_q];
    for axis in 0..3 {
        let mut g = graph(&shape, 0);
        let mut inputs = vec![0];
        for p in &params[1..] {
            let v = push(&mut g, &shape, *p);
            g.ops.push(IntOp::Quantize { output: v });
            inputs.push(v);
        }
        let mut out_shape = shape.to_vec();
        out_shape[axis] *= 3;
        let y = push(&mut g, &out_shape, out_q);
        g.ops.push(IntOp::Concat {
            name: "cat".into(),
            inputs,
            output: y,
            axis,
            requant: params
                .iter()
                .map(|p| quantize_multiplier(p.scale as f64 / out_q.scale as f64).unwrap())
                .collect(),
        });
        g.output = y;
        let n = 3;
        let x: Vec<i32> = (0..n * per).map(|_| rng.range(-128, 127)).collect();
        let got = run(g, &x);
        for s in 0..n {
            let parts: Vec<(Vec<i32>, Vec<usize>)> = params
                .iter()
                .map(|p| {
                    let own = x[s * per..(s + 1) * per]
                        .iter()
                        .map(|&v| moved(p.quantize(v as f32) as i32, *p, out_q))
                        .collect();
                    (own, shape.to_vec())
                })
                .collect();
            let expected = reference_concat(&parts, axis);
            let row: Vec<i32> = got[s * 3 * per..(s + 1) * 3 * per]
                .iter()
                .map(|&v| v as i32)
                .collect();
            assert_eq!(row, expected, "axis {axis}");
        }
    }
}

#[test]
fn concat_of_vectors_of_different_lengths() {
    let mut rng = Lcg(5);
    let out_q = q(1.5, 4);
    let (c, h, w) = (2usize, 3, 4);
    let per = c * h * w;
    let mut g = graph(&[c, h, w], 0);
    // a: the image flattened (scale 1, rescaled); b: its channel means (own parameters);
    // c: a quantization at the output's parameters, flattened (copied).
    let a = push(&mut g, &[per], q(1.0, 0));
    g.ops.push(IntOp::Reshape {
        input: 0,
        output: a,
    });
    let b_q = q(0.5, -7);
    let b_rq = quantize_multiplier(1.0 / ((h * w) as f64 * 0.5)).unwrap();
    let b = push(&mut g, &[c], b_q);
    g.ops.push(IntOp::GlobalAvgPool {
        name: "gap".into(),
        input: 0,
        output: b,
        requant: b_rq,
        act_min: -128,
        act_max: 127,
    });
    let c_img = push(&mut g, &[c, h, w], out_q);
    g.ops.push(IntOp::Quantize { output: c_img });
    let c_vec = push(&mut g, &[per], out_q);
    g.ops.push(IntOp::Reshape {
        input: c_img,
        output: c_vec,
    });
    let total = 2 * per + c;
    let y = push(&mut g, &[total], out_q);
    g.ops.push(IntOp::Concat {
        name: "cat".into(),
        inputs: vec![a, b, c_vec],
        output: y,
        axis: 0,
        requant: [q(1.0, 0), b_q, out_q]
            .iter()
            .map(|p| quantize_multiplier(p.scale as f64 / out_q.scale as f64).unwrap())
            .collect(),
    });
    g.output = y;
    let n = 2;
    let x: Vec<i32> = (0..n * per).map(|_| rng.range(-128, 127)).collect();
    let got = run(g, &x);
    for s in 0..n {
        let xs = &x[s * per..(s + 1) * per];
        let mut expected: Vec<i32> = xs.iter().map(|&v| moved(v, q(1.0, 0), out_q)).collect();
        for ci in 0..c {
            let sum: i32 = xs[ci * h * w..(ci + 1) * h * w].iter().sum();
            let mean =
                ((sum as f64 * b_rq.real() + 0.5).floor() as i32 + b_q.zero_point).clamp(-128, 127);
            expected.push(moved(mean, b_q, out_q));
        }
        expected.extend(xs.iter().map(|&v| out_q.quantize(v as f32) as i32));
        let row: Vec<i32> = got[s * total..(s + 1) * total]
            .iter()
            .map(|&v| v as i32)
            .collect();
        assert_eq!(row, expected);
    }
}

#[test]
fn concat_that_does_not_fit_is_refused() {
    let mut g = graph(&[2, 3, 4], 0);
    let y = push(&mut g, &[2, 3, 9], q(1.0, 0));
    g.ops.push(IntOp::Concat {
        name: "cat".into(),
        inputs: vec![0, 0],
        output: y,
        axis: 2,
        requant: vec![quantize_multiplier(1.0).unwrap(); 2],
    });
    g.output = y;
    let err = int8::Model::validate(g, IntTensors::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("concat `cat`") && err.contains("add up to 8"),
        "{err}"
    );
}

/// `[C, H, W] * [C, 1, 1]`: each channel times its gate (the channel mean, reshaped),
/// one fixed-point requantization, rounded half up; the runtime keeps images
/// channels-last, which the gate's broadcast must follow.
#[test]
fn mul_broadcasts_channel_gates_over_the_image() {
    let mut rng = Lcg(5);
    let (c, h, w, zp_x) = (3, 2, 4, -5);
    let (gate_q, out) = (q(1.0 / 8.0, -20), q(0.6, 4));
    let mean_rq = quantize_multiplier(1.0 / ((h * w) as f64 / 8.0)).unwrap();
    let mul_rq = quantize_multiplier(1.0 / 8.0 / 0.6f32 as f64).unwrap();
    let mut g = graph(&[c, h, w], zp_x);
    let mean = push(&mut g, &[c], gate_q);
    let gate = push(&mut g, &[c, 1, 1], gate_q);
    let y = push(&mut g, &[c, h, w], out);
    g.ops.push(IntOp::GlobalAvgPool {
        name: "gap".into(),
        input: 0,
        output: mean,
        requant: mean_rq,
        act_min: -128,
        act_max: 127,
    });
    g.ops.push(IntOp::Reshape {
        input: mean,
        output: gate,
    });
    g.ops.push(IntOp::Mul {
        name: "mul".into(),
        inputs: [0, gate],
        output: y,
        requant: mul_rq,
    });
    g.output = y;
    let n = 3;
    let x: Vec<i32> = (0..n * c * h * w).map(|_| rng.range(-128, 127)).collect();
    let got = run(g, &x);
    let half_up = |v: f64| (v + 0.5).floor() as i32;
    for s in 0..n {
        for ci in 0..c {
            let at = |p: usize| x[(s * c + ci) * h * w + p];
            let sum: i32 = (0..h * w).map(|p| at(p) - zp_x).sum();
            let g = (half_up(sum as f64 * mean_rq.real()) + gate_q.zero_point).clamp(-128, 127);
            for p in 0..h * w {
                let v = (at(p) - zp_x) * (g - gate_q.zero_point);
                let exact = (half_up(v as f64 * mul_rq.real()) + out.zero_point).clamp(-128, 127);
                assert_eq!(got[(s * c + ci) * h * w + p] as i32, exact, "channel {ci}");
            }
        }
    }
}

/// One convolution's output computed directly from its definition: per output pixel and
/// channel, the sum of `(x - zp_in) * w` over the window inside the image, requantized by
/// [`kernels::Requantizer::one`]. Channels-last input and output.
#[allow(clippy::too_many_arguments)]
fn reference_conv(
    x: &[i8],
    g: &ConvGeom,
    zp_in: i32,
    w: &[i8],
    oc: usize,
    requant: &[kernels::Requantizer],
) -> Vec<i8> {
    let (cg, og) = (g.c / g.groups, oc / g.groups);
    let mut y = vec![0i8; g.oh * g.ow * oc];
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            for o in 0..oc {
                let gi = o / og;
                let mut sum = 0i32;
                for ci in 0..cg {
                    for ky in 0..g.k {
                        for kx in 0..g.k {
                            let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                            let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                let xv = x[(iy as usize * g.w + ix as usize) * g.c + gi * cg + ci];
                                sum += (xv as i32 - zp_in)
                                    * w[((o * cg + ci) * g.k + ky) * g.k + kx] as i32;
                            }
                        }
                    }
                }
                y[(oy * g.ow + ox) * oc + o] = requant[gi].one(sum, o % og);
            }
        }
    }
    y
}

#[test]
fn convolutions_equal_their_definition_on_every_path_and_isa() {
    let mut rng = Lcg(11);
    // (c, h, w, out, k, stride, pad, groups): 1×1 stride 1 (the activation as GEMM rows,
    // even channels; odd ones go through im2col), 1×1 stride 2, 3×3 and 5×5 with padding
    // "same" and "valid", strides 1 and 2, channel counts off multiples of 8 and 16, groups.
    let cases = [
        (16, 7, 5, 24, 1, 1, 0, 1),
        (22, 6, 6, 37, 1, 1, 0, 1),
        (5, 6, 7, 9, 1, 1, 0, 1),
        (12, 9, 8, 17, 1, 2, 0, 1),
        (3, 11, 10, 16, 3, 2, 1, 1),
        (13, 8, 9, 21, 3, 1, 1, 1),
        (24, 9, 7, 40, 3, 1, 0, 1),
        (6, 12, 12, 10, 5, 2, 2, 1),
        (12, 7, 7, 18, 3, 1, 1, 3),
        // Several tiles of pixels per image, the last one partial.
        (40, 10, 10, 300, 1, 1, 0, 1),
        (32, 20, 19, 64, 3, 1, 1, 1),
    ];
    for (c, h, w, oc, k, stride, pad, groups) in cases {
        let g = ConvGeom {
            c,
            h,
            w,
            oh: (h + 2 * pad - k) / stride + 1,
            ow: (w + 2 * pad - k) / stride + 1,
            k,
            stride,
            pad,
            groups,
        };
        let (cg, og) = (c / groups, oc / groups);
        let x: Vec<i8> = (0..h * w * c).map(|_| rng.range(-128, 127) as i8).collect();
        let wq: Vec<i8> = (0..oc * cg * k * k)
            .map(|_| rng.range(-127, 127) as i8)
            .collect();
        let bq: Vec<i32> = (0..oc).map(|_| rng.range(-5000, 5000)).collect();
        let rq: Vec<int8::Requant> = (0..oc)
            .map(|o| quantize_multiplier(0.002 + 0.0001 * o as f64).unwrap())
            .collect();
        let zp_in = rng.range(-128, 127);
        let (packed, requant) = plan::pack_conv(
            &wq,
            &bq,
            &rq,
            plan::ConvShape { groups, cg, og, k },
            (rng.range(-20, 20), -128, 127),
        );
        let want = reference_conv(&x, &g, zp_in, &wq, oc, &requant);
        for isa in [Isa::Portable, Isa::detect()] {
            let mut y = vec![0i8; g.oh * g.ow * oc];
            let mut buf = ConvBuffers::default();
            conv_rows(
                isa,
                &x,
                &g,
                zp_in,
                &packed,
                &requant,
                0..g.oh,
                &mut y,
                &mut buf,
            );
            assert_eq!(
                y, want,
                "{isa:?} {c}x{h}x{w} -> {oc}, k{k} s{stride} p{pad} g{groups}"
            );
            // Split in row ranges, as threads do, with the buffers of the whole image reused.
            let mut split = vec![0i8; y.len()];
            let at = g.oh / 2 * g.ow * oc;
            let (top, bottom) = split.split_at_mut(at);
            conv_rows(
                isa,
                &x,
                &g,
                zp_in,
                &packed,
                &requant,
                0..g.oh / 2,
                top,
                &mut buf,
            );
            conv_rows(
                isa,
                &x,
                &g,
                zp_in,
                &packed,
                &requant,
                g.oh / 2..g.oh,
                bottom,
                &mut buf,
            );
            assert_eq!(
                split, want,
                "{isa:?} in two row ranges, k{k} s{stride} p{pad}"
            );
        }
    }
}

#[test]
fn a_chain_holds_two_activations_at_a_time_and_computes_the_same() {
    // x -> r1 -> r2 -> r3, each a requantization by 1/2 (rounded half up): once a value's
    // last reader has run it is freed, so at most an input and an output are alive.
    let mut g = graph(&[2, 4, 4], 0);
    let half = quantize_multiplier(0.5).unwrap();
    let mut prev = 0;
    for i in 0..3 {
        let v = push(&mut g, &[2, 4, 4], q(2f32.powi(i + 1), 0));
        g.ops.push(IntOp::Requantize {
            name: format!("r{i}"),
            input: prev,
            output: v,
            requant: half,
            act_min: -128,
            act_max: 127,
        });
        prev = v;
    }
    g.output = prev;
    let model = Model::new(&int8::Model::validate(g.clone(), IntTensors::new()).unwrap());
    assert_eq!(model.activation_bytes(), (2 * 32, 4 * 32));
    let mut rng = Lcg(5);
    let x: Vec<i32> = (0..3 * 32).map(|_| rng.range(-128, 127)).collect();
    let want: Vec<i8> = x
        .iter()
        .map(|&v| {
            // Three halvings, each rounded half up, as Requant::apply does.
            let mut v = v as i64;
            for _ in 0..3 {
                v = half.apply(v as i32);
            }
            v as i8
        })
        .collect();
    // Images come back in [C, H, W] order; the input went in that order too.
    assert_eq!(run(g, &x), want);
}
