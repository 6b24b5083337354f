//! Writing an integer graph as a `.tflite` FlatBuffer.

use std::collections::HashMap;
use std::path::Path;

use tflite_schema::planus;

use super::builtin::Builtin;
use super::{fb, IDENTIFIER, SCHEMA_VERSION};
use crate::int8::{self, IntGraph, IntOp, IntTensor, IntTensors, QParams, ValueId};
use crate::report::write_atomic_bytes;

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

/// TFLite's clamp for a fused activation on an int8 output (its
/// `CalculateActivationRangeQuantized`), matched against the integer graph's clamp.
fn fused_activation(
    what: &str,
    lo: i32,
    hi: i32,
    q: QParams,
) -> Result<fb::ActivationFunctionType, ExportError> {
    let relu_lo = q.zero_point.max(q.qmin);
    let relu6_hi = crate::lower::relu6_max(q);
    match (lo, hi) {
        (-128, 127) => Ok(fb::ActivationFunctionType::None),
        (l, 127) if l == relu_lo => Ok(fb::ActivationFunctionType::Relu),
        (l, h) if l == relu_lo && h == relu6_hi => Ok(fb::ActivationFunctionType::Relu6),
        _ => Err(unsupported(format!(
            "`{what}` clamps its output to [{lo}, {hi}], which no TFLite activation gives (scale {:e}, zero point {})",
            q.scale, q.zero_point
        ))),
    }
}

