//! Every op in one place: its arguments, defaults and documentation (read by the
//! checker, `qatc explain ops` and editors), and its shape rule.

use serde::Serialize;
use std::fmt;

use super::Shape;
use crate::limits::{MAX_ARG_INT, MAX_AXIS, MAX_SHAPE_RANK};

mod add;
mod avg_pool2d;
mod batch_norm;
mod concat;
mod conv2d;
mod dense;
mod dropout;
mod flatten;
mod global_avg_pool;
mod hardswish;
mod max_pool2d;
mod mul;
mod pad;
mod relu;
mod relu6;
mod reshape;
mod sigmoid;
mod softmax;

pub use batch_norm::{fold_factor, folded_bias};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    Valid,
    Same,
}

impl Padding {
    /// Zeros added on each side for a window of `extent` (dilation * (kernel - 1) + 1).
    pub fn pixels(self, extent: usize) -> usize {
        match self {
            Padding::Valid => 0,
            Padding::Same => (extent - 1) / 2,
        }
    }
}

/// A batch norm folded into the linear op before it by the fusion pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FusedBatchNorm {
    /// The batch_norm binding's node name: its parameters keep that name.
    pub name: String,
    pub eps: f64,
    pub momentum: f64,
    /// The batch_norm was `@frozen`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub frozen: bool,
}

/// Where a fake-quant node's range comes from: decided by the fake-quant pass, read by
/// training (which observes) and by the lowering (which reads the saved ranges).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RangeSource {
    /// Observed on this value (calibration, QAT's moving average, or learned).
    Observed,
    /// The range observed at the named fake-quant node: a concat's inputs use the
    /// concat's range, so that the int8 join is a copy (TFLite's CONCATENATION needs it).
    SharedWith(String),
    /// Fixed by the op before it ([`QuantRole::ComputesFixed`]): nothing is observed, and
    /// training, lowering and the exporters use exactly these parameters.
    Fixed { scale: f32, zero_point: i64 },
}

/// What the fusion pass merged into a conv2d or dense.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Epilogue {
    pub batch_norm: Option<FusedBatchNorm>,
    pub activation: Option<Activation>,
}

impl Epilogue {
    pub fn is_empty(&self) -> bool {
        self.batch_norm.is_none() && self.activation.is_none()
    }
}

