//! The int8 runtime: executes a validated [`int8::Model`] with integer kernels in pure Rust
//! (no libtorch), SIMD chosen at run time, batches split across threads by rayon.
//!
//! Internally images are kept channels-last (`[H, W, C]` per sample) so that a
//! convolution's im2col rows and its outputs are contiguous; `reshape` to a vector
//! restores the model's `[C, H, W]` order, so nothing outside sees the difference.

pub mod kernels;

use std::ops::Range;
use std::path::Path;

use rayon::prelude::*;

pub use kernels::Isa;

use crate::int8::{self, ArtifactError, IntGraph, IntOp, QParams, Requant};
use kernels::{Depthwise, Packed, Requantizer, Window};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "the model takes {expected} values per sample; got {got} values, not a multiple of it"
    )]
    InputSize { expected: usize, got: usize },
}

/// Reads, validates and plans an artifact directory (or a build directory containing `int8/`).
pub fn load(dir: &Path) -> Result<Model, ArtifactError> {
    int8::artifact::read(dir).map(|model| Model::new(&model))
}

/// Geometry of a convolution in the runtime's channels-last layout.
#[derive(Debug, Clone, Copy)]
struct ConvGeom {
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    k: usize,
    stride: usize,
    pad: usize,
    groups: usize,
}

#[derive(Debug, Clone)]
enum Step {
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

/// One input of a concatenation in the runtime's layout.
#[derive(Debug, Clone)]
struct ConcatPart {
    input: usize,
    /// Contiguous values this input adds to each outer block.
    inner: usize,
    /// `None`: same parameters as the output, copied; else `(zp_in, requant, zp_out, qmin, qmax)`.
    rescale: Option<(i32, Requant, i32, i32, i32)>,
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

/// An integer model ready to run: its graph and the execution plan built from it.
#[derive(Debug, Clone)]
pub struct Model {
    graph: IntGraph,
    steps: Vec<Step>,
    /// Elements per sample of each value.
    sizes: Vec<usize>,
    isa: Isa,
}

fn numel(shape: &[usize]) -> usize {
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
                        let mut packed = Vec::with_capacity(g);
                        let mut rqs = Vec::with_capacity(g);
                        for gi in 0..g {
                            // [o][c][ky][kx] → [o][ky][kx][c], the order of channels-last im2col rows.
                            let kk = k * k * cg;
                            let mut wg = vec![0i8; og * kk];
                            for o in 0..og {
                                for ci in 0..cg {
                                    for t in 0..k * k {
                                        wg[o * kk + t * cg + ci] =
                                            wq[((gi * og + o) * cg + ci) * k * k + t];
                                    }
                                }
                            }
                            packed.push(Packed::new(&wg, og, kk));
                            let range = gi * og..(gi + 1) * og;
                            rqs.push(Requantizer::new(
                                bq[range.clone()].to_vec(),
                                requant[range].to_vec(),
                                out.quant.zero_point,
                                *act_min,
                                *act_max,
                            ));
                        }
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
            .collect();
        Model {
            graph: graph.clone(),
            steps,
            sizes: graph.values.iter().map(|v| numel(&v.shape)).collect(),
            isa: Isa::detect(),
        }
    }

