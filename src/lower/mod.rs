//! Lowering: a trained quantized-stage graph (QAT, or PTQ-calibrated) and its float
//! tensors → an integer-only graph following the TFLite quantization spec.
//!
//! The math reproduces `train::network` in `Mode::Quantized` step by step, in f32
//! where it computes in f32, so that the integer model is the fake-quant model:
//!
//! | step | rule | rounding |
//! |---|---|---|
//! | batch-norm folding | `f = gamma / sqrt(var + eps)`, `w' = w * f[o]`, `b' = b * f + (beta - mean * f)` | f32, as libtorch |
//! | weights | per output channel, `s_w = max(|min|, |max|) / 127`, `q = round(w' / s_w)` in [-127, 127], zero point 0 | half to even (PyTorch's `nearbyint(w * (1/s))`) |
//! | activations | per tensor, `(s, zp) = QuantSpec::params(observer min, max)` | zero point: half away from zero (Rust `round`) |
//! | bias | int32 `round(b' / (s_x * s_w[o]))` | half to even, in f64 |
//! | requantization | `M = s_x * s_w[o] / s_y` as `multiplier * 2^-shift`, multiplier in [2^30, 2^31) | one rounding, half toward +inf |
//! | ReLU | clamp at the output zero point (real 0) | exact |
//! | add | both inputs scaled to the output by fixed-point multipliers sharing one shift | one rounding, half toward +inf |
//! | input | `zp + round(x * (1 / s))` | half to even, as PyTorch |
//! | ReLU6 | clamp to `[zp, zp + round(6 / s_y)]` (TFLite's `CalculateActivationRangeQuantized`) | 6 / s_y in f32, half away from zero |
//! | avg_pool2d | keeps the input's parameters; `Σ q / count` on raw values (TFLite AVERAGE_POOL_2D) | half away from zero |
//! | global_avg_pool | `zp_y + requant(Σ (x - zp_x))`, `M = s_x / (H·W·s_y)` (TFLite MEAN) | one rounding, half toward +inf |
//! | concat | each input `zp_y + requant_i(x - zp_i)`, `M_i = s_i / s_y`; equal parameters copy | one rounding, half toward +inf |
//! | dropout | the identity | exact |
//! | pad | keeps the input's parameters; the new values are its zero point (real 0) | exact |
//! | sigmoid output | fixed, not observed: scale 1/256, zero point -128 (TFLite LOGISTIC) | exact |
//! | mul | `zp_y + requant((a - zp_a)(b - zp_b))`, `M = s_a s_b / s_y`, broadcasting a dimension of 1 | one rounding, half toward +inf |
//! | hardswish, hardsigmoid, sigmoid | a 256-entry table: `quantize(f(dequantize(q)))`, `f` in f32 as libtorch orders it | half to even, as PyTorch |

use crate::int8::{
    self, IntGraph, IntOp, IntTensor, IntTensors, LookupFunction, QParams, Requant, Value,
};
use crate::ir::ops::{Activation, RangeSource};
use crate::ir::{Graph, NodeId, Op, QuantSpec, Scheme};
use crate::quantized::{ParamsError, QuantizedParams};

mod feasibility;
mod linear;

pub use feasibility::{check, int8_form, Refusal};

pub use crate::quantized::{read_f32_safetensors, F32Tensor, TensorMap};

