//! Validation of an integer graph with its tensors: every structural fact the runtime and
//! the exporters rely on, checked in one place. [`Model`] is the proof that it passed.

use std::fmt;

use super::graph::{self, IntGraph, IntOp, IntTensor, IntTensors, QParams, Requant, ValueId};

/// An integer graph with its tensors that passed [`Model::validate`]: every value is written
/// once before it is read, shapes fit the ops that join them, every tensor has its op's dtype
/// and shape, multipliers and clamps are in range, and no int32 accumulator can overflow.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    graph: IntGraph,
    tensors: IntTensors,
}

/// Names an op in an error: ``conv2d `c1` `` for ops with a node name, `op 3 (max_pool2d)` otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpRef {
    /// Position in [`IntGraph::ops`].
    pub index: usize,
    pub kind: &'static str,
    pub name: Option<String>,
}

impl OpRef {
    fn new(index: usize, op: &IntOp) -> OpRef {
        OpRef {
            index,
            kind: op.kind(),
            name: op.name().map(str::to_string),
        }
    }
}

impl fmt::Display for OpRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{} `{name}`", self.kind),
            None => write!(f, "op {} ({})", self.index, self.kind),
        }
    }
}

/// Why an integer graph is not a valid [`Model`]: the op and the value or tensor at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error("format is `{found}`, expected `{}`", graph::FORMAT)]
    Format { found: String },
    #[error("version {found} (this qatc reads {})", graph::VERSION)]
    Version { found: u32 },
    #[error("input shape {shape:?} must be [C, H, W] or [F]")]
    InputShape { shape: Vec<usize> },
    #[error("value `{value}` has invalid quantization {quant:?}: {why}")]
    Quantization {
        value: String,
        quant: QParams,
        why: &'static str,
    },
    #[error("value `{value}` has unsupported shape {shape:?} (1 to 3 non-zero dimensions, at most {} elements)", MAX_VALUE_ELEMENTS)]
    ValueShape { value: String, shape: Vec<usize> },
    #[error("the output `{value}` is the quantized input itself: the graph computes nothing")]
    OutputIsInput { value: String },
    #[error("the output `{value}` has shape {shape:?}, but the graph names {classes} classes{}", if *.duplicate { " (some twice)" } else { "" })]
    Classes {
        value: String,
        shape: Vec<usize>,
        classes: usize,
        duplicate: bool,
    },
    #[error(
        "the output `{value}` scores {outputs} classes, but the graph has {names} class names"
    )]
    ClassNames {
        value: String,
        outputs: usize,
        names: usize,
    },
    #[error("the input's normalization does not fit its shape {shape:?}: {why}")]
    Normalize { shape: Vec<usize>, why: String },
    #[error("tensor `{tensor}` belongs to no op (the weights of another graph?)")]
    UnusedTensor { tensor: String },
    #[error("{op}: tensor `{tensor}` holds {found}; symmetric int8 weights are in [-127, 127]")]
    WeightRange {
        op: OpRef,
        tensor: String,
        found: i8,
    },
    #[error("{op}: value {value} does not exist ({count} values)")]
    NoSuchValue {
        op: OpRef,
        value: ValueId,
        count: usize,
    },
    #[error("{op}: reads value `{value}` before any op writes it")]
    ReadBeforeWrite { op: OpRef, value: String },
    #[error("{op}: value `{value}` is written twice")]
    WrittenTwice { op: OpRef, value: String },
    /// A shape (or window, or axis) that does not fit the op; `why` says how.
    #[error("{op}: value `{value}` {why}")]
    Shape {
        op: OpRef,
        value: String,
        why: String,
    },
    #[error("{op}: tensor `{tensor}` is missing")]
    MissingTensor { op: OpRef, tensor: String },
    #[error("{op}: tensor `{tensor}` is {dtype} {shape:?}, expected {expected}")]
    Tensor {
        op: OpRef,
        tensor: String,
        dtype: &'static str,
        shape: Vec<usize>,
        expected: String,
    },
    #[error(
        "{op}: a lookup table needs 256 entries in [{qmin}, {qmax}], has {len} in [{lo}, {hi}]"
    )]
    Table {
        op: OpRef,
        len: usize,
        lo: i32,
        hi: i32,
        qmin: i32,
        qmax: i32,
    },
    #[error("{op}: int32 accumulators could overflow ({what} up to {worst})")]
    Overflow { op: OpRef, what: String, worst: i64 },
    #[error("{op}: {found} requantization multipliers for {expected} channels")]
    RequantCount {
        op: OpRef,
        found: usize,
        expected: usize,
    },
    #[error("{op}: multiplier {multiplier} with shift {shift} is out of range (multipliers are 0 or in [2^30, 2^31), shifts in [1, 62])")]
    RequantRange {
        op: OpRef,
        multiplier: i32,
        shift: u32,
    },
    #[error(
        "{op}: needs {expected} positive, finite weight scales (at most {}), has {scales:?}",
        MAX_SCALE
    )]
    WeightScales {
        op: OpRef,
        expected: usize,
        scales: Vec<f32>,
    },
    #[error("{op}: clamp [{lo}, {hi}] of value `{value}` must lie in its range [{qmin}, {qmax}] and contain its zero point {zero_point} (real 0)")]
    Clamp {
        op: OpRef,
        value: String,
        lo: i32,
        hi: i32,
        qmin: i32,
        qmax: i32,
        zero_point: i32,
    },
    #[error("the output value {value} is never computed")]
    OutputNotComputed { value: ValueId },
}

