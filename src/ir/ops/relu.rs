//! `relu`: max(x, 0).

use super::*;

pub const DEF: OpDef = OpDef {
    name: "relu",
    inputs: 1,
    variadic: false,
    args: &[],
    doc: "max(x, 0), elementwise. Fused into the conv2d or dense before it.",
    shape_rule: "unchanged",
    role: QuantRole::Computes,
    params: Params::None,
    build,
};

fn build(_: &Args, inputs: &[&Shape]) -> Result<(Op, Shape), ShapeError> {
    Ok((Op::Relu, inputs[0].clone()))
}
