//! ONNX export of the integer graph in the QOperator form: `QuantizeLinear` on the
//! float input, `QLinearConv` for conv2d and dense (dense as a 1×1 convolution),
//! int8 `MaxPool`, `Flatten` and `Pad` (its constant the zero point), and from the com.microsoft domain `QLinearAdd` for add,
//! `QLinearGlobalAveragePool` (then `Flatten` to `[N, C]`) for global_avg_pool and
//! `QLinearConcat` for concat, `QLinearMul` for mul; lookup tables as the function they tabulate (see [`lookup`]);
//! `DequantizeLinear` on the logits. avg_pool2d keeps its
//! input's parameters and is written exactly as qatc computes it: `Cast` to f32, f32
//! `AveragePool` of the raw int8 values, rounding half away from zero
//! (`Sign · Floor(Abs + 0.5)`), `Cast` back to int8. Opset 13, IR version 7. The layout
//! is NCHW: the model's `[C, H, W]` and `[F]` with the batch dimension in front.
//!
//! ONNX Runtime requantizes with a float multiplier (`x_scale * w_scale / y_scale`)
//! and rounds half to even; qatc uses a fixed-point multiplier and rounds half up,
//! so an output can differ by one unit where the exact value is (nearly) a tie.
//! (com.microsoft `QLinearAveragePool` would round the ties of a 2×2 mean to even, about
//! one output in eight, and the layers after it grow those units: up to 3 at the logits.)

use std::path::Path;

use prost::Message;

