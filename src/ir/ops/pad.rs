//! `pad`: zero padding around an image.

use super::*;

pub const DEF: OpDef = OpDef {
    name: "pad",
    inputs: 1,
    variadic: false,
    args: &[arg(
        "size",
        ArgType::NonNegativeInt,
        None,
        "zeros added on each side of H and W",
    )],
    doc: "Zero padding around an image. Keeps its input's quantization parameters.",
    shape_rule: "[C, H, W] -> [C, H + 2 * size, W + 2 * size]",
    role: QuantRole::MovesValues,
    params: Params::None,
    build,
};

fn build(args: &Args, inputs: &[&Shape]) -> Result<(Op, Shape), ShapeError> {
    let (c, h, w) = image(inputs, "pad")?;
    let size = args.int("size");
    Ok((Op::Pad { size }, vec![c, h + 2 * size, w + 2 * size]))
}
