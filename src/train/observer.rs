//! Range observers and fake quantization: how a float range becomes a scale and
//! zero point, for activations (observed) and weights (computed from the weights).

use tch::{Kind, Tensor};

use crate::ir::quant::symmetric_scale;
use crate::ir::{Granularity, QuantSpec, Scheme};
use crate::recipe::RangeMethod;

/// At most this many sampled values per observer feed percentile and MSE calibration.
const SAMPLE_CAP: usize = 1 << 20;
/// Clipping ratios tried by MSE range search, as fractions of the observed extreme.
const CLIP_STEPS: usize = 40;

/// Tracks the range of one activation tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Observer {
    pub spec: QuantSpec,
    pub min: f32,
    pub max: f32,
    seen: bool,
    /// Values kept for percentile / MSE calibration.
    samples: Vec<f32>,
    /// Scale and zero point fixed by the op before it ([`RangeSource::Fixed`](crate::ir::ops::RangeSource)):
    /// then nothing is observed, calibrated or restored.
    fixed: Option<(f32, i64)>,
}

impl Observer {
    /// Moving-average weight of each batch while QAT trains (PyTorch's default, 0.01).
    pub const QAT_AVERAGING: f32 = 0.01;

    pub fn new(spec: QuantSpec) -> Observer {
        Observer {
            spec,
            min: 0.0,
            max: 0.0,
            seen: false,
            samples: Vec::new(),
            fixed: None,
        }
    }

    /// An observer whose parameters are `scale` and `zero_point` whatever it sees; its
    /// min and max are the real range those parameters cover.
    pub fn fixed(spec: QuantSpec, scale: f32, zero_point: i64) -> Observer {
        let (qmin, qmax) = spec.range();
        Observer {
            min: (qmin - zero_point) as f32 * scale,
            max: (qmax - zero_point) as f32 * scale,
            seen: true,
            fixed: Some((scale, zero_point)),
            ..Observer::new(spec)
        }
    }

    pub fn is_fixed(&self) -> bool {
        self.fixed.is_some()
    }

    /// The observer before anything was observed (a fixed one stays fixed).
    pub fn reset(&self) -> Observer {
        match self.fixed {
            Some((scale, zp)) => Observer::fixed(self.spec, scale, zp),
            None => Observer::new(self.spec),
        }
    }

    pub fn is_initialized(&self) -> bool {
        self.seen
    }

    /// Min-max when `averaging` is `None`, else a moving average of batch ranges.
    pub fn observe(&mut self, xs: &Tensor, averaging: Option<f32>) {
        self.observe_reduced(xs, averaging, None);
    }

    /// [`Observer::observe`], with the batch's range first widened by `reduce` (in
    /// data-parallel training: to the range of the whole batch over every rank).
    pub fn observe_reduced(
        &mut self,
        xs: &Tensor,
        averaging: Option<f32>,
        reduce: Option<&dyn Fn(f32, f32) -> (f32, f32)>,
    ) {
        if self.is_fixed() {
            return;
        }
        // One fused pass over the tensor (min() then max() is several times slower).
        let (lo, hi) = tch::no_grad(|| {
            let (lo, hi) = xs.aminmax(None, false);
            (lo.double_value(&[]) as f32, hi.double_value(&[]) as f32)
        });
        let (lo, hi) = match reduce {
            Some(reduce) => reduce(lo, hi),
            None => (lo, hi),
        };
        if !lo.is_finite() || !hi.is_finite() {
            return;
        }
        match (self.seen, averaging) {
            (false, _) => (self.min, self.max) = (lo, hi),
            (true, None) => (self.min, self.max) = (self.min.min(lo), self.max.max(hi)),
            (true, Some(c)) => {
                self.min += c * (lo - self.min);
                self.max += c * (hi - self.max);
            }
        }
        self.seen = true;
    }

    /// Sets the range to one saved earlier.
    pub fn restore(&mut self, min: f32, max: f32) {
        if self.is_fixed() {
            return;
        }
        (self.min, self.max, self.seen) = (min, max, true);
    }