use crate::int8::{self, IntOp, IntTensor, LookupFunction, QParams};
use crate::report::write_atomic_bytes;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot export to ONNX: {0}")]
    Unsupported(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

mod builder;
pub mod proto;

use builder::{int, ints, tensor_type, Builder};
use proto::*;

/// The graph input and what turns it into the float the quantize op takes: for a model
/// built from images, raw `uint8` pixels `Cast` to float, `Div` 255, then `Sub` mean and
/// `Div` std per channel (f32, the int8 runtime's order of operations); otherwise the float
/// input itself. Returns the name of that float.
fn input(b: &mut Builder, input: &int8::Input) -> String {
    let Some(normalize) = &input.normalize else {
        b.graph.input.push(ValueInfoProto {
            name: "input".into(),
            r#type: tensor_type(FLOAT, "N", &input.shape),
        });
        return "input".into();
    };
    b.graph.input.push(ValueInfoProto {
        name: "pixels".into(),
        r#type: tensor_type(UINT8, "N", &input.shape),
    });
    let x = b.node(
        "Cast",
        "",
        vec!["pixels".into()],
        "pixels_f32".into(),
        vec![int("to", FLOAT as i64)],
    );
    let divisor = b.f32s(
        "pixel_divisor".into(),
        &[],
        &[crate::preprocess::PIXEL_DIVISOR],
    );
    let x = b.node("Div", "", vec![x, divisor], "scaled".into(), vec![]);
    if normalize.is_identity() {
        return x;
    }
    // [1, C, 1, 1] against [N, C, H, W]; [1, 1] against a flat [N, F].
    let mut dims = vec![1usize; input.shape.len() + 1];
    dims[1] = normalize.mean.len();
    let mean = b.f32s("mean".into(), &dims, &normalize.mean);
    let std = b.f32s("std".into(), &dims, &normalize.std);
    let x = b.node("Sub", "", vec![x, mean], "centred".into(), vec![]);
    b.node("Div", "", vec![x, std], "normalized".into(), vec![])
}

/// Builds the ONNX model of a validated integer model.
pub fn model(model: &int8::Model) -> Result<ModelProto, ExportError> {
    let (graph, tensors) = (model.graph(), model.tensors());
    for v in &graph.values {
        if (v.quant.qmin, v.quant.qmax) != (-128, 127) {
            return Err(ExportError::Unsupported(format!(
                "value `{}` uses the range [{}, {}]; ONNX int8 ops saturate to [-128, 127]",
                v.name, v.quant.qmin, v.quant.qmax
            )));
        }
    }
    let mut b = Builder {
        graph: GraphProto {
            name: graph.model.clone(),
            ..Default::default()
        },
        counter: 0,
    };
    let input_name = input(&mut b, &graph.input);
    let names: Vec<String> = graph
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{}_{i}",
                v.name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            )
        })
        .collect();
    let i8_tensor = |name: &str| match tensors.get(name) {
        Some(IntTensor::I8 { data, .. }) => Ok(data.clone()),
        _ => Err(ExportError::Unsupported(format!(
            "tensor `{name}` is missing or not int8"
        ))),
    };
    let i32_tensor = |name: &str| match tensors.get(name) {
        Some(IntTensor::I32 { data, .. }) => Ok(data.clone()),
        _ => Err(ExportError::Unsupported(format!(
            "tensor `{name}` is missing or not int32"
        ))),
    };
    for op in &graph.ops {
        let out = &names[op.output()];
        let out_q = graph.values[op.output()].quant;
        #[deny(clippy::wildcard_enum_match_arm)]
        match op {
            IntOp::Lookup {
                input, function, ..
            } => lookup(
                &mut b,
                *function,
                &names[*input],
                graph.values[*input].quant,
                out,
                out_q,
            ),
            IntOp::Quantize { .. } => {
                let (s, z) = b.qparams(out, &out_q);
                b.node(
                    "QuantizeLinear",
                    "",
                    vec![input_name.clone(), s, z],
                    out.clone(),
                    vec![],
                );
            }
            IntOp::Conv2d {
                input,
                weight,
                bias,
                out_channels,
                in_channels,
                kernel,
                stride,
                pad,
                groups,
                weight_scales,
                act_min,
                act_max,
                ..
            } => {
                let w = i8_tensor(weight)?;
                let bias = i32_tensor(bias)?;
                let k = *kernel;
                let inputs = linear_inputs(
                    &mut b,
                    &names[*input],
                    &graph.values[*input].quant,
                    out,
                    &out_q,
                    w,
                    &[*out_channels, in_channels / groups, k, k],
                    weight_scales,
                    bias,
                );
                let attrs = vec![
                    ints("kernel_shape", &[k as i64, k as i64]),
                    ints("strides", &[*stride as i64, *stride as i64]),
                    ints("pads", &[*pad as i64; 4]),
                    int("group", *groups as i64),
                ];
                let y = b.node("QLinearConv", "", inputs, format!("{out}_conv"), attrs);
                clamp(&mut b, y, out, *act_min, *act_max);
            }
            IntOp::Dense {
                input,
                weight,
                bias,
                in_features,
                out_features,
                weight_scales,
                act_min,
                act_max,
                ..
            } => {
                let w = i8_tensor(weight)?;
                let bias = i32_tensor(bias)?;
                let shape4 = b.init(
                    format!("{out}_shape4"),
                    INT64,
                    &[4],
                    [0i64, *in_features as i64, 1, 1]
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect(),
                );
                let x4 = b.node(
                    "Reshape",
                    "",
                    vec![names[*input].clone(), shape4],
                    format!("{out}_in4"),
                    vec![],
                );
                let inputs = linear_inputs(
                    &mut b,
                    &x4,
                    &graph.values[*input].quant,
                    out,
                    &out_q,
                    w,
                    &[*out_features, *in_features, 1, 1],
                    weight_scales,
                    bias,
                );
                let y4 = b.node(
                    "QLinearConv",
                    "",
                    inputs,
                    format!("{out}_out4"),
                    vec![ints("kernel_shape", &[1, 1])],
                );
                let shape2 = b.init(
                    format!("{out}_shape2"),
                    INT64,
                    &[2],
                    [0i64, *out_features as i64]
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect(),
                );
                let y = b.node(
                    "Reshape",
                    "",
                    vec![y4, shape2],
                    format!("{out}_dense"),
                    vec![],
                );
                clamp(&mut b, y, out, *act_min, *act_max);
            }
            IntOp::MaxPool2d {
                input,
                size,
                stride,
                ..
            } => {
                let attrs = vec![
                    ints("kernel_shape", &[*size as i64, *size as i64]),
                    ints("strides", &[*stride as i64, *stride as i64]),
                ];
                b.node(
                    "MaxPool",
                    "",
                    vec![names[*input].clone()],
                    out.clone(),
                    attrs,
                );
            }
            // ONNX's Pad on int8 data; its constant is the zero point (real 0), which
            // the output shares with the input.
            IntOp::Pad { input, size, .. } => {
                let p = *size as i64;
                let pads = b.init(
                    format!("{out}_pads"),
                    INT64,
                    &[8],
                    [0i64, 0, p, p, 0, 0, p, p]
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect(),
                );
                let zero = b.i8s(
                    format!("{out}_constant"),
                    &[],
                    &[graph.values[*input].quant.zero_point as i8],
                );
                b.node(
                    "Pad",
                    "",
                    vec![names[*input].clone(), pads, zero],
                    out.clone(),
                    vec![],
                );
            }
            IntOp::Reshape { input, output } => {
                let shape = &graph.values[*output].shape;
                if shape.len() == 1 {
                    b.node(
                        "Flatten",
                        "",
                        vec![names[*input].clone()],
                        out.clone(),
                        vec![int("axis", 1)],
                    );
                } else {
                    // ONNX's layout is the model's: the same shape after the batch.
                    let dims: Vec<i64> = std::iter::once(-1)
                        .chain(shape.iter().map(|&d| d as i64))
                        .collect();
                    let to = b.init(
                        format!("{out}_shape"),
                        INT64,
                        &[dims.len()],
                        dims.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    );
                    b.node(
                        "Reshape",
                        "",
                        vec![names[*input].clone(), to],
                        out.clone(),
                        vec![],
                    );
                }
            }
            IntOp::Mul { inputs, .. } => {
                // Both inputs have the output's rank: ONNX's broadcasting stretches the 1s.
                let (qa, qb) = (graph.values[inputs[0]].quant, graph.values[inputs[1]].quant);
                b.qlinear_binary(
                    "QLinearMul",
                    [
                        (&names[inputs[0]], &format!("{out}_a"), &qa),
                        (&names[inputs[1]], &format!("{out}_b"), &qb),
                    ],
                    (out, &out_q),
                    out.clone(),
                );
            }
            IntOp::Add {
                inputs,
                act_min,
                act_max,
                ..
            } => {
                let (qa, qb) = (graph.values[inputs[0]].quant, graph.values[inputs[1]].quant);
                let y = b.qlinear_binary(
                    "QLinearAdd",
                    [
                        (&names[inputs[0]], &names[inputs[0]], &qa),
                        (&names[inputs[1]], &format!("{}_b", names[inputs[1]]), &qb),
                    ],
                    (out, &out_q),
                    format!("{out}_add"),
                );
                clamp(&mut b, y, out, *act_min, *act_max);
            }
            IntOp::Requantize {
                input,
                act_min,
                act_max,
                ..
            } => {
                let q_in = graph.values[*input].quant;
                let (s, z) = b.qparams(&format!("{}_r", names[*input]), &q_in);
                let x = b.node(
                    "DequantizeLinear",
                    "",
                    vec![names[*input].clone(), s, z],
                    format!("{out}_real"),
                    vec![],
                );
                let (s, z) = b.qparams(out, &out_q);
                let y = b.node(
                    "QuantizeLinear",
                    "",
                    vec![x, s, z],
                    format!("{out}_q"),
                    vec![],
                );
                clamp(&mut b, y, out, *act_min, *act_max);
            }
            IntOp::AvgPool2d {
                input,
                size,
                stride,
                ..
            } => {
                // `round_half_away_from_zero(Σ q / count)` on the raw int8 values, exactly:
                // the window mean of small integers is exact in f32 (a tie is exactly
                // k + 0.5), rounded as sign(m) · floor(|m| + 0.5). The output keeps the
                // input's parameters, so no scale enters. (com.microsoft QLinearAveragePool
                // rounds ties to even, and the one-unit differences grow in the layers after.)
                let x = b.node(
                    "Cast",
                    "",
                    vec![names[*input].clone()],
                    format!("{out}_f"),
                    vec![int("to", FLOAT as i64)],
                );
                let attrs = vec![
                    ints("kernel_shape", &[*size as i64, *size as i64]),
                    ints("strides", &[*stride as i64, *stride as i64]),
                ];
                let m = b.node("AveragePool", "", vec![x], format!("{out}_mean"), attrs);
                let sign = b.node("Sign", "", vec![m.clone()], format!("{out}_sign"), vec![]);
                let abs = b.node("Abs", "", vec![m], format!("{out}_abs"), vec![]);
                let half = b.f32s(format!("{out}_half"), &[], &[0.5]);
                let up = b.node("Add", "", vec![abs, half], format!("{out}_up"), vec![]);
                let fl = b.node("Floor", "", vec![up], format!("{out}_floor"), vec![]);
                let r = b.node("Mul", "", vec![sign, fl], format!("{out}_round"), vec![]);
                b.node(
                    "Cast",
                    "",
                    vec![r],
                    out.clone(),
                    vec![int("to", INT8 as i64)],
                );
            }
            IntOp::GlobalAvgPool {
                input,
                act_min,
                act_max,
                ..
            } => {
                // [N, C, H, W] → [N, C, 1, 1] → the vector [N, C] a dense layer reads.
                let q_in = graph.values[*input].quant;
                let (xs, xz) = b.qparams(&format!("{out}_x"), &q_in);
                let (ys, yz) = b.qparams(out, &out_q);
                let y4 = b.node(
                    "QLinearGlobalAveragePool",
                    "com.microsoft",
                    vec![names[*input].clone(), xs, xz, ys, yz],
                    format!("{out}_pool4"),
                    vec![int("channels_last", 0)],
                );
                let y = b.node(
                    "Flatten",
                    "",
                    vec![y4],
                    format!("{out}_pool"),
                    vec![int("axis", 1)],
                );
                clamp(&mut b, y, out, *act_min, *act_max);
            }
            IntOp::Concat { inputs, axis, .. } => {
                // Inputs: y_scale, y_zero_point, then (x, x_scale, x_zero_point) per input;
                // ONNX Runtime copies an input whose parameters equal the output's and
                // requantizes the others. The model's per-sample axis is one past the batch.
                let (ys, yz) = b.qparams(out, &out_q);
                let mut args = vec![ys, yz];
                for (k, &i) in inputs.iter().enumerate() {
                    let (xs, xz) = b.qparams(&format!("{out}_x{k}"), &graph.values[i].quant);
                    args.extend([names[i].clone(), xs, xz]);
                }
                b.node(
                    "QLinearConcat",
                    "com.microsoft",
                    args,
                    out.clone(),
                    vec![int("axis", *axis as i64 + 1)],
                );
            }
        }
    }
    let out = &names[graph.output];
    let q = graph.values[graph.output].quant;
    let (s, z) = b.qparams(&format!("{out}_out"), &q);
    b.node(
        "DequantizeLinear",
        "",
        vec![out.clone(), s, z],
        "logits".into(),
        vec![],
    );
    b.graph.output.push(ValueInfoProto {
        name: "logits".into(),
        r#type: tensor_type(FLOAT, "N", &graph.values[graph.output].shape),
    });
    Ok(ModelProto {
        ir_version: 7,
        producer_name: "qatc".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!(
            "{}: int8 model (QOperator form) exported by qatc; {}",
            graph.model,
            match &graph.input.normalize {
                Some(n) => format!(
                    "input `pixels` u8 [N, ...] raw, normalized inside as (p / 255 - {:?}) / {:?}",
                    n.mean, n.std
                ),
                None => "input f32 [N, ...] in [0, 1]".into(),
            }
        ),
        graph: Some(b.graph),
        opset_import: vec![
            OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            },
            OperatorSetIdProto {
                domain: "com.microsoft".into(),
                version: 1,
            },
        ],
        // The name of each output, as a JSON array (ONNX Runtime: `modelmeta.custom_metadata_map`).
        metadata_props: graph
            .class_names
            .iter()
            .map(|names| StringStringEntryProto {
                key: "labels".into(),
                value: serde_json::to_string(names).expect("strings serialize"),
            })
            .collect(),
    })
}

