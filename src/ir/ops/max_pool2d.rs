//! `max_pool2d`: maximum over square windows.

use super::*;

pub const DEF: OpDef = OpDef {
    name: "max_pool2d",
    inputs: 1,
    variadic: false,
    args: POOL_ARGS,
    doc: "Maximum over square windows. Keeps its input's quantization parameters.",
    shape_rule: "[C, H, W] -> [C, (H - size) / stride + 1, (W - size) / stride + 1]",
    role: QuantRole::MovesValues,
    params: Params::None,
    build,
};

fn build(args: &Args, inputs: &[&Shape]) -> Result<(Op, Shape), ShapeError> {
    let (c, h, w, size, stride) = pool_window(args, inputs, DEF.name)?;
    Ok((Op::MaxPool2d { size, stride }, vec![c, h, w]))
}
