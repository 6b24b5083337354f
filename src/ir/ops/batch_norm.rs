//! `batch_norm`: batch normalization over channels; folded into a conv2d or dense before it.

use super::*;
use crate::ir::quant::Arith;

pub const DEF: OpDef = OpDef {
    name: "batch_norm",
    inputs: 1,
    variadic: false,
    args: &[
        arg("eps", ArgType::PositiveFloat, Some("0.00001"), "added to the variance"),
        arg("momentum", ArgType::Fraction, Some("0.1"), "weight of each batch in the running statistics"),
    ],
    doc: "Batch normalization over the channel (first) dimension. Folded into the conv2d or dense before it when there is one.",
    shape_rule: "[C, ...] -> [C, ...]",
    role: QuantRole::Computes,
    params: Params::Statistics,
    build,
};

fn build(args: &Args, inputs: &[&Shape]) -> Result<(Op, Shape), ShapeError> {
    let channels = inputs[0].first().copied().unwrap_or(1);
    let op = Op::BatchNorm {
        channels,
        eps: args.float("eps"),
        momentum: args.float("momentum"),
    };
    Ok((op, inputs[0].clone()))
}

/// Batch-norm folding, the one definition: the per-channel factor `γ / √(σ² + ε)`.
/// Folded weights are `w · factor[o]` per output channel `o`.
pub fn fold_factor<T: Arith>(gamma: &T, running_var: &T, eps: f64) -> T {
    gamma.div(&running_var.add_scalar(eps).sqrt())
}

/// The folded bias `b · factor + (β − μ · factor)`, or `β − μ · factor` without a bias.
pub fn folded_bias<T: Arith>(bias: Option<&T>, beta: &T, running_mean: &T, factor: &T) -> T {
    let shift = beta.sub(&running_mean.mul(factor));
    match bias {
        Some(b) => b.mul(factor).add(&shift),
        None => shift,
    }
}