/// Whether `(in, kernel, stride, pad)` is TFLite's SAME or VALID padding along one axis.
fn tf_padding(size: usize, kernel: usize, stride: usize, pad: usize) -> Option<fb::Padding> {
    let out = (size + 2 * pad).checked_sub(kernel)? / stride + 1;
    if pad == 0 {
        return Some(fb::Padding::Valid);
    }
    let same_out = size.div_ceil(stride);
    let total = ((same_out - 1) * stride + kernel).saturating_sub(size);
    (same_out == out && total / 2 == pad).then_some(fb::Padding::Same)
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

    #[deny(clippy::wildcard_enum_match_arm)]
    fn op(&mut self, op: &IntOp) -> Result<(), ExportError> {
        match op {
            // TFLite broadcasts NHWC shapes; both inputs have the model's rank, so a [C, 1, 1]
            // is [1, 1, 1, C] there and stretches over H and W alike.
            IntOp::Mul {
                name,
                inputs,
                output,
                ..
            } => {
                if inputs.iter().any(|v| self.hwc.contains_key(v)) {
                    return Err(unsupported(format!(
                        "`{name}` multiplies a flattened image"
                    )));
                }
                let (a, b) = (self.value(inputs[0])?, self.value(inputs[1])?);
                let y = self.value(*output)?;
                let options = fb::BuiltinOptions::MulOptions(Box::new(fb::MulOptions {}));
                self.emit(Builtin::Mul, vec![a, b], vec![y], Some(options));
            }
            // TFLite computes the function itself (its own fixed-point kernel or table).
            IntOp::Lookup {
                name,
                input,
                output,
                function,
                ..
            } => {
                if self.hwc.contains_key(input) {
                    return Err(unsupported(format!("`{name}` reads a flattened image")));
                }
                let x = self.value(*input)?;
                let y = self.value(*output)?;
                self.emit(Builtin::of_lookup(*function), vec![x], vec![y], None);
            }
            // The model's input: raw pixels for a model built from images, else already quantized.
            IntOp::Quantize { output } => {
                let y = self.value(*output)?;
                if let Some(normalize) = &self.graph.input.normalize {
                    self.pixels = Some(self.normalize_pixels(normalize, y)?);
                }
            }
            IntOp::Conv2d {
                name,
                input,
                output,
                weight,
                bias,
                in_channels,
                out_channels,
                kernel,
                stride,
                pad,
                groups,
                weight_scales,
                act_min,
                act_max,
                ..
            } => {
                let out_q = self.graph.values[*output].quant;
                let act = fused_activation(name, *act_min, *act_max, out_q)?;
                let [_, h, w] = self.graph.values[*input].shape[..] else {
                    return Err(unsupported(format!(
                        "`{name}`: conv2d input is not [C, H, W]"
                    )));
                };
                let mut x = self.value(*input)?;
                let in_q = self.graph.values[*input].quant;
                let padding = match (
                    tf_padding(h, *kernel, *stride, *pad),
                    tf_padding(w, *kernel, *stride, *pad),
                ) {
                    (Some(a), Some(b)) if a == b => a,
                    // PyTorch-style symmetric padding that SAME would place differently:
                    // pad explicitly (TFLite pads int8 with the zero point, real 0).
                    _ => {
                        let p = *pad as i32;
                        let paddings =
                            self.int32_const(format!("{name}/paddings"), &[0, 0, p, p, p, p, 0, 0]);
                        self.fb_tensors[paddings as usize].shape = Some(vec![4, 2]);
                        let shape = vec![
                            1,
                            (h + 2 * pad) as i32,
                            (w + 2 * pad) as i32,
                            *in_channels as i32,
                        ];
                        let padded = self.temp(format!("{name}/padded"), shape, in_q);
                        self.emit(Builtin::Pad, vec![x, paddings], vec![padded], None);
                        x = padded;
                        fb::Padding::Valid
                    }
                };
                let (shape, data) = self.weights(weight)?;
                let [o, i, kh, kw] = shape[..] else {
                    return Err(unsupported(format!("`{weight}` is not 4-D")));
                };
                let depthwise = *groups == *in_channels && *groups > 1 && i == 1;
                if *groups != 1 && !depthwise {
                    return Err(unsupported(format!(
                        "`{name}`: grouped convolution ({groups} groups) has no TFLite builtin"
                    )));
                }
                let at = |oo: usize, ii: usize, y: usize, xx: usize| {
                    data[((oo * i + ii) * kh + y) * kw + xx]
                };
                let mut bytes = Vec::with_capacity(data.len());
                let (wshape, dim) = if depthwise {
                    // [1, KH, KW, O]
                    for y in 0..kh {
                        for xx in 0..kw {
                            for oo in 0..o {
                                bytes.push(at(oo, 0, y, xx) as u8);
                            }
                        }
                    }
                    (vec![1, kh as i32, kw as i32, o as i32], 3)
                } else {
                    // OHWI
                    for oo in 0..o {
                        for y in 0..kh {
                            for xx in 0..kw {
                                for ii in 0..i {
                                    bytes.push(at(oo, ii, y, xx) as u8);
                                }
                            }
                        }
                    }
                    (vec![o as i32, kh as i32, kw as i32, i as i32], 0)
                };
                let wt = self.tensor(
                    weight.clone(),
                    wshape,
                    fb::TensorType::Int8,
                    Some(bytes),
                    Some(per_channel(weight_scales.clone(), dim)),
                );
                let bt = self.bias(bias, in_q.scale, weight_scales)?;
                let y = self.value(*output)?;
                let stride = *stride as i32;
                let (builtin, options) = if depthwise {
                    (
                        Builtin::DepthwiseConv2d,
                        fb::BuiltinOptions::DepthwiseConv2DOptions(Box::new(
                            fb::DepthwiseConv2DOptions {
                                padding,
                                stride_w: stride,
                                stride_h: stride,
                                depth_multiplier: (*out_channels / *in_channels) as i32,
                                fused_activation_function: act,
                                dilation_w_factor: 1,
                                dilation_h_factor: 1,
                            },
                        )),
                    )
                } else {
                    (
                        Builtin::Conv2d,
                        fb::BuiltinOptions::Conv2DOptions(Box::new(fb::Conv2DOptions {
                            padding,
                            stride_w: stride,
                            stride_h: stride,
                            fused_activation_function: act,
                            dilation_w_factor: 1,
                            dilation_h_factor: 1,
                        })),
                    )
                };
                self.emit(builtin, vec![x, wt, bt], vec![y], Some(options));
            }
            IntOp::Dense {
                name,
                input,
                output,
                weight,
                bias,
                in_features,
                out_features,
                weight_scales,
                act_min,
                act_max,
                ..
            } => {
                let out_q = self.graph.values[*output].quant;
                let act = fused_activation(name, *act_min, *act_max, out_q)?;
                let (_, data) = self.weights(weight)?;
                let (o, i) = (*out_features, *in_features);
                // After a flatten the input is in HWC order: reorder the columns to match.
                let column: Vec<usize> = match self.hwc.get(input) {
                    Some(&[c, h, w]) => (0..i)
                        .map(|k| {
                            let (hw, ch) = (k / c, k % c);
                            ch * h * w + hw
                        })
                        .collect(),
                    None => (0..i).collect(),
                };
                let bytes = (0..o)
                    .flat_map(|oo| column.iter().map(move |&k| (oo, k)))
                    .map(|(oo, k)| data[oo * i + k] as u8)
                    .collect();
                let x = self.value(*input)?;
                let in_q = self.graph.values[*input].quant;
                let wt = self.tensor(
                    weight.clone(),
                    vec![o as i32, i as i32],
                    fb::TensorType::Int8,
                    Some(bytes),
                    Some(per_channel(weight_scales.clone(), 0)),
                );
                let bt = self.bias(bias, in_q.scale, weight_scales)?;
                let y = self.value(*output)?;
                let options = fb::BuiltinOptions::FullyConnectedOptions(Box::new(
                    fb::FullyConnectedOptions {
                        fused_activation_function: act,
                        weights_format: 0,
                        keep_num_dims: false,
                    },
                ));
                self.emit(
                    Builtin::FullyConnected,
                    vec![x, wt, bt],
                    vec![y],
                    Some(options),
                );
            }
            IntOp::MaxPool2d {
                input,
                output,
                size,
                stride,
            } => self.pool(Builtin::MaxPool2d, *input, *output, *size, *stride)?,
            IntOp::Reshape { input, output } => self.reshape(*input, *output)?,
            IntOp::Add {
                name,
                inputs,
                output,
                act_min,
                act_max,
                ..
            } => {
                if inputs.iter().any(|v| self.hwc.contains_key(v)) {
                    return Err(unsupported(format!("`{name}` adds a flattened image")));
                }
                let act =
                    fused_activation(name, *act_min, *act_max, self.graph.values[*output].quant)?;
                let (a, b) = (self.value(inputs[0])?, self.value(inputs[1])?);
                let y = self.value(*output)?;
                let options = fb::BuiltinOptions::AddOptions(Box::new(fb::AddOptions {
                    fused_activation_function: act,
                }));
                self.emit(Builtin::Add, vec![a, b], vec![y], Some(options));
            }
            IntOp::Requantize {
                name,
                input,
                output,
                act_min,
                act_max,
                ..
            } => {
                if self.hwc.contains_key(input) {
                    return Err(unsupported(format!("`{name}` reads a flattened image")));
                }
                let act =
                    fused_activation(name, *act_min, *act_max, self.graph.values[*output].quant)?;
                let builtin = match act {
                    fb::ActivationFunctionType::Relu => Builtin::Relu,
                    fb::ActivationFunctionType::Relu6 => Builtin::Relu6,
                    // A change of parameters only: int8 → int8 QUANTIZE requantizes
                    // (`fused_activation` gives no other function).
                    fb::ActivationFunctionType::None
                    | fb::ActivationFunctionType::ReluN1To1
                    | fb::ActivationFunctionType::Tanh
                    | fb::ActivationFunctionType::SignBit => Builtin::Quantize,
                };
                let x = self.value(*input)?;
                let y = self.value(*output)?;
                self.emit(builtin, vec![x], vec![y], None);
            }
            IntOp::AvgPool2d {
                input,
                output,
                size,
                stride,
            } => self.pool(Builtin::AveragePool2d, *input, *output, *size, *stride)?,
            IntOp::GlobalAvgPool {
                name,
                input,
                output,
                act_min,
                act_max,
                ..
            } => {
                // MEAN has no fused activation: only the full range.
                let q = self.graph.values[*output].quant;
                if fused_activation(name, *act_min, *act_max, q)?
                    != fb::ActivationFunctionType::None
                {
                    return Err(unsupported(format!(
                        "`{name}` clamps a mean, which TFLite's MEAN cannot"
                    )));
                }
                let x = self.value(*input)?;
                let axes = self.int32_const(format!("{name}/axes"), &[1, 2]);
                let y = self.value(*output)?;
                let options = fb::BuiltinOptions::ReducerOptions(Box::new(fb::ReducerOptions {
                    keep_dims: false,
                }));
                self.emit(Builtin::Mean, vec![x, axes], vec![y], Some(options));
            }
            IntOp::Concat {
                name,
                inputs,
                output,
                axis,
                ..
            } => {
                let out_q = self.graph.values[*output].quant;
                let rank = self.graph.values[*output].shape.len();
                // The model's per-sample axis in NHWC.
                let axis = match (rank, *axis) {
                    (3, 0) => 3,
                    (3, a) => a as i32,
                    (_, a) => a as i32 + 1,
                };
                // TFLite's int8 CONCATENATION takes inputs with the output's parameters;
                // the others are requantized first, as qatc's kernel does.
                let mut xs = Vec::new();
                for (i, &v) in inputs.iter().enumerate() {
                    if self.hwc.contains_key(&v) {
                        return Err(unsupported(format!("`{name}` joins a flattened image")));
                    }
                    let x = self.value(v)?;
                    if self.graph.values[v].quant == out_q {
                        xs.push(x);
                    } else {
                        let shape = nhwc(&self.graph.values[v].shape);
                        let t = self.temp(format!("{name}/input{i}"), shape, out_q);
                        self.emit(Builtin::Quantize, vec![x], vec![t], None);
                        xs.push(t);
                    }
                }
                let y = self.value(*output)?;
                let options =
                    fb::BuiltinOptions::ConcatenationOptions(Box::new(fb::ConcatenationOptions {
                        axis,
                        fused_activation_function: fb::ActivationFunctionType::None,
                    }));
                self.emit(Builtin::Concatenation, xs, vec![y], Some(options));
            }
        }
        Ok(())
    }

    fn pool(
        &mut self,
        builtin: Builtin,
        input: ValueId,
        output: ValueId,
        size: usize,
        stride: usize,
    ) -> Result<(), ExportError> {
        let x = self.value(input)?;
        let y = self.value(output)?;
        let options = fb::BuiltinOptions::Pool2DOptions(Box::new(fb::Pool2DOptions {
            padding: fb::Padding::Valid,
            stride_w: stride as i32,
            stride_h: stride as i32,
            filter_width: size as i32,
            filter_height: size as i32,
            fused_activation_function: fb::ActivationFunctionType::None,
        }));
        self.emit(builtin, vec![x], vec![y], Some(options));
        Ok(())
    }

    /// A flatten. NHWC flattens in HWC order; when only dense layers read the result,
    /// their weights are reordered instead of the data, else the data is transposed back
    /// to CHW first.
    fn reshape(&mut self, input: ValueId, output: ValueId) -> Result<(), ExportError> {
        let in_shape = self.graph.values[input].shape.clone();
        let out_shape = self.graph.values[output].shape.clone();
        let mut x = self.value(input)?;
        if let [c, h, w] = in_shape[..] {
            if out_shape.len() != 1 {
                return Err(unsupported(format!(
                    "a reshape from {in_shape:?} to {out_shape:?} (only flattening to a vector is exported)"
                )));
            }
            let ordered_alike = c == 1 || h * w == 1;
            let only_dense = output != self.graph.output
                && self
                    .graph
                    .ops
                    .iter()
                    .filter(|op| op.inputs().contains(&output))
                    .all(|op| matches!(op, IntOp::Dense { .. }));
            if !ordered_alike && only_dense {
                self.hwc.insert(output, [c, h, w]);
            } else if !ordered_alike {
                let perm = self.int32_const(
                    format!("{}/perm", self.graph.values[output].name),
                    &[0, 3, 1, 2],
                );
                let q = self.graph.values[input].quant;
                let chw = self.temp(
                    format!("{}/nchw", self.graph.values[output].name),
                    vec![1, c as i32, h as i32, w as i32],
                    q,
                );
                self.emit(Builtin::Transpose, vec![x, perm], vec![chw], None);
                x = chw;
            }
        } else if self.hwc.contains_key(&input) {
            return Err(unsupported("a reshape of a flattened image"));
        } else if let [c, h, w] = out_shape[..] {
            // A vector's order is CHW; NHWC holds the same order only when C or H·W is 1.
            if c != 1 && h * w != 1 {
                return Err(unsupported(format!(
                    "a reshape from {in_shape:?} to {out_shape:?} (only to [C, 1, 1] or [1, H, W])"
                )));
            }
        }
        // -1 for the batch: the interpreter may be resized to run many images at once.
        let mut new_shape = nhwc(&out_shape);
        new_shape[0] = -1;
        let shape = self.int32_const(
            format!("{}/shape", self.graph.values[output].name),
            &new_shape,
        );
        let y = self.value(output)?;
        let options = fb::BuiltinOptions::ReshapeOptions(Box::new(fb::ReshapeOptions {
            new_shape: Some(new_shape),
        }));
        self.emit(Builtin::Reshape, vec![x, shape], vec![y], Some(options));
        Ok(())
    }
}
