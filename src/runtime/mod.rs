//! The int8 runtime: executes an [`IntGraph`] with integer kernels in pure Rust
//! (no libtorch), SIMD chosen at run time, batches split across threads by rayon.
//!
//! Internally images are kept channels-last (`[H, W, C]` per sample) so that a
//! convolution's im2col rows and its outputs are contiguous; `reshape` to a vector
//! restores the model's `[C, H, W]` order, so nothing outside sees the difference.

pub mod artifact;
pub mod kernels;

use rayon::prelude::*;

pub use artifact::{load, save};
pub use kernels::Isa;

use crate::lower::graph::{self, IntGraph, IntOp, IntTensor, IntTensors, QParams, Requant};
use kernels::{Packed, Requantizer};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid int8 model: {0}")]
    Invalid(String),
    #[error(
        "the model takes {expected} values per sample; got {got} values, not a multiple of it"
    )]
    InputSize { expected: usize, got: usize },
    #[error("cannot read {path}: {why}")]
    Read { path: String, why: String },
    #[error("cannot write {path}: {why}")]
    Write { path: String, why: String },
    #[error("{path} is int8 artifact version {found}, this qatc reads version {expected}\n  hint: rebuild it with this qatc (`qatc build`)")]
    Version {
        path: String,
        found: String,
        expected: u32,
    },
}

fn invalid(why: impl Into<String>) -> RuntimeError {
    RuntimeError::Invalid(why.into())
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
        hwc: Option<(usize, usize, usize)>,
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

/// A validated integer model ready to run.
#[derive(Debug, Clone)]
pub struct Model {
    pub graph: IntGraph,
    steps: Vec<Step>,
    /// Elements per sample of each value.
    sizes: Vec<usize>,
    isa: Isa,
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

fn get<'a>(tensors: &'a IntTensors, name: &str, op: &str) -> Result<&'a IntTensor, RuntimeError> {
    tensors
        .get(name)
        .ok_or_else(|| invalid(format!("{op}: tensor `{name}` is missing")))
}

fn check_requant(op: &str, rq: &[Requant], expected: usize) -> Result<(), RuntimeError> {
    if rq.len() != expected {
        return Err(invalid(format!(
            "{op}: {} requantization multipliers for {expected} channels",
            rq.len()
        )));
    }
    for r in rq {
        if r.multiplier < 0 || !(1..=62).contains(&r.shift) {
            return Err(invalid(format!(
                "{op}: multiplier {} with shift {} is out of range",
                r.multiplier, r.shift
            )));
        }
    }
    Ok(())
}

fn check_scales(op: &str, scales: &[f32], expected: usize) -> Result<(), RuntimeError> {
    if scales.len() != expected || scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(invalid(format!(
            "{op}: needs {expected} positive weight scales, has {scales:?}"
        )));
    }
    Ok(())
}

fn check_clamp(op: &str, lo: i32, hi: i32, q: &QParams) -> Result<(), RuntimeError> {
    if lo > hi || lo < q.qmin || hi > q.qmax {
        return Err(invalid(format!(
            "{op}: clamp [{lo}, {hi}] is outside the output range [{}, {}]",
            q.qmin, q.qmax
        )));
    }
    Ok(())
}

/// Checks weights `[out, per...]` int8 and bias `[out]` int32, and that no accumulator can overflow int32.
fn linear_tensors<'a>(
    tensors: &'a IntTensors,
    op: &str,
    weight: &str,
    bias: &str,
    w_shape: &[usize],
) -> Result<(&'a [i8], &'a [i32]), RuntimeError> {
    let w = match get(tensors, weight, op)? {
        IntTensor::I8 { shape, data } if shape == w_shape && data.len() == numel(w_shape) => data,
        t => {
            return Err(invalid(format!(
                "{op}: weight `{weight}` is {} {:?}, expected int8 {w_shape:?}",
                t.dtype(),
                t.shape()
            )))
        }
    };
    let b = match get(tensors, bias, op)? {
        IntTensor::I32 { shape, data } if shape == &[w_shape[0]] && data.len() == w_shape[0] => {
            data
        }
        t => {
            return Err(invalid(format!(
                "{op}: bias `{bias}` is {} {:?}, expected int32 [{}]",
                t.dtype(),
                t.shape(),
                w_shape[0]
            )))
        }
    };
    let k = numel(&w_shape[1..]) as i64;
    let worst = b.iter().map(|&x| (x as i64).abs()).max().unwrap_or(0) + k * 255 * 127;
    if worst > i32::MAX as i64 {
        return Err(invalid(format!(
            "{op}: int32 accumulators could overflow (bias and {k} products up to {worst})"
        )));
    }
    Ok((w, b))
}

