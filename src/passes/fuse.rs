//! Merges `conv2d|dense -> batch_norm -> relu|relu6` chains into the linear op, and
//! `add -> relu|relu6` into the add, following
//! the dataflow: a node is merged only when its producer has no other reader, so
//! branches never lose a value they need. Deployed int8 kernels run such a chain as
//! one op (BN folded into the weights, ReLU as the output clamp), so nothing may be
//! quantized in between.

use crate::ir::ops::{Activation, FusedBatchNorm};
use crate::ir::{Graph, NodeId, Op};

/// Fuses every chain; returns whether the graph changed. One walk over the graph (with
/// the readers of each value computed once), so large graphs fuse in linear time.
pub fn fuse_linear_epilogues(graph: &mut Graph) -> bool {
    let consumers = graph.consumers();
    let mut merged_into: Vec<Option<NodeId>> = vec![None; graph.nodes.len()];
    // The output as it will be once merged nodes are gone.
    let mut output = graph.output;
    for into in graph.ids() {
        if merged_into[into.index()].is_some() {
            continue;
        }
        // Who reads the value of `into`'s chain so far.
        let mut readers = consumers[into.index()].as_slice();
        while let Some(merged) = fusion(graph, into, readers, output) {
            merge(graph, into, merged);
            merged_into[merged.index()] = Some(into);
            if output == merged {
                output = into;
            }
            readers = consumers[merged.index()].as_slice();
        }
    }
    if merged_into.iter().all(Option::is_none) {
        return false;
    }
    graph.retain(
        |id| merged_into[id.index()].is_none(),
        |id| merged_into[id.index()].expect("only merged nodes are dropped"),
    );
    true
}

/// Moves `merged` (a batch norm or an activation) into the epilogue of `into`.
fn merge(graph: &mut Graph, into: NodeId, merged: NodeId) {
    let node = graph.node(merged).clone();
    let (activation, batch_norm) = match &mut graph.nodes[into.index()].op {
        Op::Conv2d { epilogue, .. } | Op::Dense { epilogue, .. } => {
            (&mut epilogue.activation, Some(&mut epilogue.batch_norm))
        }
        Op::Add { activation } => (activation, None),
        _ => unreachable!("fusion only merges into linear ops and add"),
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
}

/// The node to merge into `id` (a linear op or add) next, given who reads its value.
fn fusion(graph: &Graph, id: NodeId, readers: &[NodeId], output: NodeId) -> Option<NodeId> {
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
    let [next] = readers else {
        return None;
    };
    if output == id {
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
    fits.then_some(*next)
}
