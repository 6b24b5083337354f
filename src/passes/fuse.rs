//! Merges `conv2d|dense -> batch_norm -> relu|relu6` chains into the linear op, following
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
        let (Op::Conv2d { epilogue, .. } | Op::Dense { epilogue, .. }) =
            &mut graph.nodes[into.index()].op
        else {
            unreachable!("find_fusion only merges into linear ops")
        };
        match node.op {
            Op::BatchNorm { eps, momentum, .. } => {
                epilogue.batch_norm = Some(FusedBatchNorm {
                    name: node.name,
                    eps,
                    momentum,
                    frozen: node.quant.frozen,
                })
            }
            ref op => {
                epilogue.activation =
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

/// The next `(linear op, node to merge into it)`, if any.
fn find_fusion(graph: &Graph) -> Option<(NodeId, NodeId)> {
    let consumers = graph.consumers();
    graph.ids().find_map(|id| {
        let node = graph.node(id);
        let (Op::Conv2d { epilogue, .. } | Op::Dense { epilogue, .. }) = &node.op else {
            return None;
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
            Op::BatchNorm { .. } => epilogue.is_empty(),
            ref op => Activation::of(op).is_some() && epilogue.activation.is_none(),
        };
        fits.then_some((id, *next))
    })
}
