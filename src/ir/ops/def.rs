//! What an op is to the checker: its arguments and their types, its docs, its shape rule
//! and its quantization role ([`OpDef`]), one per op file.

use std::fmt;

use super::*;

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
    pub fn params(self, spec: crate::ir::QuantSpec) -> (f32, i64) {
        let (qmin, qmax) = spec.range();
        match (self, spec.scheme) {
            (FixedOutput::UnitInterval, crate::ir::Scheme::Asymmetric) => {
                (((qmax - qmin + 1) as f32).recip(), qmin)
            }
            (FixedOutput::UnitInterval, crate::ir::Scheme::Symmetric) => ((qmax as f32).recip(), 0),
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

pub(super) const fn arg(
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

pub(super) const POOL_ARGS: &[ArgDef] = &[
    arg("size", ArgType::PositiveInt, None, "square window size"),
    arg(
        "stride",
        ArgType::PositiveInt,
        Some("size"),
        "step between windows (defaults to the window size)",
    ),
];