/// An elementwise function of int8 `x` into `out`. The table the int8 graph carries is
/// not written: ONNX Runtime computes each function itself, an independent check.
fn lookup(b: &mut Builder, function: LookupFunction, x: &str, xq: QParams, out: &str, yq: QParams) {
    #[deny(clippy::wildcard_enum_match_arm)]
    match function {
        // In f32 as libtorch orders it, `x * clip(x + 3, 0, 6) / 6` and `clip(x + 3, 0, 6) / 6`,
        // between a DequantizeLinear and a QuantizeLinear (ONNX's HardSwish needs opset 14;
        // its HardSigmoid computes `alpha * x + beta`, another rounding).
        LookupFunction::Hardswish | LookupFunction::Hardsigmoid => {
            let (s, z) = b.qparams(&format!("{out}_x"), &xq);
            let real = b.node(
                "DequantizeLinear",
                "",
                vec![x.into(), s, z],
                format!("{out}_real"),
                vec![],
            );
            let [three, zero, six] =
                [3.0f32, 0.0, 6.0].map(|v| b.f32s(format!("{out}_const{v}"), &[], &[v]));
            let shifted = b.node(
                "Add",
                "",
                vec![real.clone(), three],
                format!("{out}_plus3"),
                vec![],
            );
            let clipped = b.node(
                "Clip",
                "",
                vec![shifted, zero, six.clone()],
                format!("{out}_relu6"),
                vec![],
            );
            let numerator = match function == LookupFunction::Hardswish {
                true => b.node("Mul", "", vec![real, clipped], format!("{out}_mul"), vec![]),
                false => clipped,
            };
            let y = b.node(
                "Div",
                "",
                vec![numerator, six],
                format!("{out}_{}", function.name()),
                vec![],
            );
            let (s, z) = b.qparams(out, &yq);
            b.node("QuantizeLinear", "", vec![y, s, z], out.into(), vec![]);
        }
        LookupFunction::Sigmoid => {
            let (xs, xz) = b.qparams(&format!("{out}_x"), &xq);
            let (ys, yz) = b.qparams(out, &yq);
            b.node(
                "QLinearSigmoid",
                "com.microsoft",
                vec![x.into(), xs, xz, ys, yz],
                out.into(),
                vec![],
            );
        }
    }
}

