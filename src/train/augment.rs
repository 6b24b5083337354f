//! Data augmentation for training (never for calibration or evaluation, which do not
//! call it): random resized crop, random crop from a zero-padded image, horizontal flip.
//! Each sample's choices come from a seeded generator, so a build is reproducible.

use tch::{Kind, Tensor};

use crate::recipe::AugmentConfig;

/// SplitMix64: small, seeded, and independent of libtorch's generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..=max`.
    fn upto(&mut self, max: i64) -> i64 {
        (self.next() % (max as u64 + 1)) as i64
    }
}

/// Whether `config` changes anything.
pub fn active(config: &AugmentConfig) -> bool {
    config.flip || config.crop_padding > 0 || config.resized_crop.is_some()
}

/// An augmented copy of the batch `xs` (`[N, C, H, W]`, already normalized): for each
/// sample, a random resized crop (a share of the area in `resized_crop`, aspect ratio
/// 3/4 to 4/3, scaled back bilinearly), then a random `H×W` window of the sample padded
/// by `crop_padding` zeros (0 is the mean colour after normalization), then a
/// horizontal flip with probability 1/2.
pub fn apply(config: &AugmentConfig, xs: &Tensor, seed: u64) -> Tensor {
    let size = xs.size();
    let [n, _, h, w] = size[..] else {
        return xs.shallow_clone();
    };
    let mut rng = Rng(seed);
    let samples: Vec<Tensor> = (0..n)
        .map(|i| {
            let mut x = xs.narrow(0, i, 1);
            if let Some([lo, hi]) = config.resized_crop {
                let area = (h * w) as f64 * (lo + (hi - lo) * rng.unit());
                let ratio = ((3.0f64 / 4.0).ln() + (16.0f64 / 9.0).ln() * rng.unit()).exp();
                let cw = ((area * ratio).sqrt().round() as i64).clamp(1, w);
                let ch = ((area / ratio).sqrt().round() as i64).clamp(1, h);
                let (y0, x0) = (rng.upto(h - ch), rng.upto(w - cw));
                x = x.narrow(2, y0, ch).narrow(3, x0, cw).upsample_bilinear2d(
                    [h, w],
                    false,
                    None,
                    None,
                );
            }
            if config.crop_padding > 0 {
                let p = config.crop_padding as i64;
                let (dy, dx) = (rng.upto(2 * p), rng.upto(2 * p));
                x = x
                    .constant_pad_nd([p, p, p, p])
                    .narrow(2, dy, h)
                    .narrow(3, dx, w);
            }
            if config.flip && rng.next() & 1 == 1 {
                x = x.flip([3]);
            }
            x
        })
        .collect();
    Tensor::cat(&samples, 0).to_kind(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn batch() -> Tensor {
        Tensor::arange(2 * 3 * 4 * 5, (Kind::Float, Device::Cpu)).view([2, 3, 4, 5])
    }

    #[test]
    fn flips_mirror_rows_and_the_seed_decides() {
        let config = AugmentConfig {
            flip: true,
            ..Default::default()
        };
        let x = batch();
        let a = apply(&config, &x, 1);
        assert_eq!(a.size(), x.size());
        assert!(a.equal(&apply(&config, &x, 1)), "same seed, same batch");
        // Each sample is itself or its mirror image; over seeds both happen.
        let mut flipped = 0;
        for seed in 0..16 {
            let y = apply(&config, &x, seed);
            for i in 0..2 {
                let (yi, xi) = (y.narrow(0, i, 1), x.narrow(0, i, 1));
                if yi.equal(&xi.flip([3])) {
                    flipped += 1;
                } else {
                    assert!(yi.equal(&xi));
                }
            }
        }
        assert!(flipped > 0 && flipped < 32, "{flipped}");
    }

    #[test]
    fn padded_crops_shift_and_resized_crops_keep_the_shape() {
        let x = batch() + 1.0; // no zeros inside, so padding shows
        let crop = AugmentConfig {
            crop_padding: 2,
            ..Default::default()
        };
        let shifted = (0..8).any(|s| {
            let y = apply(&crop, &x, s);
            y.eq(0.0).any().int64_value(&[]) == 1
        });
        assert!(shifted, "some crop reaches into the padding");
        let resized = AugmentConfig {
            resized_crop: Some([0.3, 0.6]),
            ..Default::default()
        };
        let y = apply(&resized, &x, 3);
        assert_eq!(y.size(), x.size());
        assert!(!y.equal(&x));
        assert!(!active(&AugmentConfig::default()));
    }
}
