//! `dense`: a fully connected layer.

use super::*;

pub const DEF: OpDef = OpDef {
    name: "dense",
    inputs: 1,
    variadic: false,
    args: &[
        arg("units", ArgType::PositiveInt, None, "number of output features"),
        arg("bias", ArgType::Bool, Some("true"), "add a learned bias per output feature"),
    ],
    doc: "Fully connected layer on a 1-D tensor (use `flatten` or `global_avg_pool` first on images).",
    shape_rule: "[F] -> [units]",
    role: QuantRole::Computes,
    params: Params::Weights,
    build,
};

fn build(args: &Args, inputs: &[&Shape]) -> Result<(Op, Shape), ShapeError> {
    let features = match inputs[0].as_slice() {
        &[f] => f,
        other => {
            return Err(shape_err(
                format!(
                    "`dense` needs a 1-D input, got {}-D {}",
                    other.len(),
                    format_shape(other)
                ),
                Some(0),
                Some("insert `let x = flatten(x)` before the dense layer"),
            ))
        }
    };
    let units = args.int("units");
    let op = Op::Dense {
        units,
        in_features: features,
        bias: args.flag("bias"),
        epilogue: Epilogue::default(),
    };
    Ok((op, vec![units]))
}

/// The weight tensor's shape: `[units, in_features]` (PyTorch's layout).
pub fn weight_shape(units: usize, in_features: usize) -> Shape {
    vec![units, in_features]
}

/// Multiply-accumulates per image: one per weight.
pub fn macs(weight: &Shape) -> u64 {
    weight.iter().product::<usize>() as u64
}
