//! `hardsigmoid`: relu6(x + 3) / 6.

use super::*;

pub const DEF: OpDef = OpDef {
    name: "hardsigmoid",
    inputs: 1,
    variadic: false,
    args: &[],
    doc: "relu6(x + 3) / 6, elementwise: a piecewise-linear sigmoid into [0, 1] (MobileNetV3's squeeze-excitation gates).",
    shape_rule: "unchanged",
    // Observed like hardswish, not fixed like sigmoid: its output reaches 1 exactly
    // (whenever x >= 3), which the fixed range [0, 1) cannot hold.
    role: QuantRole::Computes,
    params: Params::None,
    build,
};

fn build(_: &Args, inputs: &[&Shape]) -> Result<(Op, Shape), ShapeError> {
    Ok((Op::Hardsigmoid, inputs[0].clone()))
}