impl Model {
    /// Checks `graph` with its `tensors` completely; the only way to make a [`Model`].
    pub fn validate(graph: IntGraph, tensors: IntTensors) -> Result<Model, ValidationError> {
        check(&graph, &tensors)?;
        Ok(Model { graph, tensors })
    }

    pub fn graph(&self) -> &IntGraph {
        &self.graph
    }

    pub fn tensors(&self) -> &IntTensors {
        &self.tensors
    }

    /// The same model with a name for each output class (checked like everything else).
    pub fn with_class_names(self, names: Vec<String>) -> Result<Model, ValidationError> {
        let (mut graph, tensors) = self.into_parts();
        graph.class_names = Some(names);
        Model::validate(graph, tensors)
    }

    /// The same model taking raw `uint8` pixels normalized as `normalize` says.
    pub fn with_normalize(
        self,
        normalize: crate::preprocess::Normalize,
    ) -> Result<Model, ValidationError> {
        let (mut graph, tensors) = self.into_parts();
        graph.input.normalize = Some(normalize);
        Model::validate(graph, tensors)
    }

    /// Gives the parts back (to change them and validate again).
    pub fn into_parts(self) -> (IntGraph, IntTensors) {
        (self.graph, self.tensors)
    }

    /// The int8 weights and int32 bias of a conv2d or dense, by the names its op gives.
    /// Panics on any other name: validation saw these tensors.
    pub fn linear_params(&self, weight: &str, bias: &str) -> (&[i8], &[i32]) {
        match (self.tensors.get(weight), self.tensors.get(bias)) {
            (Some(IntTensor::I8 { data: w, .. }), Some(IntTensor::I32 { data: b, .. })) => (w, b),
            _ => panic!("`{weight}` and `{bias}` are not the weights of a validated op"),
        }
    }
}

/// Elements of one value per sample: far above any model that trains, far below what
/// would exhaust memory when the runtime allocates it for a batch.
pub const MAX_VALUE_ELEMENTS: usize = 1 << 26;

/// The largest scale a value or weight may have: its int8 range (`255 * scale`) and the
/// products the lowering forms with other scales stay finite in f32.
pub const MAX_SCALE: f32 = 1e15;

/// Element count, saturating: a hand-edited shape must fail a comparison, not wrap.
fn numel(shape: &[usize]) -> usize {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .unwrap_or(usize::MAX)
}

/// Positive, normal, not absurdly large, with a normal reciprocal (the input quantizes with `1 / scale`).
fn sane_scale(s: f32) -> bool {
    s.is_normal() && s > 0.0 && s <= MAX_SCALE && (1.0 / s).is_normal()
}

/// Why `q` is not a valid affine int8 quantization, if it is not.
fn quant_problem(q: &QParams) -> Option<&'static str> {
    if !sane_scale(q.scale) {
        Some("the scale must be a positive normal number of at most 1e15")
    } else if !(-128 <= q.qmin && q.qmin < q.qmax && q.qmax <= 127) {
        Some("qmin < qmax must lie in [-128, 127]")
    } else if !(q.qmin..=q.qmax).contains(&q.zero_point) {
        Some("the zero point must lie in [qmin, qmax]")
    } else {
        None
    }
}

