//! NumPy arrays, as Keras saves data sets: an `.npz` holding `x_train`, `y_train`,
//! `x_test`, `y_test`, or a directory of those four `.npy` files. Images are uint8
//! `[N, H, W]` or `[N, H, W, C]` (C = 1, 3 or 4), or float32 in [0, 1]; labels are
//! integers `[N]` or `[N, 1]`.

use std::io::Read;
use std::path::{Path, PathBuf};

use npyz::{npz::NpzArchive, DType, NpyFile, TypeChar};

use super::fit::hwc_to_chw;
use super::{DataError, Images};

/// `(train, test)` from an `.npz` file or a directory of `.npy` files.
pub fn load(path: &Path) -> Result<(Images, Images), DataError> {
    let read = |name: &str| -> Result<Array, DataError> {
        if path.is_dir() {
            open_npy(&path.join(format!("{name}.npy")))
        } else {
            let mut archive = NpzArchive::open(path)
                .map_err(|e| invalid(path, format!("is not an .npz archive: {e}")))?;
            let place = PathBuf::from(format!("{}:{name}", path.display()));
            let npy = archive
                .by_name(name)
                .map_err(|e| invalid(&place, format!("cannot be read: {e}")))?
                .ok_or_else(|| {
                    invalid(
                        path,
                        format!(
                            "has no array `{name}` (expected x_train, y_train, x_test, y_test)"
                        ),
                    )
                })?;
            Array::read(npy, &place)
        }
    };
    let split = |x: &str, y: &str| -> Result<Images, DataError> {
        let (images, labels) = (read(x)?, read(y)?);
        images.into_images(labels)
    };
    Ok((split("x_train", "y_train")?, split("x_test", "y_test")?))
}

fn invalid(path: &Path, why: String) -> DataError {
    DataError::Invalid {
        path: path.to_path_buf(),
        why,
    }
}

/// One array, its values widened to what qatc keeps.
struct Array {
    place: PathBuf,
    shape: Vec<usize>,
    values: Values,
}

enum Values {
    Bytes(Vec<u8>),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
}

impl Array {
    fn read<R: Read>(npy: NpyFile<R>, place: &Path) -> Result<Array, DataError> {
        let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
        let DType::Plain(ty) = npy.dtype() else {
            return Err(invalid(
                place,
                "is a structured array; expected numbers".into(),
            ));
        };
        let bad = |e: std::io::Error| invalid(place, format!("cannot be read: {e}"));
        let values = match (ty.type_char(), ty.size_field()) {
            (TypeChar::Uint, 1) => Values::Bytes(npy.into_vec::<u8>().map_err(bad)?),
            (TypeChar::Float, 4) => Values::Floats(npy.into_vec::<f32>().map_err(bad)?),
            (TypeChar::Int | TypeChar::Uint, 1 | 2 | 4 | 8) => {
                Values::Ints(read_ints(npy, ty.type_char(), ty.size_field()).map_err(bad)?)
            }
            _ => {
                return Err(invalid(
                    place,
                    format!("has dtype {ty}; expected uint8 or float32 images and integer labels"),
                ))
            }
        };
        Ok(Array {
            place: place.to_path_buf(),
            shape,
            values,
        })
    }

