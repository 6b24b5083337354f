//! What a model file is, told by its content rather than its name (`qatc inspect`):
//! an int8 artifact directory, a TFLite FlatBuffer (the `TFL3` identifier) or an ONNX
//! protobuf (a `ModelProto` with a graph), and the ONNX listing.

use std::fmt::Write;
use std::io::Read;
use std::path::{Path, PathBuf};

use prost::Message;

use super::onnx::proto::{self, ModelProto, ValueInfoProto};

/// A model file or directory, by content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelFile {
    /// An int8 artifact directory (or a build directory holding `int8/`).
    Int8Artifact(PathBuf),
    Tflite,
    Onnx,
}

/// ONNX files qatc reads whole; larger ones are refused before reading.
pub const MAX_ONNX_BYTES: u64 = 1 << 31;

/// Why a path is no model qatc knows.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a model qatc reads: not an int8 artifact directory (no graph.json), not a TFLite file (no TFL3 identifier), not an ONNX model ({why})")]
    Unknown { path: String, why: String },
}

/// Tells what `path` holds, reading at most what it must.
pub fn detect(path: &Path) -> Result<ModelFile, DetectError> {
    let shown = path.display().to_string();
    let io = |source| DetectError::Io {
        path: shown.clone(),
        source,
    };
    if path.is_dir() {
        let dir = crate::int8::artifact::resolve(path);
        if dir.join(crate::int8::artifact::GRAPH_FILE).exists() {
            return Ok(ModelFile::Int8Artifact(dir));
        }
        return Err(DetectError::Unknown {
            path: shown,
            why: "it is a directory".into(),
        });
    }
    let mut head = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(8)
        .read_to_end(&mut head)
        .map_err(io)?;
    if super::tflite::is_tflite(&head) {
        return Ok(ModelFile::Tflite);
    }
    read_onnx(path)
        .map(|_| ModelFile::Onnx)
        .map_err(|why| DetectError::Unknown { path: shown, why })
}

/// Reads an ONNX model: a protobuf `ModelProto` that has a graph.
pub fn read_onnx(path: &Path) -> Result<ModelProto, String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_ONNX_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_ONNX_BYTES {
        return Err(format!("larger than {MAX_ONNX_BYTES} bytes"));
    }
    let model = ModelProto::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
    match &model.graph {
        Some(g) if model.ir_version > 0 && !g.node.is_empty() => Ok(model),
        _ => Err("no ONNX graph in it".into()),
    }
}

/// The listing of an ONNX model: producer, opsets, inputs and outputs with their
/// types, initializers, and one line per node.
pub fn onnx_text(model: &ModelProto) -> String {
    let mut out = String::new();
    let graph = model.graph.clone().unwrap_or_default();
    let _ = writeln!(
        out,
        "ONNX model `{}` (IR version {}, produced by {} {})",
        graph.name, model.ir_version, model.producer_name, model.producer_version
    );
    let opsets: Vec<String> = model
        .opset_import
        .iter()
        .map(|o| {
            let domain = if o.domain.is_empty() {
                "ai.onnx"
            } else {
                &o.domain
            };
            format!("{domain} {}", o.version)
        })
        .collect();
    let _ = writeln!(out, "  opsets: {}", opsets.join(", "));
    for (what, values) in [("input", &graph.input), ("output", &graph.output)] {
        for v in values {
            let _ = writeln!(out, "  {what} {}", value_info(v));
        }
    }
    let weight_bytes: usize = graph.initializer.iter().map(|t| t.raw_data.len()).sum();
    let _ = writeln!(
        out,
        "  {} initializers, {weight_bytes} bytes",
        graph.initializer.len()
    );
    let _ = writeln!(out, "  {} nodes:", graph.node.len());
    for (i, n) in graph.node.iter().enumerate() {
        let _ = writeln!(
            out,
            "    {i:>3} {}{} ({}) -> {}",
            if n.domain.is_empty() {
                String::new()
            } else {
                format!("{}.", n.domain)
            },
            n.op_type,
            n.input.join(", "),
            n.output.join(", ")
        );
    }
    out
}

/// `name: int8[1, 28, 28]`, with symbolic dimensions by name.
fn value_info(v: &ValueInfoProto) -> String {
    let Some(t) = v.r#type.as_ref().and_then(|t| t.tensor_type.as_ref()) else {
        return v.name.clone();
    };
    let dims: Vec<String> = t
        .shape
        .iter()
        .flat_map(|s| &s.dim)
        .map(|d| match (&d.dim_value, &d.dim_param) {
            (Some(n), _) => n.to_string(),
            (None, Some(p)) => p.clone(),
            (None, None) => "?".into(),
        })
        .collect();
    let ty = match t.elem_type {
        proto::FLOAT => "float32".to_string(),
        proto::UINT8 => "uint8".to_string(),
        proto::INT8 => "int8".to_string(),
        proto::INT32 => "int32".to_string(),
        proto::INT64 => "int64".to_string(),
        other => format!("type {other}"),
    };
    format!("{}: {ty}[{}]", v.name, dims.join(", "))
}
