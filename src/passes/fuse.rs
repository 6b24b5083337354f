//! Merges `conv2d|dense -> batch_norm -> relu|relu6` chains into the linear op, and
//! `add -> relu|relu6` into the add, following
//! the dataflow: a node is merged only when its producer has no other reader, so
//! branches never lose a value they need. Deployed int8 kernels run such a chain as
//! one op (BN folded into the weights, ReLU as the output clamp), so nothing may be
//! quantized in between.

use crate::ir::ops::{Activation, FusedBatchNorm};
use crate::ir::{Graph, NodeId, Op};

/// Fuses as long as something changes; returns whether the graph changed.
pub fn fuse_linear_epilogues(graph: &mut Graph) -> bool {
    let mut changed = false;
    while let Some((into, merged)) = find_fusion(graph) {
        let node = graph.node(merged).clone();
        let (activation, batch_norm) = match &mut graph.nodes[into.index()].op {
            Op::Conv2d { epilogue, .. } | Op::Dense { epilogue, .. } => {
                (&mut epilogue.activation, Some(&mut epilogue.batch_norm))
            }
            Op::Add { activation } => (activation, None),
            _ => unreachable!("find_fusion only merges into linear ops and add"),
        };
        match (&node.op, batch_norm) {
            (&Op::BatchNorm { eps, momentum, .. }, Some(batch_norm)) => {
                *batch_norm = Some(FusedBatchNorm {
                    name: node.name,
                    eps,
                    momentum,
                    frozen: node.quant.frozen,
                })
            }
            (op, _) => {
                *activation =
                    Some(Activation::of(op).expect("only batch_norm and activations are merged"))
            }
        }
        // The chain's output is the merged node's output, so its activation spec wins
        // (`@frozen` stays per layer: the batch norm carries its own).
        graph.nodes[into.index()].quant.activations = node.quant.activations;
        graph.retain(|id| id != merged, |_| into);
        changed = true;
    }
    changed
}

/// The next `(linear op or add, node to merge into it)`, if any.
fn find_fusion(graph: &Graph) -> Option<(NodeId, NodeId)> {
    let consumers = graph.consumers();
    graph.ids().find_map(|id| {
        let node = graph.node(id);
        // What the op can still take: (a batch norm, an activation).
        let (takes_batch_norm, takes_activation) = match &node.op {
            Op::Conv2d { epilogue, .. } | Op::Dense { epilogue, .. } => {
                (epilogue.is_empty(), epilogue.activation.is_none())
            }
            Op::Add { activation } => (false, activation.is_none()),
            _ => return None,
        };
        // The producer's value must not be needed elsewhere (another reader or the output).
        let [next] = consumers[id.index()].as_slice() else {
            return None;
        };
        if graph.output == id {
            return None;
        }
        let next_node = graph.node(*next);
        // A float op and a quantized one cannot share one kernel.
        if next_node.quant.float != node.quant.float {
            return None;
        }
        let fits = match next_node.op {
            Op::BatchNorm { .. } => takes_batch_norm,
            ref op => Activation::of(op).is_some() && takes_activation,
        };
        fits.then_some((id, *next))
    })
}