fn check(graph: &IntGraph, tensors: &IntTensors) -> Result<(), ValidationError> {
    if graph.format != graph::FORMAT {
        return Err(ValidationError::Format {
            found: graph.format.clone(),
        });
    }
    if graph.version != graph::VERSION {
        return Err(ValidationError::Version {
            found: graph.version,
        });
    }
    let input = &graph.input.shape;
    if numel(input) == 0 || numel(input) > MAX_VALUE_ELEMENTS || !matches!(input.len(), 1 | 3) {
        return Err(ValidationError::InputShape {
            shape: input.clone(),
        });
    }
    for v in &graph.values {
        if let Some(why) = quant_problem(&v.quant) {
            return Err(ValidationError::Quantization {
                value: v.name.clone(),
                quant: v.quant,
                why,
            });
        }
        if v.shape.is_empty()
            || numel(&v.shape) == 0
            || numel(&v.shape) > MAX_VALUE_ELEMENTS
            || v.shape.len() > 3
        {
            return Err(ValidationError::ValueShape {
                value: v.name.clone(),
                shape: v.shape.clone(),
            });
        }
    }
    let count = graph.values.len();
    let mut written = vec![false; count];
    for (i, op) in graph.ops.iter().enumerate() {
        let at = OpRef::new(i, op);
        for value in op.inputs().into_iter().chain([op.output()]) {
            if value >= count {
                return Err(ValidationError::NoSuchValue {
                    op: at,
                    value,
                    count,
                });
            }
        }
        for v in op.inputs() {
            if !written[v] {
                return Err(ValidationError::ReadBeforeWrite {
                    op: at,
                    value: graph.values[v].name.clone(),
                });
            }
        }
        if std::mem::replace(&mut written[op.output()], true) {
            return Err(ValidationError::WrittenTwice {
                op: at,
                value: graph.values[op.output()].name.clone(),
            });
        }
        OpCheck { graph, tensors, at }.op(op)?;
    }
    if graph.output >= count || !written[graph.output] {
        return Err(ValidationError::OutputNotComputed {
            value: graph.output,
        });
    }
    let output = &graph.values[graph.output];
    let quantizes_input =
        |op: &IntOp| matches!(op, IntOp::Quantize { output } if *output == graph.output);
    if graph.ops.iter().any(quantizes_input) {
        return Err(ValidationError::OutputIsInput {
            value: output.name.clone(),
        });
    }
    if let Some(classes) = &graph.classes {
        let mut unique = classes.clone();
        unique.sort_unstable();
        unique.dedup();
        let duplicate = unique.len() != classes.len();
        if duplicate || output.shape != [classes.len()] {
            return Err(ValidationError::Classes {
                value: output.name.clone(),
                shape: output.shape.clone(),
                classes: classes.len(),
                duplicate,
            });
        }
    }
    if let Some(n) = &graph.input.normalize {
        n.check(crate::preprocess::channels(&graph.input.shape))
            .map_err(|why| ValidationError::Normalize {
                shape: graph.input.shape.clone(),
                why,
            })?;
    }
    if let Some(names) = &graph.class_names {
        let outputs = output.shape.iter().product::<usize>();
        if names.len() != outputs {
            return Err(ValidationError::ClassNames {
                value: output.name.clone(),
                outputs,
                names: names.len(),
            });
        }
    }
    let used: std::collections::BTreeSet<&str> = (graph.ops.iter())
        .flat_map(|op| match op {
            IntOp::Conv2d { weight, bias, .. } | IntOp::Dense { weight, bias, .. } => {
                vec![weight.as_str(), bias.as_str()]
            }
            IntOp::Quantize { .. }
            | IntOp::MaxPool2d { .. }
            | IntOp::Reshape { .. }
            | IntOp::Pad { .. }
            | IntOp::Add { .. }
            | IntOp::Requantize { .. }
            | IntOp::AvgPool2d { .. }
            | IntOp::GlobalAvgPool { .. }
            | IntOp::Concat { .. }
            | IntOp::Mul { .. }
            // A lookup's table is part of the op, not a tensor.
            | IntOp::Lookup { .. } => vec![],
        })
        .collect();
    if let Some(tensor) = tensors.keys().find(|t| !used.contains(t.as_str())) {
        return Err(ValidationError::UnusedTensor {
            tensor: tensor.clone(),
        });
    }
    Ok(())
}

