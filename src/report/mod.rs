//! What `qatc build` measured, as a table for people, report.json for tools and
//! report.html ([`html`]) to look at.

pub mod html;

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub model: String,
    /// Bit widths, e.g. `w8a8`; `mixed` parts when layers differ (see the graph).
    pub quant: String,
    pub device: String,
    pub data: DataSummary,
    /// The float model after `train.epochs`.
    pub float: Stage,
    /// The float model calibrated and fake-quantized, no retraining.
    pub ptq: Stage,
    /// The float model fine-tuned for `qat.epochs` with fake quantization; absent when
    /// `qat.epochs` is 0 (the build delivers PTQ's int8 model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qat: Option<Stage>,
    /// Float fine-tuned for the same `qat.epochs` without fake quantization, then PTQ:
    /// separates what QAT gains from what extra training gains. Absent without QAT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<Stage>,
    pub total_seconds: f64,
    /// What the build could not do, e.g. why there is no int8 model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Files written, relative paths as given on the command line.
    pub artifacts: Artifacts,
    /// The model summary (sizes and costs per layer), as printed at the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<crate::summary::Summary>,
    /// The delivered stage's test predictions (QAT's, or PTQ's without QAT):
    /// `confusion[true][predicted]` counts, classes in `data.classes` order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confusion: Option<Vec<Vec<u64>>>,
    /// Where the build ran (absent in reports written before qatc recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
}

/// The software and machine a build ran on, so that timings can be compared fairly.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Environment {
    pub qatc_version: String,
    /// The libtorch the binary was built against (its `build-version`), or `unknown`.
    pub libtorch_version: String,
    /// libtorch's intra-op threads.
    pub threads: usize,
    /// SIMD features of the CPU that matter to libtorch and the int8 kernels.
    pub cpu_features: Vec<String>,
    /// `cpu` or `cuda`.
    pub device: String,
    /// How libtorch's OpenMP threads waited (`OMP_WAIT_POLICY`; `qatc` starts the
    /// training binary with PASSIVE unless told otherwise): spinning threads slow a busy machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omp_wait_policy: Option<String>,
}

/// One training epoch of one stage, as recorded in report.json's `history`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Epoch {
    /// 1-based.
    pub epoch: usize,
    /// Mean cross-entropy over the epoch's training batches.
    pub train_loss: f64,
    /// Fraction of training images classified right while training (weights still moving).
    pub train_accuracy: f64,
    /// Test-set accuracy after the epoch in the stage's training mode; for watching
    /// convergence only (no epoch is chosen by it).
    pub val_accuracy: f64,
    pub learning_rate: f64,
    pub images_per_second: f64,
    pub seconds: f64,
    /// QAT only: mean change of the activation ranges over the epoch, relative to each
    /// range's width at its start (0 = the ranges stood still).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_movement: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DataSummary {
    pub dir: String,
    pub classes: Vec<u8>,
    /// The names of `classes`, in the same order (the model's outputs 0, 1, …).
    #[serde(default)]
    pub class_names: Vec<String>,
    pub train_images: usize,
    pub test_images: usize,
    pub calibration_images: usize,
}

