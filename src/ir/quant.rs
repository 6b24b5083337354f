//! Quantization specs: how one tensor is mapped to integers.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// Zero point 0, range symmetric around 0 (narrow: [-(2^(b-1)-1), 2^(b-1)-1]).
    Symmetric,
    /// Any zero point; the whole range [-(2^(b-1)), 2^(b-1)-1] is used.
    Asymmetric,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    PerTensor,
    /// One scale per output channel (axis 0 of a weight tensor).
    PerChannel,
}

/// A signed-integer quantization spec such as `int8(symmetric, per_channel)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QuantSpec {
    pub bits: u8,
    pub scheme: Scheme,
    pub granularity: Granularity,
}

impl QuantSpec {
    pub const MIN_BITS: u8 = 2;
    pub const MAX_BITS: u8 = 8;

    /// The default for weights: int8, symmetric, per output channel.
    pub const WEIGHTS: QuantSpec = QuantSpec {
        bits: 8,
        scheme: Scheme::Symmetric,
        granularity: Granularity::PerChannel,
    };
    /// The default for activations: int8, asymmetric, per tensor.
    pub const ACTIVATIONS: QuantSpec = QuantSpec {
        bits: 8,
        scheme: Scheme::Asymmetric,
        granularity: Granularity::PerTensor,
    };

    /// The integer range `[qmin, qmax]` values are clamped to.
    pub fn range(&self) -> (i64, i64) {
        let half = 1i64 << (self.bits - 1);
        match self.scheme {
            Scheme::Symmetric => (-(half - 1), half - 1),
            Scheme::Asymmetric => (-half, half - 1),
        }
    }

    /// Scale and zero point that map `[min, max]` onto the integer range; the range is
    /// widened to contain 0 and the zero point is rounded so that real 0 is exact.
    pub fn params(&self, min: f32, max: f32) -> (f32, i64) {
        let (qmin, qmax) = self.range();
        let (min, max) = (min.min(0.0), max.max(0.0));
        match self.scheme {
            Scheme::Symmetric => {
                // An empty range gets scale 1 (weights, which have no such case, keep the rule's floor).
                let scale = if min.abs().max(max.abs()) > 0.0 {
                    symmetric_scale(&min, &max, qmax)
                } else {
                    1.0
                };
                (scale, 0)
            }
            Scheme::Asymmetric => {
                let scale = if max > min {
                    (max - min) / (qmax - qmin) as f32
                } else {
                    1.0
                };
                let scale = scale.max(f32::EPSILON);
                let zero_point = (qmin as f32 - min / scale).round() as i64;
                (scale, zero_point.clamp(qmin, qmax))
            }
        }
    }
}

/// The arithmetic the quantization rules use, so that one definition of each rule runs
/// on f32 (reading trained weights, lowering) and on libtorch tensors (the fake-quant
/// forward, implemented in `train`) with the same f32 operations in the same order.
pub trait Arith: Sized {
    fn add(&self, other: &Self) -> Self;
    fn sub(&self, other: &Self) -> Self;
    fn mul(&self, other: &Self) -> Self;
    fn div(&self, other: &Self) -> Self;
    fn add_scalar(&self, x: f64) -> Self;
    fn div_scalar(&self, x: f64) -> Self;
    fn sqrt(&self) -> Self;
    fn abs(&self) -> Self;
    fn maximum(&self, other: &Self) -> Self;
    fn clamp_min(&self, x: f64) -> Self;
}

impl Arith for f32 {
    fn add(&self, other: &f32) -> f32 {
        self + other
    }
    fn sub(&self, other: &f32) -> f32 {
        self - other
    }
    fn mul(&self, other: &f32) -> f32 {
        self * other
    }
    fn div(&self, other: &f32) -> f32 {
        self / other
    }
    // libtorch adds and divides a float tensor by a scalar in f32.
    fn add_scalar(&self, x: f64) -> f32 {
        self + x as f32
    }
    fn div_scalar(&self, x: f64) -> f32 {
        self / x as f32
    }
    fn sqrt(&self) -> f32 {
        f32::sqrt(*self)
    }
    fn abs(&self) -> f32 {
        f32::abs(*self)
    }
    fn maximum(&self, other: &f32) -> f32 {
        self.max(*other)
    }
    fn clamp_min(&self, x: f64) -> f32 {
        self.max(x as f32)
    }
}

/// The symmetric scale of a range `[lo, hi]` that contains 0: `max(|lo|, hi) / qmax`,
/// at least `f32::EPSILON`. The one definition of the symmetric weight-scale rule.
pub fn symmetric_scale<T: Arith>(lo: &T, hi: &T, qmax: i64) -> T {
    lo.abs()
        .maximum(hi)
        .div_scalar(qmax as f64)
        .clamp_min(f32::EPSILON as f64)
}

impl fmt::Display for QuantSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Symmetric => "symmetric",
            Scheme::Asymmetric => "asymmetric",
        };
        let gran = match self.granularity {
            Granularity::PerTensor => "per_tensor",
            Granularity::PerChannel => "per_channel",
        };
        write!(f, "int{}({scheme}, {gran})", self.bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_symmetric_range_is_narrow() {
        assert_eq!(QuantSpec::WEIGHTS.range(), (-127, 127));
        assert_eq!(QuantSpec::ACTIVATIONS.range(), (-128, 127));
        let w2 = QuantSpec {
            bits: 2,
            ..QuantSpec::WEIGHTS
        };
        assert_eq!(w2.range(), (-1, 1));
    }

    #[test]
    fn asymmetric_params_make_zero_exact() {
        let (scale, zp) = QuantSpec::ACTIVATIONS.params(0.0, 6.0);
        assert!((scale - 6.0 / 255.0).abs() < 1e-7);
        assert_eq!(zp, -128);
        // real 0 maps to the integer zp exactly, and back.
        let (scale, zp) = QuantSpec::ACTIVATIONS.params(-1.3, 2.9);
        let q0 = (0.0f32 / scale).round() as i64 + zp;
        assert_eq!((q0 - zp) as f32 * scale, 0.0);
        assert!((-128..=127).contains(&zp));
    }

    #[test]
    fn range_is_widened_to_contain_zero() {
        let (scale, zp) = QuantSpec::ACTIVATIONS.params(2.0, 4.0);
        assert_eq!(zp, -128);
        assert!((scale - 4.0 / 255.0).abs() < 1e-7);
    }

    #[test]
    fn symmetric_params_use_the_larger_magnitude() {
        let (scale, zp) = QuantSpec::WEIGHTS.params(-0.5, 0.25);
        assert_eq!(zp, 0);
        assert!((scale - 0.5 / 127.0).abs() < 1e-9);
    }
}