/// A clamp fused into a linear op's output (int8 kernels apply it in the requantization).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `max(x, 0)`
    Relu,
    /// `min(max(x, 0), 6)`
    Relu6,
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Relu6 => "relu6",
        }
    }

    /// The activation an op is, if it can be fused.
    pub fn of(op: &Op) -> Option<Activation> {
        match op {
            Op::Relu => Some(Activation::Relu),
            Op::Relu6 => Some(Activation::Relu6),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Input,
    Conv2d {
        filters: usize,
        kernel: usize,
        stride: usize,
        padding: Padding,
        /// Zeros on each side of H and W, resolved from `padding` once for every backend.
        pad: usize,
        /// Spacing between kernel taps; 1 is an ordinary convolution.
        dilation: usize,
        /// Channel groups; `groups == in_channels` is a depthwise convolution.
        groups: usize,
        in_channels: usize,
        bias: bool,
        epilogue: Epilogue,
    },
    Dense {
        units: usize,
        in_features: usize,
        bias: bool,
        epilogue: Epilogue,
    },
    BatchNorm {
        channels: usize,
        eps: f64,
        momentum: f64,
    },
    Relu,
    Relu6,
    Hardswish,
    Sigmoid,
    MaxPool2d {
        size: usize,
        stride: usize,
    },
    AvgPool2d {
        size: usize,
        stride: usize,
    },
    /// Mean over H and W: [C, H, W] -> [C].
    GlobalAvgPool,
    Flatten,
    /// To `shape` (without the batch dimension).
    Reshape {
        shape: Vec<usize>,
    },
    /// Elementwise sum; a relu or relu6 that alone reads it is fused in (one int8 add
    /// with the activation's clamp, as PyTorch's add_relu and TFLite's fused ADD).
    Add {
        activation: Option<Activation>,
    },
    /// Elementwise product with broadcasting.
    Mul,
    /// Joins its inputs along `axis` (0-based, batch dimension excluded).
    Concat {
        axis: usize,
    },
    /// Zeroes each value with probability `rate` while training; the identity otherwise.
    Dropout {
        rate: f64,
    },
    /// Softmax along `axis` (0-based, batch dimension excluded).
    Softmax {
        axis: usize,
    },
    /// Zero padding of `size` on each side of H and W.
    Pad {
        size: usize,
    },
    /// Inserted by the fake-quant pass: quantize and dequantize its input.
    FakeQuant {
        spec: super::QuantSpec,
        range: RangeSource,
    },
}

impl Op {
    /// The definition of a callable op; `None` for the nodes the compiler makes itself.
    pub fn def(&self) -> Option<&'static OpDef> {
        Some(match self {
            Op::Input | Op::FakeQuant { .. } => return None,
            Op::Conv2d { .. } => &conv2d::DEF,
            Op::Dense { .. } => &dense::DEF,
            Op::BatchNorm { .. } => &batch_norm::DEF,
            Op::Relu => &relu::DEF,
            Op::Relu6 => &relu6::DEF,
            Op::Hardswish => &hardswish::DEF,
            Op::Sigmoid => &sigmoid::DEF,
            Op::MaxPool2d { .. } => &max_pool2d::DEF,
            Op::AvgPool2d { .. } => &avg_pool2d::DEF,
            Op::GlobalAvgPool => &global_avg_pool::DEF,
            Op::Flatten => &flatten::DEF,
            Op::Reshape { .. } => &reshape::DEF,
            Op::Add { .. } => &add::DEF,
            Op::Mul => &mul::DEF,
            Op::Concat { .. } => &concat::DEF,
            Op::Dropout { .. } => &dropout::DEF,
            Op::Softmax { .. } => &softmax::DEF,
            Op::Pad { .. } => &pad::DEF,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::FakeQuant { .. } => "fake_quant",
            other => other.def().map_or("?", |d| d.name),
        }
    }

    pub fn role(&self) -> QuantRole {
        match self {
            Op::Input => QuantRole::Input,
            Op::FakeQuant { .. } => QuantRole::Quantizes,
            other => other.def().map_or(QuantRole::Computes, |d| d.role),
        }
    }

    /// Ops with a weight tensor (the ones weight quantization applies to).
    pub fn has_weights(&self) -> bool {
        self.def().is_some_and(|d| d.params.has_weights())
    }

    /// The shape of the op's weight tensor, for ops that have one.
    pub fn weight_shape(&self) -> Option<Shape> {
        match self {
            Op::Conv2d {
                filters,
                in_channels,
                groups,
                kernel,
                ..
            } => Some(conv2d::weight_shape(
                *filters,
                *in_channels,
                *groups,
                *kernel,
            )),
            Op::Dense {
                units, in_features, ..
            } => Some(dense::weight_shape(*units, *in_features)),
            Op::Input
            | Op::BatchNorm { .. }
            | Op::Relu
            | Op::Relu6
            | Op::Hardswish
            | Op::Sigmoid
            | Op::MaxPool2d { .. }
            | Op::AvgPool2d { .. }
            | Op::GlobalAvgPool
            | Op::Flatten
            | Op::Reshape { .. }
            | Op::Add { .. }
            | Op::Mul
            | Op::Concat { .. }
            | Op::Dropout { .. }
            | Op::Softmax { .. }
            | Op::Pad { .. }
            | Op::FakeQuant { .. } => None,
        }
    }

    /// Numbers the op holds per model (weights, biases, batch-norm scale, shift and
    /// running statistics), saturating: the checker compares it with a limit.
    pub fn parameter_count(&self) -> u64 {
        let weights = self.weight_shape().map_or(0, |w| {
            w.iter().fold(1u64, |n, &d| n.saturating_mul(d as u64))
        });
        let extra = match self {
            Op::Conv2d {
                filters,
                bias: true,
                ..
            } => *filters,
            Op::Dense {
                units, bias: true, ..
            } => *units,
            Op::BatchNorm { channels, .. } => channels.saturating_mul(4),
            _ => 0,
        };
        weights.saturating_add(extra as u64)
    }

    /// Multiply-accumulates per image of a node with this op and `output` shape; only
    /// the linear ops count (pooling, adds and activations are not MACs).
    pub fn macs(&self, output: &Shape) -> u64 {
        match (self, self.weight_shape()) {
            (Op::Conv2d { .. }, Some(weight)) => conv2d::macs(&weight, output),
            (Op::Dense { .. }, Some(weight)) => dense::macs(&weight),
            _ => 0,
        }
    }

    /// Ops whose int8 form keeps the input's scale and zero point (no requantization):
    /// they only move or select values, and zero padding is exact because zero is.
    /// `avg_pool2d` too, as TFLite's AVERAGE_POOL_2D requires: a mean of values on the
    /// input's grid stays in its range, and the int8 kernel rounds it to that grid.
    pub fn shares_input_quant(&self) -> bool {
        self.role().keeps_input_quant()
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fused = |e: &Epilogue| {
            let mut s = String::new();
            if e.batch_norm.is_some() {
                s.push_str("+batch_norm");
            }
            if let Some(a) = e.activation {
                s.push('+');
                s.push_str(a.name());
            }
            s
        };
        match self {
            Op::Conv2d {
                filters,
                kernel,
                stride,
                padding,
                dilation,
                groups,
                pad,
                bias,
                epilogue,
                ..
            } => {
                write!(
                    f,
                    "conv2d{}(filters={filters}, kernel={kernel}, stride={stride}, padding={}",
                    fused(epilogue),
                    match padding {
                        Padding::Valid => "valid",
                        Padding::Same => "same",
                    }
                )?;
                // Printed only when set, so dumps of plain convolutions stay as they were.
                if *dilation != 1 {
                    write!(f, ", dilation={dilation}")?;
                }
                if *groups != 1 {
                    write!(f, ", groups={groups}")?;
                }
                if *pad != 0 {
                    write!(f, ", pad={pad}")?;
                }
                write!(f, ", bias={bias})")
            }
            Op::Dense {
                units,
                bias,
                epilogue,
                ..
            } => write!(f, "dense{}(units={units}, bias={bias})", fused(epilogue)),
            Op::BatchNorm { eps, momentum, .. } => {
                write!(f, "batch_norm(eps={eps}, momentum={momentum})")
            }
            Op::MaxPool2d { size, stride } => write!(f, "max_pool2d(size={size}, stride={stride})"),
            Op::AvgPool2d { size, stride } => write!(f, "avg_pool2d(size={size}, stride={stride})"),
            Op::Reshape { shape } => write!(f, "reshape(shape={})", format_shape(shape)),
            Op::Add { activation } => {
                write!(f, "add")?;
                if let Some(a) = activation {
                    write!(f, "+{}", a.name())?;
                }
                write!(f, "()")
            }
            Op::Concat { axis } => write!(f, "concat(axis={axis})"),
            Op::Dropout { rate } => write!(f, "dropout(rate={rate})"),
            Op::Softmax { axis } => write!(f, "softmax(axis={axis})"),
            Op::Pad { size } => write!(f, "pad(size={size})"),
            Op::FakeQuant { spec, range } => match range {
                RangeSource::Observed => write!(f, "fake_quant({spec})"),
                RangeSource::SharedWith(source) => {
                    write!(f, "fake_quant({spec}, range={source})")
                }
                RangeSource::Fixed { scale, zero_point } => {
                    write!(
                        f,
                        "fake_quant({spec}, fixed scale={scale:e} zp={zero_point})"
                    )
                }
            },
            other => write!(f, "{}()", other.name()),
        }
    }
}

/// The type of an op argument, as the checker validates it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ArgType {
    PositiveInt,
    /// 0 or more.
    NonNegativeInt,
    /// An axis of the value without its batch dimension; negative counts from the end.
    Axis,
    PositiveFloat,
    /// A fraction in (0, 1).
    Fraction,
    /// A probability in [0, 1).
    Rate,
    Bool,
    Choice(&'static [&'static str]),
    /// A list of positive integers such as `[64, 7, 7]`.
    Shape,
}