    /// The integer graph this model runs.
    pub fn graph(&self) -> &IntGraph {
        &self.graph
    }
    /// Uses the given kernels (for tests and benchmarks); the CPU must support them.
    pub fn with_isa(mut self, isa: Isa) -> Model {
        self.isa = if isa.available() { isa } else { Isa::Portable };
        self
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Values per sample of the input.
    pub fn input_len(&self) -> usize {
        numel(&self.graph.input.shape)
    }

    /// Values per sample of the output.
    pub fn output_len(&self) -> usize {
        self.sizes[self.graph.output]
    }

    pub fn output_quant(&self) -> QParams {
        self.graph.values[self.graph.output].quant
    }

    /// The parameters the float input is quantized with (the integer graph's first value).
    pub fn input_quant(&self) -> QParams {
        self.graph
            .ops
            .iter()
            .find_map(|op| match op {
                IntOp::Quantize { output } => Some(self.graph.values[*output].quant),
                _ => None,
            })
            .expect("a loaded graph quantizes its input")
    }

    /// Runs a batch of float inputs `[N, ...input shape]` (pixels / 255) and returns the
    /// int8 outputs `[N, ...output shape]`. Batches are split across rayon's threads.
    pub fn run(&self, input: &[f32]) -> Result<Vec<i8>, RuntimeError> {
        let per_in = self.input_len();
        if !input.len().is_multiple_of(per_in) {
            return Err(RuntimeError::InputSize {
                expected: per_in,
                got: input.len(),
            });
        }
        let n = input.len() / per_in;
        let per_out = self.output_len();
        let mut out = vec![0i8; n * per_out];
        if n == 0 {
            return Ok(out);
        }
        let chunk = n.div_ceil(rayon::current_num_threads()).clamp(1, 64);
        out.par_chunks_mut(chunk * per_out)
            .zip(input.par_chunks(chunk * per_in))
            .for_each(|(o, x)| self.run_chunk(x, o));
        Ok(out)
    }

    /// Like [`Model::run`] on 8-bit pixels, scaled to [0, 1] as training does (`p / 255`).
    pub fn run_pixels(&self, pixels: &[u8]) -> Result<Vec<i8>, RuntimeError> {
        let x: Vec<f32> = pixels.iter().map(|&p| p as f32 / 255.0).collect();
        self.run(&x)
    }

    /// The index of the largest output of each sample (the first one on ties, as libtorch).
    pub fn argmax(&self, outputs: &[i8]) -> Vec<usize> {
        outputs
            .chunks(self.output_len())
            .map(|row| {
                row.iter()
                    .enumerate()
                    .fold(
                        (0, i8::MIN),
                        |best, (i, &v)| if v > best.1 { (i, v) } else { best },
                    )
                    .0
            })
            .collect()
    }

    fn run_chunk(&self, input: &[f32], out: &mut [i8]) {
        let n = input.len() / self.input_len();
        let mut values: Vec<Vec<i8>> = vec![Vec::new(); self.sizes.len()];
        for step in &self.steps {
            let (output, data) = self.step(step, &values, input, n);
            values[output] = data;
        }
        let y = &values[self.graph.output];
        match self.graph.values[self.graph.output].shape[..] {
            // Images leave in the model's [C, H, W] order.
            [c, h, w] => {
                for (o, y) in out.chunks_mut(c * h * w).zip(y.chunks(c * h * w)) {
                    hwc_to_chw(y, (h, w, c), o);
                }
            }
            _ => out.copy_from_slice(y),
        }
    }

    fn step(&self, step: &Step, values: &[Vec<i8>], input: &[f32], n: usize) -> (usize, Vec<i8>) {
        let isa = self.isa;
        match step {
            // Elementwise, so the layout does not matter.
            Step::Lookup {
                input,
                output,
                table,
            } => {
                let y = values[*input]
                    .iter()
                    .map(|&x| table[(x as i32 + 128) as usize])
                    .collect();
                (*output, y)
            }
            Step::Quantize { output, quant, chw } => {
                let mut y = vec![0i8; n * self.sizes[*output]];
                match *chw {
                    Some((c, h, w)) => {
                        for (x, y) in input.chunks(c * h * w).zip(y.chunks_mut(c * h * w)) {
                            for ci in 0..c {
                                for p in 0..h * w {
                                    y[p * c + ci] = quant.quantize(x[ci * h * w + p]);
                                }
                            }
                        }
                    }
                    None => y
                        .iter_mut()
                        .zip(input)
                        .for_each(|(y, &x)| *y = quant.quantize(x)),
                }
                (*output, y)
            }
            Step::Conv {
                input,
                output,
                geom,
                zp_in,
                packed,
                requant,
            } => {
                let g = geom;
                let oc = packed[0].out * g.groups;
                let pixels = g.oh * g.ow;
                let mut y = vec![0i8; n * pixels * oc];
                let per_image = values[*input].chunks(g.h * g.w * g.c);
                let conv = |x: &[i8], rows: Range<usize>, y: &mut [i8], buf: &mut ConvBuffers| {
                    conv_rows(isa, x, g, *zp_in, packed, requant, rows, y, buf)
                };
                if let Some(part) = rows_per_thread(n, g.oh) {
                    // One image: its output rows are shared out among the threads.
                    let x = &values[*input][..g.h * g.w * g.c];
                    y.par_chunks_mut(part * g.ow * oc)
                        .enumerate()
                        .for_each(|(i, y)| {
                            let rows = i * part..(i * part + part).min(g.oh);
                            conv(x, rows, y, &mut ConvBuffers::default())
                        });
                } else {
                    let mut buf = ConvBuffers::default();
                    for (x, y) in per_image.zip(y.chunks_mut(pixels * oc)) {
                        conv(x, 0..g.oh, y, &mut buf);
                    }
                }
                (*output, y)
            }
            Step::Depthwise {
                input,
                output,
                window,
                zp_in,
                weights,
                requant,
            } => {
                let (c, pixels) = (weights.channels, window.oh * window.ow);
                let mut y = vec![0i8; n * pixels * c];
                let image = window.h * window.w * c;
                let dw = |x: &[i8], rows: Range<usize>, y: &mut [i8], acc: &mut Vec<i32>| {
                    acc.resize(rows.len() * window.ow * weights.cp, 0);
                    kernels::depthwise(isa, x, *window, rows.clone(), *zp_in, weights, acc);
                    requant.rows(isa, acc, rows.len() * window.ow, weights.cp, y);
                };
                if let Some(part) = rows_per_thread(n, window.oh) {
                    let x = &values[*input][..image];
                    y.par_chunks_mut(part * window.ow * c)
                        .enumerate()
                        .for_each(|(i, y)| {
                            let rows = i * part..(i * part + part).min(window.oh);
                            dw(x, rows, y, &mut Vec::new())
                        });
                } else {
                    let mut acc = Vec::new();
                    for (x, y) in values[*input].chunks(image).zip(y.chunks_mut(pixels * c)) {
                        dw(x, 0..window.oh, y, &mut acc);
                    }
                }
                (*output, y)
            }
            Step::Dense {
                input,
                output,
                zp_in,
                packed,
                requant,
            } => {
                let k = packed.k;
                let mut a = vec![0i16; n * packed.kp];
                for (row, x) in a.chunks_mut(packed.kp).zip(values[*input].chunks(k)) {
                    for (a, &x) in row.iter_mut().zip(x) {
                        *a = x as i16 - *zp_in as i16;
                    }
                }
                let mut acc = vec![0i32; n * packed.acc_stride()];
                kernels::gemm(isa, &a, n, packed, &mut acc);
                let mut y = vec![0i8; n * packed.out];
                requant.rows(isa, &acc, n, packed.acc_stride(), &mut y);
                (*output, y)
            }
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
            } => {
                let (c, h, w, oh, ow, size, stride) = (*c, *h, *w, *oh, *ow, *size, *stride);
                let mut y = vec![i8::MIN; n * oh * ow * c];
                for (x, y) in values[*input]
                    .chunks(h * w * c)
                    .zip(y.chunks_mut(oh * ow * c))
                {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let dst = &mut y[(oy * ow + ox) * c..(oy * ow + ox + 1) * c];
                            for ky in 0..size {
                                for kx in 0..size {
                                    let src = ((oy * stride + ky) * w + ox * stride + kx) * c;
                                    for (d, &s) in dst.iter_mut().zip(&x[src..src + c]) {
                                        *d = (*d).max(s);
                                    }
                                }
                            }
                        }
                    }
                }
                (*output, y)
            }
            Step::Reshape {
                input,
                output,
                gather,
            } => {
                let x = &values[*input];
                match gather {
                    Some(gather) => {
                        let per = gather.len();
                        let mut y = vec![0i8; x.len()];
                        for (x, y) in x.chunks(per).zip(y.chunks_mut(per)) {
                            for (y, &g) in y.iter_mut().zip(gather) {
                                *y = x[g as usize];
                            }
                        }
                        (*output, y)
                    }
                    None => (*output, x.clone()),
                }
            }
            Step::Mul {
                inputs,
                output,
                gather,
                zp,
                rq,
                lo,
                hi,
            } => {
                let per = self.sizes[*output];
                let (pa, pb) = (self.sizes[inputs[0]], self.sizes[inputs[1]]);
                let (a, b) = (&values[inputs[0]], &values[inputs[1]]);
                let mut y = vec![0i8; n * per];
                for (s, y) in y.chunks_mut(per).enumerate() {
                    let (a, b) = (&a[s * pa..(s + 1) * pa], &b[s * pb..(s + 1) * pb]);
                    for ((y, &ga), &gb) in y.iter_mut().zip(&gather[0]).zip(&gather[1]) {
                        let v = (a[ga as usize] as i32 - zp[0]) * (b[gb as usize] as i32 - zp[1]);
                        *y = (rq.apply(v) + zp[2] as i64).clamp(*lo as i64, *hi as i64) as i8;
                    }
                }
                (*output, y)
            }
            Step::Add {
                inputs,
                output,
                zp,
                mult,
                shift,
                lo,
                hi,
            } => {
                let round = 1i64 << (shift - 1);
                let y = values[inputs[0]]
                    .iter()
                    .zip(&values[inputs[1]])
                    .map(|(&a, &b)| {
                        let v = (a as i64 - zp[0] as i64) * mult[0] as i64
                            + (b as i64 - zp[1] as i64) * mult[1] as i64;
                        (((v + round) >> shift) + zp[2] as i64).clamp(*lo as i64, *hi as i64) as i8
                    })
                    .collect();
                (*output, y)
            }
            Step::Requantize {
                input,
                output,
                zp_in,
                zp,
                rq,
                lo,
                hi,
            } => {
                let y = values[*input]
                    .iter()
                    .map(|&x| {
                        (rq.apply(x as i32 - zp_in) + *zp as i64).clamp(*lo as i64, *hi as i64)
                            as i8
                    })
                    .collect();
                (*output, y)
            }
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
            } => {
                let (c, h, w, oh, ow, size, stride) = (*c, *h, *w, *oh, *ow, *size, *stride);
                let count = (size * size) as i32;
                let mut y = vec![0i8; n * oh * ow * c];
                let mut acc = vec![0i32; c];
                for (x, y) in values[*input]
                    .chunks(h * w * c)
                    .zip(y.chunks_mut(oh * ow * c))
                {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            acc.fill(0);
                            for ky in 0..size {
                                for kx in 0..size {
                                    let src = ((oy * stride + ky) * w + ox * stride + kx) * c;
                                    for (a, &s) in acc.iter_mut().zip(&x[src..src + c]) {
                                        *a += s as i32;
                                    }
                                }
                            }
                            let dst = &mut y[(oy * ow + ox) * c..(oy * ow + ox + 1) * c];
                            for (d, &a) in dst.iter_mut().zip(&acc) {
                                *d = kernels::div_round_away(a, count).clamp(-128, 127) as i8;
                            }
                        }
                    }
                }
                (*output, y)
            }
            Step::GlobalAvgPool {
                input,
                output,
                c,
                hw,
                zp_in,
                zp,
                rq,
                lo,
                hi,
            } => {
                let (c, hw) = (*c, *hw);
                let mut y = vec![0i8; n * c];
                let mut acc = vec![0i32; c];
                for (x, y) in values[*input].chunks(hw * c).zip(y.chunks_mut(c)) {
                    acc.fill(-zp_in * hw as i32);
                    for px in x.chunks(c) {
                        for (a, &v) in acc.iter_mut().zip(px) {
                            *a += v as i32;
                        }
                    }
                    for (d, &a) in y.iter_mut().zip(&acc) {
                        *d = (rq.apply(a) + *zp as i64).clamp(*lo as i64, *hi as i64) as i8;
                    }
                }
                (*output, y)
            }
            Step::Concat {
                output,
                outer,
                parts,
            } => {
                let per: usize = parts.iter().map(|p| p.inner).sum::<usize>() * outer;
                let mut y = Vec::with_capacity(n * per);
                for s in 0..n {
                    for o in 0..*outer {
                        for p in parts {
                            let start = (s * outer + o) * p.inner;
                            let x = &values[p.input][start..start + p.inner];
                            match p.rescale {
                                None => y.extend_from_slice(x),
                                Some((zp_in, rq, zp, lo, hi)) => y.extend(x.iter().map(|&v| {
                                    (rq.apply(v as i32 - zp_in) + zp as i64)
                                        .clamp(lo as i64, hi as i64)
                                        as i8
                                })),
                            }
                        }
                    }
                }
                (*output, y)
            }
        }
    }
}

