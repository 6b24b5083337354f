//! `concat`: joins tensors along one axis.

use super::*;

pub const DEF: OpDef = OpDef {
    name: "concat",
    inputs: 2,
    variadic: true,
    args: &[arg(
        "axis",
        ArgType::Axis,
        Some("0"),
        "the axis to join along, batch excluded (0: channels of an image)",
    )],
    doc: "Joins two or more tensors along an axis; all other dimensions must agree.",
    shape_rule: "[.., a, ..], [.., b, ..] -> [.., a + b, ..]",
    role: QuantRole::Computes,
    params: Params::None,
    build,
};

fn build(args: &Args, inputs: &[&Shape]) -> Result<(Op, Shape), ShapeError> {
    let rank = inputs[0].len();
    let ax = axis(args.signed("axis"), rank, "concat")?;
    let mut shape = inputs[0].clone();
    for (i, other) in inputs.iter().enumerate().skip(1) {
        let fits = other.len() == rank
            && other
                .iter()
                .zip(inputs[0].iter())
                .enumerate()
                .all(|(k, (a, b))| k == ax || a == b);
        if !fits {
            return Err(shape_err(
                format!(
                    "`concat` along axis {ax} needs all other dimensions equal, got {} and {}",
                    format_shape(inputs[0]),
                    format_shape(other)
                ),
                if inputs.len() > 2 { Some(i) } else { None },
                Some("only the axis being joined may differ"),
            ));
        }
        shape[ax] += other[ax];
    }
    Ok((Op::Concat { axis: ax }, shape))
}