impl ArgType {
    /// Whether an `int` block parameter may be passed for this argument.
    pub fn accepts_int(self) -> bool {
        matches!(
            self,
            ArgType::PositiveInt | ArgType::NonNegativeInt | ArgType::Axis
        )
    }
}

impl ArgType {
    /// A valid value to start from, which a quick fix inserts for a missing argument.
    pub fn example(self) -> &'static str {
        match self {
            ArgType::PositiveInt => "1",
            ArgType::NonNegativeInt => "0",
            ArgType::Axis => "-1",
            ArgType::PositiveFloat => "1.0",
            ArgType::Fraction => "0.5",
            ArgType::Rate => "0.1",
            ArgType::Bool => "false",
            ArgType::Choice(choices) => choices.first().copied().unwrap_or(""),
            ArgType::Shape => "[1]",
        }
    }
}

impl fmt::Display for ArgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgType::PositiveInt => write!(f, "an integer from 1 to {MAX_ARG_INT}"),
            ArgType::NonNegativeInt => write!(f, "an integer from 0 to {MAX_ARG_INT}"),
            ArgType::Axis => write!(
                f,
                "an axis (an integer from -{MAX_AXIS} to {MAX_AXIS}; -1 is the last)"
            ),
            ArgType::PositiveFloat => write!(f, "a positive number"),
            ArgType::Fraction => write!(f, "a number between 0 and 1"),
            ArgType::Rate => write!(f, "a number from 0 up to (not including) 1"),
            ArgType::Bool => write!(f, "`true` or `false`"),
            ArgType::Choice(c) => write!(
                f,
                "one of {}",
                c.iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ArgType::Shape => write!(
                f,
                "a list of 1 to {MAX_SHAPE_RANK} integers from 1 to {MAX_ARG_INT} like `[64, 7, 7]`"
            ),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ArgDef {
    pub name: &'static str,
    pub ty: ArgType,
    /// `None`: the argument is required.
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

/// The definition of an op a `.qat` file can call.
#[derive(Debug, Clone, Copy)]
pub struct OpDef {
    pub name: &'static str,
    /// Number of positional tensor arguments (the minimum when `variadic`).
    pub inputs: usize,
    /// Takes `inputs` or more tensors (concat).
    pub variadic: bool,
    pub args: &'static [ArgDef],
    pub doc: &'static str,
    pub shape_rule: &'static str,
    /// What the op does to quantization; every "ops that ..." list derives from it.
    pub role: QuantRole,
    /// The trained parameters the op owns.
    pub params: Params,
    /// Makes the op from checked arguments and infers its output shape.
    pub build: fn(&Args, &[&Shape]) -> Result<(Op, Shape), ShapeError>,
}

/// What an op does to the quantization of the values it reads: the one fact from
/// which the passes, the lints, training and the int8 lowering decide where a value
/// is quantized and which ops `@float` matters for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantRole {
    /// The model's input: quantized where a quantized op reads it.
    Input,
    /// Computes new values: its output gets quantization parameters of its own.
    Computes,
    /// Computes new values in a range known in advance: its output's parameters are
    /// fixed, not observed (TFLite's int8 LOGISTIC requires scale 1/256, zero point -128).
    ComputesFixed(FixedOutput),
    /// Only moves or selects values (windows, reshapes, zero padding): the output keeps
    /// the input's parameters, so `@float` changes nothing.
    MovesValues,
    /// The identity at inference (dropout): the int8 model reads the input itself.
    Identity,
    /// A fake-quant node inserted by the passes: marks where a value is quantized.
    Quantizes,
}

impl QuantRole {
    /// The output keeps the input's quantization parameters (no requantization).
    pub fn keeps_input_quant(self) -> bool {
        match self {
            QuantRole::MovesValues | QuantRole::Identity => true,
            QuantRole::Input
            | QuantRole::Computes
            | QuantRole::ComputesFixed(_)
            | QuantRole::Quantizes => false,
        }
    }

    /// One line for `qatc explain ops`.
    pub fn describe(self) -> &'static str {
        match self {
            QuantRole::Input => "quantized where a quantized op reads it",
            QuantRole::Computes => {
                "computes new values: its output gets its own scale and zero point"
            }
            QuantRole::ComputesFixed(FixedOutput::UnitInterval) => {
                "computes values in [0, 1]: its output's scale and zero point are fixed (1/256 and -128 in int8), not observed"
            }
            QuantRole::MovesValues => {
                "only moves values: keeps its input's scale and zero point (`@float` has no effect)"
            }
            QuantRole::Identity => "the identity in the int8 model (`@float` has no effect)",
            QuantRole::Quantizes => "marks where a value is quantized",
        }
    }

    /// `@float` on such an op does not keep the int8 model from being integer-only.
    pub fn float_is_harmless(self) -> bool {
        match self {
            QuantRole::Computes | QuantRole::ComputesFixed(_) => false,
            QuantRole::Input
            | QuantRole::MovesValues
            | QuantRole::Identity
            | QuantRole::Quantizes => true,
        }
    }

    /// The output range an op fixes, if it fixes one.
    pub fn fixed_output(self) -> Option<FixedOutput> {
        match self {
            QuantRole::ComputesFixed(f) => Some(f),
            QuantRole::Input
            | QuantRole::Computes
            | QuantRole::MovesValues
            | QuantRole::Identity
            | QuantRole::Quantizes => None,
        }
    }
}

