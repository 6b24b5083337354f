//! The data source a recipe names (`data.format`), loaded and fitted to the model input.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::fit::{fit, Target};
use super::{cifar, folder, load_split, numpy, DataError, Images, Split};

/// How the files under `data.dir` are laid out.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// MNIST-style IDX files (`train-images-idx3-ubyte[.gz]` …).
    #[default]
    Idx,
    /// `dir/<class>/*.png|jpg|…`, or `dir/train/<class>/…` with `dir/val/` or `dir/test/`.
    Folder,
    /// CIFAR-10/100 binary batches.
    Cifar,
    /// An `.npz` (or a directory of `.npy`) with x_train, y_train, x_test, y_test.
    Numpy,
}

/// Training and test images fitted to the model input, and the class names.
#[derive(Debug, Clone)]
pub struct DataSets {
    pub train: Images,
    pub test: Images,
    /// Names of labels 0, 1, …: folder names, CIFAR's names, or the numbers.
    pub class_names: Vec<String>,
    /// What was left out and why (files that are not images, skipped broken images).
    pub notes: Vec<String>,
}

/// How [`load_with`] treats what it finds.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// For a folder without train/ and val/: the share held out for validation.
    pub val_split: f64,
    pub seed: u64,
    /// Leave out (and count) images that do not decode instead of failing.
    pub skip_bad: bool,
}

/// Loads `path` as `format` says and fits every image to `input` (`[C, H, W]`; a flat
/// `[N]` input takes the images as they are). `val_split` and `seed` split a folder
/// without `train/` and `val/` subfolders.
pub fn load(
    format: Format,
    path: &Path,
    input: &[usize],
    val_split: f64,
    seed: u64,
) -> Result<DataSets, DataError> {
    let options = LoadOptions {
        val_split,
        seed,
        skip_bad: false,
    };
    load_with(format, path, input, &options)
}

/// [`load`] with every option.
pub fn load_with(
    format: Format,
    path: &Path,
    input: &[usize],
    options: &LoadOptions,
) -> Result<DataSets, DataError> {
    let (val_split, seed) = (options.val_split, options.seed);
    let mut notes = Vec::new();
    let target = Target::from_shape(input);
    let (train, test, class_names) = match format {
        Format::Idx => {
            let (train, test) = (
                load_split(path, Split::Train)?,
                load_split(path, Split::Test)?,
            );
            let names = numbered(&train, &test);
            (train, test, names)
        }
        Format::Folder => {
            let target = target.ok_or_else(|| DataError::Invalid {
                path: path.to_path_buf(),
                why: format!(
                    "image files need a model input of [C, H, W] with 1 or 3 channels, not {input:?}"
                ),
            })?;
            let (train, test, names, skipped) =
                folder::load(path, target, val_split, seed, options.skip_bad)?;
            if skipped.not_images > 0 {
                notes.push(format!(
                    "{}: skipped {} files that are not images",
                    path.display(),
                    skipped.not_images
                ));
            }
            if let Some(first) = &skipped.first_unreadable {
                notes.push(format!(
                    "data.skip_bad: left out {} images that do not decode (first: {first})",
                    skipped.unreadable
                ));
            }
            (train, test, names)
        }
        Format::Cifar => cifar::load(path)?,
        Format::Numpy => {
            let (train, test) = numpy::load(path)?;
            let names = numbered(&train, &test);
            (train, test, names)
        }
    };
    let (train, test) = match target {
        Some(target) => (fit(train, target, path)?, fit(test, target, path)?),
        None => (train, test),
    };
    if let Some(&label) = train
        .labels
        .iter()
        .chain(&test.labels)
        .find(|&&l| l as usize >= class_names.len())
    {
        return Err(DataError::Invalid {
            path: path.to_path_buf(),
            why: format!(
                "has label {label}, but only {} class names",
                class_names.len()
            ),
        });
    }
    Ok(DataSets {
        train,
        test,
        class_names,
        notes,
    })
}

/// "0", "1", … up to the largest label.
fn numbered(train: &Images, test: &Images) -> Vec<String> {
    let max = train
        .labels
        .iter()
        .chain(&test.labels)
        .max()
        .map_or(0, |&m| m as usize + 1);
    (0..max).map(|i| i.to_string()).collect()
}
