//! Image classification data: the IDX format (MNIST, Fashion-MNIST, gzipped or not)
//! here; folders of image files, CIFAR's binary batches and NumPy arrays in the
//! submodules; [`load`] picks the source a recipe names and fits every image to the
//! model's input. No libtorch here: the runtime and tools use it too.

mod cache;
mod cifar;
mod fit;
mod folder;
pub mod inputs;
mod numpy;
mod source;

pub use fit::fit;
pub use source::{load, load_with, DataSets, Format, LoadOptions};

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot find {what} in {dir}: looked for {name} and {name}.gz\n  hint: {hint}")]
    Missing {
        what: &'static str,
        dir: PathBuf,
        name: String,
        hint: String,
    },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an IDX {kind} file: {why}")]
    Format {
        path: PathBuf,
        kind: &'static str,
        why: String,
    },
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
    #[error("{path}: label {index} is {label}; the dataset's classes are 0 to {}", classes - 1)]
    Label {
        path: PathBuf,
        index: usize,
        label: u8,
        classes: u8,
    },
    #[error("{path} holds no images (its header says {shape:?} images × rows × columns)")]
    Empty { path: PathBuf, shape: Vec<usize> },
    #[error("{images} has {n_images} images but {labels} has {n_labels} labels")]
    CountMismatch {
        images: PathBuf,
        n_images: usize,
        labels: PathBuf,
        n_labels: usize,
    },
}

/// Images as bytes (`count * channels * rows * cols`, each image channel-major like the
/// model's `[C, H, W]` input) with their labels.
#[derive(Debug, Clone)]
pub struct Images {
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
    pub channels: usize,
    pub rows: usize,
    pub cols: usize,
}

