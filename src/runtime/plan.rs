//! Planning: a validated integer graph becomes the runtime's steps, with weights packed
//! for the kernels and every op laid out channels-last.

use super::kernels::{Depthwise, Isa, Packed, Requantizer, Window};
use super::Model;
use crate::int8::{self, IntOp, QParams, Requant};

/// Geometry of a convolution in the runtime's channels-last layout.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConvGeom {
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
    pub(super) k: usize,
    pub(super) stride: usize,
    pub(super) pad: usize,
    pub(super) groups: usize,
}

#[derive(Debug, Clone)]
pub(super) enum Step {
    Quantize {
        output: usize,
        quant: QParams,
        chw: Option<(usize, usize, usize)>,
    },
    Conv {
        input: usize,
        output: usize,
        geom: ConvGeom,
        zp_in: i32,
        packed: Vec<Packed>,
        requant: Vec<Requantizer>,
    },
    /// A convolution with one filter per channel (groups = channels = filters).
    Depthwise {
        input: usize,
        output: usize,
        window: Window,
        zp_in: i32,
        weights: Depthwise,
        requant: Requantizer,
    },
    Dense {
        input: usize,
        output: usize,
        zp_in: i32,
        packed: Packed,
        requant: Requantizer,
    },
    MaxPool {
        input: usize,
        output: usize,
        c: usize,
        h: usize,
        w: usize,
        oh: usize,
        ow: usize,
        size: usize,
        stride: usize,
    },
    /// Zero padding in the channels-last layout: new pixels hold `zp` (real 0).
    Pad {
        input: usize,
        output: usize,
        c: usize,
        h: usize,
        w: usize,
        size: usize,
        zp: i8,
    },
    Reshape {
        input: usize,
        output: usize,
        /// Per output element (runtime layout), the input element it copies; `None`
        /// when the layouts agree and the bytes are copied as they are.
        gather: Option<Vec<u32>>,
    },
    Mul {
        inputs: [usize; 2],
        output: usize,
        /// Per output element (runtime layout), the element of each input it reads.
        gather: [Vec<u32>; 2],
        zp: [i32; 3],
        rq: Requant,
        lo: i32,
        hi: i32,
    },
    Add {
        inputs: [usize; 2],
        output: usize,
        zp: [i32; 3],
        mult: [i32; 2],
        shift: u32,
        lo: i32,
        hi: i32,
    },
    Requantize {
        input: usize,
        output: usize,
        zp_in: i32,
        zp: i32,
        rq: Requant,
        lo: i32,
        hi: i32,
    },
    AvgPool {
        input: usize,
        output: usize,
        c: usize,
        h: usize,
        w: usize,
        oh: usize,
        ow: usize,
        size: usize,
        stride: usize,
    },
    GlobalAvgPool {
        input: usize,
        output: usize,
        c: usize,
        hw: usize,
        zp_in: i32,
        zp: i32,
        rq: Requant,
        lo: i32,
        hi: i32,
    },
    Lookup {
        input: usize,
        output: usize,
        table: Vec<i8>,
    },
    Concat {
        output: usize,
        /// Runtime-layout blocks per sample: each holds one slice of every part in turn.
        outer: usize,
        parts: Vec<ConcatPart>,
    },
}

impl Step {
    /// The value this step writes.
    pub(super) fn output(&self) -> usize {
        match self {
            Step::Quantize { output, .. }
            | Step::Conv { output, .. }
            | Step::Depthwise { output, .. }
            | Step::Dense { output, .. }
            | Step::MaxPool { output, .. }
            | Step::Pad { output, .. }
            | Step::Reshape { output, .. }
            | Step::Requantize { output, .. }
            | Step::AvgPool { output, .. }
            | Step::GlobalAvgPool { output, .. }
            | Step::Lookup { output, .. }
            | Step::Mul { output, .. }
            | Step::Add { output, .. }
            | Step::Concat { output, .. } => *output,
        }
    }

    /// The values this step reads.
    pub(super) fn inputs(&self) -> Vec<usize> {
        match self {
            Step::Quantize { .. } => Vec::new(),
            Step::Conv { input, .. }
            | Step::Depthwise { input, .. }
            | Step::Dense { input, .. }
            | Step::MaxPool { input, .. }
            | Step::Pad { input, .. }
            | Step::Reshape { input, .. }
            | Step::Requantize { input, .. }
            | Step::AvgPool { input, .. }
            | Step::GlobalAvgPool { input, .. }
            | Step::Lookup { input, .. } => vec![*input],
            Step::Mul { inputs, .. } | Step::Add { inputs, .. } => inputs.to_vec(),
            Step::Concat { parts, .. } => parts.iter().map(|p| p.input).collect(),
        }
    }
}

