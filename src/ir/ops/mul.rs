//! `mul`: the elementwise product with NumPy broadcasting (channel attention).

use super::*;

pub const DEF: OpDef = OpDef {
    name: "mul",
    inputs: 2,
    variadic: false,
    args: &[],
    doc: "Elementwise product; shapes broadcast as in NumPy (aligned from the right, 1 stretches), e.g. [C, H, W] * [C, 1, 1] for channel attention.",
    shape_rule: "[S], [T] -> broadcast(S, T)",
    role: QuantRole::Computes,
    params: Params::None,
    build,
};

fn build(_: &Args, inputs: &[&Shape]) -> Result<(Op, Shape), ShapeError> {
    match broadcast(inputs[0], inputs[1]) {
        Some(shape) => Ok((Op::Mul, shape)),
        None => Err(shape_err(
            format!("`mul` cannot broadcast {} with {}", format_shape(inputs[0]), format_shape(inputs[1])),
            None,
            Some("dimensions must be equal or 1, aligned from the right (e.g. [C, H, W] and [C, 1, 1])"),
        )),
    }
}

/// NumPy broadcasting of two shapes, if they are compatible.
fn broadcast(a: &[usize], b: &[usize]) -> Option<Shape> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}
