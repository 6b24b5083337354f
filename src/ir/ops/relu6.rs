//! `relu6`: min(max(x, 0), 6).

use super::*;

pub const DEF: OpDef = OpDef {
    name: "relu6",
    inputs: 1,
    variadic: false,
    args: &[],
    doc: "min(max(x, 0), 6), elementwise (MobileNet).",
    shape_rule: "unchanged",
    role: QuantRole::Computes,
    params: Params::None,
    build,
};

fn build(_: &Args, inputs: &[&Shape]) -> Result<(Op, Shape), ShapeError> {
    Ok((Op::Relu6, inputs[0].clone()))
}
