//! Reading a `.tflite` file back (verified, nothing trusted) and the listing
//! `qatc inspect` prints.

use std::fmt::Write as _;
use std::path::Path;

use tflite_schema::planus;

use super::builtin::builtin_name;
use super::{fb, IDENTIFIER};

/// One tensor of a `.tflite` file, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<i32>,
    pub dtype: String,
    pub scales: Vec<f32>,
    pub zero_points: Vec<i64>,
    pub quantized_dimension: i32,
    /// Constant data (weights, biases, shapes), little-endian.
    pub data: Option<Vec<u8>>,
}

/// One operator of a `.tflite` file, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorInfo {
    /// The builtin's published name, or `BUILTIN_<code>` / the custom code.
    pub op: String,
    pub version: i32,
    pub inputs: Vec<i32>,
    pub outputs: Vec<i32>,
    /// The builtin options, as `key=value` pairs.
    pub options: String,
}

/// The first subgraph of a `.tflite` file.
#[derive(Debug, Clone, PartialEq)]
pub struct TfliteModel {
    pub version: u32,
    pub description: String,
    pub tensors: Vec<TensorInfo>,
    pub operators: Vec<OperatorInfo>,
    pub inputs: Vec<i32>,
    pub outputs: Vec<i32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("not a TFLite model: {0}\n  hint: `.tflite` files start with a FlatBuffer whose identifier is TFL3")]
    Format(String),
    /// [`ReadError::Format`] of a file, which it names.
    #[error("{path} is not a TFLite model: {why}\n  hint: `.tflite` files start with a FlatBuffer whose identifier is TFL3")]
    FileFormat { path: String, why: String },
    #[error("cannot read {path}: it is larger than the {limit} bytes a FlatBuffer can address")]
    TooLarge { path: String, limit: u64 },
}

/// FlatBuffers address at most 2 GiB; a larger (or endless) file is refused before it is read whole.
pub const MAX_FILE_BYTES: u64 = 1 << 31;

/// Whether `bytes` carry TFLite's file identifier.
pub fn is_tflite(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[4..8] == IDENTIFIER
}