#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    #[error("cannot lower `{node}`: {}\n  hint: {}", refusal.what, refusal.hint)]
    NoInt8Form { node: String, refusal: Refusal },
    #[error("cannot lower `{node}`: {why}")]
    Graph { node: String, why: String },
    #[error(transparent)]
    Params(#[from] ParamsError),
    #[error("the quantized parameters lack {what} of `{node}`\n  hint: were they trained by `qatc build` for this model (after calibration or QAT)?")]
    MissingParams { node: String, what: &'static str },
    #[error("lowering made an invalid int8 graph (a bug in qatc): {0}")]
    Invalid(#[from] int8::ValidationError),
}

/// Splits a positive real factor into a fixed-point multiplier and right shift.
/// Factors too small to matter (< 2^-62) become 0; factors ≥ 2^30 are refused.
pub fn quantize_multiplier(real: f64) -> Option<Requant> {
    if !(real.is_finite() && real >= 0.0) {
        return None;
    }
    if real == 0.0 {
        return Some(Requant {
            multiplier: 0,
            shift: 62,
        });
    }
    // real = m * 2^e, m in [0.5, 1)
    let mut e = real.log2().floor() as i32 + 1;
    let mut m = real / (e as f64).exp2();
    // Guard against log2 rounding at exact powers of two.
    while m >= 1.0 {
        m /= 2.0;
        e += 1;
    }
    while m < 0.5 {
        m *= 2.0;
        e -= 1;
    }
    let mut q = (m * (1u64 << 31) as f64).round() as i64;
    if q == 1i64 << 31 {
        q /= 2;
        e += 1;
    }
    let shift = 31 - e;
    if shift > 62 {
        return Some(Requant {
            multiplier: 0,
            shift: 62,
        });
    }
    if shift < 1 {
        return None;
    }
    Some(Requant {
        multiplier: q as i32,
        shift: shift as u32,
    })
}

/// A linear op's int8 weights, int32 bias, requantization multipliers and weight scales.
type QuantizedLinear = (Vec<i8>, Vec<i32>, Vec<Requant>, Vec<f32>);

/// Where a node's value stands during lowering.
#[derive(Debug, Clone, Copy)]
enum Lowered {
    /// The graph's float input.
    Float,
    /// Computed in float by a node whose output quantization comes from the fake-quant after it.
    Pending,
    /// An int8 value of the integer graph.
    Int(usize),
}

struct Lowering<'a> {
    graph: &'a Graph,
    params: &'a QuantizedParams,
    out: IntGraph,
    out_tensors: IntTensors,
    lowered: Vec<Option<Lowered>>,
}

/// Lowers a quantized-stage graph with its trained state as saved (see
/// [`QuantizedParams::from_tensors`]) to a validated integer model.
pub fn lower(
    graph: &Graph,
    tensors: &TensorMap,
    classes: Option<Vec<u8>>,
) -> Result<int8::Model, LowerError> {
    lowerable(graph)?;
    lower_params(
        graph,
        &QuantizedParams::from_tensors(graph, tensors)?,
        classes,
    )
}

/// The graph's one input, once every node has an int8 form.
fn lowerable(graph: &Graph) -> Result<NodeId, LowerError> {
    let [input] = graph.inputs.as_slice() else {
        return Err(LowerError::Graph {
            node: graph.name.clone(),
            why: format!(
                "the int8 runtime takes one input, the model has {}",
                graph.inputs.len()
            ),
        });
    };
    // Say what has no int8 form before complaining about anything else.
    match graph
        .nodes
        .iter()
        .find_map(|n| int8_form(n).err().map(|r| (n, r)))
    {
        Some((node, refusal)) => Err(LowerError::NoInt8Form {
            node: node.name.clone(),
            refusal,
        }),
        None => Ok(*input),
    }
}

/// Lowers a quantized-stage graph with its quantized parameters to a validated integer model.
pub fn lower_params(
    graph: &Graph,
    params: &QuantizedParams,
    classes: Option<Vec<u8>>,
) -> Result<int8::Model, LowerError> {
    let input = lowerable(graph)?;
    let input_node = graph.node(input);
    let mut l = Lowering {
        graph,
        params,
        out: IntGraph {
            format: int8::FORMAT.into(),
            version: int8::VERSION,
            model: graph.name.clone(),
            classes,
            class_names: None,
            input: int8::Input {
                name: input_node.name.clone(),
                shape: input_node.shape.clone(),
                normalize: None,
            },
            values: Vec::new(),
            ops: Vec::new(),
            output: 0,
        },
        out_tensors: IntTensors::new(),
        lowered: vec![None; graph.nodes.len()],
    };
    for id in graph.ids() {
        let state = l.node(id)?;
        l.lowered[id.index()] = Some(state);
    }
    match l.lowered[graph.output.index()] {
        Some(Lowered::Int(v)) => l.out.output = v,
        _ => {
            return Err(LowerError::Graph {
                node: graph.node(graph.output).name.clone(),
                why: "the output is not quantized; lower the quantized stage (passes::run(.., Stage::Quantized))".into(),
            })
        }
    }
    // Validated here, so that a lowering bug is caught at its source.
    Ok(int8::Model::validate(l.out, l.out_tensors)?)
}

impl Lowering<'_> {
    fn err(&self, id: NodeId, why: impl Into<String>) -> LowerError {
        LowerError::Graph {
            node: self.graph.node(id).name.clone(),
            why: why.into(),
        }
    }

    fn int_input(&self, id: NodeId, k: usize) -> Result<usize, LowerError> {
        let input = self.graph.node(id).inputs[k];
        match self.lowered[input.index()] {
            Some(Lowered::Int(v)) => Ok(v),
            _ => Err(self.err(
                id,
                format!(
                    "its input `{}` is not quantized (no fake_quant before it)",
                    self.graph.node(input).name
                ),
            )),
        }
    }

    fn push_value(&mut self, name: &str, shape: Vec<usize>, quant: QParams) -> usize {
        self.out.values.push(Value {
            name: name.into(),
            shape,
            quant,
        });
        self.out.values.len() - 1
    }

    #[deny(clippy::wildcard_enum_match_arm)]
    fn node(&mut self, id: NodeId) -> Result<Lowered, LowerError> {
        let node = self.graph.node(id);
        Ok(match &node.op {
            Op::Input => Lowered::Float,
            // Computed once the fake-quant after them fixes their output parameters.
            Op::Conv2d { .. }
            | Op::Dense { .. }
            | Op::Add { .. }
            | Op::Relu
            | Op::Relu6
            | Op::GlobalAvgPool
            | Op::Hardswish
            | Op::Hardsigmoid
            | Op::Sigmoid
            | Op::Mul
            | Op::Concat { .. } => {
                for k in 0..node.inputs.len() {
                    self.int_input(id, k)?;
                }
                Lowered::Pending
            }
            Op::MaxPool2d { size, stride } => {
                let input = self.int_input(id, 0)?;
                let quant = self.out.values[input].quant;
                let output = self.push_value(&node.name, node.shape.clone(), quant);
                self.out.ops.push(IntOp::MaxPool2d {
                    input,
                    output,
                    size: *size,
                    stride: *stride,
                });
                Lowered::Int(output)
            }
            Op::AvgPool2d { size, stride } => {
                let input = self.int_input(id, 0)?;
                let quant = self.out.values[input].quant;
                let output = self.push_value(&node.name, node.shape.clone(), quant);
                self.out.ops.push(IntOp::AvgPool2d {
                    input,
                    output,
                    size: *size,
                    stride: *stride,
                });
                Lowered::Int(output)
            }
            // The new values are the input's zero point: real 0, as the float pad's zeros.
            Op::Pad { size } => {
                let input = self.int_input(id, 0)?;
                let quant = self.out.values[input].quant;
                let output = self.push_value(&node.name, node.shape.clone(), quant);
                self.out.ops.push(IntOp::Pad {
                    input,
                    output,
                    size: *size,
                });
                Lowered::Int(output)
            }
            // The identity at inference: the int8 model reads the input's value.
            Op::Dropout { .. } => Lowered::Int(self.int_input(id, 0)?),
            Op::Flatten | Op::Reshape { .. } => {
                let input = self.int_input(id, 0)?;
                let quant = self.out.values[input].quant;
                let output = self.push_value(&node.name, node.shape.clone(), quant);
                self.out.ops.push(IntOp::Reshape { input, output });
                Lowered::Int(output)
            }
            Op::FakeQuant { spec, range } => self.fake_quant(id, *spec, range)?,
            // Refused by `int8_form` before lowering starts.
            Op::BatchNorm { .. } | Op::Softmax { .. } => {
                return Err(self.err(id, "has no integer form"))
            }
        })
    }

    /// A fake-quant node fixes the output parameters of the op before it.
    fn fake_quant(
        &mut self,
        id: NodeId,
        spec: QuantSpec,
        range: &RangeSource,
    ) -> Result<Lowered, LowerError> {
        let node = self.graph.node(id);
        let (scale, zp) = match range {
            RangeSource::Observed | RangeSource::SharedWith(_) => {
                let &(min, max) = self.params.ranges.get(&node.name).ok_or_else(|| {
                    LowerError::MissingParams {
                        node: node.name.clone(),
                        what: "the activation range",
                    }
                })?;
                spec.params(min, max)
            }
            RangeSource::Fixed { scale, zero_point } => (*scale, *zero_point),
        };
        let (qmin, qmax) = spec.range();
        let quant = QParams {
            scale,
            zero_point: zp as i32,
            qmin: qmin as i32,
            qmax: qmax as i32,
        };
        let src = node.inputs[0];
        let src_node = self.graph.node(src);
        match self.lowered[src.index()] {
            Some(Lowered::Float) => {
                let output = self.push_value(&src_node.name, src_node.shape.clone(), quant);
                self.out.ops.push(IntOp::Quantize { output });
                Ok(Lowered::Int(output))
            }
            Some(Lowered::Int(input)) => {
                let from = self.out.values[input].quant;
                if from == quant {
                    return Ok(Lowered::Int(input));
                }
                let output = self.push_value(&node.name, node.shape.clone(), quant);
                let requant = self.multiplier(id, from.scale as f64 / scale as f64)?;
                self.out.ops.push(IntOp::Requantize {
                    name: node.name.clone(),
                    input,
                    output,
                    requant,
                    act_min: quant.qmin,
                    act_max: quant.qmax,
                });
                Ok(Lowered::Int(output))
            }
            Some(Lowered::Pending) => self.compute(src, quant).map(Lowered::Int),
            None => Err(self.err(id, "reads a node that comes after it")),
        }
    }

    fn multiplier(&self, id: NodeId, real: f64) -> Result<Requant, LowerError> {
        quantize_multiplier(real).ok_or_else(|| self.err(id, format!("requantization factor {real:e} cannot be a fixed-point multiplier (scales out of range)")))
    }

    /// Emits the op of compute node `id` with output parameters `quant`.
    fn compute(&mut self, id: NodeId, quant: QParams) -> Result<usize, LowerError> {
        let node = self.graph.node(id);
        let relu_min = |relu: bool| {
            if relu {
                quant.zero_point.max(quant.qmin)
            } else {
                quant.qmin
            }
        };
        // The output clamp of a fused activation: [real 0, real 6] for relu6.
        let clamp = |activation: Option<Activation>| match activation {
            None => (quant.qmin, quant.qmax),
            Some(Activation::Relu) => (relu_min(true), quant.qmax),
            Some(Activation::Relu6) => (relu_min(true), relu6_max(quant)),
        };
        #[deny(clippy::wildcard_enum_match_arm)]
        match &node.op {
            Op::Conv2d {
                filters,
                kernel,
                stride,
                pad,
                in_channels,
                bias: _,
                padding: _,
                epilogue,
                dilation,
                groups,
            } => {
                debug_assert_eq!(*dilation, 1, "refused by int8_form");
                let pad = *pad;
                let input = self.int_input(id, 0)?;
                let in_shape = self.out.values[input].shape.clone();
                if let [c, h, w] = in_shape[..] {
                    let oh = (h + 2 * pad).checked_sub(*kernel).map(|d| d / stride + 1);
                    let ow = (w + 2 * pad).checked_sub(*kernel).map(|d| d / stride + 1);
                    if c != *in_channels
                        || Some(node.shape.clone())
                            != oh.zip(ow).map(|(oh, ow)| vec![*filters, oh, ow])
                    {
                        return Err(self.err(id, format!("shape {:?} does not follow from input {in_shape:?} with padding {pad}", node.shape)));
                    }
                } else {
                    return Err(self.err(
                        id,
                        format!("conv2d input must be [C, H, W], got {in_shape:?}"),
                    ));
                }
                // Grouped (depthwise when groups = channels): each filter sees its group's channels.
                let w_shape = node.op.weight_shape().expect("conv2d has weights");
                let (wq, bq, requant, weight_scales) = self.linear(id, &w_shape, input, quant)?;
                let output = self.push_value(&node.name, node.shape.clone(), quant);
                let (weight, bias_name) = self.put_weights(&node.name, w_shape, wq, bq);
                self.out.ops.push(IntOp::Conv2d {
                    name: node.name.clone(),
                    input,
                    output,
                    weight,
                    bias: bias_name,
                    in_channels: *in_channels,
                    out_channels: *filters,
                    kernel: *kernel,
                    stride: *stride,
                    pad,
                    groups: *groups,
                    weight_scales,
                    requant,
                    act_min: clamp(epilogue.activation).0,
                    act_max: clamp(epilogue.activation).1,
                });
                Ok(output)
            }
            Op::Dense {
                units,
                in_features,
                bias: _,
                epilogue,
            } => {
                let input = self.int_input(id, 0)?;
                if self.out.values[input].shape != [*in_features] {
                    return Err(self.err(
                        id,
                        format!(
                            "dense input must be [{in_features}], got {:?}",
                            self.out.values[input].shape
                        ),
                    ));
                }
                let w_shape = node.op.weight_shape().expect("dense has weights");
                let (wq, bq, requant, weight_scales) = self.linear(id, &w_shape, input, quant)?;
                let output = self.push_value(&node.name, node.shape.clone(), quant);
                let (weight, bias_name) = self.put_weights(&node.name, w_shape, wq, bq);
                self.out.ops.push(IntOp::Dense {
                    name: node.name.clone(),
                    input,
                    output,
                    weight,
                    bias: bias_name,
                    in_features: *in_features,
                    out_features: *units,
                    weight_scales,
                    requant,
                    act_min: clamp(epilogue.activation).0,
                    act_max: clamp(epilogue.activation).1,
                });
                Ok(output)
            }
            Op::Add { activation } => {
                let (act_min, act_max) = clamp(*activation);
                self.add(id, quant, act_min, act_max)
            }
            Op::Relu | Op::Relu6 => {
                let input = self.int_input(id, 0)?;
                let from = self.out.values[input].quant;
                let requant = self.multiplier(id, from.scale as f64 / quant.scale as f64)?;
                let output = self.push_value(&node.name, node.shape.clone(), quant);
                let act_max = if matches!(node.op, Op::Relu6) {
                    relu6_max(quant)
                } else {
                    quant.qmax
                };
                self.out.ops.push(IntOp::Requantize {
                    name: node.name.clone(),
                    input,
                    output,
                    requant,
                    act_min: relu_min(true),
                    act_max,
                });
                Ok(output)
            }
            Op::GlobalAvgPool => {
                let input = self.int_input(id, 0)?;
                let from = self.out.values[input].clone();
                let [c, h, w] = from.shape[..] else {
                    return Err(self.err(
                        id,
                        format!(
                            "global_avg_pool input must be [C, H, W], got {:?}",
                            from.shape
                        ),
                    ));
                };
                if node.shape != [c] {
                    return Err(self.err(
                        id,
                        format!(
                            "shape {:?} does not follow from input {:?}",
                            node.shape, from.shape
                        ),
                    ));
                }
                let real = from.quant.scale as f64 / ((h * w) as f64 * quant.scale as f64);
                let requant = self.multiplier(id, real)?;
                let output = self.push_value(&node.name, node.shape.clone(), quant);
                self.out.ops.push(IntOp::GlobalAvgPool {
                    name: node.name.clone(),
                    input,
                    output,
                    requant,
                    act_min: quant.qmin,
                    act_max: quant.qmax,
                });
                Ok(output)
            }
            Op::Concat { axis } => {
                let mut inputs = Vec::with_capacity(node.inputs.len());
                let mut requant = Vec::with_capacity(node.inputs.len());
                for k in 0..node.inputs.len() {
                    let input = self.int_input(id, k)?;
                    let from = self.out.values[input].quant;
                    // Equal parameters give exactly 1.0 = 2^30 / 2^30: the runtime copies those.
                    requant.push(self.multiplier(id, from.scale as f64 / quant.scale as f64)?);
                    inputs.push(input);
                }
                let output = self.push_value(&node.name, node.shape.clone(), quant);
                self.out.ops.push(IntOp::Concat {
                    name: node.name.clone(),
                    inputs,
                    output,
                    axis: *axis,
                    requant,
                });
                Ok(output)
            }
            Op::Hardswish => self.lookup(id, LookupFunction::Hardswish, quant),
            Op::Hardsigmoid => self.lookup(id, LookupFunction::Hardsigmoid, quant),
            // `quant` is the fixed range the fake-quant pass gave it.
            Op::Sigmoid => self.lookup(id, LookupFunction::Sigmoid, quant),
            Op::Mul => self.mul(id, quant),
            // Lowered in `node`, never pending.
            Op::Input
            | Op::BatchNorm { .. }
            | Op::MaxPool2d { .. }
            | Op::AvgPool2d { .. }
            | Op::Flatten
            | Op::Reshape { .. }
            | Op::Dropout { .. }
            | Op::Softmax { .. }
            | Op::Pad { .. }
            | Op::FakeQuant { .. } => Err(self.err(id, "has no integer form")),
        }
    }

    /// Emits mul node `id` with output parameters `quant`. An input of lower rank is first
    /// reshaped with leading 1s (NumPy's alignment from the right), so that both inputs
    /// have the output's rank in every backend.
    fn mul(&mut self, id: NodeId, quant: QParams) -> Result<usize, LowerError> {
        let node = self.graph.node(id);
        let rank = node.shape.len();
        let mut inputs = [0; 2];
        for (k, slot) in inputs.iter_mut().enumerate() {
            let v = self.int_input(id, k)?;
            let from = self.out.values[v].clone();
            *slot = if from.shape.len() < rank {
                let mut shape = vec![1; rank - from.shape.len()];
                shape.extend(&from.shape);
                let lifted =
                    self.push_value(&format!("{}/rank{rank}", from.name), shape, from.quant);
                self.out.ops.push(IntOp::Reshape {
                    input: v,
                    output: lifted,
                });
                lifted
            } else {
                v
            };
        }
        let [a, b] = inputs.map(|v| self.out.values[v].quant.scale as f64);
        let requant = self.multiplier(id, a * b / quant.scale as f64)?;
        let output = self.push_value(&node.name, node.shape.clone(), quant);
        self.out.ops.push(IntOp::Mul {
            name: node.name.clone(),
            inputs,
            output,
            requant,
        });
        Ok(output)
    }

    /// Emits elementwise node `id` as a table of `function` from its input's parameters
    /// to `quant`.
    fn lookup(
        &mut self,
        id: NodeId,
        function: LookupFunction,
        quant: QParams,
    ) -> Result<usize, LowerError> {
        let node = self.graph.node(id);
        let input = self.int_input(id, 0)?;
        let table = function.table(self.out.values[input].quant, quant);
        let output = self.push_value(&node.name, node.shape.clone(), quant);
        self.out.ops.push(IntOp::Lookup {
            name: node.name.clone(),
            input,
            output,
            function,
            table,
        });
        Ok(output)
    }

    /// Emits add node `id` (with its fused activation's clamp) with output parameters `quant`.
    fn add(
        &mut self,
        id: NodeId,
        quant: QParams,
        act_min: i32,
        act_max: i32,
    ) -> Result<usize, LowerError> {
        let node = self.graph.node(id);
        let out_node = node;
        let (a, b) = (self.int_input(id, 0)?, self.int_input(id, 1)?);
        let (sa, sb) = (
            self.out.values[a].quant.scale as f64,
            self.out.values[b].quant.scale as f64,
        );
        let (ma, mb) = (sa / quant.scale as f64, sb / quant.scale as f64);
        // One shift for both: the larger factor gets a full 31-bit multiplier.
        let big = self.multiplier(id, ma.max(mb))?;
        let small = (ma.min(mb) * (big.shift as f64).exp2()).round() as i32;
        let multipliers = if ma >= mb {
            [big.multiplier, small]
        } else {
            [small, big.multiplier]
        };
        let output = self.push_value(&out_node.name, out_node.shape.clone(), quant);
        self.out.ops.push(IntOp::Add {
            name: node.name.clone(),
            inputs: [a, b],
            output,
            multipliers,
            shift: big.shift,
            act_min,
            act_max,
        });
        Ok(output)
    }
}

