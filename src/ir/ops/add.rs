//! `add`: the elementwise sum of two tensors of one shape (residual connections).

use super::*;

pub const DEF: OpDef = OpDef {
    name: "add",
    inputs: 2,
    variadic: false,
    args: &[],
    doc: "Elementwise sum of two tensors of the same shape (residual connections).",
    shape_rule: "[S], [S] -> [S]",
    role: QuantRole::Computes,
    params: Params::None,
    build,
};

fn build(_: &Args, inputs: &[&Shape]) -> Result<(Op, Shape), ShapeError> {
    if inputs[0] != inputs[1] {
        return Err(shape_err(
            format!(
                "`add` needs two tensors of the same shape, got {} and {}",
                format_shape(inputs[0]),
                format_shape(inputs[1])
            ),
            None,
            Some("make both branches produce the same shape, e.g. a 1x1 conv2d on the shortcut"),
        ));
    }
    Ok((Op::Add { activation: None }, inputs[0].clone()))
}