/// A range an op's output always lies in, whatever its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FixedOutput {
    /// [0, 1] (sigmoid).
    UnitInterval,
}

impl FixedOutput {
    /// The scale and zero point of this range under `spec`. For [0, 1] in asymmetric
    /// b bits: scale 2^-b and the lowest integer at 0, so 1 is just out of reach (TFLite's
    /// 1/256 and -128 in int8); symmetric specs span [-1, 1] with zero point 0.
    pub fn params(self, spec: super::QuantSpec) -> (f32, i64) {
        let (qmin, qmax) = spec.range();
        match (self, spec.scheme) {
            (FixedOutput::UnitInterval, super::Scheme::Asymmetric) => {
                (((qmax - qmin + 1) as f32).recip(), qmin)
            }
            (FixedOutput::UnitInterval, super::Scheme::Symmetric) => ((qmax as f32).recip(), 0),
        }
    }
}

/// The trained parameters of an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Params {
    None,
    /// A weight tensor (quantized with the weight spec) and an optional bias.
    Weights,
    /// Batch-norm scale, shift and running statistics.
    Statistics,
}

impl Params {
    /// Has a weight tensor, which weight quantization applies to.
    pub fn has_weights(self) -> bool {
        self == Params::Weights
    }

    /// Has anything that trains (what `@frozen` applies to).
    pub fn any(self) -> bool {
        self != Params::None
    }
}

