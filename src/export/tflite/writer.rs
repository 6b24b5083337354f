//! Writing an integer graph as a `.tflite` FlatBuffer.

use std::collections::HashMap;
use std::path::Path;

use tflite_schema::planus;

use super::builtin::Builtin;
use super::{fb, IDENTIFIER, SCHEMA_VERSION};
use crate::int8::{self, IntGraph, IntOp, IntTensor, IntTensors, LookupFunction, QParams, ValueId};
use crate::report::write_atomic_bytes;

mod operators;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot export to TFLite: {0}")]
    Unsupported(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Writes `model` as a `.tflite` file, atomically.
pub fn write(path: &Path, model: &int8::Model) -> Result<(), ExportError> {
    let bytes = to_bytes(model)?;
    write_atomic_bytes(path, &bytes).map_err(|source| ExportError::Write {
        path: path.display().to_string(),
        source,
    })
}

fn unsupported(why: impl Into<String>) -> ExportError {
    ExportError::Unsupported(why.into())
}

/// The `.tflite` bytes of a validated integer model.
pub fn to_bytes(model: &int8::Model) -> Result<Vec<u8>, ExportError> {
    let (graph, tensors) = (model.graph(), model.tensors());
    let mut w = Writer::new(graph, tensors);
    for op in &graph.ops {
        w.op(op)?;
    }
    let input = graph
        .ops
        .iter()
        .find_map(|op| match op {
            IntOp::Quantize { output } => Some(*output),
            _ => None,
        })
        .ok_or_else(|| unsupported("the integer graph has no quantize op for its input"))?;
    let input = match w.pixels {
        Some(pixels) => pixels,
        None => w.value(input)?,
    };
    if w.hwc.contains_key(&graph.output) {
        return Err(unsupported("the output is a flattened image"));
    }
    let output = w.value(graph.output)?;
    let model = fb::Model {
        version: SCHEMA_VERSION,
        operator_codes: Some(
            w.codes
                .iter()
                .map(|b| fb::OperatorCode {
                    deprecated_builtin_code: b.code() as i8,
                    custom_code: None,
                    version: b.version(),
                    builtin_code: b.code(),
                })
                .collect(),
        ),
        subgraphs: Some(vec![fb::SubGraph {
            tensors: Some(w.fb_tensors),
            inputs: Some(vec![input]),
            outputs: Some(vec![output]),
            operators: Some(w.operators),
            name: Some("main".into()),
        }]),
        description: Some(format!(
            "qatc {}: int8 model {}{}{}",
            env!("CARGO_PKG_VERSION"),
            graph.model,
            // The recipe selected classes: say which dataset label each output is.
            graph.classes.as_ref().map_or(String::new(), |c| format!(
                "; output i is dataset class {c:?}[i]"
            )),
            // What an app shows for output i: the names as a JSON array.
            graph
                .class_names
                .as_ref()
                .map_or(String::new(), |names| format!(
                    "; labels: {}",
                    serde_json::to_string(names).expect("strings serialize")
                ))
        )),
        buffers: Some(w.buffers),
    };
    let mut builder = planus::Builder::new();
    Ok(with_identifier(
        builder.finish(&model, Some(IDENTIFIER)).to_vec(),
    ))
}

/// FlatBuffers put the root offset first and the identifier after it; planus 1.3 writes
/// them the other way round (the offset then counts from byte 4). Swap them back.
fn with_identifier(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len() >= 8 && bytes[0..4] == IDENTIFIER {
        let offset = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) + 4;
        bytes[0..4].copy_from_slice(&offset.to_le_bytes());
        bytes[4..8].copy_from_slice(&IDENTIFIER);
    }
    bytes
}

struct Writer<'a> {
    graph: &'a IntGraph,
    tensors: &'a IntTensors,
    buffers: Vec<fb::Buffer>,
    fb_tensors: Vec<fb::Tensor>,
    codes: Vec<Builtin>,
    operators: Vec<fb::Operator>,
    /// The TFLite tensor of each integer-graph value, once written.
    value_tensor: HashMap<ValueId, i32>,
    /// Flattened images whose elements are in NHWC order, with their `[C, H, W]`.
    hwc: HashMap<ValueId, [usize; 3]>,
    /// The raw `uint8` pixel input, for a model built from images.
    pixels: Option<i32>,
}