/// QLinearConv's eight inputs.
#[allow(clippy::too_many_arguments)]
fn linear_inputs(
    b: &mut Builder,
    x: &str,
    xq: &QParams,
    out: &str,
    yq: &QParams,
    w: Vec<i8>,
    w_shape: &[usize],
    w_scales: &[f32],
    bias: Vec<i32>,
) -> Vec<String> {
    let (xs, xz) = b.qparams(&format!("{out}_x"), xq);
    let o = w_shape[0];
    let wn = b.i8s(format!("{out}_weight"), w_shape, &w);
    let ws = b.f32s(format!("{out}_weight_scale"), &[o], w_scales);
    let wz = b.i8s(format!("{out}_weight_zero_point"), &[o], &vec![0; o]);
    let (ys, yz) = b.qparams(out, yq);
    let bn = b.init(
        format!("{out}_bias"),
        INT32,
        &[o],
        bias.iter().flat_map(|x| x.to_le_bytes()).collect(),
    );
    vec![x.to_string(), xs, xz, wn, ws, wz, ys, yz, bn]
}

/// Renames `y` to `out`, through an int8 `Clip` when the op clamps tighter than int8 (a ReLU
/// whose zero point is above -128).
fn clamp(b: &mut Builder, y: String, out: &str, lo: i32, hi: i32) {
    if lo == -128 && hi == 127 {
        if let Some(node) = b.graph.node.last_mut() {
            node.output = vec![out.to_string()];
        }
        return;
    }
    let lo_name = b.i8s(format!("{out}_clip_min"), &[], &[lo as i8]);
    let hi_name = b.i8s(format!("{out}_clip_max"), &[], &[hi as i8]);
    b.node(
        "Clip",
        "",
        vec![y, lo_name, hi_name],
        out.to_string(),
        vec![],
    );
}

/// Writes `model.onnx` atomically.
pub fn write(path: &Path, model: &int8::Model) -> Result<(), ExportError> {
    let bytes = self::model(model)?.encode_to_vec();
    write_atomic_bytes(path, &bytes).map_err(|source| ExportError::Write {
        path: path.display().to_string(),
        source,
    })
}