    fn into_images(self, labels: Array) -> Result<Images, DataError> {
        let mut images = self.into_unlabelled()?;
        let n = images.len();
        let label_values: Vec<i64> = match labels.values {
            Values::Ints(v) => v,
            Values::Bytes(b) => b.into_iter().map(i64::from).collect(),
            Values::Floats(_) => {
                return Err(invalid(&labels.place, "labels must be integers".into()))
            }
        };
        let label_count_ok = matches!(labels.shape[..], [m] | [m, 1] if m == n);
        if !label_count_ok {
            return Err(invalid(
                &labels.place,
                format!("has shape {:?} but there are {n} images", labels.shape),
            ));
        }
        images.labels = label_values
            .iter()
            .map(|&l| u8::try_from(l))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| invalid(&labels.place, "labels must be between 0 and 255".into()))?;
        Ok(images)
    }

    /// The images of this array, with label 0 each (the caller sets the labels).
    fn into_unlabelled(self) -> Result<Images, DataError> {
        let (n, rows, cols, channels) = match self.shape[..] {
            [n, h, w] => (n, h, w, 1),
            [n, h, w, c @ (1 | 3 | 4)] => (n, h, w, c),
            _ => {
                return Err(invalid(
                    &self.place,
                    format!(
                        "has shape {:?}; images are [N, H, W] or [N, H, W, C] with C = 1, 3 or 4",
                        self.shape
                    ),
                ))
            }
        };
        let hwc: Vec<u8> = match self.values {
            Values::Bytes(b) => b,
            Values::Floats(f) => {
                if let Some(v) = f.iter().find(|v| !(0.0..=1.0).contains(*v)) {
                    return Err(invalid(
                        &self.place,
                        format!("holds {v}: float images must be in [0, 1] (pixels / 255)"),
                    ));
                }
                f.iter().map(|v| (v * 255.0).round() as u8).collect()
            }
            Values::Ints(_) => {
                return Err(invalid(
                    &self.place,
                    "images must be uint8 or float32".into(),
                ))
            }
        };
        // Alpha carries no class information: drop it, keep RGB.
        let per = rows * cols;
        let kept = if channels == 4 { 3 } else { channels };
        let mut pixels = Vec::with_capacity(n * kept * per);
        for image in hwc.chunks_exact(per * channels) {
            let rgb: Vec<u8> = if channels == 4 {
                image
                    .chunks_exact(4)
                    .flat_map(|p| [p[0], p[1], p[2]])
                    .collect()
            } else {
                image.to_vec()
            };
            pixels.extend(hwc_to_chw(&rgb, kept));
        }
        Ok(Images {
            pixels,
            labels: vec![0; n],
            channels: kept,
            rows,
            cols,
        })
    }
}

/// Opens one `.npy` file.
fn open_npy(file: &Path) -> Result<Array, DataError> {
    let bytes = std::fs::File::open(file).map_err(|source| DataError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let npy = NpyFile::new(std::io::BufReader::new(bytes))
        .map_err(|e| invalid(file, format!("is not a .npy array: {e}")))?;
    Array::read(npy, file)
}

/// The images of one `.npy` file (uint8 `[N, H, W]` / `[N, H, W, C]`, or float32 in
/// [0, 1]), each labelled 0.
pub fn read_images(file: &Path) -> Result<Images, DataError> {
    open_npy(file)?.into_unlabelled()
}

/// Integer labels `[N]` or `[N, 1]` from one `.npy` file.
pub fn read_labels(file: &Path) -> Result<Vec<u8>, DataError> {
    let labels = open_npy(file)?;
    let values: Vec<i64> = match labels.values {
        Values::Ints(v) => v,
        Values::Bytes(b) => b.into_iter().map(i64::from).collect(),
        Values::Floats(_) => return Err(invalid(file, "labels must be integers".into())),
    };
    if !matches!(labels.shape[..], [_] | [_, 1]) {
        return Err(invalid(
            file,
            format!("has shape {:?}; labels are [N] or [N, 1]", labels.shape),
        ));
    }
    values
        .iter()
        .map(|&l| u8::try_from(l))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| invalid(file, "labels must be between 0 and 255".into()))
}

fn read_ints<R: Read>(npy: NpyFile<R>, kind: TypeChar, size: u64) -> std::io::Result<Vec<i64>> {
    Ok(match (kind, size) {
        (TypeChar::Int, 1) => npy.into_vec::<i8>()?.into_iter().map(i64::from).collect(),
        (TypeChar::Int, 2) => npy.into_vec::<i16>()?.into_iter().map(i64::from).collect(),
        (TypeChar::Int, 4) => npy.into_vec::<i32>()?.into_iter().map(i64::from).collect(),
        (TypeChar::Int, _) => npy.into_vec::<i64>()?,
        (_, 1) => npy.into_vec::<u8>()?.into_iter().map(i64::from).collect(),
        (_, 2) => npy.into_vec::<u16>()?.into_iter().map(i64::from).collect(),
        (_, 4) => npy.into_vec::<u32>()?.into_iter().map(i64::from).collect(),
        (_, _) => npy
            .into_vec::<u64>()?
            .into_iter()
            .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
            .collect(),
    })
}
