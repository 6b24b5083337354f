//! Fitting images to a model's `[C, H, W]` input: channels converted (grey ↔ RGB,
//! alpha dropped, 16-bit and palette images reduced to 8 bits), then resized so the
//! shorter side fits and centre-cropped. One place, used by every data source.

use std::path::Path;

use image::{imageops::FilterType, DynamicImage, GrayImage, RgbImage};

use super::{DataError, Images};

/// The model input a data set is fitted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub channels: usize,
    pub rows: usize,
    pub cols: usize,
}

impl Target {
    /// A model input `[C, H, W]` with 1 (grey) or 3 (RGB) channels.
    pub fn from_shape(shape: &[usize]) -> Option<Target> {
        match *shape {
            [channels @ (1 | 3), rows, cols] if rows > 0 && cols > 0 => Some(Target {
                channels,
                rows,
                cols,
            }),
            _ => None,
        }
    }
}

/// One decoded image as `[C, H, W]` bytes of the target's size.
pub fn fit_image(image: &DynamicImage, target: Target) -> Vec<u8> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let image = if (w, h) == (target.cols, target.rows) {
        image.clone()
    } else {
        // Scale so that the image covers the target, then cut the centre out.
        let f = (target.cols as f64 / w as f64).max(target.rows as f64 / h as f64);
        let sw = ((w as f64 * f).round() as u32).max(target.cols as u32);
        let sh = ((h as f64 * f).round() as u32).max(target.rows as u32);
        let scaled = image.resize_exact(sw, sh, FilterType::Triangle);
        let (x0, y0) = ((sw - target.cols as u32) / 2, (sh - target.rows as u32) / 2);
        scaled.crop_imm(x0, y0, target.cols as u32, target.rows as u32)
    };
    match target.channels {
        1 => image.to_luma8().into_raw(),
        _ => hwc_to_chw(&image.to_rgb8().into_raw(), 3),
    }
}

/// Every image of `set` fitted to `target`; `origin` names the data in errors.
pub fn fit(set: Images, target: Target, origin: &Path) -> Result<Images, DataError> {
    if (set.channels, set.rows, set.cols) == (target.channels, target.rows, target.cols) {
        return Ok(set);
    }
    if set.rows == 0 || set.cols == 0 {
        return Err(DataError::Invalid {
            path: origin.to_path_buf(),
            why: format!(
                "images of {}x{} pixels cannot be resized",
                set.rows, set.cols
            ),
        });
    }
    let mut pixels = Vec::with_capacity(set.len() * target.channels * target.rows * target.cols);
    for i in 0..set.len() {
        pixels.extend(fit_image(&to_dynamic(&set, i, origin)?, target));
    }
    Ok(Images {
        pixels,
        labels: set.labels,
        channels: target.channels,
        rows: target.rows,
        cols: target.cols,
    })
}

fn to_dynamic(set: &Images, i: usize, origin: &Path) -> Result<DynamicImage, DataError> {
    let (w, h) = (set.cols as u32, set.rows as u32);
    let image = set.image(i);
    let built = match set.channels {
        1 => GrayImage::from_raw(w, h, image.to_vec()).map(DynamicImage::ImageLuma8),
        3 => RgbImage::from_raw(w, h, chw_to_hwc(image, 3)).map(DynamicImage::ImageRgb8),
        c => {
            return Err(DataError::Invalid {
                path: origin.to_path_buf(),
                why: format!("images with {c} channels: only grey (1) and RGB (3) are read"),
            })
        }
    };
    built.ok_or_else(|| DataError::Invalid {
        path: origin.to_path_buf(),
        why: "image size does not match its pixel count".into(),
    })
}

/// Interleaved `[H, W, C]` bytes to planar `[C, H, W]`.
pub fn hwc_to_chw(hwc: &[u8], channels: usize) -> Vec<u8> {
    let pixels = hwc.len() / channels;
    let mut out = vec![0u8; hwc.len()];
    for (p, px) in hwc.chunks_exact(channels).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            out[c * pixels + p] = v;
        }
    }
    out
}

fn chw_to_hwc(chw: &[u8], channels: usize) -> Vec<u8> {
    let pixels = chw.len() / channels;
    let mut out = vec![0u8; chw.len()];
    for c in 0..channels {
        for p in 0..pixels {
            out[p * channels + c] = chw[c * pixels + p];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y))))
    }

    #[test]
    fn same_size_keeps_pixels_and_goes_channel_major() {
        let img = rgb(2, 1, |x, _| [x as u8, 10 + x as u8, 20 + x as u8]);
        let t = Target::from_shape(&[3, 1, 2]).unwrap();
        assert_eq!(fit_image(&img, t), vec![0, 1, 10, 11, 20, 21]);
    }

    #[test]
    fn wide_images_are_scaled_to_the_shorter_side_and_centre_cropped() {
        // 8x4: left quarter black, middle half white, right quarter black.
        let img = rgb(8, 4, |x, _| {
            if (2..6).contains(&x) {
                [255; 3]
            } else {
                [0; 3]
            }
        });
        let out = fit_image(&img, Target::from_shape(&[1, 2, 2]).unwrap());
        // Scaled to 4x2, the centre 2x2 is the white middle.
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|&v| v > 200), "{out:?}");
    }

    #[test]
    fn grey_sets_become_rgb_and_back() {
        let set = Images {
            pixels: vec![0, 50, 100, 150],
            labels: vec![1],
            channels: 1,
            rows: 2,
            cols: 2,
        };
        let rgb = fit(
            set.clone(),
            Target::from_shape(&[3, 2, 2]).unwrap(),
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(rgb.pixels, [0, 50, 100, 150].repeat(3));
        let grey = fit(rgb, Target::from_shape(&[1, 2, 2]).unwrap(), Path::new("x")).unwrap();
        assert_eq!(grey.pixels, set.pixels);
    }

    #[test]
    fn only_grey_and_rgb_inputs_are_targets() {
        assert!(Target::from_shape(&[4, 8, 8]).is_none());
        assert!(Target::from_shape(&[784]).is_none());
    }
}
