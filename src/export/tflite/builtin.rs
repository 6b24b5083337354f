//! TFLite's builtin operator codes: the ones qatc writes, and the published names
//! `qatc inspect` shows.

/// The builtin operators qatc writes, with the operator version their int8 kernels need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Builtin {
    Add,
    AveragePool2d,
    Concatenation,
    Conv2d,
    DepthwiseConv2d,
    FullyConnected,
    HardSwish,
    Logistic,
    MaxPool2d,
    Mul,
    Relu,
    Relu6,
    Reshape,
    Pad,
    Transpose,
    Mean,
    Quantize,
}

impl Builtin {
    pub(super) fn code(self) -> i32 {
        match self {
            Builtin::Add => 0,
            Builtin::AveragePool2d => 1,
            Builtin::Concatenation => 2,
            Builtin::Conv2d => 3,
            Builtin::DepthwiseConv2d => 4,
            Builtin::FullyConnected => 9,
            Builtin::MaxPool2d => 17,
            Builtin::Relu => 19,
            Builtin::Relu6 => 21,
            Builtin::Reshape => 22,
            Builtin::Pad => 34,
            Builtin::Transpose => 39,
            Builtin::Mean => 40,
            Builtin::Quantize => 114,
            Builtin::HardSwish => 117,
            Builtin::Logistic => 14,
            Builtin::Mul => 18,
        }
    }

    /// The first operator version with an int8 kernel (per-channel for convolutions).
    pub(super) fn version(self) -> i32 {
        match self {
            Builtin::Conv2d | Builtin::DepthwiseConv2d => 3,
            Builtin::FullyConnected => 4,
            Builtin::Reshape | Builtin::HardSwish => 1,
            _ => 2,
        }
    }
}

/// The name of a builtin operator code (the published enum, for `qatc inspect`).
pub(super) fn builtin_name(code: i32) -> Option<&'static str> {
    Some(match code {
        0 => "ADD",
        1 => "AVERAGE_POOL_2D",
        2 => "CONCATENATION",
        3 => "CONV_2D",
        4 => "DEPTHWISE_CONV_2D",
        6 => "DEQUANTIZE",
        9 => "FULLY_CONNECTED",
        14 => "LOGISTIC",
        17 => "MAX_POOL_2D",
        18 => "MUL",
        19 => "RELU",
        21 => "RELU6",
        22 => "RESHAPE",
        25 => "SOFTMAX",
        34 => "PAD",
        39 => "TRANSPOSE",
        40 => "MEAN",
        114 => "QUANTIZE",
        117 => "HARD_SWISH",
        _ => return None,
    })
}
