//! `flatten`: all non-batch dimensions into one.

use super::*;

pub const DEF: OpDef = OpDef {
    name: "flatten",
    inputs: 1,
    variadic: false,
    args: &[],
    doc: "Flattens all non-batch dimensions into one.",
    shape_rule: "[d1, d2, ...] -> [d1 * d2 * ...]",
    role: QuantRole::MovesValues,
    params: Params::None,
    build,
};

fn build(_: &Args, inputs: &[&Shape]) -> Result<(Op, Shape), ShapeError> {
    Ok((Op::Flatten, vec![inputs[0].iter().product()]))
}