/// With a single image and several threads, how many output rows each thread computes;
/// None when images are already spread over the threads (batches) or there is one thread.
fn rows_per_thread(images: usize, rows: usize) -> Option<usize> {
    let threads = rayon::current_num_threads();
    (images == 1 && threads > 1 && rows > 1).then(|| rows.div_ceil(threads))
}

/// Scratch space of one convolution worker, reused from image to image.
#[derive(Default)]
struct ConvBuffers {
    cols: Vec<i16>,
    acc: Vec<i32>,
    part: Vec<i8>,
}

/// Output rows `rows` of one image's convolution into `y` (`rows.len() * ow` pixels of
/// all output channels): per group, im2col, GEMM and requantization.
#[allow(clippy::too_many_arguments)]
fn conv_rows(
    isa: Isa,
    x: &[i8],
    g: &ConvGeom,
    zp_in: i32,
    packed: &[Packed],
    requant: &[Requantizer],
    rows: Range<usize>,
    y: &mut [i8],
    buf: &mut ConvBuffers,
) {
    let (cg, og) = (g.c / g.groups, packed[0].out);
    let oc = og * g.groups;
    let pixels = rows.len() * g.ow;
    let kp = packed[0].kp;
    buf.cols.resize(pixels * kp, 0);
    buf.acc.resize(pixels * packed[0].acc_stride(), 0);
    buf.part
        .resize(if g.groups == 1 { 0 } else { pixels * og }, 0);
    for gi in 0..g.groups {
        im2col(x, g, rows.clone(), gi * cg, cg, zp_in, kp, &mut buf.cols);
        kernels::gemm(isa, &buf.cols, pixels, &packed[gi], &mut buf.acc);
        if g.groups == 1 {
            requant[0].rows(isa, &buf.acc, pixels, packed[0].acc_stride(), y);
        } else {
            requant[gi].rows(
                isa,
                &buf.acc,
                pixels,
                packed[gi].acc_stride(),
                &mut buf.part,
            );
            for p in 0..pixels {
                y[p * oc + gi * og..p * oc + (gi + 1) * og]
                    .copy_from_slice(&buf.part[p * og..(p + 1) * og]);
            }
        }
    }
}