    /// Keeps an evenly strided subset of `xs` for [`Observer::finish_calibration`].
    pub fn sample(&mut self, xs: &Tensor) {
        if self.is_fixed() {
            return;
        }
        let n = xs.numel();
        let room = SAMPLE_CAP.saturating_sub(self.samples.len());
        if room == 0 || n == 0 {
            return;
        }
        let stride = n.div_ceil(room.min(1 << 16)).max(1) as i64;
        let picked = tch::no_grad(|| {
            xs.flatten(0, -1)
                .slice(0, 0, None, stride)
                .to_kind(Kind::Float)
                .to_device(tch::Device::Cpu)
        });
        if let Ok(v) = Vec::<f32>::try_from(&picked) {
            self.samples
                .extend(v.into_iter().filter(|x| x.is_finite()).take(room));
        }
    }

    /// Narrows the observed min-max range as `method` says, using the kept samples.
    pub fn finish_calibration(&mut self, method: RangeMethod) {
        let samples = std::mem::take(&mut self.samples);
        if samples.is_empty() {
            return;
        }
        match method {
            RangeMethod::MinMax => {}
            RangeMethod::Percentile(p) => {
                let mut sorted = samples;
                sorted.sort_unstable_by(f32::total_cmp);
                let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
                (self.min, self.max) = (at(1.0 - p / 100.0), at(p / 100.0));
            }
            RangeMethod::Mse => {
                let t = Tensor::from_slice(&samples);
                let (min, max) = (self.min, self.max);
                let best = (1..=CLIP_STEPS)
                    .map(|k| k as f32 / CLIP_STEPS as f32)
                    .map(|r| {
                        let (scale, zp) = self.spec.params(min * r, max * r);
                        (r, quant_mse(&t, scale, zp, self.spec))
                    })
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .map_or(1.0, |(r, _)| r);
                (self.min, self.max) = (min * best, max * best);
            }
        }
    }

    /// Scale and zero point for the observed range.
    pub fn params(&self) -> (f32, i64) {
        if let Some(fixed) = self.fixed {
            return fixed;
        }
        self.spec.params(self.min, self.max)
    }

    pub fn fake_quant(&self, xs: &Tensor) -> Tensor {
        let (scale, zero_point) = self.params();
        let (qmin, qmax) = self.spec.range();
        super::fake_quant::per_tensor(xs, scale, zero_point, qmin, qmax)
    }
}

fn quant_mse(t: &Tensor, scale: f32, zp: i64, spec: QuantSpec) -> f64 {
    let (qmin, qmax) = spec.range();
    let q = t.fake_quantize_per_tensor_affine(scale as f64, zp, qmin, qmax);
    (q - t).square().mean(Kind::Float).double_value(&[])
}

/// How the range of a weight tensor is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightRange {
    /// The extremes of each channel (or the tensor): nothing is clipped.
    MinMax,
    /// The clipping of each channel that minimizes the quantization error: at low bit
    /// widths far better than min-max, which wastes levels on rare large weights.
    Mse,
}

/// The weight tensor as rows: one per output channel, or a single row per tensor.
fn weight_rows(w: &Tensor, spec: QuantSpec) -> Tensor {
    if spec.granularity == Granularity::PerChannel {
        w.flatten(1, -1)
    } else {
        w.reshape([1, -1])
    }
}

/// Scale and zero point of each row's range `[lo, hi]` (already containing 0).
fn range_params(lo: &Tensor, hi: &Tensor, spec: QuantSpec) -> (Tensor, Tensor) {
    let (qmin, qmax) = spec.range();
    match spec.scheme {
        Scheme::Symmetric => {
            let scale = symmetric_scale(lo, hi, qmax);
            let zp = scale.zeros_like();
            (scale, zp)
        }
        Scheme::Asymmetric => {
            let scale = ((hi - lo) / (qmax - qmin) as f64).clamp_min(f32::EPSILON as f64);
            let zp = (-(lo / &scale) + qmin as f64).round().clamp(qmin, qmax);
            (scale, zp)
        }
    }
}