impl DataSummary {
    /// `[0, 1, 2]`, or the names where they say more than the numbers.
    fn class_list(&self) -> String {
        let numbered = self
            .class_names
            .iter()
            .zip(&self.classes)
            .all(|(name, c)| *name == c.to_string());
        if self.class_names.is_empty() || numbered {
            format!("{:?}", self.classes)
        } else {
            format!("[{}]", self.class_names.join(", "))
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stage {
    /// Test accuracy as a fraction 0..1.
    pub accuracy: f64,
    /// Epochs of training in this stage (0 for PTQ, which only calibrates).
    pub epochs: usize,
    pub train_seconds: f64,
    /// Training throughput; 0 when the stage does not train.
    pub train_images_per_second: f64,
    pub eval_seconds: f64,
    /// Test accuracy of the lowered model on the int8 runtime (PTQ and QAT only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8_accuracy: Option<f64>,
    /// Fraction of test images where the int8 runtime and fake quantization pick the same class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8_agreement: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8_eval_seconds: Option<f64>,
    /// One entry per training epoch (empty for PTQ).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Epoch>,
}

impl Stage {
    /// Training images per second as shown in tables: `-` for a stage that did not train.
    pub fn training_speed(&self) -> String {
        if self.train_images_per_second > 0.0 {
            format!("{:.0}", self.train_images_per_second)
        } else {
            "-".into()
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Artifacts {
    pub float: String,
    /// The QAT weights; absent without QAT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qat: Option<String>,
    pub report: String,
    /// The calibrated (PTQ) float weights with observer ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ptq: Option<String>,
    /// The delivered model (QAT's, or PTQ's without QAT) lowered to int8: a directory with
    /// graph.json and weights.safetensors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8: Option<String>,
    /// `model.onnx`, when `--emit onnx` asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnx: Option<String>,
    /// `model.tflite`, when `--emit tflite` asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tflite: Option<String>,
    /// `report.html`: this report's figures, one self-contained page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

impl Report {
    /// The stages that ran, in order, with their short labels: float, PTQ, and control
    /// and QAT when QAT was asked for.
    pub fn stages(&self) -> Vec<(&'static str, &Stage)> {
        let mut stages = vec![("float", &self.float), ("PTQ", &self.ptq)];
        stages.extend(self.control.as_ref().map(|s| ("control", s)));
        stages.extend(self.qat.as_ref().map(|s| ("QAT", s)));
        stages
    }

    /// The quantized stages whose int8 form ran on the runtime (`PTQ int8`, `QAT int8`).
    pub fn int8_stages(&self) -> Vec<(&'static str, &Stage, f64)> {
        [
            ("PTQ int8", Some(&self.ptq)),
            ("QAT int8", self.qat.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, s)| Some((name, s?, s?.int8_accuracy?)))
        .collect()
    }

    /// The stage whose model the build delivers (int8 artifact, exports): QAT, or PTQ
    /// when no QAT ran.
    pub fn delivered(&self) -> (&'static str, &Stage) {
        match &self.qat {
            Some(qat) => ("QAT", qat),
            None => ("PTQ", &self.ptq),
        }
    }

    /// The side-by-side table printed at the end of a build.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let d = &self.data;
        out.push_str(&format!(
            "{} ({}): {} train / {} test images, classes {}, device {}\n\n",
            self.model,
            self.quant,
            d.train_images,
            d.test_images,
            d.class_list(),
            self.device
        ));
        out.push_str(&format!(
            "{:<28} {:>9} {:>9} {:>7} {:>12}\n",
            "stage", "accuracy", "vs float", "epochs", "train img/s"
        ));
        let row = |name: &str, s: &Stage| {
            let delta = (s.accuracy - self.float.accuracy) * 100.0;
            let speed = s.training_speed();
            format!(
                "{name:<28} {:>8.2}% {:>+8.2} {:>7} {:>12}\n",
                s.accuracy * 100.0,
                delta,
                s.epochs,
                speed
            )
        };
        for (name, s) in self.stages() {
            let label = match name {
                "PTQ" => "PTQ (fake-quant)",
                "control" => "control: float +epochs, PTQ",
                "QAT" => "QAT (fake-quant)",
                other => other,
            };
            out.push_str(&row(label, s));
        }
        for (name, s, accuracy) in self.int8_stages() {
            let int8 = Stage {
                accuracy,
                epochs: 0,
                train_images_per_second: 0.0,
                ..Default::default()
            };
            let agree = s.int8_agreement.map_or(String::new(), |a| {
                format!("   argmax = fake-quant on {:.2}%", a * 100.0)
            });
            let label = format!("{name} (runtime)");
            out.push_str(&format!("{}{agree}\n", row(&label, &int8).trim_end()));
        }
        if let (Some(qat), Some(control)) = (&self.qat, &self.control) {
            out.push_str(&format!(
                "\nQAT vs PTQ: {:+.2} points; QAT vs control (same extra training): {:+.2} points\n",
                (qat.accuracy - self.ptq.accuracy) * 100.0,
                (qat.accuracy - control.accuracy) * 100.0
            ));
        } else {
            out.push('\n');
        }
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports serialize")
    }
}

/// A short name for the bit widths of a quantized graph: `w8a8`, `w4a8`, `wmixed-a8`, ...
pub fn quant_label(graph: &crate::ir::Graph) -> String {
    use crate::ir::Op;
    let mut weights: Vec<u8> = graph
        .nodes
        .iter()
        .filter(|n| n.op.has_weights() && !n.quant.float)
        .map(|n| n.quant.weights.bits)
        .collect();
    let mut acts: Vec<u8> = graph
        .nodes
        .iter()
        .filter_map(|n| match n.op {
            Op::FakeQuant { spec, .. } => Some(spec.bits),
            _ => None,
        })
        .collect();
    let name = |v: &mut Vec<u8>| {
        v.sort_unstable();
        v.dedup();
        match v.as_slice() {
            [] => "f".to_string(),
            [b] => b.to_string(),
            _ => "mixed".to_string(),
        }
    };
    format!("w{}a{}", name(&mut weights), name(&mut acts))
}

/// Writes a file so that readers never see a half-written one: a temporary file in
/// the same directory, synced, then renamed over the target.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("artifact");
    // Keep the extension last: some writers pick the format from it.
    let tmp = dir.join(format!(".tmp-{}-{name}", std::process::id()));
    let result = write(&tmp).and_then(|()| {
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub fn write_atomic_bytes(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic(path, |tmp| std::fs::File::create(tmp)?.write_all(bytes))
}

/// Replaces the directory `path` as a whole: `write` fills a temporary directory beside
/// it, which then takes its place, so readers see the old files or the new ones, never a
/// mix. (The old directory is moved aside for the instant between the two renames; a
/// build killed there leaves it as `.old-*`, which [`clean_stale`] puts back.)
pub fn replace_dir_atomic(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("artifact");
    let pid = std::process::id();
    let tmp = parent.join(format!(".tmp-{pid}-{name}"));
    let old = parent.join(format!(".old-{pid}-{name}"));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = std::fs::create_dir(&tmp)
        .and_then(|()| write(&tmp))
        .and_then(|()| {
            for entry in std::fs::read_dir(&tmp)? {
                std::fs::File::open(entry?.path())?.sync_all()?;
            }
            match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.is_dir() => {
                    std::fs::rename(path, &old)?;
                    std::fs::rename(&tmp, path)?;
                    let _ = std::fs::remove_dir_all(&old);
                    Ok(())
                }
                Ok(_) => Err(std::io::Error::other("exists and is not a directory")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::rename(&tmp, path),
                Err(e) => Err(e),
            }
        });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Removes what killed writes left in `dir`: the `.tmp-<pid>-*` files and directories of
/// [`write_atomic`] and [`replace_dir_atomic`] whose process is gone, and puts back a
/// directory that a killed [`replace_dir_atomic`] had moved aside. Returns the names removed.
pub fn clean_stale(dir: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((kind, rest)) = name
            .strip_prefix(".tmp-")
            .map(|r| ("tmp", r))
            .or_else(|| name.strip_prefix(".old-").map(|r| ("old", r)))
        else {
            continue;
        };
        let Some((pid, target)) = rest.split_once('-') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        // A writer that is still running owns its temporary files.
        if pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let path = entry.path();
        let target = dir.join(target);
        if kind == "old" && !target.exists() && std::fs::rename(&path, &target).is_ok() {
            continue;
        }
        let gone = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if gone.is_ok() {
            removed.push(name);
        }
    }
    removed.sort();
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out/report.json");
        write_atomic_bytes(&p, b"one").unwrap();
        write_atomic_bytes(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let failed = write_atomic(&p, |_| Err(std::io::Error::other("boom")));
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
    }

    #[test]
    fn directories_are_replaced_whole_and_stale_temporaries_cleaned() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("int8");
        let fill = |a: &'static [u8], b: &'static [u8]| {
            move |tmp: &Path| {
                std::fs::write(tmp.join("a"), a)?;
                std::fs::write(tmp.join("b"), b)
            }
        };
        replace_dir_atomic(&d, fill(b"a1", b"b1")).unwrap();
        replace_dir_atomic(&d, fill(b"a2", b"b2")).unwrap();
        assert_eq!(std::fs::read(d.join("a")).unwrap(), b"a2");
        // A writer that fails after the first file leaves the old directory whole.
        let failed = replace_dir_atomic(&d, |tmp| {
            std::fs::write(tmp.join("a"), b"a3")?;
            Err(std::io::Error::other("killed"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(d.join("b")).unwrap(), b"b2");
        assert_eq!(std::fs::read(d.join("a")).unwrap(), b"a2");
        // What killed processes left: temporaries go, a directory moved aside comes back.
        let dead = u32::MAX - 1;
        std::fs::write(root.path().join(format!(".tmp-{dead}-report.json")), b"x").unwrap();
        std::fs::create_dir(root.path().join(format!(".tmp-{dead}-int8"))).unwrap();
        std::fs::rename(&d, root.path().join(format!(".old-{dead}-int8"))).unwrap();
        let removed = clean_stale(root.path());
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert_eq!(std::fs::read(d.join("a")).unwrap(), b"a2");
        let left: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(left.len(), 1);
        // A file where the directory should be is an error, not a silent overwrite.
        let f = root.path().join("file");
        std::fs::write(&f, b"keep").unwrap();
        assert!(replace_dir_atomic(&f, fill(b"a", b"b")).is_err());
        assert_eq!(std::fs::read(&f).unwrap(), b"keep");
    }
}