/// Channels-last im2col of one group over output rows `rows`: row `p` holds `(x - zp)`
/// for every `(ky, kx, c)` of pixel `p`'s window (zero where the window leaves the
/// image), then zeros up to `kp`.
#[allow(clippy::too_many_arguments)]
fn im2col(
    x: &[i8],
    g: &ConvGeom,
    rows: Range<usize>,
    c0: usize,
    cg: usize,
    zp: i32,
    kp: usize,
    cols: &mut [i16],
) {
    let zp = zp as i16;
    for (r, oy) in rows.enumerate() {
        for ox in 0..g.ow {
            let row = &mut cols[(r * g.ow + ox) * kp..(r * g.ow + ox + 1) * kp];
            let mut i = 0;
            for ky in 0..g.k {
                let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                for kx in 0..g.k {
                    let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                    let dst = &mut row[i..i + cg];
                    if iy < 0 || ix < 0 || iy as usize >= g.h || ix as usize >= g.w {
                        dst.fill(0);
                    } else {
                        let src = (iy as usize * g.w + ix as usize) * g.c + c0;
                        for (d, &s) in dst.iter_mut().zip(&x[src..src + cg]) {
                            *d = s as i16 - zp;
                        }
                    }
                    i += cg;
                }
            }
            row[i..].fill(0);
        }
    }
}

fn hwc_to_chw(x: &[i8], (h, w, c): (usize, usize, usize), y: &mut [i8]) {
    for p in 0..h * w {
        for ci in 0..c {
            y[ci * h * w + p] = x[p * c + ci];
        }
    }
}

#[cfg(test)]
mod tests;
