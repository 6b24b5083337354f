//! `reshape`: the same values under a new shape.

use super::*;

pub const DEF: OpDef = OpDef {
    name: "reshape",
    inputs: 1,
    variadic: false,
    args: &[arg(
        "shape",
        ArgType::Shape,
        None,
        "the new shape, without the batch dimension",
    )],
    doc: "Reinterprets the values with a new shape holding as many elements.",
    shape_rule: "[d1, ...] -> shape, product(shape) = d1 * ...",
    role: QuantRole::MovesValues,
    params: Params::None,
    build,
};

fn build(args: &Args, inputs: &[&Shape]) -> Result<(Op, Shape), ShapeError> {
    let shape = match args.get("shape") {
        Some(ArgValue::List(s)) => s.clone(),
        other => unreachable!("checker guarantees shape is a list, got {other:?}"),
    };
    let (from, to) = (
        inputs[0].iter().product::<usize>(),
        shape.iter().product::<usize>(),
    );
    if from != to {
        return Err(shape_err(
            format!(
                "cannot reshape {} ({from} values) to {} ({to} values)",
                format_shape(inputs[0]),
                format_shape(&shape)
            ),
            Some(0),
            Some("the new shape must hold exactly as many values"),
        ));
    }
    Ok((
        Op::Reshape {
            shape: shape.clone(),
        },
        shape,
    ))
}