/// Reads a `.tflite` file: its identifier first, then at most [`MAX_FILE_BYTES`].
pub fn read_file(path: &Path) -> Result<TfliteModel, ReadError> {
    use std::io::Read;
    let shown = path.display().to_string();
    let io = |source| ReadError::Io {
        path: shown.clone(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    (&mut file).take(8).read_to_end(&mut bytes).map_err(io)?;
    if is_tflite(&bytes) {
        file.take(MAX_FILE_BYTES - 8 + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(ReadError::TooLarge {
                path: shown,
                limit: MAX_FILE_BYTES,
            });
        }
    }
    read(&bytes).map_err(|e| match e {
        ReadError::Format(why) => ReadError::FileFormat { path: shown, why },
        other => other,
    })
}

/// Reads a `.tflite` FlatBuffer (verified by planus; nothing is trusted).
pub fn read(bytes: &[u8]) -> Result<TfliteModel, ReadError> {
    use planus::ReadAsRoot;
    if !is_tflite(bytes) {
        return Err(ReadError::Format(format!(
            "{} bytes without the TFL3 identifier",
            bytes.len()
        )));
    }
    let bad = |e: planus::Error| ReadError::Format(e.to_string());
    let model = fb::ModelRef::read_as_root(bytes).map_err(bad)?;
    let buffers: Vec<Option<Vec<u8>>> = match model.buffers().map_err(bad)? {
        Some(v) => v
            .iter()
            .map(|b| Ok(b?.data()?.map(<[u8]>::to_vec)))
            .collect::<Result<_, planus::Error>>()
            .map_err(bad)?,
        None => Vec::new(),
    };
    let codes: Vec<(String, i32)> = match model.operator_codes().map_err(bad)? {
        Some(v) => v
            .iter()
            .map(|c| {
                let c = c?;
                let code = (c.deprecated_builtin_code()? as i32).max(c.builtin_code()?);
                let name = match (c.custom_code()?, builtin_name(code)) {
                    (Some(custom), _) => custom.to_string(),
                    (None, Some(name)) => name.to_string(),
                    (None, None) => format!("BUILTIN_{code}"),
                };
                Ok((name, c.version()?))
            })
            .collect::<Result<_, planus::Error>>()
            .map_err(bad)?,
        None => Vec::new(),
    };
    let subgraph = model
        .subgraphs()
        .map_err(bad)?
        .and_then(|s| s.iter().next())
        .ok_or_else(|| ReadError::Format("the model has no subgraph".into()))?
        .map_err(bad)?;
    let ints =
        |v: Option<planus::Vector<'_, i32>>| v.map(|v| v.iter().collect()).unwrap_or_default();
    let mut tensors = Vec::new();
    for t in subgraph.tensors().map_err(bad)?.into_iter().flatten() {
        let t = t.map_err(bad)?;
        let (mut scales, mut zero_points, mut dim) = (Vec::new(), Vec::new(), 0);
        if let Some(q) = t.quantization().map_err(bad)? {
            scales = q
                .scale()
                .map_err(bad)?
                .map(|v| v.iter().collect())
                .unwrap_or_default();
            zero_points = q
                .zero_point()
                .map_err(bad)?
                .map(|v| v.iter().collect())
                .unwrap_or_default();
            dim = q.quantized_dimension().map_err(bad)?;
        }
        let buffer = t.buffer().map_err(bad)? as usize;
        let data = match buffers.get(buffer) {
            Some(data) => data.clone().filter(|d| !d.is_empty()),
            None => {
                return Err(ReadError::Format(format!(
                    "a tensor points at buffer {buffer} of {}",
                    buffers.len()
                )))
            }
        };
        tensors.push(TensorInfo {
            name: t.name().map_err(bad)?.unwrap_or("").to_string(),
            shape: ints(t.shape().map_err(bad)?),
            dtype: format!("{:?}", t.type_().map_err(bad)?).to_lowercase(),
            scales,
            zero_points,
            quantized_dimension: dim,
            data,
        });
    }
    let mut operators = Vec::new();
    for op in subgraph.operators().map_err(bad)?.into_iter().flatten() {
        let op = op.map_err(bad)?;
        let index = op.opcode_index().map_err(bad)? as usize;
        let (name, version) = codes.get(index).cloned().ok_or_else(|| {
            ReadError::Format(format!("an operator uses code {index} of {}", codes.len()))
        })?;
        let (inputs, outputs) = (
            ints(op.inputs().map_err(bad)?),
            ints(op.outputs().map_err(bad)?),
        );
        for &t in inputs.iter().chain(&outputs) {
            if t >= tensors.len() as i32 || t < -1 {
                return Err(ReadError::Format(format!(
                    "operator {name} uses tensor {t} of {}",
                    tensors.len()
                )));
            }
        }
        operators.push(OperatorInfo {
            op: name,
            version,
            inputs,
            outputs,
            options: options_text(op.builtin_options()),
        });
    }
    Ok(TfliteModel {
        version: model.version().map_err(bad)?,
        description: model.description().map_err(bad)?.unwrap_or("").to_string(),
        tensors,
        operators,
        inputs: ints(subgraph.inputs().map_err(bad)?),
        outputs: ints(subgraph.outputs().map_err(bad)?),
    })
}

fn options_text(options: planus::Result<Option<fb::BuiltinOptionsRef<'_>>>) -> String {
    use fb::BuiltinOptionsRef as O;
    let text = |o: O<'_>| -> planus::Result<String> {
        Ok(match o {
            O::Conv2DOptions(o) => format!(
                "padding={:?} stride={}x{} dilation={}x{} activation={:?}",
                o.padding()?,
                o.stride_h()?,
                o.stride_w()?,
                o.dilation_h_factor()?,
                o.dilation_w_factor()?,
                o.fused_activation_function()?
            ),
            O::DepthwiseConv2DOptions(o) => format!(
                "padding={:?} stride={}x{} depth_multiplier={} activation={:?}",
                o.padding()?,
                o.stride_h()?,
                o.stride_w()?,
                o.depth_multiplier()?,
                o.fused_activation_function()?
            ),
            O::Pool2DOptions(o) => format!(
                "padding={:?} filter={}x{} stride={}x{} activation={:?}",
                o.padding()?,
                o.filter_height()?,
                o.filter_width()?,
                o.stride_h()?,
                o.stride_w()?,
                o.fused_activation_function()?
            ),
            O::FullyConnectedOptions(o) => {
                format!("activation={:?}", o.fused_activation_function()?)
            }
            O::AddOptions(o) => format!("activation={:?}", o.fused_activation_function()?),
            O::ConcatenationOptions(o) => format!(
                "axis={} activation={:?}",
                o.axis()?,
                o.fused_activation_function()?
            ),
            O::ReshapeOptions(o) => format!(
                "new_shape={:?}",
                o.new_shape()?
                    .map(|v| v.iter().collect::<Vec<_>>())
                    .unwrap_or_default()
            ),
            O::ReducerOptions(o) => format!("keep_dims={}", o.keep_dims()?),
            _ => "(options outside qatc's schema subset)".into(),
        })
    };
    match options {
        Ok(None) => String::new(),
        Ok(Some(o)) => text(o).unwrap_or_else(|e| format!("(unreadable options: {e})")),
        Err(_) => "(options outside qatc's schema subset)".into(),
    }
}

/// The listing `qatc inspect model.tflite` prints.
pub fn text(model: &TfliteModel) -> String {
    let mut out = format!(
        "tflite model (schema v{}): {}\n  {} tensors, {} operators; inputs {:?}, outputs {:?}\n\ntensors:\n",
        model.version,
        model.description,
        model.tensors.len(),
        model.operators.len(),
        model.inputs,
        model.outputs
    );
    for (i, t) in model.tensors.iter().enumerate() {
        let _ = write!(out, "  %{i:<3} {} {}{:?}", t.name, t.dtype, t.shape);
        match t.scales.len() {
            0 => {}
            1 => {
                let _ = write!(
                    out,
                    "  scale={:e} zp={}",
                    t.scales[0],
                    t.zero_points.first().copied().unwrap_or(0)
                );
            }
            n => {
                let (lo, hi) = t
                    .scales
                    .iter()
                    .fold((f32::INFINITY, 0.0f32), |(lo, hi), &s| {
                        (lo.min(s), hi.max(s))
                    });
                let _ = write!(
                    out,
                    "  per-channel (dim {}): {n} scales in [{lo:e}, {hi:e}], zp {}",
                    t.quantized_dimension,
                    if t.zero_points.iter().all(|&z| z == 0) {
                        "0"
                    } else {
                        "mixed"
                    }
                );
            }
        }
        if let Some(data) = &t.data {
            let _ = write!(out, "  const {} bytes", data.len());
        }
        out.push('\n');
    }
    out.push_str("\noperators:\n");
    for (i, op) in model.operators.iter().enumerate() {
        let list = |v: &[i32]| {
            v.iter()
                .map(|t| format!("%{t}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "  {i:>3}: {} v{} ({}) -> {}  {}",
            op.op,
            op.version,
            list(&op.inputs),
            list(&op.outputs),
            op.options
        );
    }
    out
}
