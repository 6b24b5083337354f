//! Every op in one place: its arguments, defaults and documentation (read by the
//! checker, `qatc explain ops` and editors), and its shape rule.

use serde::Serialize;
use std::fmt;

use super::Shape;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    Valid,
    Same,
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
    Add,
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
    },
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Conv2d { .. } => "conv2d",
            Op::Dense { .. } => "dense",
            Op::BatchNorm { .. } => "batch_norm",
            Op::Relu => "relu",
            Op::Relu6 => "relu6",
            Op::Hardswish => "hardswish",
            Op::Sigmoid => "sigmoid",
            Op::MaxPool2d { .. } => "max_pool2d",
            Op::AvgPool2d { .. } => "avg_pool2d",
            Op::GlobalAvgPool => "global_avg_pool",
            Op::Flatten => "flatten",
            Op::Reshape { .. } => "reshape",
            Op::Add => "add",
            Op::Mul => "mul",
            Op::Concat { .. } => "concat",
            Op::Dropout { .. } => "dropout",
            Op::Softmax { .. } => "softmax",
            Op::Pad { .. } => "pad",
            Op::FakeQuant { .. } => "fake_quant",
        }
    }

    /// Ops with a weight tensor (the ones weight quantization applies to).
    pub fn has_weights(&self) -> bool {
        matches!(self, Op::Conv2d { .. } | Op::Dense { .. })
    }

    /// Ops whose int8 form keeps the input's scale and zero point (no requantization):
    /// they only move or select values, and zero padding is exact because zero is.
    /// `avg_pool2d` too, as TFLite's AVERAGE_POOL_2D requires: a mean of values on the
    /// input's grid stays in its range, and the int8 kernel rounds it to that grid.
    pub fn shares_input_quant(&self) -> bool {
        matches!(
            self,
            Op::MaxPool2d { .. }
                | Op::AvgPool2d { .. }
                | Op::Flatten
                | Op::Reshape { .. }
                | Op::Dropout { .. }
                | Op::Pad { .. }
        )
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
            Op::Concat { axis } => write!(f, "concat(axis={axis})"),
            Op::Dropout { rate } => write!(f, "dropout(rate={rate})"),
            Op::Softmax { axis } => write!(f, "softmax(axis={axis})"),
            Op::Pad { size } => write!(f, "pad(size={size})"),
            Op::FakeQuant { spec } => write!(f, "fake_quant({spec})"),
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

impl fmt::Display for ArgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgType::PositiveInt => write!(f, "a positive integer"),
            ArgType::NonNegativeInt => write!(f, "an integer of 0 or more"),
            ArgType::Axis => write!(f, "an axis (an integer; -1 is the last)"),
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
            ArgType::Shape => write!(f, "a list of positive integers like `[64, 7, 7]`"),
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

const fn unary(name: &'static str, doc: &'static str, shape_rule: &'static str) -> OpDef {
    OpDef {
        name,
        inputs: 1,
        variadic: false,
        args: &[],
        doc,
        shape_rule,
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

pub const OPS: &[OpDef] = &[
    OpDef {
        name: "conv2d",
        inputs: 1,
        variadic: false,
        args: &[
            arg("filters", ArgType::PositiveInt, None, "number of output channels"),
            arg("kernel", ArgType::PositiveInt, None, "square kernel size"),
            arg("stride", ArgType::PositiveInt, Some("1"), "step between windows"),
            arg("padding", ArgType::Choice(&["valid", "same"]), Some("valid"), "`valid`: no padding; `same`: pad dilation * (kernel - 1) / 2 on each side, so odd kernels keep H and W at ceil(H / stride)"),
            arg("dilation", ArgType::PositiveInt, Some("1"), "spacing between kernel taps (atrous convolution)"),
            arg("groups", ArgType::PositiveInt, Some("1"), "channel groups; equal to the input channels (and filters) for a depthwise convolution"),
            arg("bias", ArgType::Bool, Some("true"), "add a learned bias per output channel"),
        ],
        doc: "2-D convolution over a [C, H, W] tensor. Input channels and filters must both be divisible by `groups`.",
        shape_rule: "[C, H, W] -> [filters, H', W'], H' = (H + 2 * pad - dilation * (kernel - 1) - 1) / stride + 1",
    },
    OpDef {
        name: "dense",
        inputs: 1,
        variadic: false,
        args: &[
            arg("units", ArgType::PositiveInt, None, "number of output features"),
            arg("bias", ArgType::Bool, Some("true"), "add a learned bias per output feature"),
        ],
        doc: "Fully connected layer on a 1-D tensor (use `flatten` or `global_avg_pool` first on images).",
        shape_rule: "[F] -> [units]",
    },
    OpDef {
        name: "batch_norm",
        inputs: 1,
        variadic: false,
        args: &[
            arg("eps", ArgType::PositiveFloat, Some("0.00001"), "added to the variance"),
            arg("momentum", ArgType::Fraction, Some("0.1"), "weight of each batch in the running statistics"),
        ],
        doc: "Batch normalization over the channel (first) dimension. Folded into the conv2d or dense before it when there is one.",
        shape_rule: "[C, ...] -> [C, ...]",
    },
    unary("relu", "max(x, 0), elementwise. Fused into the conv2d or dense before it.", "unchanged"),
    unary("relu6", "min(max(x, 0), 6), elementwise (MobileNet).", "unchanged"),
    unary("hardswish", "x * relu6(x + 3) / 6, elementwise (MobileNetV3).", "unchanged"),
    unary("sigmoid", "1 / (1 + exp(-x)), elementwise.", "unchanged"),
    OpDef {
        name: "max_pool2d",
        inputs: 1,
        variadic: false,
        args: POOL_ARGS,
        doc: "Maximum over square windows. Keeps its input's quantization parameters.",
        shape_rule: "[C, H, W] -> [C, (H - size) / stride + 1, (W - size) / stride + 1]",
    },
    OpDef {
        name: "avg_pool2d",
        inputs: 1,
        variadic: false,
        args: POOL_ARGS,
        doc: "Mean over square windows. Keeps its input's quantization parameters.",
        shape_rule: "[C, H, W] -> [C, (H - size) / stride + 1, (W - size) / stride + 1]",
    },
    unary("global_avg_pool", "Mean over all of H and W: one value per channel, ready for `dense`.", "[C, H, W] -> [C]"),
    unary("flatten", "Flattens all non-batch dimensions into one.", "[d1, d2, ...] -> [d1 * d2 * ...]"),
    OpDef {
        name: "reshape",
        inputs: 1,
        variadic: false,
        args: &[arg("shape", ArgType::Shape, None, "the new shape, without the batch dimension")],
        doc: "Reinterprets the values with a new shape holding as many elements.",
        shape_rule: "[d1, ...] -> shape, product(shape) = d1 * ...",
    },
    OpDef {
        name: "add",
        inputs: 2,
        variadic: false,
        args: &[],
        doc: "Elementwise sum of two tensors of the same shape (residual connections).",
        shape_rule: "[S], [S] -> [S]",
    },
    OpDef {
        name: "mul",
        inputs: 2,
        variadic: false,
        args: &[],
        doc: "Elementwise product; shapes broadcast as in NumPy (aligned from the right, 1 stretches), e.g. [C, H, W] * [C, 1, 1] for channel attention.",
        shape_rule: "[S], [T] -> broadcast(S, T)",
    },
    OpDef {
        name: "concat",
        inputs: 2,
        variadic: true,
        args: &[arg("axis", ArgType::Axis, Some("0"), "the axis to join along, batch excluded (0: channels of an image)")],
        doc: "Joins two or more tensors along an axis; all other dimensions must agree.",
        shape_rule: "[.., a, ..], [.., b, ..] -> [.., a + b, ..]",
    },
    OpDef {
        name: "dropout",
        inputs: 1,
        variadic: false,
        args: &[arg("rate", ArgType::Rate, Some("0.5"), "probability of zeroing each value while training")],
        doc: "Randomly zeroes values while training (scaling the rest); the identity at inference and in the int8 model.",
        shape_rule: "unchanged",
    },
    OpDef {
        name: "softmax",
        inputs: 1,
        variadic: false,
        args: &[arg("axis", ArgType::Axis, Some("-1"), "the axis that sums to 1, batch excluded")],
        doc: "exp(x) / sum(exp(x)) along an axis.",
        shape_rule: "unchanged",
    },
    OpDef {
        name: "pad",
        inputs: 1,
        variadic: false,
        args: &[arg("size", ArgType::NonNegativeInt, None, "zeros added on each side of H and W")],
        doc: "Zero padding around an image. Keeps its input's quantization parameters.",
        shape_rule: "[C, H, W] -> [C, H + 2 * size, W + 2 * size]",
    },
];

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

/// NumPy broadcasting of two shapes, if they are compatible.
fn broadcast(a: &[usize], b: &[usize]) -> Option<Shape> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// Builds the op from checked arguments and infers its output shape.
pub fn instantiate(def: &OpDef, args: &Args, inputs: &[&Shape]) -> Result<(Op, Shape), ShapeError> {
    let image = |what: &str| -> Result<(usize, usize, usize), ShapeError> {
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
    };
    let window = |size: usize,
                  stride: usize,
                  h: usize,
                  w: usize,
                  what: &str|
     -> Result<(usize, usize), ShapeError> {
        if size > h || size > w {
            return Err(shape_err(
                format!("{what} window {size}x{size} is larger than its {h}x{w} input"),
                Some(0),
                Some("use a smaller window, or `padding = same` on the conv2d before it"),
            ));
        }
        Ok(((h - size) / stride + 1, (w - size) / stride + 1))
    };
    let pool_stride = |size: usize| match args.get("stride") {
        Some(ArgValue::Int(s)) => *s,
        _ => size,
    };
    Ok(match def.name {
        "conv2d" => {
            let (c, h, w) = image("conv2d")?;
            let (filters, kernel, stride) = (args.int("filters"), args.int("kernel"), args.int("stride"));
            let (dilation, groups) = (args.int("dilation"), args.int("groups"));
            if c % groups != 0 || filters % groups != 0 {
                return Err(shape_err(
                    format!("`conv2d` with groups = {groups} needs input channels and filters divisible by {groups}, got {c} channels and {filters} filters"),
                    Some(0),
                    Some("for a depthwise convolution set both `groups` and `filters` to the input channels"),
                ));
            }
            let padding = match args.get("padding") {
                Some(ArgValue::Choice("same")) => Padding::Same,
                _ => Padding::Valid,
            };
            if padding == Padding::Same && kernel % 2 == 0 {
                // Even kernels would need asymmetric padding, which the int8 kernels do not do.
                return Err(shape_err(
                    format!("`padding = same` needs an odd kernel, got {kernel}"),
                    None,
                    Some("use an odd kernel size (1, 3, 5, ...) or `padding = valid`"),
                ));
            }
            // The extent one output value sees; equal to the kernel when dilation is 1.
            let extent = dilation.saturating_mul(kernel - 1).saturating_add(1);
            let pad = match padding {
                Padding::Same => (extent - 1) / 2,
                Padding::Valid => 0,
            };
            let (oh, ow) = window(extent, stride, h + 2 * pad, w + 2 * pad, "conv2d kernel")?;
            let op = Op::Conv2d { filters, kernel, stride, padding, dilation, groups, in_channels: c, bias: args.flag("bias"), epilogue: Epilogue::default() };
            (op, vec![filters, oh, ow])
        }
        "dense" => {
            let features = match inputs[0].as_slice() {
                &[f] => f,
                other => {
                    return Err(shape_err(
                        format!("`dense` needs a 1-D input, got {}-D {}", other.len(), format_shape(other)),
                        Some(0),
                        Some("insert `let x = flatten(x)` before the dense layer"),
                    ))
                }
            };
            let units = args.int("units");
            (Op::Dense { units, in_features: features, bias: args.flag("bias"), epilogue: Epilogue::default() }, vec![units])
        }
        "batch_norm" => {
            let channels = inputs[0].first().copied().unwrap_or(1);
            (Op::BatchNorm { channels, eps: args.float("eps"), momentum: args.float("momentum") }, inputs[0].clone())
        }
        "relu" => (Op::Relu, inputs[0].clone()),
        "relu6" => (Op::Relu6, inputs[0].clone()),
        "hardswish" => (Op::Hardswish, inputs[0].clone()),
        "sigmoid" => (Op::Sigmoid, inputs[0].clone()),
        "max_pool2d" | "avg_pool2d" => {
            let (c, h, w) = image(def.name)?;
            let size = args.int("size");
            let stride = pool_stride(size);
            let (oh, ow) = window(size, stride, h, w, def.name)?;
            let op = if def.name == "max_pool2d" { Op::MaxPool2d { size, stride } } else { Op::AvgPool2d { size, stride } };
            (op, vec![c, oh, ow])
        }
        "global_avg_pool" => {
            let (c, _, _) = image("global_avg_pool")?;
            (Op::GlobalAvgPool, vec![c])
        }
        "flatten" => (Op::Flatten, vec![inputs[0].iter().product()]),
        "reshape" => {
            let shape = match args.get("shape") {
                Some(ArgValue::List(s)) => s.clone(),
                other => unreachable!("checker guarantees shape is a list, got {other:?}"),
            };
            let (from, to) = (inputs[0].iter().product::<usize>(), shape.iter().product::<usize>());
            if from != to {
                return Err(shape_err(
                    format!("cannot reshape {} ({from} values) to {} ({to} values)", format_shape(inputs[0]), format_shape(&shape)),
                    Some(0),
                    Some("the new shape must hold exactly as many values"),
                ));
            }
            (Op::Reshape { shape: shape.clone() }, shape)
        }
        "add" => {
            if inputs[0] != inputs[1] {
                return Err(shape_err(
                    format!("`add` needs two tensors of the same shape, got {} and {}", format_shape(inputs[0]), format_shape(inputs[1])),
                    None,
                    Some("make both branches produce the same shape, e.g. a 1x1 conv2d on the shortcut"),
                ));
            }
            (Op::Add, inputs[0].clone())
        }
        "mul" => match broadcast(inputs[0], inputs[1]) {
            Some(shape) => (Op::Mul, shape),
            None => {
                return Err(shape_err(
                    format!("`mul` cannot broadcast {} with {}", format_shape(inputs[0]), format_shape(inputs[1])),
                    None,
                    Some("dimensions must be equal or 1, aligned from the right (e.g. [C, H, W] and [C, 1, 1])"),
                ))
            }
        },
        "concat" => {
            let rank = inputs[0].len();
            let ax = axis(args.signed("axis"), rank, "concat")?;
            let mut shape = inputs[0].clone();
            for (i, other) in inputs.iter().enumerate().skip(1) {
                let fits = other.len() == rank && other.iter().zip(inputs[0].iter()).enumerate().all(|(k, (a, b))| k == ax || a == b);
                if !fits {
                    return Err(shape_err(
                        format!("`concat` along axis {ax} needs all other dimensions equal, got {} and {}", format_shape(inputs[0]), format_shape(other)),
                        if inputs.len() > 2 { Some(i) } else { None },
                        Some("only the axis being joined may differ"),
                    ));
                }
                shape[ax] += other[ax];
            }
            (Op::Concat { axis: ax }, shape)
        }
        "dropout" => (Op::Dropout { rate: args.float("rate") }, inputs[0].clone()),
        "softmax" => {
            let ax = axis(args.signed("axis"), inputs[0].len(), "softmax")?;
            (Op::Softmax { axis: ax }, inputs[0].clone())
        }
        "pad" => {
            let (c, h, w) = image("pad")?;
            let size = args.int("size");
            (Op::Pad { size }, vec![c, h + 2 * size, w + 2 * size])
        }
        other => unreachable!("op {other} is in OPS but has no shape rule"),
    })
}
