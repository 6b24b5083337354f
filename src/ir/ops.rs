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
}

/// What the fusion pass merged into a conv2d or dense.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Epilogue {
    pub batch_norm: Option<FusedBatchNorm>,
    pub relu: bool,
}

impl Epilogue {
    pub fn is_empty(&self) -> bool {
        self.batch_norm.is_none() && !self.relu
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
    MaxPool2d {
        size: usize,
        stride: usize,
    },
    Flatten,
    Add,
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
            Op::MaxPool2d { .. } => "max_pool2d",
            Op::Flatten => "flatten",
            Op::Add => "add",
            Op::FakeQuant { .. } => "fake_quant",
        }
    }

    /// Ops with a weight tensor (the ones weight quantization applies to).
    pub fn has_weights(&self) -> bool {
        matches!(self, Op::Conv2d { .. } | Op::Dense { .. })
    }

    /// Ops whose int8 form keeps the input's scale and zero point (no requantization).
    pub fn shares_input_quant(&self) -> bool {
        matches!(self, Op::MaxPool2d { .. } | Op::Flatten)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fused = |e: &Epilogue| {
            let mut s = String::new();
            if e.batch_norm.is_some() {
                s.push_str("+batch_norm");
            }
            if e.relu {
                s.push_str("+relu");
            }
            s
        };
        match self {
            Op::Conv2d { filters, kernel, stride, padding, bias, epilogue, .. } => write!(
                f,
                "conv2d{}(filters={filters}, kernel={kernel}, stride={stride}, padding={}, bias={bias})",
                fused(epilogue),
                match padding {
                    Padding::Valid => "valid",
                    Padding::Same => "same",
                }
            ),
            Op::Dense { units, bias, epilogue, .. } => write!(f, "dense{}(units={units}, bias={bias})", fused(epilogue)),
            Op::BatchNorm { eps, momentum, .. } => write!(f, "batch_norm(eps={eps}, momentum={momentum})"),
            Op::MaxPool2d { size, stride } => write!(f, "max_pool2d(size={size}, stride={stride})"),
            Op::FakeQuant { spec } => write!(f, "fake_quant({spec})"),
            other => write!(f, "{}()", other.name()),
        }
    }
}

/// The type of an op argument, as the checker validates it.
#[derive(Debug, Clone, Copy)]
pub enum ArgType {
    PositiveInt,
    PositiveFloat,
    /// A fraction in (0, 1).
    Fraction,
    Bool,
    Choice(&'static [&'static str]),
}

impl fmt::Display for ArgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgType::PositiveInt => write!(f, "a positive integer"),
            ArgType::PositiveFloat => write!(f, "a positive number"),
            ArgType::Fraction => write!(f, "a number between 0 and 1"),
            ArgType::Bool => write!(f, "`true` or `false`"),
            ArgType::Choice(c) => write!(
                f,
                "one of {}",
                c.iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
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
    /// Number of positional tensor arguments.
    pub inputs: usize,
    pub args: &'static [ArgDef],
    pub doc: &'static str,
    pub shape_rule: &'static str,
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

pub const OPS: &[OpDef] = &[
    OpDef {
        name: "conv2d",
        inputs: 1,
        args: &[
            arg("filters", ArgType::PositiveInt, None, "number of output channels"),
            arg("kernel", ArgType::PositiveInt, None, "square kernel size"),
            arg("stride", ArgType::PositiveInt, Some("1"), "step between windows"),
            arg("padding", ArgType::Choice(&["valid", "same"]), Some("valid"), "`valid`: no padding; `same`: pad so that H and W are ceil(H / stride)"),
            arg("bias", ArgType::Bool, Some("true"), "add a learned bias per output channel"),
        ],
        doc: "2-D convolution over a [C, H, W] tensor.",
        shape_rule: "[C, H, W] -> [filters, H', W'], H' = (H - kernel) / stride + 1 (valid) or ceil(H / stride) (same)",
    },
    OpDef {
        name: "dense",
        inputs: 1,
        args: &[
            arg("units", ArgType::PositiveInt, None, "number of output features"),
            arg("bias", ArgType::Bool, Some("true"), "add a learned bias per output feature"),
        ],
        doc: "Fully connected layer on a 1-D tensor (use `flatten` first on images).",
        shape_rule: "[F] -> [units]",
    },
    OpDef {
        name: "batch_norm",
        inputs: 1,
        args: &[
            arg("eps", ArgType::PositiveFloat, Some("0.00001"), "added to the variance"),
            arg("momentum", ArgType::Fraction, Some("0.1"), "weight of each batch in the running statistics"),
        ],
        doc: "Batch normalization over the channel (first) dimension. Folded into the conv2d or dense before it when there is one.",
        shape_rule: "[C, ...] -> [C, ...]",
    },
    OpDef { name: "relu", inputs: 1, args: &[], doc: "max(x, 0), elementwise. Fused into the conv2d or dense before it.", shape_rule: "unchanged" },
    OpDef {
        name: "max_pool2d",
        inputs: 1,
        args: &[
            arg("size", ArgType::PositiveInt, None, "square window size"),
            arg("stride", ArgType::PositiveInt, Some("size"), "step between windows (defaults to the window size)"),
        ],
        doc: "Maximum over square windows. Keeps its input's quantization parameters.",
        shape_rule: "[C, H, W] -> [C, (H - size) / stride + 1, (W - size) / stride + 1]",
    },
    OpDef { name: "flatten", inputs: 1, args: &[], doc: "Flattens all non-batch dimensions into one.", shape_rule: "[d1, d2, ...] -> [d1 * d2 * ...]" },
    OpDef { name: "add", inputs: 2, args: &[], doc: "Elementwise sum of two tensors of the same shape (residual connections).", shape_rule: "[S], [S] -> [S]" },
];

pub fn lookup(name: &str) -> Option<&'static OpDef> {
    OPS.iter().find(|op| op.name == name)
}

