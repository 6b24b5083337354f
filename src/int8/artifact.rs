//! The int8 artifact: a directory with `graph.json` (the [`IntGraph`], versioned)
//! and `weights.safetensors` (int8 weights, int32 biases). Both are written
//! atomically; reading validates everything and gives a [`Model`].

use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::graph::{self, IntGraph, IntTensor, IntTensors};
use super::{Model, ValidationError};
use crate::report::replace_dir_atomic;

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
    /// The graph and the weights are valid apiece but were not written together.
    #[error("{path}: {GRAPH_FILE} and {WEIGHTS_FILE} do not belong together ({why}): the artifact was partly replaced or edited\n  hint: rebuild it with `qatc build`")]
    Mismatch { path: String, why: String },
    #[error("cannot read {path}: {size} bytes is more than the {limit} bytes an int8 artifact file may have")]
    TooLarge { path: String, size: u64, limit: u64 },
}

/// The largest `graph.json` or `weights.safetensors` read: far above any model qatc
/// trains, and checked before reading so a huge or endless file cannot exhaust memory.
pub const MAX_FILE_BYTES: u64 = 1 << 31;

/// The field of `graph.json` that holds [`content_hash`] of the graph and its weights.
const HASH_FIELD: &str = "content_sha256";

/// SHA-256 over the graph (as compact JSON) and the weights file, in hex: it ties the two
/// files together so that a graph beside another build's weights (or an edited one) is refused.
fn content_hash(graph: &IntGraph, weights: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(graph).expect("integer graphs serialize"));
    h.update([0]);
    h.update(weights);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a whole file after checking its size against [`MAX_FILE_BYTES`].
fn read_bounded(path: &Path) -> Result<Vec<u8>, ArtifactError> {
    use std::io::Read;
    let shown = || path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| ArtifactError::Read {
        path: shown(),
        why: e.to_string(),
    })?;
    let mut bytes = Vec::new();
    // `take` also bounds files whose size the metadata does not tell (pipes, /dev/zero).
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ArtifactError::Read {
            path: shown(),
            why: e.to_string(),
        })?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ArtifactError::TooLarge {
            path: shown(),
            size: bytes.len() as u64,
            limit: MAX_FILE_BYTES,
        });
    }
    Ok(bytes)
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

/// Writes `dir/graph.json` and `dir/weights.safetensors`, replacing the directory as a
/// whole; graph.json records the content hash that [`read`] checks.
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
    let pretty = serde_json::to_string_pretty(graph).expect("integer graphs serialize");
    // The hash goes last, after the graph's own fields.
    let json = format!(
        "{},\n  \"{HASH_FIELD}\": \"{}\"\n}}\n",
        pretty.trim_end().trim_end_matches('}').trim_end(),
        content_hash(graph, &weights)
    );
    replace_dir_atomic(dir, |tmp| {
        std::fs::write(tmp.join(WEIGHTS_FILE), &weights)?;
        std::fs::write(tmp.join(GRAPH_FILE), json.as_bytes())
    })
    .map_err(|e| fail(dir.to_path_buf(), e.to_string()))
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
    let text = String::from_utf8(read_bounded(&graph_path)?)
        .map_err(|_| fail("not valid JSON (not UTF-8 text)".into()))?;
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
    let recorded = raw
        .get(HASH_FIELD)
        .and_then(|h| h.as_str())
        .map(str::to_string);
    let graph: IntGraph = serde_json::from_value(raw).map_err(|e| fail(e.to_string()))?;

    let weights_path = dir.join(WEIGHTS_FILE);
    let wfail = |why: String| ArtifactError::Read {
        path: weights_path.display().to_string(),
        why,
    };
    let bytes = read_bounded(&weights_path)?;
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
    // Validation first, so that damage gets its specific error; then the hash, which
    // catches a valid graph beside another build's weights and valid-looking edits.
    let hash = content_hash(&graph, &bytes);
    let model = Model::validate(graph, tensors).map_err(|source| ArtifactError::Invalid {
        path: dir.display().to_string(),
        source,
    })?;
    let why = match recorded {
        Some(r) if r == hash => return Ok(model),
        Some(_) => format!("the content hash {GRAPH_FILE} records is not theirs"),
        None => format!("{GRAPH_FILE} records no `{HASH_FIELD}`; an older qatc wrote it"),
    };
    Err(ArtifactError::Mismatch {
        path: dir.display().to_string(),
        why,
    })
}
