//! The memory one training step of a graph needs, estimated from its shapes before any
//! allocation (E0027): `qatc check` uses the recipe beside the file, `qatc build` its recipe.

use super::Graph;
use crate::codes;
use crate::diagnostics::Diagnostic;
use crate::limits::{format_bytes, training_bytes, MAX_TRAINING_BYTES};

/// E0027 when one training step of `graph` at `batch` samples would need more than
/// [`MAX_TRAINING_BYTES`], at the op with the largest value.
pub fn check_training_memory(graph: &Graph, batch: usize) -> Option<Diagnostic> {
    let elements = |shape: &[usize]| shape.iter().fold(1u64, |n, &d| n.saturating_mul(d as u64));
    let activations = graph
        .nodes
        .iter()
        .fold(0u64, |n, node| n.saturating_add(elements(&node.shape)));
    let parameters = graph
        .nodes
        .iter()
        .fold(0u64, |n, node| n.saturating_add(node.op.parameter_count()));
    let bytes = training_bytes(activations, parameters, batch as u64);
    if bytes <= MAX_TRAINING_BYTES {
        return None;
    }
    let largest = graph.nodes.iter().max_by_key(|n| elements(&n.shape))?;
    Some(
        Diagnostic::error(
            codes::TRAINING_MEMORY,
            format!(
                "training model `{}` needs about {} for one batch of {batch}",
                graph.name,
                format_bytes(bytes)
            ),
            largest.span,
            format!(
                "the largest value: {} elements per sample",
                elements(&largest.shape)
            ),
        )
        .with_note(format!(
            "{activations} values per sample (kept with their gradients and fake-quantized copies) \
             and {parameters} parameters (with gradients and optimizer state), all f32; the limit is {}",
            format_bytes(MAX_TRAINING_BYTES)
        ))
        .with_help("lower `train.batch_size` in the recipe, or make the model smaller"),
    )
}
