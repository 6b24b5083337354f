//! Range observers and fake quantization.

use tch::{Kind, Tensor};

use crate::ir::{Granularity, QuantSpec, Scheme};

/// Tracks the range of one activation tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observer {
    pub spec: QuantSpec,
    pub min: f32,
    pub max: f32,
    seen: bool,
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
        }
    }

    pub fn is_initialized(&self) -> bool {
        self.seen
    }

    /// Min-max when `averaging` is `None`, else a moving average of batch ranges.
    pub fn observe(&mut self, xs: &Tensor, averaging: Option<f32>) {
        // One fused pass over the tensor (min() then max() is several times slower).
        let (lo, hi) = tch::no_grad(|| {
            let (lo, hi) = xs.aminmax(None, false);
            (lo.double_value(&[]) as f32, hi.double_value(&[]) as f32)
        });
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

    /// Scale and zero point for the observed range.
    pub fn params(&self) -> (f32, i64) {
        self.spec.params(self.min, self.max)
    }

    pub fn fake_quant(&self, xs: &Tensor) -> Tensor {
        let (scale, zero_point) = self.params();
        let (qmin, qmax) = self.spec.range();
        xs.fake_quantize_per_tensor_affine(scale as f64, zero_point, qmin, qmax)
    }
}

/// Fake-quantizes a weight tensor with ranges taken from the weights themselves
/// (per output channel = axis 0, or per tensor). Gradients pass straight through.
pub fn fake_quant_weights(w: &Tensor, spec: QuantSpec) -> Tensor {
    let (qmin, qmax) = spec.range();
    let per_channel = spec.granularity == Granularity::PerChannel;
    let (lo, hi) = tch::no_grad(|| {
        if per_channel {
            let flat = w.flatten(1, -1);
            (
                flat.amin([1i64].as_slice(), false),
                flat.amax([1i64].as_slice(), false),
            )
        } else {
            (w.min().reshape([1i64]), w.max().reshape([1i64]))
        }
    });
    let (scale, zero_point) = tch::no_grad(|| {
        let lo = lo.clamp_max(0.0);
        let hi = hi.clamp_min(0.0);
        match spec.scheme {
            Scheme::Symmetric => {
                let scale = (lo.abs().maximum(&hi) / qmax as f64).clamp_min(f32::EPSILON as f64);
                let zp = scale.zeros_like().to_kind(Kind::Int);
                (scale, zp)
            }
            Scheme::Asymmetric => {
                let scale = ((&hi - &lo) / (qmax - qmin) as f64).clamp_min(f32::EPSILON as f64);
                let zp = (-(&lo / &scale) + qmin as f64)
                    .round()
                    .clamp(qmin, qmax)
                    .to_kind(Kind::Int);
                (scale, zp)
            }
        }
    });
    if per_channel {
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

    #[test]
    fn fake_quant_matches_the_integer_grid() {
        let mut o = Observer::new(QuantSpec::ACTIVATIONS);
        let xs = Tensor::from_slice(&[-1.0f32, 0.0, 0.5, 3.0]);
        o.observe(&xs, None);
        let (scale, zp) = o.params();
        let y: Vec<f32> = Vec::try_from(&o.fake_quant(&xs)).unwrap();
        for (x, y) in [-1.0f32, 0.0, 0.5, 3.0].iter().zip(&y) {
            let q = ((x / scale).round() as i64 + zp).clamp(-128, 127);
            assert!(((q - zp) as f32 * scale - y).abs() < 1e-6);
        }
        assert_eq!(y[1], 0.0, "real zero must be exact");
    }

    #[test]
    fn per_channel_weights_use_one_scale_per_row() {
        let w = Tensor::from_slice(&[1.0f32, -0.5, 0.001, 0.002]).view([2, 2]);
        let q: Vec<f32> =
            Vec::try_from(&fake_quant_weights(&w, QuantSpec::WEIGHTS).flatten(0, -1)).unwrap();
        // Row 2's own scale keeps its small values; a per-tensor scale would round them to 0.
        assert!(
            (q[2] - 0.001).abs() < 2e-5 && (q[3] - 0.002).abs() < 2e-5,
            "{q:?}"
        );
        let pt = QuantSpec {
            granularity: Granularity::PerTensor,
            ..QuantSpec::WEIGHTS
        };
        let q: Vec<f32> = Vec::try_from(&fake_quant_weights(&w, pt).flatten(0, -1)).unwrap();
        assert_eq!(q[2], 0.0);
    }

    #[test]
    fn low_bit_weights_have_few_levels() {
        let w = Tensor::linspace(-1.0, 1.0, 101, (Kind::Float, tch::Device::Cpu)).view([1, 101]);
        let spec = QuantSpec {
            bits: 2,
            ..QuantSpec::WEIGHTS
        };
        let q: Vec<f32> = Vec::try_from(&fake_quant_weights(&w, spec).flatten(0, -1)).unwrap();
        let mut levels: Vec<i32> = q.iter().map(|v| (v * 1000.0).round() as i32).collect();
        levels.sort_unstable();
        levels.dedup();
        assert_eq!(levels, vec![-1000, 0, 1000]);
    }
}