/// `[C, H, W]` → `[1, H, W, C]`, `[F]` → `[1, F]`.
fn nhwc(shape: &[usize]) -> Vec<i32> {
    match *shape {
        [c, h, w] => vec![1, h as i32, w as i32, c as i32],
        _ => std::iter::once(1)
            .chain(shape.iter().map(|&d| d as i32))
            .collect(),
    }
}

fn per_tensor(q: QParams) -> Box<fb::QuantizationParameters> {
    Box::new(fb::QuantizationParameters {
        scale: Some(vec![q.scale]),
        zero_point: Some(vec![q.zero_point as i64]),
        ..Default::default()
    })
}

fn per_channel(scales: Vec<f32>, dimension: usize) -> Box<fb::QuantizationParameters> {
    Box::new(fb::QuantizationParameters {
        zero_point: Some(vec![0; scales.len()]),
        scale: Some(scales),
        quantized_dimension: dimension as i32,
        ..Default::default()
    })
}

impl<'a> Writer<'a> {
    fn new(graph: &'a IntGraph, tensors: &'a IntTensors) -> Writer<'a> {
        Writer {
            graph,
            tensors,
            // Buffer 0 is the empty sentinel that activations point at.
            buffers: vec![fb::Buffer::default()],
            fb_tensors: Vec::new(),
            codes: Vec::new(),
            operators: Vec::new(),
            value_tensor: HashMap::new(),
            hwc: HashMap::new(),
            pixels: None,
        }
    }

    fn tensor(
        &mut self,
        name: String,
        shape: Vec<i32>,
        type_: fb::TensorType,
        data: Option<Vec<u8>>,
        quantization: Option<Box<fb::QuantizationParameters>>,
    ) -> i32 {
        let buffer = match data {
            Some(data) => {
                self.buffers.push(fb::Buffer { data: Some(data) });
                self.buffers.len() as u32 - 1
            }
            None => 0,
        };
        self.fb_tensors.push(fb::Tensor {
            shape: Some(shape),
            type_,
            buffer,
            name: Some(name),
            quantization,
            is_variable: false,
        });
        self.fb_tensors.len() as i32 - 1
    }

    /// The TFLite tensor of a value, created on first use.
    fn value(&mut self, v: ValueId) -> Result<i32, ExportError> {
        if let Some(&t) = self.value_tensor.get(&v) {
            return Ok(t);
        }
        let value = &self.graph.values[v];
        let q = value.quant;
        if (q.qmin, q.qmax) != (-128, 127) {
            return Err(unsupported(format!(
                "`{}` holds integers in [{}, {}]; TFLite int8 tensors hold [-128, 127] (export models with 8-bit activations)",
                value.name, q.qmin, q.qmax
            )));
        }
        let t = self.tensor(
            value.name.clone(),
            nhwc(&value.shape),
            fb::TensorType::Int8,
            None,
            Some(per_tensor(q)),
        );
        self.value_tensor.insert(v, t);
        Ok(t)
    }

    /// A fresh activation tensor with a value's parameters (for inserted ops).
    fn temp(&mut self, name: String, shape: Vec<i32>, q: QParams) -> i32 {
        self.tensor(name, shape, fb::TensorType::Int8, None, Some(per_tensor(q)))
    }

    fn int32_const(&mut self, name: String, data: &[i32]) -> i32 {
        let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.tensor(
            name,
            vec![data.len() as i32],
            fb::TensorType::Int32,
            Some(bytes),
            None,
        )
    }

    fn emit(
        &mut self,
        builtin: Builtin,
        inputs: Vec<i32>,
        outputs: Vec<i32>,
        options: Option<fb::BuiltinOptions>,
    ) {
        let index = match self.codes.iter().position(|&b| b == builtin) {
            Some(i) => i,
            None => {
                self.codes.push(builtin);
                self.codes.len() - 1
            }
        };
        self.operators.push(fb::Operator {
            opcode_index: index as u32,
            inputs: Some(inputs),
            outputs: Some(outputs),
            builtin_options: options,
            ..Default::default()
        });
    }

    fn weights(&self, name: &str) -> Result<(&'a [usize], &'a [i8]), ExportError> {
        match self.tensors.get(name) {
            Some(IntTensor::I8 { shape, data }) => Ok((shape, data)),
            _ => Err(unsupported(format!("int8 tensor `{name}` is missing"))),
        }
    }

    fn bias(&mut self, name: &str, s_x: f32, weight_scales: &[f32]) -> Result<i32, ExportError> {
        let Some(IntTensor::I32 { data, .. }) = self.tensors.get(name) else {
            return Err(unsupported(format!("int32 tensor `{name}` is missing")));
        };
        let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        let scales = weight_scales.iter().map(|s| s * s_x).collect();
        Ok(self.tensor(
            name.to_string(),
            vec![data.len() as i32],
            fb::TensorType::Int32,
            Some(bytes),
            Some(per_channel(scales, 0)),
        ))
    }

    /// A `uint8` NHWC input of raw pixels (scale 1/255, zero point 0: real `p / 255`)
    /// into the int8 input tensor `y`: `QUANTIZE` requantizes it when there is nothing to
    /// normalize; otherwise `QUANTIZE` to int8 at the same scale (`p - 128`, exact), then a
    /// 1×1 `DEPTHWISE_CONV_2D` whose weight `1 / std[c]` and bias `-mean[c] / std[c]` give
    /// `(p / 255 - mean[c]) / std[c]`, requantized to `y`'s parameters. Returns the input.
    fn normalize_pixels(
        &mut self,
        normalize: &crate::preprocess::Normalize,
        y: i32,
    ) -> Result<i32, ExportError> {
        let shape = self.graph.input.shape.clone();
        let divisor = crate::preprocess::PIXEL_DIVISOR;
        let pixels_q = |zero_point: i64| {
            Box::new(fb::QuantizationParameters {
                scale: Some(vec![1.0 / divisor]),
                zero_point: Some(vec![zero_point]),
                ..Default::default()
            })
        };
        let pixels = self.tensor(
            "pixels".into(),
            nhwc(&shape),
            fb::TensorType::Uint8,
            None,
            Some(pixels_q(0)),
        );
        if normalize.is_identity() {
            self.emit(Builtin::Quantize, vec![pixels], vec![y], None);
            return Ok(pixels);
        }
        let [c, _, _] = shape[..] else {
            return Err(unsupported(format!(
                "normalizing the flat input {shape:?} (only [C, H, W] images are normalized in TFLite)"
            )));
        };
        let shifted = self.tensor(
            "pixels/int8".into(),
            nhwc(&shape),
            fb::TensorType::Int8,
            None,
            Some(pixels_q(-128)),
        );
        self.emit(Builtin::Quantize, vec![pixels], vec![shifted], None);
        // Weight 127 at scale (1 / std) / 127 is 1 / std exactly (up to f32).
        let scales: Vec<f32> = normalize.std.iter().map(|s| 1.0 / s / 127.0).collect();
        let weight = self.tensor(
            "normalize/weight".into(),
            vec![1, 1, 1, c as i32],
            fb::TensorType::Int8,
            Some(vec![127u8; c]),
            Some(per_channel(scales.clone(), 3)),
        );
        let s_in = 1.0 / divisor;
        let bias: Vec<i32> = (0..c)
            .map(|ch| {
                let real = -(normalize.mean[ch] as f64) / normalize.std[ch] as f64;
                (real / (s_in as f64 * scales[ch] as f64)).round() as i32
            })
            .collect();
        let bias_t = self.tensor(
            "normalize/bias".into(),
            vec![c as i32],
            fb::TensorType::Int32,
            Some(bias.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Some(per_channel(scales.iter().map(|s| s * s_in).collect(), 0)),
        );
        let options =
            fb::BuiltinOptions::DepthwiseConv2DOptions(Box::new(fb::DepthwiseConv2DOptions {
                padding: fb::Padding::Valid,
                stride_w: 1,
                stride_h: 1,
                depth_multiplier: 1,
                fused_activation_function: fb::ActivationFunctionType::None,
                dilation_w_factor: 1,
                dilation_h_factor: 1,
            }));
        self.emit(
            Builtin::DepthwiseConv2d,
            vec![shifted, weight, bias_t],
            vec![y],
            Some(options),
        );
        Ok(pixels)
    }
}