fn row_ranges(rows: &Tensor) -> (Tensor, Tensor) {
    let (lo, hi) = rows.aminmax(Some(1), false);
    (lo.clamp_max(0.0), hi.clamp_min(0.0))
}

/// Per row, the fraction of its min-max range whose quantization error is least.
pub fn mse_clip_ratios(w: &Tensor, spec: QuantSpec) -> Tensor {
    tch::no_grad(|| {
        let (qmin, qmax) = spec.range();
        let rows = weight_rows(w, spec);
        let (lo, hi) = row_ranges(&rows);
        // Try CLIP_STEPS shrunken ranges at once: [steps, rows, cols].
        let ratios = Tensor::arange_start(1, CLIP_STEPS as i64 + 1, (Kind::Float, w.device()))
            / CLIP_STEPS as f64;
        let r = ratios.view([-1, 1]);
        let (s, z) = range_params(&(lo.unsqueeze(0) * &r), &(hi.unsqueeze(0) * &r), spec);
        let (s3, z3) = (s.unsqueeze(-1), z.unsqueeze(-1));
        let q = ((rows.unsqueeze(0) / &s3).round() + &z3).clamp(qmin, qmax);
        let err = ((q - &z3) * &s3 - rows.unsqueeze(0))
            .square()
            .sum_dim_intlist([2i64].as_slice(), false, Kind::Float);
        ratios.index_select(0, &err.argmin(0, false))
    })
}

/// Scale and integer zero point per row, of the min-max range shrunk by `ratio` per row.
pub fn clipped_weight_params(
    w: &Tensor,
    spec: QuantSpec,
    ratio: Option<&Tensor>,
) -> (Tensor, Tensor) {
    tch::no_grad(|| {
        let (lo, hi) = row_ranges(&weight_rows(w, spec));
        let (lo, hi) = match ratio {
            Some(r) => (lo * r, hi * r),
            None => (lo, hi),
        };
        let (scale, zp) = range_params(&lo, &hi, spec);
        (scale.to_kind(Kind::Float), zp.to_kind(Kind::Int))
    })
}

/// Per-channel (or one-element) scale and integer zero point of a weight tensor.
pub fn weight_params(w: &Tensor, spec: QuantSpec, range: WeightRange) -> (Tensor, Tensor) {
    match range {
        WeightRange::MinMax => clipped_weight_params(w, spec, None),
        WeightRange::Mse => clipped_weight_params(w, spec, Some(&mse_clip_ratios(w, spec))),
    }
}

/// Fake-quantizes a weight tensor with ranges from the weights themselves (per output
/// channel = axis 0, or per tensor). Gradients pass straight through.
pub fn fake_quant_weights(w: &Tensor, spec: QuantSpec, range: WeightRange) -> Tensor {
    fake_quant_weights_with(w, spec, weight_params(w, spec, range))
}

