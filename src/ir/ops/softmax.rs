//! `softmax`: exp(x) / sum(exp(x)) along an axis.

use super::*;

pub const DEF: OpDef = OpDef {
    name: "softmax",
    inputs: 1,
    variadic: false,
    args: &[arg(
        "axis",
        ArgType::Axis,
        Some("-1"),
        "the axis that sums to 1, batch excluded",
    )],
    doc: "exp(x) / sum(exp(x)) along an axis.",
    shape_rule: "unchanged",
    role: QuantRole::Computes,
    params: Params::None,
    build,
};

fn build(args: &Args, inputs: &[&Shape]) -> Result<(Op, Shape), ShapeError> {
    let ax = axis(args.signed("axis"), inputs[0].len(), "softmax")?;
    Ok((Op::Softmax { axis: ax }, inputs[0].clone()))
}
