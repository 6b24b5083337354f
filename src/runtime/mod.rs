//! The int8 runtime: executes a validated [`int8::Model`] with integer kernels in pure Rust
//! (no libtorch), SIMD chosen at run time, batches split across threads by rayon.
//!
//! Internally images are kept channels-last (`[H, W, C]` per sample) so that a
//! convolution's im2col rows and its outputs are contiguous; `reshape` to a vector
//! restores the model's `[C, H, W]` order, so nothing outside sees the difference.

pub mod kernels;
mod plan;

use std::ops::Range;
use std::path::Path;

use rayon::prelude::*;

pub use kernels::Isa;

use crate::int8::{self, ArtifactError, IntGraph, IntOp, QParams};
use kernels::{Packed, Requantizer};
use plan::{numel, ConvGeom, Step};

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

/// An integer model ready to run: its graph and the execution plan built from it.
#[derive(Debug, Clone)]
pub struct Model {
    graph: IntGraph,
    steps: Vec<Step>,
    /// Per step, the values no later step reads.
    freed_after: Vec<Vec<usize>>,
    /// Elements per sample of each value.
    sizes: Vec<usize>,
    isa: Isa,
}

impl Model {
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

    /// Bytes of int8 activations one sample holds at the busiest step (its inputs and
    /// output alive together), as the runtime frees each value after its last reader; and
    /// the bytes of all its values, what keeping every one would take.
    pub fn activation_bytes(&self) -> (usize, usize) {
        let mut live = vec![false; self.sizes.len()];
        let mut peak = 0;
        for (step, freed) in self.steps.iter().zip(&self.freed_after) {
            live[step.output()] = true;
            let now: usize = (0..live.len())
                .filter(|&v| live[v])
                .map(|v| self.sizes[v])
                .sum();
            peak = peak.max(now);
            for &v in freed {
                live[v] = false;
            }
        }
        (peak, self.sizes.iter().sum())
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

    /// Like [`Model::run`] on raw 8-bit pixels, preprocessed exactly as training did:
    /// the graph's normalization, or `p / 255` when it has none.
    pub fn run_pixels(&self, pixels: &[u8]) -> Result<Vec<i8>, RuntimeError> {
        let shape = &self.graph.input.shape;
        let normalize = match &self.graph.input.normalize {
            Some(n) => n.clone(),
            None => crate::preprocess::Normalize::identity(crate::preprocess::channels(shape)),
        };
        self.run(&normalize.pixels(pixels, crate::preprocess::per_channel(shape)))
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
        for (step, freed) in self.steps.iter().zip(&self.freed_after) {
            let (output, data) = self.step(step, &values, input, n);
            values[output] = data;
            for &v in freed {
                values[v] = Vec::new();
            }
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
                // One output row at a time: its int32 sums stay in cache until requantized.
                let dw = |x: &[i8], rows: Range<usize>, y: &mut [i8], acc: &mut Vec<i32>| {
                    acc.resize(window.ow * weights.cp, 0);
                    for (oy, y) in rows.zip(y.chunks_mut(window.ow * c)) {
                        kernels::depthwise(isa, x, *window, oy..oy + 1, *zp_in, weights, acc);
                        requant.rows(isa, acc, window.ow, weights.cp, y);
                    }
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
            Step::Pad {
                input,
                output,
                c,
                h,
                w,
                size,
                zp,
            } => {
                let (c, h, w, size) = (*c, *h, *w, *size);
                let (ph, pw) = (h + 2 * size, w + 2 * size);
                let mut y = vec![*zp; n * ph * pw * c];
                for (x, y) in values[*input]
                    .chunks(h * w * c)
                    .zip(y.chunks_mut(ph * pw * c))
                {
                    // Each input row lands whole inside a padded row.
                    for (row, x) in x.chunks(w * c).enumerate() {
                        let at = ((row + size) * pw + size) * c;
                        y[at..at + w * c].copy_from_slice(x);
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

/// Scratch space of one convolution worker, reused from tile to tile and image to image.
#[derive(Default)]
struct ConvBuffers {
    cols: Vec<i16>,
    acc: Vec<i32>,
    part: Vec<i8>,
}

/// Bytes of im2col rows, and of int32 sums, one tile of output pixels may take: small
/// enough to stay in the core's L2 cache between the im2col, the GEMM and the
/// requantization, instead of a whole image's round trip through memory.
const TILE_BYTES: usize = 64 * 1024;

/// Output pixels per tile for `kp` im2col columns and `stride` accumulators per pixel: a
/// multiple of the GEMM's 4-row micro-kernel, at least 4.
fn tile_pixels(kp: usize, stride: usize) -> usize {
    let by_cols = TILE_BYTES / (kp * 2);
    let by_acc = TILE_BYTES / (stride * 4);
    (by_cols.min(by_acc) / 4 * 4).max(4)
}

/// Output rows `rows` of one image's convolution into `y` (`rows.len() * ow` pixels of
/// all output channels), tile of pixels by tile: per group, the GEMM's input rows (im2col,
/// or the activation itself for a 1×1 convolution), GEMM and requantization.
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
    let kp = packed[0].kp;
    let stride = packed[0].acc_stride();
    let first = rows.start * g.ow;
    let pixels = rows.len() * g.ow;
    let tile = tile_pixels(kp, stride).min(pixels);
    buf.cols.resize(tile * kp, 0);
    buf.acc.resize(tile * stride, 0);
    buf.part
        .resize(if g.groups == 1 { 0 } else { tile * og }, 0);
    // A 1×1 convolution with stride 1 reads each pixel's channels as they lie: its GEMM
    // rows are the activation itself (minus the zero point), no window to gather.
    let pointwise = g.k == 1 && g.stride == 1 && g.pad == 0 && g.groups == 1 && kp == g.c;
    for t in (0..pixels).step_by(tile) {
        let n = tile.min(pixels - t);
        let px = first + t..first + t + n;
        let y = &mut y[t * oc..(t + n) * oc];
        for gi in 0..g.groups {
            let cols = &mut buf.cols[..n * kp];
            if pointwise {
                let zp = zp_in as i16;
                for (d, &s) in cols.iter_mut().zip(&x[px.start * g.c..px.end * g.c]) {
                    *d = s as i16 - zp;
                }
            } else {
                im2col(x, g, px.clone(), gi * cg, cg, zp_in, kp, cols);
            }
            kernels::gemm(isa, cols, n, &packed[gi], &mut buf.acc);
            if g.groups == 1 {
                requant[0].rows(isa, &buf.acc, n, stride, y);
            } else {
                requant[gi].rows(isa, &buf.acc, n, stride, &mut buf.part);
                for p in 0..n {
                    y[p * oc + gi * og..p * oc + (gi + 1) * og]
                        .copy_from_slice(&buf.part[p * og..(p + 1) * og]);
                }
            }
        }
    }
}

/// Channels-last im2col of one group over output pixels `pixels` (row-major indices):
/// row `p` holds `(x - zp)` for every `(ky, kx, c)` of pixel `p`'s window (zero where the
/// window leaves the image), then zeros up to `kp`. With one group, a window row inside
/// the image is one contiguous run of the input, converted in one loop.
#[allow(clippy::too_many_arguments)]
fn im2col(
    x: &[i8],
    g: &ConvGeom,
    pixels: Range<usize>,
    c0: usize,
    cg: usize,
    zp: i32,
    kp: usize,
    cols: &mut [i16],
) {
    let zp = zp as i16;
    let convert = |dst: &mut [i16], src: &[i8]| {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s as i16 - zp;
        }
    };
    let span = g.k * cg;
    for (r, p) in pixels.enumerate() {
        let (oy, ox) = (p / g.ow, p % g.ow);
        let row = &mut cols[r * kp..(r + 1) * kp];
        // Taps kx in lo..hi fall inside the image's width.
        let x0 = (ox * g.stride) as isize - g.pad as isize;
        let lo = (-x0).clamp(0, g.k as isize) as usize;
        let hi = (g.w as isize - x0).clamp(lo as isize, g.k as isize) as usize;
        for ky in 0..g.k {
            let dst = &mut row[ky * span..(ky + 1) * span];
            let iy = (oy * g.stride + ky) as isize - g.pad as isize;
            if iy < 0 || iy as usize >= g.h {
                dst.fill(0);
                continue;
            }
            dst[..lo * cg].fill(0);
            dst[hi * cg..].fill(0);
            let line = iy as usize * g.w;
            if cg == g.c {
                let src = (line as isize + x0 + lo as isize) as usize * g.c;
                convert(&mut dst[lo * cg..hi * cg], &x[src..src + (hi - lo) * g.c]);
            } else {
                for kx in lo..hi {
                    let src = (line as isize + x0 + kx as isize) as usize * g.c + c0;
                    convert(&mut dst[kx * cg..(kx + 1) * cg], &x[src..src + cg]);
                }
            }
        }
        row[g.k * span..].fill(0);
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