impl Images {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image.
    pub fn image_len(&self) -> usize {
        self.channels * self.rows * self.cols
    }

    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Keeps the images whose label is in `classes` (all when `None`), then the first `limit`.
    pub fn select(&self, classes: Option<&[u8]>, limit: Option<usize>) -> Images {
        let mut out = Images {
            pixels: Vec::new(),
            labels: Vec::new(),
            channels: self.channels,
            rows: self.rows,
            cols: self.cols,
        };
        for i in 0..self.len() {
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            if classes.is_none_or(|c| c.contains(&self.labels[i])) {
                out.pixels.extend_from_slice(self.image(i));
                out.labels.push(self.labels[i]);
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// Loads one split of an MNIST-style directory (`train-images-idx3-ubyte[.gz]` etc.).
pub fn load_split(dir: &Path, split: Split) -> Result<Images, DataError> {
    let images_path = find(
        dir,
        &format!("{}-images-idx3-ubyte", split.prefix()),
        "the images",
    )?;
    let labels_path = find(
        dir,
        &format!("{}-labels-idx1-ubyte", split.prefix()),
        "the labels",
    )?;
    let (pixels, count, rows, cols) = read_images(&images_path)?;
    let labels = read_labels(&labels_path)?;
    if let Some(at) = labels.iter().position(|&l| l >= CLASSES) {
        return Err(DataError::Label {
            path: labels_path,
            index: at,
            label: labels[at],
            classes: CLASSES,
        });
    }
    if labels.len() != count {
        return Err(DataError::CountMismatch {
            images: images_path,
            n_images: count,
            labels: labels_path,
            n_labels: labels.len(),
        });
    }
    Ok(Images {
        pixels,
        labels,
        channels: 1,
        rows,
        cols,
    })
}

fn find(dir: &Path, name: &str, what: &'static str) -> Result<PathBuf, DataError> {
    for candidate in [dir.join(name), dir.join(format!("{name}.gz"))] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(DataError::Missing {
        what,
        dir: dir.to_path_buf(),
        name: name.to_string(),
        hint: "install Fashion-MNIST with `bash scripts/setup-data.sh` (Debian package dataset-fashion-mnist), or set `data.dir` in the recipe".into(),
    })
}

/// The most bytes an IDX body may hold (the product of its header's dimensions): twenty
/// times Fashion-MNIST's training images, and checked before any of it is read, so a huge
/// file or a gzip bomb cannot exhaust memory.
pub const MAX_IDX_BYTES: usize = 1 << 30;

/// Labels a dataset may have: Fashion-MNIST and MNIST have ten classes, and the models'
/// outputs are indexed by them.
pub const CLASSES: u8 = 10;

/// Opens a file for reading, un-gzipping it when it starts with the gzip magic.
fn open_maybe_gz(path: &Path) -> Result<Box<dyn Read>, DataError> {
    use std::io::BufRead;
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
    let gz = file.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        Box::new(GzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

/// Reads an IDX file: its header first (magic, dimensions, the size they promise, checked
/// against [`MAX_IDX_BYTES`]), then exactly the body it promises.
fn read_idx(
    path: &Path,
    kind: &'static str,
    magic: u32,
    dims: usize,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let bad = |why: String| DataError::Format {
        path: path.to_path_buf(),
        kind,
        why,
    };
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = open_maybe_gz(path)?;
    let need = 4 + 4 * dims;
    let mut header = Vec::with_capacity(need);
    (&mut reader)
        .take(need as u64)
        .read_to_end(&mut header)
        .map_err(io)?;
    if header.len() < need {
        return Err(bad(format!(
            "{} bytes is shorter than its {need}-byte header",
            header.len()
        )));
    }
    let word = |i: usize| u32::from_be_bytes(header[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    if word(0) != magic {
        return Err(bad(format!(
            "magic number {:#010x}, expected {magic:#010x}",
            word(0)
        )));
    }
    let shape: Vec<usize> = (1..=dims).map(|i| word(i) as usize).collect();
    let body = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_IDX_BYTES)
        .ok_or_else(|| {
            bad(format!(
                "its header promises {shape:?} bytes, more than the {MAX_IDX_BYTES} an IDX file may hold"
            ))
        })?;
    let mut bytes = Vec::with_capacity(body);
    reader
        .take(body as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() != body {
        let found = if bytes.len() > body {
            "more".to_string()
        } else {
            (need + bytes.len()).to_string()
        };
        return Err(bad(format!(
            "header promises {} bytes, file has {found} (truncated or corrupt)",
            need + body
        )));
    }
    Ok((shape, bytes))
}

/// Reads an IDX3 image file: `(pixels, count, rows, cols)`.
pub fn read_images(path: &Path) -> Result<(Vec<u8>, usize, usize, usize), DataError> {
    let (shape, pixels) = read_idx(path, "image", 0x0000_0803, 3)?;
    if shape.contains(&0) {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            shape,
        });
    }
    Ok((pixels, shape[0], shape[1], shape[2]))
}

/// Reads an IDX1 label file.
pub fn read_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    Ok(read_idx(path, "label", 0x0000_0801, 1)?.1)
}

/// Writes an IDX3 image file (uncompressed); used by tests and tools to make small sets.
pub fn write_images(
    path: &Path,
    pixels: &[u8],
    count: usize,
    rows: usize,
    cols: usize,
) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(16 + pixels.len());
    for w in [0x0000_0803u32, count as u32, rows as u32, cols as u32] {
        bytes.extend_from_slice(&w.to_be_bytes());
    }
    bytes.extend_from_slice(pixels);
    std::fs::write(path, bytes)
}

/// Writes an IDX1 label file (uncompressed).
pub fn write_labels(path: &Path, labels: &[u8]) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(8 + labels.len());
    for w in [0x0000_0801u32, labels.len() as u32] {
        bytes.extend_from_slice(&w.to_be_bytes());
    }
    bytes.extend_from_slice(labels);
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train-images-idx3-ubyte");
        write_images(&p, &[1, 2, 3, 4, 5, 6, 7, 8], 2, 2, 2).unwrap();
        write_labels(&dir.path().join("train-labels-idx1-ubyte"), &[3, 7]).unwrap();
        let set = load_split(dir.path(), Split::Train).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.image(1), &[5, 6, 7, 8]);
        assert_eq!(set.select(Some(&[7]), None).labels, vec![7]);

        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        let err = load_split(dir.path(), Split::Train)
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn missing_files_name_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_split(dir.path(), Split::Test).unwrap_err().to_string();
        assert!(
            err.contains("t10k-images-idx3-ubyte") && err.contains("setup-data.sh"),
            "{err}"
        );
    }
}