/// Fake-quantizes a weight tensor with given per-row scales and zero points.
pub fn fake_quant_weights_with(
    w: &Tensor,
    spec: QuantSpec,
    (scale, zero_point): (Tensor, Tensor),
) -> Tensor {
    let (qmin, qmax) = spec.range();
    if spec.granularity == Granularity::PerChannel {
        w.fake_quantize_per_channel_affine(&scale, &zero_point, 0, qmin, qmax)
    } else {
        w.fake_quantize_per_tensor_affine(
            scale.double_value(&[0]),
            zero_point.int64_value(&[0]),
            qmin,
            qmax,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::try_from(&t.flatten(0, -1)).unwrap()
    }

    #[test]
    fn fake_quant_matches_the_integer_grid() {
        let mut o = Observer::new(QuantSpec::ACTIVATIONS);
        let xs = Tensor::from_slice(&[-1.0f32, 0.0, 0.5, 3.0]);
        o.observe(&xs, None);
        let (scale, zp) = o.params();
        let y = values(&o.fake_quant(&xs));
        for (x, y) in [-1.0f32, 0.0, 0.5, 3.0].iter().zip(&y) {
            let q = ((x / scale).round() as i64 + zp).clamp(-128, 127);
            assert!(((q - zp) as f32 * scale - y).abs() < 1e-6);
        }
        assert_eq!(y[1], 0.0, "real zero must be exact");
    }

    #[test]
    fn per_channel_weights_use_one_scale_per_row() {
        let w = Tensor::from_slice(&[1.0f32, -0.5, 0.001, 0.002]).view([2, 2]);
        let q = values(&fake_quant_weights(
            &w,
            QuantSpec::WEIGHTS,
            WeightRange::MinMax,
        ));
        // Row 2's own scale keeps its small values; a per-tensor scale would round them to 0.
        assert!(
            (q[2] - 0.001).abs() < 2e-5 && (q[3] - 0.002).abs() < 2e-5,
            "{q:?}"
        );
        let pt = QuantSpec {
            granularity: Granularity::PerTensor,
            ..QuantSpec::WEIGHTS
        };
        let q = values(&fake_quant_weights(&w, pt, WeightRange::MinMax));
        assert_eq!(q[2], 0.0);
    }

    #[test]
    fn low_bit_weights_have_few_levels() {
        let w = Tensor::linspace(-1.0, 1.0, 101, (Kind::Float, tch::Device::Cpu)).view([1, 101]);
        let spec = QuantSpec {
            bits: 2,
            ..QuantSpec::WEIGHTS
        };
        let q = values(&fake_quant_weights(&w, spec, WeightRange::MinMax));
        let mut levels: Vec<i32> = q.iter().map(|v| (v * 1000.0).round() as i32).collect();
        levels.sort_unstable();
        levels.dedup();
        assert_eq!(levels, vec![-1000, 0, 1000]);
    }

    #[test]
    fn mse_weight_ranges_beat_min_max_at_low_bits() {
        tch::manual_seed(0);
        // Gaussian weights with one outlier per row: min-max spends its levels on it.
        let w = Tensor::randn([8, 256], (Kind::Float, tch::Device::Cpu));
        let _ = w.get(0).get(0).fill_(8.0);
        let spec = QuantSpec {
            bits: 3,
            ..QuantSpec::WEIGHTS
        };
        let err = |r| {
            (fake_quant_weights(&w, spec, r) - &w)
                .square()
                .mean(Kind::Float)
                .double_value(&[])
        };
        let (minmax, mse) = (err(WeightRange::MinMax), err(WeightRange::Mse));
        assert!(mse < 0.6 * minmax, "mse {mse} vs min-max {minmax}");
        // At 8 bits both are close to lossless.
        let err8 = (fake_quant_weights(&w, QuantSpec::WEIGHTS, WeightRange::Mse) - &w)
            .abs()
            .max()
            .double_value(&[]);
        assert!(err8 < 0.05, "{err8}");
    }

    #[test]
    fn percentile_and_mse_calibration_clip_outliers() {
        let mut values: Vec<f32> = (0..10_000).map(|i| (i % 100) as f32 / 100.0).collect();
        values.push(50.0);
        let xs = Tensor::from_slice(&values);
        for method in [RangeMethod::Percentile(99.9), RangeMethod::Mse] {
            let mut o = Observer::new(QuantSpec {
                bits: 4,
                ..QuantSpec::ACTIVATIONS
            });
            o.observe(&xs, None);
            o.sample(&xs);
            o.finish_calibration(method);
            // The percentile drops the outlier; MSE trades its error against rounding error.
            let limit = if method == RangeMethod::Mse {
                25.0
            } else {
                1.0
            };
            assert!(o.max < limit && o.max > 0.5, "{method:?}: max {}", o.max);
        }
        let mut o = Observer::new(QuantSpec::ACTIVATIONS);
        o.observe(&xs, None);
        o.sample(&xs);
        o.finish_calibration(RangeMethod::MinMax);
        assert_eq!(o.max, 50.0);
    }
}