impl OpDef {
    /// `conv2d(x, filters, kernel, stride = 1, ...)`: how the op is called.
    pub fn signature(&self) -> String {
        let tensors: Vec<String> = if self.variadic {
            vec!["x1".into(), "x2".into(), "...".into()]
        } else {
            (0..self.inputs)
                .map(|i| {
                    if self.inputs == 1 {
                        "x".to_string()
                    } else {
                        format!("x{}", i + 1)
                    }
                })
                .collect()
        };
        let named = self.args.iter().map(|a| match a.default {
            Some(d) => format!("{} = {d}", a.name),
            None => a.name.to_string(),
        });
        format!(
            "{}({})",
            self.name,
            tensors
                .into_iter()
                .chain(named)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// Markdown documentation: signature, description, shape rule and arguments.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "```qat\n{}\n```\n{}\n\nshape: `{}`\n",
            self.signature(),
            self.doc,
            self.shape_rule
        );
        for a in self.args {
            out.push_str(&format!(
                "\n- `{}`: {} ({}; default: {})",
                a.name,
                a.doc,
                a.ty,
                a.default.unwrap_or("required")
            ));
        }
        out
    }
}

const fn arg(
    name: &'static str,
    ty: ArgType,
    default: Option<&'static str>,
    doc: &'static str,
) -> ArgDef {
    ArgDef {
        name,
        ty,
        default,
        doc,
    }
}

const POOL_ARGS: &[ArgDef] = &[
    arg("size", ArgType::PositiveInt, None, "square window size"),
    arg(
        "stride",
        ArgType::PositiveInt,
        Some("size"),
        "step between windows (defaults to the window size)",
    ),
];

/// Every op a `.qat` file can call, in the order `qatc explain ops` lists them.
pub const OPS: &[OpDef] = &[
    conv2d::DEF,
    dense::DEF,
    batch_norm::DEF,
    relu::DEF,
    relu6::DEF,
    hardswish::DEF,
    sigmoid::DEF,
    max_pool2d::DEF,
    avg_pool2d::DEF,
    global_avg_pool::DEF,
    flatten::DEF,
    reshape::DEF,
    add::DEF,
    mul::DEF,
    concat::DEF,
    dropout::DEF,
    softmax::DEF,
    pad::DEF,
];

/// The ops for which `pred` holds, as prose: "conv2d, dense and batch_norm".
pub fn names_where(pred: impl Fn(&OpDef) -> bool) -> String {
    let names: Vec<&str> = OPS.iter().filter(|d| pred(d)).map(|d| d.name).collect();
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

pub fn lookup(name: &str) -> Option<&'static OpDef> {
    OPS.iter().find(|op| op.name == name)
}

