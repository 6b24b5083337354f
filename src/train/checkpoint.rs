//! Per-epoch checkpoints and `--resume`: after every epoch of every training stage the
//! network (parameters, statistics, ranges) and a progress file are written atomically
//! to `<out>/checkpoints/`, so a killed build continues from its last finished epoch.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::{Network, TrainError};
use crate::report::{self, Stage};

const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Progress {
    version: u32,
    /// Model and recipe this progress belongs to; a different one starts afresh.
    fingerprint: String,
    stages: BTreeMap<String, StageProgress>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageProgress {
    pub epochs_done: usize,
    pub images: i64,
    pub seconds: f64,
    /// The finished epochs, so that a resumed build's report has the whole history.
    #[serde(default)]
    pub history: Vec<report::Epoch>,
}

pub struct Checkpoints {
    dir: PathBuf,
    progress: Progress,
}

impl Checkpoints {
    /// Opens `<out>/checkpoints`. With `resume`, earlier progress of the same model and
    /// recipe is kept; otherwise (or when it does not match) the build starts over.
    pub fn open(
        out_dir: &std::path::Path,
        fingerprint_of: impl Hash,
        resume: bool,
    ) -> (Checkpoints, Option<String>) {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        fingerprint_of.hash(&mut hasher);
        let fingerprint = format!("{:016x}", hasher.finish());
        let dir = out_dir.join("checkpoints");
        let fresh = Progress {
            version: VERSION,
            fingerprint: fingerprint.clone(),
            stages: BTreeMap::new(),
        };
        if !resume {
            return (
                Checkpoints {
                    dir,
                    progress: fresh,
                },
                None,
            );
        }
        let found: Option<Progress> = std::fs::read(dir.join("progress.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match found {
            Some(p) if p.version == VERSION && p.fingerprint == fingerprint => {
                let note = p
                    .stages
                    .iter()
                    .map(|(s, p)| format!("{s} {} epochs", p.epochs_done))
                    .collect::<Vec<_>>()
                    .join(", ");
                (
                    Checkpoints { dir, progress: p },
                    Some(format!("resuming: {note} already done")),
                )
            }
            Some(_) => (
                Checkpoints {
                    dir,
                    progress: fresh,
                },
                Some(
                    "--resume: the checkpoints are of another model or recipe; starting over"
                        .into(),
                ),
            ),
            None => (
                Checkpoints {
                    dir,
                    progress: fresh,
                },
                Some("--resume: no checkpoints found; starting from the beginning".into()),
            ),
        }
    }

    fn weights(&self, stage: &str) -> PathBuf {
        self.dir.join(format!("{stage}.safetensors"))
    }

    /// Restores `net` to the last checkpoint of `stage`, returning what was done then.
    pub fn restore(
        &self,
        stage: &str,
        net: &mut Network,
    ) -> Result<Option<StageProgress>, TrainError> {
        let Some(done) = self.progress.stages.get(stage) else {
            return Ok(None);
        };
        let path = self.weights(stage);
        let tensors = Tensor::read_safetensors(&path).map_err(|e| {
            TrainError::Transfer(format!(
                "cannot resume from {}: {e}\n  hint: build again without --resume",
                path.display()
            ))
        })?;
        net.restore(&tensors.into_iter().collect()).map_err(|e| {
            TrainError::Transfer(format!("cannot resume from {}: {e}", path.display()))
        })?;
        Ok(Some(done.clone()))
    }

    /// Records that `stage` has finished `progress.epochs_done` epochs with `net` as it is now.
    pub fn save(
        &mut self,
        stage: &str,
        net: &Network,
        progress: StageProgress,
    ) -> Result<(), TrainError> {
        let path = self.weights(stage);
        let tensors = net.named_tensors();
        report::write_atomic(&path, |tmp| {
            Tensor::write_safetensors(&tensors, tmp)
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
        .map_err(|source| TrainError::Write {
            path: path.clone(),
            source,
        })?;
        self.progress.stages.insert(stage.to_string(), progress);
        let json = serde_json::to_vec_pretty(&self.progress).expect("progress serializes");
        let progress_path = self.dir.join("progress.json");
        report::write_atomic_bytes(&progress_path, &json).map_err(|source| TrainError::Write {
            path: progress_path,
            source,
        })
    }

    /// The last good weights, for error messages.
    pub fn last_good(&self, stage: &str) -> String {
        if self.progress.stages.contains_key(stage) {
            self.weights(stage).display().to_string()
        } else {
            "none yet (this stage had not finished an epoch)".to_string()
        }
    }
}

/// The throughput figures of a stage that ran over several sessions.
pub fn stage_from(progress: &StageProgress, epochs: usize) -> Stage {
    Stage {
        epochs,
        train_seconds: progress.seconds,
        train_images_per_second: progress.images as f64 / progress.seconds.max(1e-9),
        history: progress.history.clone(),
        ..Default::default()
    }
}