/// The upper clamp of a ReLU6 on output parameters `q`: `min(qmax, zp + round(6 / s))`,
/// TFLite's `CalculateActivationRangeQuantized` rule (`6 / s` in f32, rounded half away from zero).
pub fn relu6_max(q: QParams) -> i32 {
    let six = (6.0f32 / q.scale).round();
    if six >= (q.qmax - q.zero_point) as f32 {
        q.qmax
    } else {
        q.zero_point + six as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipliers_approximate_the_real_factor() {
        for real in [
            0.75,
            0.5,
            1.0 / 3.0,
            1e-4,
            0.999_999_999_9,
            1.5,
            7.25,
            2.0f64.powi(-30),
        ] {
            let r = quantize_multiplier(real).unwrap();
            assert!(
                (1 << 30..=i32::MAX).contains(&r.multiplier),
                "{real}: {r:?}"
            );
            assert!(
                ((r.real() - real) / real).abs() < 1e-9,
                "{real}: {r:?} = {}",
                r.real()
            );
        }
        assert_eq!(quantize_multiplier(0.0).unwrap().multiplier, 0);
        assert_eq!(quantize_multiplier(2.0f64.powi(-40)).unwrap().multiplier, 0);
        assert!(quantize_multiplier(f64::NAN).is_none());
        assert!(quantize_multiplier(-1.0).is_none());
        assert!(quantize_multiplier(2.0f64.powi(31)).is_none());
    }

    #[test]
    fn requant_rounds_once_half_up() {
        let half = quantize_multiplier(0.5).unwrap();
        assert_eq!([-3, -1, 1, 3, 4].map(|v| half.apply(v)), [-1, 0, 1, 2, 2]);
        let third = quantize_multiplier(1.0 / 3.0).unwrap();
        for v in -1000..1000 {
            assert_eq!(third.apply(v), (v as f64 / 3.0 + 0.5).floor() as i64, "{v}");
        }
    }

    #[test]
    fn relu6_clamps_at_six_as_tflite_rounds_it() {
        let q = |scale: f32, zero_point: i32| QParams {
            scale,
            zero_point,
            qmin: -128,
            qmax: 127,
        };
        // 6 / (6 / 255) = 255 steps: the whole range.
        assert_eq!(relu6_max(q(6.0 / 255.0, -128)), 127);
        // 6 / 0.05 = 120 steps above the zero point.
        assert_eq!(relu6_max(q(0.05, -128)), -8);
        // 6 / 0.048 = 125 exactly; 6 / 0.08 = 75.
        assert_eq!(relu6_max(q(0.048, -100)), 25);
        assert_eq!(relu6_max(q(0.08, 10)), 85);
        // Half away from zero: 6 / 0.16 = 37.5 → 38.
        assert_eq!(relu6_max(q(0.16, 0)), 38);
        // A range below 6 clamps at qmax; a tiny scale does not overflow.
        assert_eq!(relu6_max(q(0.01, 0)), 127);
        assert_eq!(relu6_max(q(1e-30, 0)), 127);
    }
}
