//! Every op in one place: its arguments, defaults and documentation (read by the
//! checker, `qatc explain ops` and editors), and its shape rule.

use serde::Serialize;
use std::fmt;

use super::Shape;
use crate::limits::{MAX_ARG_INT, MAX_AXIS, MAX_SHAPE_RANK};

mod add;
mod args;
mod avg_pool2d;
mod batch_norm;
mod concat;
mod conv2d;
mod def;
mod dense;
mod dropout;
mod flatten;
mod global_avg_pool;
mod hardsigmoid;
mod hardswish;
mod max_pool2d;
mod mul;
mod pad;
mod relu;
mod relu6;
mod reshape;
mod sigmoid;
mod softmax;

use args::{axis, image, pool_window, shape_err, window};
pub use args::{format_shape, instantiate, ArgValue, Args, ShapeError};
pub use batch_norm::{fold_factor, folded_bias};
use def::{arg, POOL_ARGS};
pub use def::{ArgDef, ArgType, FixedOutput, OpDef, Params, QuantRole};

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
    Hardsigmoid,
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

/// The weight tensor of a conv2d or dense, and what belongs with it ([`Op::weights`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Weights<'a> {
    /// `[filters, in_channels / groups, k, k]` (conv2d) or `[units, in_features]` (dense):
    /// the output channels first.
    pub shape: Shape,
    /// Whether the op adds a bias, one per output channel.
    pub bias: bool,
    /// The batch norm fused into the op (folded into these weights for int8).
    pub batch_norm: Option<&'a FusedBatchNorm>,
}

impl Weights<'_> {
    /// The output channels: the weight's first dimension.
    pub fn out_channels(&self) -> usize {
        self.shape[0]
    }
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
            Op::Hardsigmoid => &hardsigmoid::DEF,
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

    /// The op's weight tensor and what belongs with it, for the ops that have one: the one
    /// place that says which ops have weights and what they are (training's layers, the
    /// reader of trained parameters, lowering and the counts all read it).
    #[deny(clippy::wildcard_enum_match_arm)]
    pub fn weights(&self) -> Option<Weights<'_>> {
        match self {
            Op::Conv2d {
                filters,
                in_channels,
                groups,
                kernel,
                bias,
                epilogue,
                ..
            } => Some(Weights {
                shape: conv2d::weight_shape(*filters, *in_channels, *groups, *kernel),
                bias: *bias,
                batch_norm: epilogue.batch_norm.as_ref(),
            }),
            Op::Dense {
                units,
                in_features,
                bias,
                epilogue,
            } => Some(Weights {
                shape: dense::weight_shape(*units, *in_features),
                bias: *bias,
                batch_norm: epilogue.batch_norm.as_ref(),
            }),
            Op::Input
            | Op::BatchNorm { .. }
            | Op::Relu
            | Op::Relu6
            | Op::Hardswish
            | Op::Hardsigmoid
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

    /// The shape of the op's weight tensor, for ops that have one.
    pub fn weight_shape(&self) -> Option<Shape> {
        self.weights().map(|w| w.shape)
    }

    /// Numbers the op holds per model (weights, biases, batch-norm scale, shift and
    /// running statistics), saturating: the checker compares it with a limit.
    pub fn parameter_count(&self) -> u64 {
        let weights = self.weights().map_or(0, |w| {
            let bias = if w.bias { w.out_channels() } else { 0 };
            w.shape
                .iter()
                .fold(1u64, |n, &d| n.saturating_mul(d as u64))
                .saturating_add(bias as u64)
        });
        let statistics = match self {
            Op::BatchNorm { channels, .. } => channels.saturating_mul(4),
            _ => 0,
        };
        weights.saturating_add(statistics as u64)
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

/// Every op a `.qat` file can call, in the order `qatc explain ops` lists them.
pub const OPS: &[OpDef] = &[
    conv2d::DEF,
    dense::DEF,
    batch_norm::DEF,
    relu::DEF,
    relu6::DEF,
    hardswish::DEF,
    hardsigmoid::DEF,
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
