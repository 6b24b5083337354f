//! Input preprocessing, declared once (the recipe's `data.normalize`) and carried by the
//! int8 artifact, so that training, calibration, evaluation, `qatc run`, the `.tflite`
//! and the `.onnx` all turn a raw `uint8` pixel `p` of channel `c` into the same float:
//!
//! `x = (p / 255 - mean[c]) / std[c]`, in f32, in that order of operations
//! (libtorch's `to_kind(Float) / 255`, `- mean`, `/ std` computes exactly this).
//!
//! The deployed model takes the raw pixels; the normalization is never folded into the
//! first layer's weights (which is exact only without zero padding: a padded border is 0
//! after normalization, `mean` before it), so it holds for every first layer.

use serde::{Deserialize, Serialize};

/// Pixels are divided by this before normalization: 8-bit images to [0, 1].
pub const PIXEL_DIVISOR: f32 = 255.0;

/// Per-channel mean and standard deviation, in units of `pixel / 255` (torchvision's
/// convention: ImageNet is mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalize {
    /// No normalization for `channels` channels: `x = p / 255`.
    pub fn identity(channels: usize) -> Normalize {
        Normalize {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// Whether this leaves `p / 255` unchanged.
    pub fn is_identity(&self) -> bool {
        self.mean.iter().all(|&m| m == 0.0) && self.std.iter().all(|&s| s == 1.0)
    }

    /// Why these values cannot normalize inputs with `channels` channels, if they cannot.
    pub fn check(&self, channels: usize) -> Result<(), String> {
        if self.mean.len() != self.std.len() {
            return Err(format!(
                "mean has {} values and std {}: give one per channel",
                self.mean.len(),
                self.std.len()
            ));
        }
        if self.mean.len() != channels {
            return Err(format!(
                "has {} values per list, but the model input has {channels} channel(s)",
                self.mean.len()
            ));
        }
        if let Some(s) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(format!("std must be positive, got {s}"));
        }
        if let Some(m) = self.mean.iter().find(|m| !m.is_finite()) {
            return Err(format!("mean must be a number, got {m}"));
        }
        Ok(())
    }

    /// The float a model sees for pixel `p` of channel `c`.
    #[inline]
    pub fn apply(&self, p: u8, c: usize) -> f32 {
        (p as f32 / PIXEL_DIVISOR - self.mean[c]) / self.std[c]
    }

    /// Raw `[N, C, …]` pixels (channel-major per sample, `per_channel` values each) as floats.
    pub fn pixels(&self, pixels: &[u8], per_channel: usize) -> Vec<f32> {
        let channels = self.mean.len().max(1);
        pixels
            .iter()
            .enumerate()
            .map(|(i, &p)| self.apply(p, (i / per_channel.max(1)) % channels))
            .collect()
    }
}

/// Values per channel of one sample of `shape` (`[C, H, W]` → H·W; a flat `[F]` is one channel).
pub fn per_channel(shape: &[usize]) -> usize {
    match shape {
        [_, h, w] => h * w,
        other => other.iter().product(),
    }
}

/// Channels of one sample of `shape` (`[C, H, W]` → C; a flat `[F]` is one channel).
pub fn channels(shape: &[usize]) -> usize {
    match shape {
        [c, _, _] => *c,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_pixel_over_255_and_channels_follow_planes() {
        let id = Normalize::identity(3);
        assert!(id.is_identity());
        assert_eq!(id.apply(51, 2), 51.0 / 255.0);
        let n = Normalize {
            mean: vec![0.0, 1.0],
            std: vec![1.0, 0.5],
        };
        // Two channels of two pixels each: the second plane is (p/255 - 1) / 0.5.
        let x = n.pixels(&[255, 0, 255, 0], 2);
        assert_eq!(x, vec![1.0, 0.0, 0.0, -2.0]);
        assert!(n.check(2).is_ok());
        assert!(n.check(3).unwrap_err().contains("3 channel"));
        let zero = Normalize {
            mean: vec![0.0],
            std: vec![0.0],
        };
        assert!(zero.check(1).unwrap_err().contains("positive"));
    }
}