/// For each step, the values whose last reader it is (the graph's output excepted): what
/// can be freed once it has run, so that a chunk holds only the activations still needed.
fn last_uses(steps: &[Step], values: usize, output: usize) -> Vec<Vec<usize>> {
    let mut last = vec![None; values];
    for (i, step) in steps.iter().enumerate() {
        for v in step.inputs() {
            last[v] = Some(i);
        }
    }
    let mut freed = vec![Vec::new(); steps.len()];
    for (v, at) in last.into_iter().enumerate() {
        if let (Some(at), false) = (at, v == output) {
            freed[at].push(v);
        }
    }
    freed
}

/// One input of a concatenation in the runtime's layout.
#[derive(Debug, Clone)]
pub(super) struct ConcatPart {
    pub(super) input: usize,
    /// Contiguous values this input adds to each outer block.
    pub(super) inner: usize,
    /// `None`: same parameters as the output, copied; else `(zp_in, requant, zp_out, qmin, qmax)`.
    pub(super) rescale: Option<(i32, Requant, i32, i32, i32)>,
}

/// A per-sample `[C, H, W]` / `[F]` axis as an axis of the runtime's layout (`[H, W, C]` / `[F]`).
fn runtime_axis(rank: usize, axis: usize) -> usize {
    if rank == 3 {
        [2, 0, 1][axis]
    } else {
        axis
    }
}

/// A per-sample shape in the runtime's layout.
fn runtime_shape(shape: &[usize]) -> Vec<usize> {
    match shape[..] {
        [c, h, w] => vec![h, w, c],
        _ => shape.to_vec(),
    }
}

/// For each element in the model's row-major order, its offset in the runtime layout.
fn runtime_offsets(shape: &[usize]) -> Vec<usize> {
    match shape[..] {
        [c, h, w] => (0..c * h * w)
            .map(|i| (i % (h * w)) * c + i / (h * w))
            .collect(),
        _ => (0..numel(shape)).collect(),
    }
}

/// Per element of `out` (runtime layout), the runtime-layout offset of the element of
/// `input` it reads under NumPy broadcasting (equal ranks, 1 stretches).
fn broadcast_gather(input: &[usize], out: &[usize]) -> Vec<u32> {
    let (from, to) = (runtime_offsets(input), runtime_offsets(out));
    let mut gather = vec![0u32; to.len()];
    for (i, &dst) in to.iter().enumerate() {
        // Row-major index of the same position in `input`, stretched dimensions read 0.
        let (mut rest, mut src, mut stride) = (i, 0, 1);
        for (&d, &o) in input.iter().zip(out).rev() {
            let m = rest % o;
            rest /= o;
            if d != 1 {
                src += m * stride;
            }
            stride *= d;
        }
        gather[dst] = from[src] as u32;
    }
    gather
}

/// The weight shape of a (grouped) convolution: `groups` groups of `og` filters over
/// `cg` channels, `k×k` taps.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConvShape {
    pub(super) groups: usize,
    pub(super) cg: usize,
    pub(super) og: usize,
    pub(super) k: usize,
}

/// Per group, the convolution's weights `[o][c][ky][kx]` packed in the order of
/// channels-last im2col rows (`[o][ky][kx][c]`), and its requantizer (output zero
/// point, clamps `(zero_point, lo, hi)`).
pub(super) fn pack_conv(
    wq: &[i8],
    bq: &[i32],
    requant: &[Requant],
    s: ConvShape,
    (zero_point, lo, hi): (i32, i32, i32),
) -> (Vec<Packed>, Vec<Requantizer>) {
    let ConvShape { groups, cg, og, k } = s;
    let kk = k * k * cg;
    (0..groups)
        .map(|gi| {
            let mut wg = vec![0i8; og * kk];
            for o in 0..og {
                for ci in 0..cg {
                    for t in 0..k * k {
                        wg[o * kk + t * cg + ci] = wq[((gi * og + o) * cg + ci) * k * k + t];
                    }
                }
            }
            let range = gi * og..(gi + 1) * og;
            (
                Packed::new(&wg, og, kk),
                Requantizer::new(
                    bq[range.clone()].to_vec(),
                    requant[range].to_vec(),
                    zero_point,
                    lo,
                    hi,
                ),
            )
        })
        .unzip()
}

