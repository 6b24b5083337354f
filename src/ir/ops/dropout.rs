//! `dropout`: random zeroing while training; the identity at inference.

use super::*;

pub const DEF: OpDef = OpDef {
    name: "dropout",
    inputs: 1,
    variadic: false,
    args: &[arg("rate", ArgType::Rate, Some("0.5"), "probability of zeroing each value while training")],
    doc: "Randomly zeroes values while training (scaling the rest); the identity at inference and in the int8 model.",
    shape_rule: "unchanged",
    role: QuantRole::Identity,
    params: Params::None,
    build,
};

fn build(args: &Args, inputs: &[&Shape]) -> Result<(Op, Shape), ShapeError> {
    Ok((
        Op::Dropout {
            rate: args.float("rate"),
        },
        inputs[0].clone(),
    ))
}
