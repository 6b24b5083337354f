//! `hardswish`: x * relu6(x + 3) / 6.

use super::*;

pub const DEF: OpDef = OpDef {
    name: "hardswish",
    inputs: 1,
    variadic: false,
    args: &[],
    doc: "x * relu6(x + 3) / 6, elementwise (MobileNetV3).",
    shape_rule: "unchanged",
    role: QuantRole::Computes,
    params: Params::None,
    build,
};

fn build(_: &Args, inputs: &[&Shape]) -> Result<(Op, Shape), ShapeError> {
    Ok((Op::Hardswish, inputs[0].clone()))
}
