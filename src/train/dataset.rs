//! The data of a build as tensors on the device: loaded, filtered by class, checked
//! against the model's input and output, and cut into batches.

use super::*;
use crate::preprocess::Normalize;

/// The recipe's `data.normalize`, checked against the model input, or none (`p / 255`).
pub fn normalize(recipe: &Recipe, graph: &Graph) -> Result<Normalize, DataError> {
    let shape = &graph.node(graph.inputs[0]).shape;
    let channels = crate::preprocess::channels(shape);
    match &recipe.data.normalize {
        Some(n) => {
            n.check(channels).map_err(|why| DataError::Invalid {
                path: "data.normalize".into(),
                why: format!("{why} (model `{}` takes {shape:?})", graph.name),
            })?;
            Ok(n.clone())
        }
        None => Ok(Normalize::identity(channels)),
    }
}

/// A data split as tensors on the device, labels remapped to 0..classes.
pub(super) struct Batches {
    pub(super) images: Tensor,
    pub(super) labels: Tensor,
}

impl Batches {
    pub(super) fn new(
        set: &Images,
        shape: &[usize],
        classes: &[u8],
        normalize: &Normalize,
        device: Device,
    ) -> Batches {
        let labels: Vec<i64> = set
            .labels
            .iter()
            .map(|l| classes.iter().position(|c| c == l).expect("filtered") as i64)
            .collect();
        Batches {
            images: normalized_images_to_tensor(&set.pixels, shape, normalize, device),
            labels: Tensor::from_slice(&labels).to_device(device),
        }
    }

    pub(super) fn len(&self) -> i64 {
        self.labels.size()[0]
    }

    pub(super) fn head(&self, n: i64) -> Batches {
        let n = n.min(self.len());
        Batches {
            images: self.images.narrow(0, 0, n),
            labels: self.labels.narrow(0, 0, n),
        }
    }
}

/// The data of a build, as tensors on the device.
pub(super) struct Prepared {
    pub(super) train: Batches,
    pub(super) test: Batches,
    /// The test images as bytes, for the int8 runtime.
    pub(super) test_set: Images,
    pub(super) calibration: Batches,
    pub(super) classes: Vec<u8>,
    /// The names of `classes`, in order.
    pub(super) class_names: Vec<String>,
    pub(super) dir: PathBuf,
    /// What the data loader left out, to tell the user.
    pub(super) notes: Vec<String>,
}

pub(super) fn prepare(
    graph: &Graph,
    recipe: &Recipe,
    device: Device,
    log: Log,
) -> Result<Prepared, TrainError> {
    let dir = recipe.data_dir();
    let input = &graph.node(graph.inputs[0]).shape;
    let val_split = recipe.data.val_split.unwrap_or(0.2);
    let options = data::LoadOptions {
        val_split,
        seed: recipe.train.seed,
        skip_bad: recipe.data.skip_bad,
        progress: log == Log::Bars,
    };
    let sets = data::load_with(recipe.data.format, &dir, input, &options)?;
    let count = sets.class_names.len();
    let classes: Vec<u8> = match &recipe.data.classes {
        Some(classes) => classes.clone(),
        None => (0..count).map(|c| c as u8).collect(),
    };
    if let Some(c) = classes.iter().find(|&&c| c as usize >= count) {
        return Err(DataError::Invalid {
            path: dir.clone(),
            why: format!(
                "data.classes {classes:?} names class {c}, but the data has {count} classes (0 to {})",
                count.saturating_sub(1)
            ),
        }
        .into());
    }
    let train_set = sets.train.select(Some(&classes), recipe.data.train_limit);
    let test_set = sets.test.select(Some(&classes), recipe.data.test_limit);
    if train_set.is_empty() {
        return Err(TrainError::NoData {
            split: "training",
            dir: dir.clone(),
            classes,
        });
    }
    if test_set.is_empty() {
        return Err(TrainError::NoData {
            split: "test",
            dir: dir.clone(),
            classes,
        });
    }
    let shape = input_shape(graph, &train_set)?;
    let out_shape = &graph.node(graph.output).shape;
    if out_shape.len() != 1 || out_shape[0] < classes.len() {
        return Err(TrainError::OutputShape {
            model: graph.name.clone(),
            shape: format_shape(out_shape),
            classes: classes.len(),
        });
    }
    let augments = recipe
        .train
        .augment
        .as_ref()
        .is_some_and(super::augment::active);
    if augments && shape.len() != 3 {
        return Err(DataError::Invalid {
            path: "train.augment".into(),
            why: format!(
                "crops and flips images, but model `{}` takes a flat {shape:?}",
                graph.name
            ),
        }
        .into());
    }
    let normalize = normalize(recipe, graph)?;
    let train = Batches::new(&train_set, &shape, &classes, &normalize, device);
    let test = Batches::new(&test_set, &shape, &classes, &normalize, device);
    let calibration = train.head(recipe.ptq.calibration_samples as i64);
    let class_names = classes
        .iter()
        .map(|&c| sets.class_names[c as usize].clone())
        .collect();
    Ok(Prepared {
        train,
        test,
        test_set,
        calibration,
        classes,
        class_names,
        dir,
        notes: sets.notes,
    })
}

pub(super) fn input_shape(graph: &Graph, set: &Images) -> Result<Vec<usize>, TrainError> {
    let expected = &graph.node(graph.inputs[0]).shape;
    let (channels, rows, cols) = (set.channels, set.rows, set.cols);
    let flat = channels * rows * cols;
    let fits = expected.as_slice() == [channels, rows, cols] || expected.as_slice() == [flat];
    if !fits {
        return Err(TrainError::InputShape {
            model: graph.name.clone(),
            expected: format_shape(expected),
            channels,
            rows,
            cols,
            flat,
        });
    }
    Ok(expected.clone())
}

pub(super) fn batches<'a>(
    data: &'a Batches,
    size: i64,
    order: Option<&Tensor>,
) -> impl Iterator<Item = (Tensor, Tensor)> + 'a {
    let n = data.len();
    let order = order.map(Tensor::shallow_clone);
    (0..n).step_by(size as usize).map(move |start| {
        let len = size.min(n - start);
        match &order {
            Some(idx) => {
                let idx = idx.narrow(0, start, len);
                (
                    data.images.index_select(0, &idx),
                    data.labels.index_select(0, &idx),
                )
            }
            None => (
                data.images.narrow(0, start, len),
                data.labels.narrow(0, start, len),
            ),
        }
    })
}