/// An argument value after type checking.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgValue {
    Int(usize),
    Float(f64),
    Bool(bool),
    Choice(&'static str),
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
    Ok(match def.name {
        "conv2d" => {
            let (c, h, w) = image("conv2d")?;
            let (filters, kernel, stride) =
                (args.int("filters"), args.int("kernel"), args.int("stride"));
            let padding = match args.get("padding") {
                Some(ArgValue::Choice("same")) => Padding::Same,
                _ => Padding::Valid,
            };
            let (oh, ow) = match padding {
                Padding::Same if kernel % 2 == 0 => {
                    return Err(shape_err(
                        format!("`padding = same` needs an odd kernel, got {kernel}"),
                        None,
                        Some("use an odd kernel size (1, 3, 5, ...) or `padding = valid`"),
                    ))
                }
                Padding::Same => (h.div_ceil(stride), w.div_ceil(stride)),
                Padding::Valid => window(kernel, stride, h, w, "conv2d kernel")?,
            };
            let op = Op::Conv2d {
                filters,
                kernel,
                stride,
                padding,
                in_channels: c,
                bias: args.flag("bias"),
                epilogue: Epilogue::default(),
            };
            (op, vec![filters, oh, ow])
        }
        "dense" => {
            let features = match inputs[0].as_slice() {
                &[f] => f,
                other => {
                    return Err(shape_err(
                        format!(
                            "`dense` needs a 1-D input, got {}-D {}",
                            other.len(),
                            format_shape(other)
                        ),
                        Some(0),
                        Some("insert `let x = flatten(x)` before the dense layer"),
                    ))
                }
            };
            let units = args.int("units");
            (
                Op::Dense {
                    units,
                    in_features: features,
                    bias: args.flag("bias"),
                    epilogue: Epilogue::default(),
                },
                vec![units],
            )
        }
        "batch_norm" => {
            let channels = inputs[0][0];
            (
                Op::BatchNorm {
                    channels,
                    eps: args.float("eps"),
                    momentum: args.float("momentum"),
                },
                inputs[0].clone(),
            )
        }
        "relu" => (Op::Relu, inputs[0].clone()),
        "max_pool2d" => {
            let (c, h, w) = image("max_pool2d")?;
            let size = args.int("size");
            let stride = match args.get("stride") {
                Some(ArgValue::Int(s)) => *s,
                _ => size,
            };
            let (oh, ow) = window(size, stride, h, w, "max_pool2d")?;
            (Op::MaxPool2d { size, stride }, vec![c, oh, ow])
        }
        "flatten" => (Op::Flatten, vec![inputs[0].iter().product()]),
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
        other => unreachable!("op {other} is in OPS but has no shape rule"),
    })
}
