//! The int8 artifact: a directory with `graph.json` (the [`IntGraph`], versioned)
//! and `weights.safetensors` (int8 weights, int32 biases). Both are written
//! atomically; reading validates everything and gives a [`Model`].

use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::graph::{self, IntGraph, IntTensor, IntTensors};
use super::{Model, ValidationError};
use crate::report::write_atomic_bytes;

/// Why an artifact cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("cannot read {path}: {why}")]
    Read { path: String, why: String },
    #[error("cannot write {path}: {why}")]
    Write { path: String, why: String },
    #[error("{path} is int8 artifact version {found}, this qatc reads version {expected}\n  hint: rebuild it with this qatc (`qatc build`)")]
    Version {
        path: String,
        found: String,
        expected: u32,
    },
    #[error("cannot read {path}: {source}")]
    Invalid {
        path: String,
        source: ValidationError,
    },
}

pub const GRAPH_FILE: &str = "graph.json";
pub const WEIGHTS_FILE: &str = "weights.safetensors";

/// The artifact directory for a path that is either the directory itself or a
/// build directory containing `int8/`.
pub fn resolve(path: &Path) -> PathBuf {
    if !path.join(GRAPH_FILE).exists() && path.join("int8").join(GRAPH_FILE).exists() {
        path.join("int8")
    } else {
        path.to_path_buf()
    }
}

/// Writes `dir/graph.json` and `dir/weights.safetensors`.
pub fn save(dir: &Path, model: &Model) -> Result<(), ArtifactError> {
    let (graph, tensors) = (model.graph(), model.tensors());
    let fail = |path: PathBuf, why: String| ArtifactError::Write {
        path: path.display().to_string(),
        why,
    };
    let bytes: Vec<(String, Vec<u8>, Dtype, Vec<usize>)> = tensors
        .iter()
        .map(|(name, t)| match t {
            IntTensor::I8 { shape, data } => (
                name.clone(),
                data.iter().map(|&x| x as u8).collect(),
                Dtype::I8,
                shape.clone(),
            ),
            IntTensor::I32 { shape, data } => (
                name.clone(),
                data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Dtype::I32,
                shape.clone(),
            ),
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, data, dtype, shape)| {
            TensorView::new(*dtype, shape.clone(), data).map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(dir.join(WEIGHTS_FILE), e.to_string()))?;
    let weights = safetensors::serialize(views, &None)
        .map_err(|e| fail(dir.join(WEIGHTS_FILE), e.to_string()))?;
    let json = serde_json::to_string_pretty(graph).expect("integer graphs serialize") + "\n";
    for (name, bytes) in [
        (WEIGHTS_FILE, weights.as_slice()),
        (GRAPH_FILE, json.as_bytes()),
    ] {
        let path = dir.join(name);
        write_atomic_bytes(&path, bytes).map_err(|e| fail(path, e.to_string()))?;
    }
    Ok(())
}

/// Reads and validates an artifact directory (or a build directory containing `int8/`).
pub fn read(dir: &Path) -> Result<Model, ArtifactError> {
    let dir = resolve(dir);
    let graph_path = dir.join(GRAPH_FILE);
    let shown = graph_path.display().to_string();
    let fail = |why: String| ArtifactError::Read {
        path: shown.clone(),
        why,
    };
    let text = std::fs::read_to_string(&graph_path).map_err(|e| fail(e.to_string()))?;
    // Version first, so that a newer or older file says so instead of failing on a field.
    let raw: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| fail(format!("not valid JSON ({e})")))?;
    if raw.get("format").and_then(|f| f.as_str()) != Some(graph::FORMAT) {
        return Err(fail(format!(
            "not a qatc int8 graph (its `format` is not \"{}\")",
            graph::FORMAT
        )));
    }
    match raw.get("version").and_then(|v| v.as_u64()) {
        Some(v) if v == graph::VERSION as u64 => {}
        other => {
            return Err(ArtifactError::Version {
                path: shown,
                found: other.map_or_else(|| "(missing)".to_string(), |v| v.to_string()),
                expected: graph::VERSION,
            })
        }
    }
    let graph: IntGraph = serde_json::from_value(raw).map_err(|e| fail(e.to_string()))?;

    let weights_path = dir.join(WEIGHTS_FILE);
    let wfail = |why: String| ArtifactError::Read {
        path: weights_path.display().to_string(),
        why,
    };
    let bytes = std::fs::read(&weights_path).map_err(|e| wfail(e.to_string()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        wfail(format!(
            "not a valid safetensors file, truncated or corrupt? ({e})"
        ))
    })?;
    let mut tensors = IntTensors::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        let t = match view.dtype() {
            Dtype::I8 => IntTensor::I8 {
                shape,
                data: data.iter().map(|&b| b as i8).collect(),
            },
            Dtype::I32 => IntTensor::I32 {
                shape,
                data: data
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            },
            other => {
                return Err(wfail(format!(
                    "tensor `{name}` is {other:?}; int8 artifacts hold only I8 and I32 tensors"
                )))
            }
        };
        tensors.insert(name, t);
    }
    Model::validate(graph, tensors).map_err(|source| ArtifactError::Invalid {
        path: dir.display().to_string(),
        source,
    })
}
