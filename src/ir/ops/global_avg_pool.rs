//! `global_avg_pool`: the mean of each channel over H and W.

use super::*;

pub const DEF: OpDef = OpDef {
    name: "global_avg_pool",
    inputs: 1,
    variadic: false,
    args: &[],
    doc: "Mean over all of H and W: one value per channel, ready for `dense`.",
    shape_rule: "[C, H, W] -> [C]",
    role: QuantRole::Computes,
    params: Params::None,
    build,
};

fn build(_: &Args, inputs: &[&Shape]) -> Result<(Op, Shape), ShapeError> {
    let (c, _, _) = image(inputs, "global_avg_pool")?;
    Ok((Op::GlobalAvgPool, vec![c]))
}
