//! Image folders: `root/<class>/*.png` (split by a seeded `val_split`), or
//! `root/train/<class>/…` with `root/val/…` or `root/test/…`. Class names are the
//! folder names, sorted. Files with other extensions (and hidden ones) are not images
//! and are skipped; an image that does not decode is an error naming it.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use super::fit::{fit_image, Target};
use super::{DataError, Images, LoadOptions};

/// File extensions read as images (any case).
pub(super) const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "webp"];

/// Images a folder holds, one list per class.
struct Listing {
    classes: Vec<String>,
    /// `(class index, path)`, sorted by class then path.
    files: Vec<(u8, PathBuf)>,
    /// Files in the class folders that are not images (skipped).
    ignored: usize,
}

/// What a folder held besides the images read.
#[derive(Debug, Default)]
pub struct Skipped {
    /// Files that are not images by their extension.
    pub not_images: usize,
    /// Images that do not decode (only with `skip_bad`), the first one with its error.
    pub unreadable: usize,
    pub first_unreadable: Option<String>,
}

/// `(train, test, class names)` from an image folder.
pub fn load(
    root: &Path,
    target: Target,
    options: &LoadOptions,
) -> Result<(Images, Images, Vec<String>, Skipped), DataError> {
    let LoadOptions {
        val_split,
        seed,
        skip_bad,
        progress,
    } = *options;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    if !root.is_dir() {
        return Err(DataError::Invalid {
            path: root.to_path_buf(),
            why: "is not a directory of images (`root/<class>/*.png` or `root/train/<class>/…`)"
                .into(),
        });
    }
    let train_dir = root.join("train");
    let (train, test) = if train_dir.is_dir() {
        let test_dir = ["val", "test"]
            .iter()
            .map(|d| root.join(d))
            .find(|d| d.is_dir())
            .ok_or_else(|| DataError::Invalid {
                path: root.to_path_buf(),
                why: "has `train/` but neither `val/` nor `test/`".into(),
            })?;
        let train = list(&train_dir, None).map_err(io(&train_dir))??;
        let test = list(&test_dir, Some(&train.classes)).map_err(io(&test_dir))??;
        (train, test)
    } else {
        let all = list(root, None).map_err(io(root))??;
        split(all, root, val_split, seed)
    };
    // Listed class by class; mixed in a seeded order so that `train_limit` and
    // `test_limit` (the first N images) take every class, not the first few.
    let (train, test) = (mixed(train, root, seed), mixed(test, root, seed));
    let classes = train.classes.clone();
    // A classifier needs two classes, and every class needs training images.
    if classes.len() == 1 {
        return Err(DataError::Invalid {
            path: root.to_path_buf(),
            why: format!(
                "has one class ({}); a classifier needs at least two class folders",
                classes.join(", ")
            ),
        });
    }
    if train.files.is_empty() {
        return Err(DataError::Invalid {
            path: root.to_path_buf(),
            why: format!("holds no training images ({})", EXTENSIONS.join(", ")),
        });
    }
    if let Some(empty) =
        (0..classes.len()).find(|&c| !train.files.iter().any(|(l, _)| *l as usize == c))
    {
        return Err(DataError::Invalid {
            path: if train_dir.is_dir() {
                train_dir.join(&classes[empty])
            } else {
                root.join(&classes[empty])
            },
            why: format!(
                "class folder `{}` holds no training images ({})",
                classes[empty],
                EXTENSIONS.join(", ")
            ),
        });
    }
    let mut skipped = Skipped {
        not_images: train.ignored + test.ignored,
        ..Default::default()
    };
    let bar = |what: &str| progress.then(|| what.to_string());
    let train = decode(
        &train,
        target,
        skip_bad.then_some(&mut skipped),
        bar("train"),
    )?;
    let test = decode(&test, target, skip_bad.then_some(&mut skipped), bar("val"))?;
    Ok((train, test, classes, skipped))
}

/// Lists `dir/<class>/<image>`; with `known`, class folders must be among them.
fn list(dir: &Path, known: Option<&[String]>) -> std::io::Result<Result<Listing, DataError>> {
    let mut classes: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() && !name.starts_with('.') {
            classes.push(name);
        }
    }
    classes.sort();
    if let Some(known) = known {
        if let Some(stray) = classes.iter().find(|c| !known.contains(c)) {
            return Ok(Err(DataError::Invalid {
                path: dir.join(stray),
                why: format!(
                    "class `{stray}` is not among the training classes ({})",
                    known.join(", ")
                ),
            }));
        }
    }
    let names: Vec<String> = known.map_or_else(|| classes.clone(), <[String]>::to_vec);
    if names.len() > 256 {
        return Ok(Err(DataError::Invalid {
            path: dir.to_path_buf(),
            why: format!(
                "has {} class folders; at most 256 are supported",
                names.len()
            ),
        }));
    }
    let mut files = Vec::new();
    let mut ignored = 0;
    for class in &classes {
        let label = names.iter().position(|n| n == class).expect("listed") as u8;
        let mut in_class = Vec::new();
        for entry in std::fs::read_dir(dir.join(class))? {
            let path = entry?.path();
            if is_image_name(&path) && path.is_file() {
                in_class.push((label, path));
            } else {
                ignored += 1;
            }
        }
        in_class.sort();
        files.extend(in_class);
    }
    Ok(Ok(Listing {
        classes: names,
        files,
        ignored,
    }))
}

