//! `sigmoid`: 1 / (1 + exp(-x)).

use super::*;

pub const DEF: OpDef = OpDef {
    name: "sigmoid",
    inputs: 1,
    variadic: false,
    args: &[],
    doc: "1 / (1 + exp(-x)), elementwise.",
    shape_rule: "unchanged",
    role: QuantRole::ComputesFixed(FixedOutput::UnitInterval),
    params: Params::None,
    build,
};

fn build(_: &Args, inputs: &[&Shape]) -> Result<(Op, Shape), ShapeError> {
    Ok((Op::Sigmoid, inputs[0].clone()))
}
