//! The arithmetic of the quantized forward: batch norm folded into weights and biases,
//! and the learned (LSQ-style) fake quantization of weights and activations.

use super::*;
use crate::ir::quant::Arith;

/// libtorch's f32 tensor operations for the quantization rules of [`crate::ir::quant`]
/// and [`crate::ir::ops::fold_factor`], so that training and lowering share them.
impl Arith for Tensor {
    fn add(&self, other: &Tensor) -> Tensor {
        self + other
    }
    fn sub(&self, other: &Tensor) -> Tensor {
        self - other
    }
    fn mul(&self, other: &Tensor) -> Tensor {
        self * other
    }
    fn div(&self, other: &Tensor) -> Tensor {
        self / other
    }
    fn add_scalar(&self, x: f64) -> Tensor {
        self + x
    }
    fn div_scalar(&self, x: f64) -> Tensor {
        self / x
    }
    // libtorch's f32 sqrt is not correctly rounded (1 ulp off for ~17% of inputs), IEEE's
    // is; through f64 it is, so the folding here and in the f32 reader agree bit for bit.
    fn sqrt(&self) -> Tensor {
        self.to_kind(Kind::Double).sqrt().to_kind(self.kind())
    }
    fn abs(&self) -> Tensor {
        Tensor::abs(self)
    }
    fn maximum(&self, other: &Tensor) -> Tensor {
        Tensor::maximum(self, other)
    }
    fn clamp_min(&self, x: f64) -> Tensor {
        Tensor::clamp_min(self, x)
    }
}

/// w·γ/σ per output channel, or `w` when there is no batch norm.
pub(super) fn fold(weight: &Tensor, norm: Option<&Norm>) -> Tensor {
    match norm {
        Some(norm) => {
            let shape: Vec<i64> = std::iter::once(-1)
                .chain(std::iter::repeat_n(1, weight.dim() - 1))
                .collect();
            weight * norm.factor().view(shape.as_slice())
        }
        None => weight.shallow_clone(),
    }
}

/// (b − μ)·γ/σ + β, or `b` when there is no batch norm.
pub(super) fn folded_bias(bias: Option<&Tensor>, norm: Option<&Norm>) -> Option<Tensor> {
    match norm {
        Some(norm) => Some(crate::ir::ops::folded_bias(
            bias,
            &norm.bias,
            &norm.running_mean,
            &norm.factor(),
        )),
        None => bias.map(Tensor::shallow_clone),
    }
}

/// LSQ gradient scaling: keeps scale updates in step with weight updates.
pub(super) fn grad_factor(numel: i64, spec: QuantSpec) -> f64 {
    1.0 / ((numel.max(1) as f64) * spec.range().1 as f64).sqrt()
}

pub(super) fn learned_weight_fake_quant(w: &Tensor, log_scale: &Tensor, spec: QuantSpec) -> Tensor {
    let (qmin, qmax) = spec.range();
    let scale = log_scale.exp();
    let zero = scale.zeros_like();
    let per_channel = w.numel() as i64 / w.size()[0];
    match spec.granularity {
        crate::ir::Granularity::PerChannel => w
            .internal_fake_quantize_learnable_per_channel_affine(
                &scale,
                &zero,
                0,
                qmin,
                qmax,
                grad_factor(per_channel, spec),
            ),
        crate::ir::Granularity::PerTensor => w.internal_fake_quantize_learnable_per_tensor_affine(
            &scale.mean(Kind::Float).reshape([1]),
            &zero.narrow(0, 0, 1),
            qmin,
            qmax,
            grad_factor(w.numel() as i64, spec),
        ),
    }
}

pub(super) fn learned_fake_quant(x: &Tensor, range: &LearnedRange, spec: QuantSpec) -> Tensor {
    let (qmin, qmax) = spec.range();
    let per_sample = x.numel() as i64 / x.size()[0].max(1);
    x.internal_fake_quantize_learnable_per_tensor_affine(
        &range.log_scale.exp(),
        &range.zero_point,
        qmin,
        qmax,
        grad_factor(per_sample, spec),
    )
}

/// The float range a learned scale and zero point cover.
pub(super) fn learned_min_max(range: &LearnedRange, spec: QuantSpec) -> (f32, f32) {
    let (qmin, qmax) = spec.range();
    let scale = range.log_scale.exp().double_value(&[0]) as f32;
    let zp = range.zero_point.double_value(&[0]).round() as f32;
    ((qmin as f32 - zp) * scale, (qmax as f32 - zp) * scale)
}