/// An argument value after type checking.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgValue {
    Int(usize),
    /// A possibly negative integer (axes).
    Signed(i64),
    Float(f64),
    Bool(bool),
    Choice(&'static str),
    List(Vec<usize>),
}

/// Type-checked arguments of one call, defaults filled in.
pub struct Args(pub Vec<(&'static str, ArgValue)>);

impl Args {
    fn get(&self, name: &str) -> Option<&ArgValue> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
    fn int(&self, name: &str) -> usize {
        match self.get(name) {
            Some(ArgValue::Int(i)) => *i,
            other => unreachable!("checker guarantees {name} is an int, got {other:?}"),
        }
    }
    fn float(&self, name: &str) -> f64 {
        match self.get(name) {
            Some(ArgValue::Float(x)) => *x,
            other => unreachable!("checker guarantees {name} is a float, got {other:?}"),
        }
    }
    fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some(ArgValue::Bool(true)))
    }
    fn signed(&self, name: &str) -> i64 {
        match self.get(name) {
            Some(ArgValue::Signed(i)) => *i,
            Some(ArgValue::Int(i)) => *i as i64,
            other => unreachable!("checker guarantees {name} is an integer, got {other:?}"),
        }
    }
}

/// Why an op does not fit its input shapes: a message, and per input a note on its shape.
#[derive(Debug)]
pub struct ShapeError {
    pub message: String,
    /// Which input to blame (index into the call's tensor inputs), if one is at fault.
    pub blame: Option<usize>,
    pub help: Option<String>,
}

fn shape_err(message: String, blame: Option<usize>, help: Option<&str>) -> ShapeError {
    ShapeError {
        message,
        blame,
        help: help.map(str::to_string),
    }
}

pub fn format_shape(shape: &[usize]) -> String {
    format!(
        "[{}]",
        shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// An axis of a `rank`-dimensional value, negative counting from the end.
fn axis(axis: i64, rank: usize, op: &str) -> Result<usize, ShapeError> {
    let resolved = if axis < 0 { rank as i64 + axis } else { axis };
    if (0..rank as i64).contains(&resolved) {
        Ok(resolved as usize)
    } else {
        Err(shape_err(
            format!("`{op}` axis {axis} is out of range for a {rank}-D value"),
            Some(0),
            Some("axes count from 0 without the batch dimension; -1 is the last"),
        ))
    }
}

/// Builds the op from checked arguments and infers its output shape.
pub fn instantiate(def: &OpDef, args: &Args, inputs: &[&Shape]) -> Result<(Op, Shape), ShapeError> {
    (def.build)(args, inputs)
}

/// The `[C, H, W]` of an op's first input, or why it is not an image.
fn image(inputs: &[&Shape], what: &str) -> Result<(usize, usize, usize), ShapeError> {
    match inputs[0].as_slice() {
        &[c, h, w] => Ok((c, h, w)),
        other => Err(shape_err(
            format!(
                "`{what}` needs a [C, H, W] input, got {}",
                format_shape(other)
            ),
            Some(0),
            None,
        )),
    }
}

/// The output H and W of a `size` window moved by `stride` over an `h` x `w` input.
fn window(
    size: usize,
    stride: usize,
    h: usize,
    w: usize,
    what: &str,
) -> Result<(usize, usize), ShapeError> {
    if size > h || size > w {
        return Err(shape_err(
            format!("{what} window {size}x{size} is larger than its {h}x{w} input"),
            Some(0),
            Some("use a smaller window, or `padding = same` on the conv2d before it"),
        ));
    }
    Ok(((h - size) / stride + 1, (w - size) / stride + 1))
}

/// A pooling op's channels, output H and W, window size and stride (which defaults to the size).
fn pool_window(
    args: &Args,
    inputs: &[&Shape],
    what: &str,
) -> Result<(usize, usize, usize, usize, usize), ShapeError> {
    let (c, h, w) = image(inputs, what)?;
    let size = args.int("size");
    let stride = match args.get("stride") {
        Some(ArgValue::Int(s)) => *s,
        _ => size,
    };
    let (oh, ow) = window(size, stride, h, w, what)?;
    Ok((c, oh, ow, size, stride))
}