/// Splits one listing into training and validation images: each file goes to
/// validation when a hash of the seed and its path falls below `val_split`, so the
/// split is reproducible and adding a file does not move the others.
fn split(all: Listing, root: &Path, val_split: f64, seed: u64) -> (Listing, Listing) {
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (label, path) in all.files {
        if unit_hash(seed, relative(root, &path).as_bytes()) < val_split {
            val.push((label, path));
        } else {
            train.push((label, path));
        }
    }
    let listing = |files, ignored| Listing {
        classes: all.classes.clone(),
        files,
        ignored,
    };
    (listing(train, all.ignored), listing(val, 0))
}

/// The listing's files in the order of a hash of the seed and each path: reproducible,
/// classes interleaved.
fn mixed(mut listing: Listing, root: &Path, seed: u64) -> Listing {
    listing.files.sort_by(|(_, a), (_, b)| {
        let key = |p: &PathBuf| unit_hash(seed ^ 0x5eed, relative(root, p).as_bytes());
        key(a).total_cmp(&key(b)).then_with(|| a.cmp(b))
    });
    listing
}

/// `path` below `root`, `/`-separated: what the split and the order hash, so that
/// moving or copying the folder changes neither.
fn relative(root: &Path, path: &Path) -> String {
    let below = path.strip_prefix(root).unwrap_or(path);
    below
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// A hash of `(seed, bytes)` mapped to [0, 1): FNV-1a, then a SplitMix64 finalizer.
fn unit_hash(seed: u64, bytes: &[u8]) -> f64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Decodes every image (in parallel) and fits it to the model input, or reads the
/// pixels from the on-disk cache when the same files were decoded before. With
/// `skipped`, images that do not decode are left out and counted there. With `bar`, a
/// progress bar so labelled counts the decoded files.
fn decode(
    listing: &Listing,
    target: Target,
    skipped: Option<&mut Skipped>,
    bar: Option<String>,
) -> Result<Images, DataError> {
    let paths: Vec<PathBuf> = listing.files.iter().map(|(_, p)| p.clone()).collect();
    let len = paths.len() * target.channels * target.rows * target.cols;
    let cache = super::cache::path(&paths, target);
    let cached = cache.as_deref().and_then(|c| super::cache::read(c, len));
    let mut labels: Vec<u8> = listing.files.iter().map(|(label, _)| *label).collect();
    let pixels = match cached {
        Some(pixels) => pixels,
        None => {
            let bar = match bar {
                Some(label) => {
                    let bar = ProgressBar::new(paths.len() as u64);
                    if let Ok(style) = ProgressStyle::with_template(
                        "decoding {msg:>5} {bar:30} {pos}/{len} images  {elapsed} (eta {eta})",
                    ) {
                        bar.set_style(style);
                    }
                    bar.set_message(label);
                    bar
                }
                None => ProgressBar::hidden(),
            };
            let decoded: Vec<Result<Vec<u8>, DataError>> = paths
                .par_iter()
                .map(|path| {
                    let image = decode_file(path, target);
                    bar.inc(1);
                    image
                })
                .collect();
            bar.finish_and_clear();
            let mut pixels = Vec::with_capacity(len);
            let mut kept = Vec::with_capacity(labels.len());
            let mut bad = 0;
            match skipped {
                None => {
                    for image in decoded {
                        pixels.extend(image?);
                    }
                    kept = labels.clone();
                }
                Some(skipped) => {
                    for (image, label) in decoded.into_iter().zip(&labels) {
                        match image {
                            Ok(p) => {
                                pixels.extend(p);
                                kept.push(*label);
                            }
                            Err(e) => {
                                bad += 1;
                                skipped.unreadable += 1;
                                skipped.first_unreadable.get_or_insert(e.to_string());
                            }
                        }
                    }
                }
            }
            // Only a complete decoding is cached (a skipped image may be fixed later).
            if let (Some(c), 0) = (&cache, bad) {
                super::cache::write(c, &pixels);
            }
            labels = kept;
            pixels
        }
    };
    Ok(Images {
        pixels,
        labels,
        channels: target.channels,
        rows: target.rows,
        cols: target.cols,
    })
}

/// Whether `path` names an image file by its extension (hidden files never do).
pub(super) fn is_image_name(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'));
    !hidden
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// One image file decoded and fitted to `target`; an error names the file.
pub(super) fn decode_file(path: &Path, target: Target) -> Result<Vec<u8>, DataError> {
    let bad = |why: String| DataError::Invalid {
        path: path.to_path_buf(),
        why,
    };
    let image = image::ImageReader::open(path)
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .with_guessed_format()
        .map_err(|e| bad(format!("cannot read: {e}")))?
        .decode()
        .map_err(|e| bad(format!("is not a readable image: {e}")))?;
    Ok(fit_image(&image, target))
}
