//! CIFAR-10 and CIFAR-100 in their binary form: `data_batch_1.bin` … `data_batch_5.bin`
//! and `test_batch.bin` (one label byte, then 32×32×3 planar pixels), or CIFAR-100's
//! `train.bin` and `test.bin` (coarse and fine label bytes; the fine label is used).
//! Class names come from `batches.meta.txt` / `fine_label_names.txt` when present.

use std::path::Path;

use super::{DataError, Images};

const PIXELS: usize = 3 * 32 * 32;

/// `(train, test, class names)` from a CIFAR binary directory.
pub fn load(dir: &Path) -> Result<(Images, Images, Vec<String>), DataError> {
    // Whichever of the five training batches are present (a subset is a smaller set).
    let ten: Vec<_> = (1..=5)
        .map(|i| dir.join(format!("data_batch_{i}.bin")))
        .filter(|p| p.is_file())
        .collect();
    let (train, test, labels, names) = if !ten.is_empty() {
        (ten, dir.join("test_batch.bin"), 1, "batches.meta.txt")
    } else if dir.join("train.bin").is_file() {
        (
            vec![dir.join("train.bin")],
            dir.join("test.bin"),
            2,
            "fine_label_names.txt",
        )
    } else {
        return Err(DataError::Invalid {
            path: dir.to_path_buf(),
            why: "holds no CIFAR binary batches (data_batch_1.bin … for CIFAR-10, train.bin for CIFAR-100)".into(),
        });
    };
    let mut train_set = empty();
    for path in &train {
        read_batch(path, labels, &mut train_set)?;
    }
    let mut test_set = empty();
    read_batch(&test, labels, &mut test_set)?;
    let count = 1 + *train_set
        .labels
        .iter()
        .chain(&test_set.labels)
        .max()
        .unwrap_or(&0) as usize;
    let names = match std::fs::read_to_string(dir.join(names)) {
        Ok(text) => text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        Err(_) => (0..count).map(|i| i.to_string()).collect(),
    };
    Ok((train_set, test_set, names))
}

fn empty() -> Images {
    Images {
        pixels: Vec::new(),
        labels: Vec::new(),
        channels: 3,
        rows: 32,
        cols: 32,
    }
}

/// Appends one batch file's records; `labels` label bytes precede each image.
fn read_batch(path: &Path, labels: usize, into: &mut Images) -> Result<(), DataError> {
    let record = labels + PIXELS;
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len() as usize;
    if size == 0 || !size.is_multiple_of(record) {
        return Err(DataError::Invalid {
            path: path.to_path_buf(),
            why: format!(
                "{size} bytes is not a whole number of {record}-byte CIFAR records (truncated or not a CIFAR batch)"
            ),
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    for r in bytes.chunks_exact(record) {
        into.labels.push(r[labels - 1]);
        into.pixels.extend_from_slice(&r[labels..]);
    }
    Ok(())
}