impl Model {
    /// Validates the graph and its tensors completely, then packs weights for the kernels.
    pub fn new(graph: IntGraph, tensors: &IntTensors) -> Result<Model, RuntimeError> {
        if graph.format != graph::FORMAT {
            return Err(invalid(format!(
                "format is `{}`, expected `{}`",
                graph.format,
                graph::FORMAT
            )));
        }
        if graph.version != graph::VERSION {
            return Err(invalid(format!(
                "version {} (this qatc reads {})",
                graph.version,
                graph::VERSION
            )));
        }
        if graph.input.shape.is_empty()
            || numel(&graph.input.shape) == 0
            || !matches!(graph.input.shape.len(), 1 | 3)
        {
            return Err(invalid(format!(
                "input shape {:?} must be [C, H, W] or [F]",
                graph.input.shape
            )));
        }
        for v in &graph.values {
            let q = &v.quant;
            let ok = q.scale.is_finite()
                && q.scale > 0.0
                && -128 <= q.qmin
                && q.qmin < q.qmax
                && q.qmax <= 127
                && (q.qmin..=q.qmax).contains(&q.zero_point);
            if !ok {
                return Err(invalid(format!(
                    "value `{}` has invalid quantization {q:?}",
                    v.name
                )));
            }
            if v.shape.is_empty() || numel(&v.shape) == 0 || v.shape.len() > 3 {
                return Err(invalid(format!(
                    "value `{}` has unsupported shape {:?}",
                    v.name, v.shape
                )));
            }
        }
        let nvalues = graph.values.len();
        let mut written = vec![false; nvalues];
        let mut steps = Vec::with_capacity(graph.ops.len());
        for (i, op) in graph.ops.iter().enumerate() {
            let what = format!("op {i} ({})", op.kind());
            for v in op.inputs().into_iter().chain([op.output()]) {
                if v >= nvalues {
                    return Err(invalid(format!(
                        "{what}: value {v} does not exist ({nvalues} values)"
                    )));
                }
            }
            for v in op.inputs() {
                if !written[v] {
                    return Err(invalid(format!(
                        "{what}: reads value `{}` before any op writes it",
                        graph.values[v].name
                    )));
                }
            }
            if std::mem::replace(&mut written[op.output()], true) {
                return Err(invalid(format!(
                    "{what}: value `{}` is written twice",
                    graph.values[op.output()].name
                )));
            }
            let value = |v: usize| &graph.values[v];
            let out = value(op.output());
            steps.push(match op {
                IntOp::Quantize { output } => {
                    if out.shape != graph.input.shape {
                        return Err(invalid(format!("{what}: output shape {:?} differs from the input's {:?}", out.shape, graph.input.shape)));
                    }
                    let chw = match out.shape[..] {
                        [c, h, w] => Some((c, h, w)),
                        _ => None,
                    };
                    Step::Quantize { output: *output, quant: out.quant, chw }
                }
                IntOp::Conv2d { name, input, output, weight, bias, in_channels, out_channels, kernel, stride, pad, groups, weight_scales, requant, act_min, act_max } => {
                    let what = format!("conv2d `{name}`");
                    let inp = value(*input);
                    let (k, s, p, g) = (*kernel, *stride, *pad, *groups);
                    let [c, h, w] = inp.shape[..] else { return Err(invalid(format!("{what}: input shape {:?} is not [C, H, W]", inp.shape))) };
                    if c != *in_channels || k == 0 || s == 0 || g == 0 || c % g != 0 || out_channels % g != 0 || h + 2 * p < k || w + 2 * p < k {
                        return Err(invalid(format!("{what}: kernel {k}, stride {s}, padding {p}, groups {g} do not fit input {:?} / {in_channels}→{out_channels} channels", inp.shape)));
                    }
                    let geom = ConvGeom { c, h, w, oh: (h + 2 * p - k) / s + 1, ow: (w + 2 * p - k) / s + 1, k, stride: s, pad: p, groups: g };
                    if out.shape != [*out_channels, geom.oh, geom.ow] {
                        return Err(invalid(format!("{what}: output shape {:?}, expected {:?}", out.shape, [*out_channels, geom.oh, geom.ow])));
                    }
                    let (cg, og) = (c / g, out_channels / g);
                    let (wq, bq) = linear_tensors(tensors, &what, weight, bias, &[*out_channels, cg, k, k])?;
                    check_requant(&what, requant, *out_channels)?;
                    check_scales(&what, weight_scales, *out_channels)?;
                    check_clamp(&what, *act_min, *act_max, &out.quant)?;
                    let mut packed = Vec::with_capacity(g);
                    let mut rqs = Vec::with_capacity(g);
                    for gi in 0..g {
                        // [o][c][ky][kx] → [o][ky][kx][c], the order of channels-last im2col rows.
                        let kk = k * k * cg;
                        let mut wg = vec![0i8; og * kk];
                        for o in 0..og {
                            for ci in 0..cg {
                                for t in 0..k * k {
                                    wg[o * kk + t * cg + ci] = wq[((gi * og + o) * cg + ci) * k * k + t];
                                }
                            }
                        }
                        packed.push(Packed::new(&wg, og, kk));
                        let range = gi * og..(gi + 1) * og;
                        rqs.push(Requantizer::new(bq[range.clone()].to_vec(), requant[range].to_vec(), out.quant.zero_point, *act_min, *act_max));
                    }
                    Step::Conv { input: *input, output: *output, geom, zp_in: inp.quant.zero_point, packed, requant: rqs }
                }
                IntOp::Dense { name, input, output, weight, bias, in_features, out_features, weight_scales, requant, act_min, act_max } => {
                    let what = format!("dense `{name}`");
                    let inp = value(*input);
                    if inp.shape != [*in_features] || out.shape != [*out_features] {
                        return Err(invalid(format!("{what}: shapes {:?} → {:?} do not match {in_features} → {out_features} features", inp.shape, out.shape)));
                    }
                    let (wq, bq) = linear_tensors(tensors, &what, weight, bias, &[*out_features, *in_features])?;
                    check_requant(&what, requant, *out_features)?;
                    check_scales(&what, weight_scales, *out_features)?;
                    check_clamp(&what, *act_min, *act_max, &out.quant)?;
                    Step::Dense {
                        input: *input,
                        output: *output,
                        zp_in: inp.quant.zero_point,
                        packed: Packed::new(wq, *out_features, *in_features),
                        requant: Requantizer::new(bq.to_vec(), requant.clone(), out.quant.zero_point, *act_min, *act_max),
                    }
                }
                IntOp::MaxPool2d { input, output, size, stride } | IntOp::AvgPool2d { input, output, size, stride } => {
                    let inp = value(*input);
                    let [c, h, w] = inp.shape[..] else { return Err(invalid(format!("{what}: input shape {:?} is not [C, H, W]", inp.shape))) };
                    if *size == 0 || *stride == 0 || *size > h || *size > w {
                        return Err(invalid(format!("{what}: window {size} stride {stride} does not fit {:?}", inp.shape)));
                    }
                    let (oh, ow) = ((h - size) / stride + 1, (w - size) / stride + 1);
                    if out.shape != [c, oh, ow] || out.quant != inp.quant {
                        return Err(invalid(format!("{what}: output {:?} must be [{c}, {oh}, {ow}] with the input's quantization", out.shape)));
                    }
                    let (input, output, size, stride) = (*input, *output, *size, *stride);
                    if matches!(op, IntOp::MaxPool2d { .. }) {
                        Step::MaxPool { input, output, c, h, w, oh, ow, size, stride }
                    } else {
                        Step::AvgPool { input, output, c, h, w, oh, ow, size, stride }
                    }
                }
                IntOp::Reshape { input, output } => {
                    let inp = value(*input);
                    if numel(&inp.shape) != numel(&out.shape) || out.shape.len() != 1 || out.quant != inp.quant {
                        return Err(invalid(format!("{what}: cannot reshape {:?} to {:?} (only to a vector, same quantization)", inp.shape, out.shape)));
                    }
                    let hwc = match inp.shape[..] {
                        [c, h, w] => Some((h, w, c)),
                        _ => None,
                    };
                    Step::Reshape { input: *input, output: *output, hwc }
                }
                IntOp::Add { name, inputs, output, multipliers, shift, act_min, act_max } => {
                    let (a, b) = (value(inputs[0]), value(inputs[1]));
                    if a.shape != out.shape || b.shape != out.shape {
                        return Err(invalid(format!("add `{name}`: shapes {:?} + {:?} → {:?} differ", a.shape, b.shape, out.shape)));
                    }
                    check_requant(name, &[Requant { multiplier: multipliers[0], shift: *shift }, Requant { multiplier: multipliers[1], shift: *shift }], 2)?;
                    check_clamp(name, *act_min, *act_max, &out.quant)?;
                    Step::Add {
                        inputs: *inputs,
                        output: *output,
                        zp: [a.quant.zero_point, b.quant.zero_point, out.quant.zero_point],
                        mult: *multipliers,
                        shift: *shift,
                        lo: *act_min,
                        hi: *act_max,
                    }
                }
                IntOp::Requantize { name, input, output, requant, act_min, act_max } => {
                    let inp = value(*input);
                    if inp.shape != out.shape {
                        return Err(invalid(format!("requantize `{name}`: shapes {:?} → {:?} differ", inp.shape, out.shape)));
                    }
                    check_requant(name, &[*requant], 1)?;
                    check_clamp(name, *act_min, *act_max, &out.quant)?;
                    Step::Requantize { input: *input, output: *output, zp_in: inp.quant.zero_point, zp: out.quant.zero_point, rq: *requant, lo: *act_min, hi: *act_max }
                }
                IntOp::GlobalAvgPool { name, input, output, requant, act_min, act_max } => {
                    let what = format!("global_avg_pool `{name}`");
                    let inp = value(*input);
                    let [c, h, w] = inp.shape[..] else { return Err(invalid(format!("{what}: input shape {:?} is not [C, H, W]", inp.shape))) };
                    if out.shape != [c] {
                        return Err(invalid(format!("{what}: output shape {:?}, expected [{c}]", out.shape)));
                    }
                    // Σ (x - zp) over H·W values of at most 255 in magnitude must fit int32.
                    if (h * w) as i64 * 255 > i32::MAX as i64 {
                        return Err(invalid(format!("{what}: {h}x{w} values could overflow the int32 sum")));
                    }
                    check_requant(&what, &[*requant], 1)?;
                    check_clamp(&what, *act_min, *act_max, &out.quant)?;
                    Step::GlobalAvgPool { input: *input, output: *output, c, hw: h * w, zp_in: inp.quant.zero_point, zp: out.quant.zero_point, rq: *requant, lo: *act_min, hi: *act_max }
                }
                IntOp::Concat { name, inputs, output, axis, requant } => {
                    let what = format!("concat `{name}`");
                    let rank = out.shape.len();
                    if inputs.is_empty() || *axis >= rank {
                        return Err(invalid(format!("{what}: axis {axis} of {} inputs does not fit output {:?}", inputs.len(), out.shape)));
                    }
                    check_requant(&what, requant, inputs.len())?;
                    let mut joined = 0;
                    for &i in inputs {
                        let s = &value(i).shape;
                        let fits = s.len() == rank && s.iter().zip(&out.shape).enumerate().all(|(k, (a, b))| k == *axis || a == b);
                        if !fits {
                            return Err(invalid(format!("{what}: input shape {s:?} does not fit output {:?} along axis {axis}", out.shape)));
                        }
                        joined += s[*axis];
                    }
                    if joined != out.shape[*axis] {
                        return Err(invalid(format!("{what}: inputs add up to {joined} along axis {axis}, output has {}", out.shape[*axis])));
                    }
                    let ax = runtime_axis(rank, *axis);
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
                                rescale: (v.quant != q).then_some((v.quant.zero_point, *rq, q.zero_point, q.qmin, q.qmax)),
                            }
                        })
                        .collect();
                    Step::Concat { output: *output, outer, parts }
                }
            });
        }
        if graph.output >= nvalues || !written[graph.output] {
            return Err(invalid(format!(
                "the output value {} is never computed",
                graph.output
            )));
        }
        let sizes = graph.values.iter().map(|v| numel(&v.shape)).collect();
        Ok(Model {
            graph,
            steps,
            sizes,
            isa: Isa::detect(),
        })
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
                let g = *geom;
                let (cg, og) = (g.c / g.groups, packed[0].out);
                let pixels = g.oh * g.ow;
                let oc = og * g.groups;
                let mut y = vec![0i8; n * pixels * oc];
                let kp = packed[0].kp;
                let mut cols = vec![0i16; pixels * kp];
                let mut acc = vec![0i32; pixels * packed[0].acc_stride()];
                let mut part = vec![0i8; if g.groups == 1 { 0 } else { pixels * og }];
                for (x, y) in values[*input]
                    .chunks(g.h * g.w * g.c)
                    .zip(y.chunks_mut(pixels * oc))
                {
                    for gi in 0..g.groups {
                        im2col(x, &g, gi * cg, cg, *zp_in, kp, &mut cols);
                        kernels::gemm(isa, &cols, pixels, &packed[gi], &mut acc);
                        if g.groups == 1 {
                            requant[0].rows(isa, &acc, pixels, packed[0].acc_stride(), y);
                        } else {
                            requant[gi].rows(isa, &acc, pixels, packed[gi].acc_stride(), &mut part);
                            for p in 0..pixels {
                                y[p * oc + gi * og..p * oc + (gi + 1) * og]
                                    .copy_from_slice(&part[p * og..(p + 1) * og]);
                            }
                        }
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
            Step::Reshape { input, output, hwc } => {
                let x = &values[*input];
                match *hwc {
                    Some(dims) => {
                        let per = dims.0 * dims.1 * dims.2;
                        let mut y = vec![0i8; x.len()];
                        for (x, y) in x.chunks(per).zip(y.chunks_mut(per)) {
                            hwc_to_chw(x, dims, y);
                        }
                        (*output, y)
                    }
                    None => (*output, x.clone()),
                }
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

/// Channels-last im2col of one group: row `p` holds `(x - zp)` for every `(ky, kx, c)`
/// of output pixel `p`'s window (zero where the window leaves the image), then zeros up to `kp`.
fn im2col(x: &[i8], g: &ConvGeom, c0: usize, cg: usize, zp: i32, kp: usize, cols: &mut [i16]) {
    let zp = zp as i16;
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let row = &mut cols[(oy * g.ow + ox) * kp..(oy * g.ow + ox + 1) * kp];
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
mod tests {
    use super::*;
    use crate::lower::graph::{Input, Value};
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
            format: graph::FORMAT.into(),
            version: graph::VERSION,
            model: "t".into(),
            classes: None,
            input: Input {
                name: "x".into(),
                shape: shape.to_vec(),
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
        let model = Model::new(g, &IntTensors::new()).unwrap();
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
                                    sum += x[((s * c + ci) * h + oy * stride + ky) * w
                                        + ox * stride
                                        + kx];
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
                let mean = ((sum as f64 * b_rq.real() + 0.5).floor() as i32 + b_q.zero_point)
                    .clamp(-128, 127);
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
        let err = Model::new(g, &IntTensors::new()).unwrap_err().to_string();
        assert!(
            err.contains("concat `cat`") && err.contains("add up to 8"),
            "{err}"
        );
    }
}