/// The checks of one op whose values exist and are written in order.
struct OpCheck<'a> {
    graph: &'a IntGraph,
    tensors: &'a IntTensors,
    at: OpRef,
}

impl OpCheck<'_> {
    fn shape(&self, value: ValueId, why: String) -> ValidationError {
        ValidationError::Shape {
            op: self.at.clone(),
            value: self.graph.values[value].name.clone(),
            why,
        }
    }

    /// `[C, H, W]` of an image value.
    fn image(&self, value: ValueId) -> Result<(usize, usize, usize), ValidationError> {
        match self.graph.values[value].shape[..] {
            [c, h, w] => Ok((c, h, w)),
            ref other => Err(self.shape(value, format!("has shape {other:?}, not [C, H, W]"))),
        }
    }

    fn expect_shape(&self, value: ValueId, expected: &[usize]) -> Result<(), ValidationError> {
        let shape = &self.graph.values[value].shape;
        if shape != expected {
            return Err(self.shape(value, format!("has shape {shape:?}, expected {expected:?}")));
        }
        Ok(())
    }

    #[deny(clippy::wildcard_enum_match_arm)]
    fn op(&self, op: &IntOp) -> Result<(), ValidationError> {
        let value = |v: ValueId| &self.graph.values[v];
        let out = value(op.output());
        match op {
            IntOp::Mul {
                inputs, requant, ..
            } => {
                let (a, b) = (&value(inputs[0]).shape, &value(inputs[1]).shape);
                if graph::broadcast(a, b).as_ref() != Some(&out.shape) {
                    return Err(self.shape(
                        op.output(),
                        format!(
                            "has shape {:?}, which is not {a:?} and {b:?} broadcast",
                            out.shape
                        ),
                    ));
                }
                self.requant(&[*requant], 1)
            }
            IntOp::Lookup { input, table, .. } => {
                self.expect_shape(*input, &out.shape)?;
                let q = out.quant;
                let lo = table.iter().copied().min().map_or(0, i32::from);
                let hi = table.iter().copied().max().map_or(0, i32::from);
                if table.len() != 256 || lo < q.qmin || hi > q.qmax {
                    return Err(ValidationError::Table {
                        op: self.at.clone(),
                        len: table.len(),
                        lo,
                        hi,
                        qmin: q.qmin,
                        qmax: q.qmax,
                    });
                }
                Ok(())
            }
            IntOp::Quantize { output } => self.expect_shape(*output, &self.graph.input.shape),
            IntOp::Conv2d {
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
                requant,
                act_min,
                act_max,
                ..
            } => {
                let (c, h, w) = self.image(*input)?;
                let (k, s, p, g) = (*kernel, *stride, *pad, *groups);
                if c != *in_channels
                    || k == 0
                    || s == 0
                    || g == 0
                    || c % g != 0
                    || out_channels % g != 0
                    || k > MAX_VALUE_ELEMENTS
                    || p >= k
                    || h + 2 * p < k
                    || w + 2 * p < k
                {
                    return Err(self.shape(*input, format!("has shape {:?}, which kernel {k}, stride {s}, padding {p}, groups {g} for {in_channels}→{out_channels} channels do not fit", value(*input).shape)));
                }
                let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
                self.expect_shape(*output, &[*out_channels, oh, ow])?;
                self.linear_tensors(weight, bias, &[*out_channels, c / g, k, k])?;
                self.requant(requant, *out_channels)?;
                self.scales(weight_scales, *out_channels)?;
                self.clamp(*output, *act_min, *act_max)
            }
            IntOp::Dense {
                input,
                output,
                weight,
                bias,
                in_features,
                out_features,
                weight_scales,
                requant,
                act_min,
                act_max,
                ..
            } => {
                self.expect_shape(*input, &[*in_features])?;
                self.expect_shape(*output, &[*out_features])?;
                self.linear_tensors(weight, bias, &[*out_features, *in_features])?;
                self.requant(requant, *out_features)?;
                self.scales(weight_scales, *out_features)?;
                self.clamp(*output, *act_min, *act_max)
            }
            IntOp::MaxPool2d {
                input,
                output,
                size,
                stride,
            }
            | IntOp::AvgPool2d {
                input,
                output,
                size,
                stride,
            } => {
                let (c, h, w) = self.image(*input)?;
                if *size == 0 || *stride == 0 || *size > h || *size > w {
                    return Err(self.shape(
                        *input,
                        format!(
                            "has shape {:?}, which window {size} stride {stride} does not fit",
                            value(*input).shape
                        ),
                    ));
                }
                let (oh, ow) = ((h - size) / stride + 1, (w - size) / stride + 1);
                self.expect_shape(*output, &[c, oh, ow])?;
                self.same_quant(*input, *output)
            }
            IntOp::Pad {
                input,
                output,
                size,
            } => {
                let (c, h, w) = self.image(*input)?;
                // Checked: `size` comes from a file and may be anything.
                let padded = |d: usize| size.checked_mul(2).and_then(|p| p.checked_add(d));
                let (Some(ph), Some(pw)) = (padded(h), padded(w)) else {
                    return Err(self.shape(*output, format!("pads by {size}, too many")));
                };
                self.expect_shape(*output, &[c, ph, pw])?;
                self.same_quant(*input, *output)
            }
            IntOp::Reshape { input, output } => {
                let inp = value(*input);
                // To or from a vector: the runtime and TFLite map those between layouts.
                let vector = out.shape.len() == 1 || inp.shape.len() == 1;
                if numel(&inp.shape) != numel(&out.shape) || !vector {
                    return Err(self.shape(
                        *output,
                        format!(
                            "has shape {:?}, but {:?} reshapes only to or from a vector of as many values",
                            out.shape, inp.shape
                        ),
                    ));
                }
                self.same_quant(*input, *output)
            }
            IntOp::Add {
                inputs,
                output,
                multipliers,
                shift,
                act_min,
                act_max,
                ..
            } => {
                for &i in inputs {
                    self.expect_shape(i, &out.shape)?;
                }
                // One shift for both: the larger multiplier is a full one (or both are 0),
                // the smaller may be anything in [0, larger].
                let [a, b] = multipliers.map(|multiplier| Requant {
                    multiplier,
                    shift: *shift,
                });
                let (big, small) = if a.multiplier >= b.multiplier {
                    (a, b)
                } else {
                    (b, a)
                };
                self.requant(&[big], 1)?;
                if small.multiplier < 0 {
                    return Err(ValidationError::RequantRange {
                        op: self.at.clone(),
                        multiplier: small.multiplier,
                        shift: small.shift,
                    });
                }
                self.clamp(*output, *act_min, *act_max)
            }
            IntOp::Requantize {
                input,
                output,
                requant,
                act_min,
                act_max,
                ..
            } => {
                self.expect_shape(*input, &out.shape)?;
                self.requant(&[*requant], 1)?;
                self.clamp(*output, *act_min, *act_max)
            }
            IntOp::GlobalAvgPool {
                input,
                output,
                requant,
                act_min,
                act_max,
                ..
            } => {
                let (c, h, w) = self.image(*input)?;
                self.expect_shape(*output, &[c])?;
                // Σ (x - zp) over H·W values of at most 255 in magnitude must fit int32.
                let worst = (h * w) as i64 * 255;
                if worst > i32::MAX as i64 {
                    return Err(ValidationError::Overflow {
                        op: self.at.clone(),
                        what: format!("the sum of {h}x{w} values"),
                        worst,
                    });
                }
                self.requant(&[*requant], 1)?;
                self.clamp(*output, *act_min, *act_max)
            }
            IntOp::Concat {
                inputs,
                output,
                axis,
                requant,
                ..
            } => {
                let rank = out.shape.len();
                if inputs.is_empty() || *axis >= rank {
                    return Err(self.shape(
                        *output,
                        format!(
                            "has shape {:?}, which axis {axis} of {} inputs does not fit",
                            out.shape,
                            inputs.len()
                        ),
                    ));
                }
                self.requant(requant, inputs.len())?;
                let mut joined = 0;
                for &i in inputs {
                    let s = &value(i).shape;
                    let fits = s.len() == rank
                        && s.iter()
                            .zip(&out.shape)
                            .enumerate()
                            .all(|(k, (a, b))| k == *axis || a == b);
                    if !fits {
                        return Err(self.shape(
                            i,
                            format!(
                                "has shape {s:?}, which does not fit output {:?} along axis {axis}",
                                out.shape
                            ),
                        ));
                    }
                    joined += s[*axis];
                }
                if joined != out.shape[*axis] {
                    return Err(self.shape(
                        *output,
                        format!(
                            "has {} along axis {axis}, but the inputs add up to {joined}",
                            out.shape[*axis]
                        ),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Pooling and reshaping move values: the output keeps the input's parameters.
    fn same_quant(&self, input: ValueId, output: ValueId) -> Result<(), ValidationError> {
        let (inp, out) = (&self.graph.values[input], &self.graph.values[output]);
        if inp.quant != out.quant {
            return Err(self.shape(
                output,
                format!(
                    "has quantization {:?}, but must keep the input's {:?}",
                    out.quant, inp.quant
                ),
            ));
        }
        Ok(())
    }

    fn tensor(&self, name: &str) -> Result<&IntTensor, ValidationError> {
        self.tensors
            .get(name)
            .ok_or_else(|| ValidationError::MissingTensor {
                op: self.at.clone(),
                tensor: name.into(),
            })
    }

    /// Weights `[out, per...]` int8 and bias `[out]` int32, and no int32 accumulator overflow.
    fn linear_tensors(
        &self,
        weight: &str,
        bias: &str,
        w_shape: &[usize],
    ) -> Result<(), ValidationError> {
        let wrong = |tensor: &str, t: &IntTensor, expected: String| ValidationError::Tensor {
            op: self.at.clone(),
            tensor: tensor.into(),
            dtype: t.dtype(),
            shape: t.shape().to_vec(),
            expected,
        };
        match self.tensor(weight)? {
            IntTensor::I8 { shape, data } if shape == w_shape && data.len() == numel(w_shape) => {
                // -128 has no symmetric partner, and the overflow bound below assumes |w| <= 127.
                if data.contains(&-128) {
                    return Err(ValidationError::WeightRange {
                        op: self.at.clone(),
                        tensor: weight.into(),
                        found: -128,
                    });
                }
            }
            t => return Err(wrong(weight, t, format!("int8 {w_shape:?}"))),
        }
        let b = match self.tensor(bias)? {
            IntTensor::I32 { shape, data }
                if shape == &[w_shape[0]] && data.len() == w_shape[0] =>
            {
                data
            }
            t => return Err(wrong(bias, t, format!("int32 [{}]", w_shape[0]))),
        };
        let k = numel(&w_shape[1..]) as i64;
        let worst = b.iter().map(|&x| (x as i64).abs()).max().unwrap_or(0) + k * 255 * 127;
        if worst > i32::MAX as i64 {
            return Err(ValidationError::Overflow {
                op: self.at.clone(),
                what: format!("bias and {k} products"),
                worst,
            });
        }
        Ok(())
    }

    fn requant(&self, rq: &[Requant], expected: usize) -> Result<(), ValidationError> {
        if rq.len() != expected {
            return Err(ValidationError::RequantCount {
                op: self.at.clone(),
                found: rq.len(),
                expected,
            });
        }
        match rq.iter().find(|r| {
            !(r.multiplier == 0 || r.multiplier >= 1 << 30) || !(1..=62).contains(&r.shift)
        }) {
            Some(r) => Err(ValidationError::RequantRange {
                op: self.at.clone(),
                multiplier: r.multiplier,
                shift: r.shift,
            }),
            None => Ok(()),
        }
    }

    fn scales(&self, scales: &[f32], expected: usize) -> Result<(), ValidationError> {
        if scales.len() != expected || !scales.iter().all(|s| sane_scale(*s)) {
            return Err(ValidationError::WeightScales {
                op: self.at.clone(),
                expected,
                scales: scales.to_vec(),
            });
        }
        Ok(())
    }

    fn clamp(&self, output: ValueId, lo: i32, hi: i32) -> Result<(), ValidationError> {
        let out = &self.graph.values[output];
        let q = &out.quant;
        // Every clamp the lowering makes keeps real 0: none, a ReLU (at the zero point) or a ReLU6.
        if lo > q.zero_point || q.zero_point > hi || lo < q.qmin || hi > q.qmax {
            return Err(ValidationError::Clamp {
                op: self.at.clone(),
                value: out.name.clone(),
                lo,
                hi,
                qmin: q.qmin,
                qmax: q.qmax,
                zero_point: q.zero_point,
            });
        }
        Ok(())
    }
}
