//! What `qatc run` reads: image files, folders of them (a subfolder's name is the class
//! of the images in it), IDX image files and NumPy `.npy` arrays. Every image is fitted
//! to the model input exactly as the training data is ([`super::fit`]).

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::fit::{fit, Target};
use super::folder::{decode_file, is_image_name};
use super::{numpy, read_images, read_labels, DataError, Images};

/// What is known of an image's true class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Truth {
    Unknown,
    /// A dataset label number (`--labels` of an IDX or `.npy` file).
    Label(u8),
    /// A class name (the subfolder the image is in).
    Name(String),
}

/// The images to run, fitted to the model input, with a name and the truth of each.
#[derive(Debug)]
pub struct Inputs {
    /// The file's path, or `file:index` for the images of an array.
    pub names: Vec<String>,
    /// The images, in order (their `labels` are not used: see `truth`).
    pub images: Images,
    pub truth: Vec<Truth>,
    /// Files in the folders read that are not images, and so were skipped.
    pub skipped: usize,
}

/// Reads `paths` (files and folders) for a model whose input is `input` (`[C, H, W]`, or
/// a flat `[F]` that takes arrays of F pixels as they are). `labels` (an IDX1 or `.npy`
/// file) gives the classes of the one array among `paths`.
pub fn read(
    paths: &[PathBuf],
    input: &[usize],
    labels: Option<&Path>,
) -> Result<Inputs, DataError> {
    let target = Target::from_shape(input);
    let mut files: Vec<(PathBuf, Truth)> = Vec::new();
    let mut arrays: Vec<PathBuf> = Vec::new();
    let mut skipped = 0;
    for path in paths {
        if path.is_dir() {
            skipped += list_folder(path, &mut files).map_err(|source| DataError::Io {
                path: path.clone(),
                source,
            })?;
        } else if is_image_name(path) {
            files.push((path.clone(), Truth::Unknown));
        } else {
            arrays.push(path.clone());
        }
    }
    if labels.is_some() && arrays.len() != 1 {
        return Err(DataError::Invalid {
            path: labels.expect("some").to_path_buf(),
            why: format!(
                "labels an array of images, but {} IDX or .npy files were given",
                arrays.len()
            ),
        });
    }
    let per_image: usize = input.iter().product();
    let mut out = Inputs {
        names: Vec::new(),
        images: Images {
            pixels: Vec::new(),
            labels: Vec::new(),
            channels: target.map_or(1, |t| t.channels),
            rows: target.map_or(1, |t| t.rows),
            cols: target.map_or(per_image, |t| t.cols),
        },
        truth: Vec::new(),
        skipped,
    };
    if !files.is_empty() {
        let Some(target) = target else {
            return Err(DataError::Invalid {
                path: files[0].0.clone(),
                why: format!(
                    "image files need a model input of [C, H, W] with 1 or 3 channels, not {input:?}"
                ),
            });
        };
        let decoded: Vec<Vec<u8>> = files
            .par_iter()
            .map(|(path, _)| decode_file(path, target))
            .collect::<Result<_, DataError>>()?;
        for ((path, truth), pixels) in files.into_iter().zip(decoded) {
            out.names.push(path.display().to_string());
            out.truth.push(truth);
            out.images.pixels.extend(pixels);
            out.images.labels.push(0);
        }
    }
    for path in arrays {
        let set = read_array(&path)?;
        let set = match target {
            Some(target) => fit(set, target, &path)?,
            None if set.image_len() == per_image => set,
            None => {
                return Err(DataError::Invalid {
                    path,
                    why: format!(
                        "has {}x{} images; the model takes {input:?}",
                        set.rows, set.cols
                    ),
                })
            }
        };
        let truth: Vec<Truth> = match labels {
            Some(file) => {
                let l = read_label_file(file)?;
                if l.len() != set.len() {
                    return Err(DataError::CountMismatch {
                        images: path,
                        n_images: set.len(),
                        labels: file.to_path_buf(),
                        n_labels: l.len(),
                    });
                }
                l.into_iter().map(Truth::Label).collect()
            }
            None => vec![Truth::Unknown; set.len()],
        };
        out.names
            .extend((0..set.len()).map(|i| format!("{}:{i}", path.display())));
        out.truth.extend(truth);
        out.images.pixels.extend(set.pixels);
        out.images.labels.extend(set.labels);
    }
    if out.names.is_empty() {
        return Err(DataError::Invalid {
            path: paths.first().cloned().unwrap_or_default(),
            why: format!(
                "holds no images ({}, IDX or .npy){}",
                super::folder::EXTENSIONS.join(", "),
                if skipped > 0 {
                    format!("; {skipped} other files were skipped")
                } else {
                    String::new()
                }
            ),
        });
    }
    Ok(out)
}

/// Lists `dir/*.png` (class unknown) and `dir/<class>/*.png` (class `<class>`), sorted;
/// returns how many other files it skipped.
fn list_folder(dir: &Path, files: &mut Vec<(PathBuf, Truth)>) -> std::io::Result<usize> {
    let mut skipped = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            let class = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut inside: Vec<PathBuf> = std::fs::read_dir(&path)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            inside.sort();
            for file in inside {
                if is_image_name(&file) && file.is_file() {
                    files.push((file, Truth::Name(class.clone())));
                } else {
                    skipped += 1;
                }
            }
        } else if is_image_name(&path) {
            files.push((path, Truth::Unknown));
        } else {
            skipped += 1;
        }
    }
    Ok(skipped)
}

fn is_npy(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// An IDX3 file (gzipped or not) or a `.npy` array of images.
fn read_array(path: &Path) -> Result<Images, DataError> {
    if is_npy(path) {
        return numpy::read_images(path);
    }
    let (pixels, count, rows, cols) = read_images(path)?;
    Ok(Images {
        pixels,
        labels: vec![0; count],
        channels: 1,
        rows,
        cols,
    })
}

fn read_label_file(path: &Path) -> Result<Vec<u8>, DataError> {
    if is_npy(path) {
        numpy::read_labels(path)
    } else {
        read_labels(path)
    }
}