pub(super) fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// `(C, H, W)` of an image shape; validation made every shape an image op reads one.
fn image(shape: &[usize]) -> (usize, usize, usize) {
    match shape[..] {
        [c, h, w] => (c, h, w),
        _ => unreachable!("validated: image ops read [C, H, W] values, not {shape:?}"),
    }
}

impl Model {
    /// Builds the execution plan of a validated model: packs weights for the kernels and
    /// lays each op out in the runtime's channels-last layout.
    pub fn new(model: &int8::Model) -> Model {
        let graph = model.graph();
        let value = |v: usize| &graph.values[v];
        let steps = graph
            .ops
            .iter()
            .map(|op| {
                let out = value(op.output());
                #[deny(clippy::wildcard_enum_match_arm)]
                match op {
                    IntOp::Lookup {
                        input,
                        output,
                        table,
                        ..
                    } => Step::Lookup {
                        input: *input,
                        output: *output,
                        table: table.clone(),
                    },
                    IntOp::Quantize { output } => {
                        let chw = match out.shape[..] {
                            [c, h, w] => Some((c, h, w)),
                            _ => None,
                        };
                        Step::Quantize {
                            output: *output,
                            quant: out.quant,
                            chw,
                        }
                    }
                    IntOp::Conv2d {
                        input,
                        output,
                        weight,
                        bias,
                        out_channels,
                        kernel,
                        stride,
                        pad,
                        groups,
                        requant,
                        act_min,
                        act_max,
                        ..
                    } => {
                        let inp = value(*input);
                        let (c, h, w) = image(&inp.shape);
                        let (k, s, p, g) = (*kernel, *stride, *pad, *groups);
                        let geom = ConvGeom {
                            c,
                            h,
                            w,
                            oh: (h + 2 * p - k) / s + 1,
                            ow: (w + 2 * p - k) / s + 1,
                            k,
                            stride: s,
                            pad: p,
                            groups: g,
                        };
                        let (cg, og) = (c / g, out_channels / g);
                        let (wq, bq) = model.linear_params(weight, bias);
                        if g > 1 && cg == 1 && og == 1 {
                            return Step::Depthwise {
                                input: *input,
                                output: *output,
                                window: Window {
                                    h,
                                    w,
                                    oh: geom.oh,
                                    ow: geom.ow,
                                    k,
                                    stride: s,
                                    pad: p,
                                },
                                zp_in: inp.quant.zero_point,
                                weights: Depthwise::new(wq, c, k * k),
                                requant: Requantizer::new(
                                    bq.to_vec(),
                                    requant.clone(),
                                    out.quant.zero_point,
                                    *act_min,
                                    *act_max,
                                ),
                            };
                        }
                        let (packed, rqs) = pack_conv(
                            wq,
                            bq,
                            requant,
                            ConvShape {
                                groups: g,
                                cg,
                                og,
                                k,
                            },
                            (out.quant.zero_point, *act_min, *act_max),
                        );
                        Step::Conv {
                            input: *input,
                            output: *output,
                            geom,
                            zp_in: inp.quant.zero_point,
                            packed,
                            requant: rqs,
                        }
                    }
                    IntOp::Dense {
                        input,
                        output,
                        weight,
                        bias,
                        in_features,
                        out_features,
                        requant,
                        act_min,
                        act_max,
                        ..
                    } => {
                        let (wq, bq) = model.linear_params(weight, bias);
                        Step::Dense {
                            input: *input,
                            output: *output,
                            zp_in: value(*input).quant.zero_point,
                            packed: Packed::new(wq, *out_features, *in_features),
                            requant: Requantizer::new(
                                bq.to_vec(),
                                requant.clone(),
                                out.quant.zero_point,
                                *act_min,
                                *act_max,
                            ),
                        }
                    }
                    IntOp::MaxPool2d {
                        input,
                        output,
                        size,
                        stride,
                    }
                    | IntOp::AvgPool2d {
                        input,
                        output,
                        size,
                        stride,
                    } => {
                        let (c, h, w) = image(&value(*input).shape);
                        let (input, output, size, stride) = (*input, *output, *size, *stride);
                        let (oh, ow) = ((h - size) / stride + 1, (w - size) / stride + 1);
                        if matches!(op, IntOp::MaxPool2d { .. }) {
                            Step::MaxPool {
                                input,
                                output,
                                c,
                                h,
                                w,
                                oh,
                                ow,
                                size,
                                stride,
                            }
                        } else {
                            Step::AvgPool {
                                input,
                                output,
                                c,
                                h,
                                w,
                                oh,
                                ow,
                                size,
                                stride,
                            }
                        }
                    }
                    IntOp::Pad {
                        input,
                        output,
                        size,
                    } => {
                        let (c, h, w) = image(&value(*input).shape);
                        // Validated: the output keeps the input's parameters, in int8's range.
                        let zp = value(*input).quant.zero_point.clamp(-128, 127) as i8;
                        Step::Pad {
                            input: *input,
                            output: *output,
                            c,
                            h,
                            w,
                            size: *size,
                            zp,
                        }
                    }
                    IntOp::Reshape { input, output } => {
                        // Row-major order is what a reshape keeps.
                        let (from, to) = (
                            runtime_offsets(&value(*input).shape),
                            runtime_offsets(&out.shape),
                        );
                        let mut gather = vec![0u32; to.len()];
                        for (&f, &t) in from.iter().zip(&to) {
                            gather[t] = f as u32;
                        }
                        let copy = gather.iter().enumerate().all(|(i, &g)| g as usize == i);
                        Step::Reshape {
                            input: *input,
                            output: *output,
                            gather: (!copy).then_some(gather),
                        }
                    }
                    IntOp::Mul {
                        inputs,
                        output,
                        requant,
                        ..
                    } => Step::Mul {
                        inputs: *inputs,
                        output: *output,
                        gather: inputs.map(|i| broadcast_gather(&value(i).shape, &out.shape)),
                        zp: [
                            value(inputs[0]).quant.zero_point,
                            value(inputs[1]).quant.zero_point,
                            out.quant.zero_point,
                        ],
                        rq: *requant,
                        lo: out.quant.qmin,
                        hi: out.quant.qmax,
                    },
                    IntOp::Add {
                        inputs,
                        output,
                        multipliers,
                        shift,
                        act_min,
                        act_max,
                        ..
                    } => Step::Add {
                        inputs: *inputs,
                        output: *output,
                        zp: [
                            value(inputs[0]).quant.zero_point,
                            value(inputs[1]).quant.zero_point,
                            out.quant.zero_point,
                        ],
                        mult: *multipliers,
                        shift: *shift,
                        lo: *act_min,
                        hi: *act_max,
                    },
                    IntOp::Requantize {
                        input,
                        output,
                        requant,
                        act_min,
                        act_max,
                        ..
                    } => Step::Requantize {
                        input: *input,
                        output: *output,
                        zp_in: value(*input).quant.zero_point,
                        zp: out.quant.zero_point,
                        rq: *requant,
                        lo: *act_min,
                        hi: *act_max,
                    },
                    IntOp::GlobalAvgPool {
                        input,
                        output,
                        requant,
                        act_min,
                        act_max,
                        ..
                    } => {
                        let inp = value(*input);
                        let (c, h, w) = image(&inp.shape);
                        Step::GlobalAvgPool {
                            input: *input,
                            output: *output,
                            c,
                            hw: h * w,
                            zp_in: inp.quant.zero_point,
                            zp: out.quant.zero_point,
                            rq: *requant,
                            lo: *act_min,
                            hi: *act_max,
                        }
                    }
                    IntOp::Concat {
                        inputs,
                        output,
                        axis,
                        requant,
                        ..
                    } => {
                        let ax = runtime_axis(out.shape.len(), *axis);
                        let outer = numel(&runtime_shape(&out.shape)[..ax]);
                        let q = out.quant;
                        let parts = inputs
                            .iter()
                            .zip(requant)
                            .map(|(&i, rq)| {
                                let v = value(i);
                                ConcatPart {
                                    input: i,
                                    inner: numel(&runtime_shape(&v.shape)[ax..]),
                                    rescale: (v.quant != q).then_some((
                                        v.quant.zero_point,
                                        *rq,
                                        q.zero_point,
                                        q.qmin,
                                        q.qmax,
                                    )),
                                }
                            })
                            .collect();
                        Step::Concat {
                            output: *output,
                            outer,
                            parts,
                        }
                    }
                }
            })
            .collect::<Vec<_>>();
        Model {
            graph: graph.clone(),
            freed_after: last_uses(&steps, graph.values.len(), graph.output),
            steps,
            sizes: graph.values.iter().map(|v| numel(&v.shape)).collect(),
            isa: Isa::detect(),
        }
    }
}
