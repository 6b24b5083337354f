//! Inserts `fake_quant` nodes where the deployed int8 model quantizes a value:
//! after the model input and after every op that computes new values (fused
//! conv2d/dense, add (with a fused relu), a lone relu or batch_norm). Ops that only move values
//! (max_pool2d, flatten) and avg_pool2d keep their input's quantization. `@float` ops get none,
//! and a quantized op that reads a float value gets a fake_quant on that input.
//! Weight quantization is not a node: conv2d/dense carry their weight spec.
//!
//! The value after an op with a fixed output range (sigmoid) gets that range
//! ([`RangeSource::Fixed`]) instead of an observed one.
//!
//! A concat's inputs use the concat's own range ([`shared_ranges`]): TFLite's int8
//! CONCATENATION requires it, and the join becomes a copy instead of requantizations.

use std::collections::BTreeSet;

use crate::ir::ops::RangeSource;
use crate::ir::{Graph, Node, NodeId, Op};

pub fn insert_fake_quant(graph: &mut Graph) -> bool {
    if graph
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::FakeQuant { .. }))
    {
        return false; // already quantized; the pass is idempotent
    }
    let consumers = graph.consumers();
    let mut quantized = vec![false; graph.nodes.len()];
    let mut after: BTreeSet<NodeId> = BTreeSet::new();
    for id in graph.ids() {
        let node = graph.node(id);
        match node.op {
            // Ops that only move values are quantized exactly when their input is.
            ref op if op.shares_input_quant() => {
                quantized[id.index()] = quantized[node.inputs[0].index()]
            }
            _ if node.quant.float => {}
            Op::Input => {
                if consumers[id.index()]
                    .iter()
                    .any(|&c| !graph.node(c).quant.float)
                {
                    after.insert(id);
                    quantized[id.index()] = true;
                }
            }
            _ => {
                // An integer kernel needs integer inputs.
                for &input in &node.inputs {
                    if !quantized[input.index()] {
                        after.insert(input);
                        quantized[input.index()] = true;
                    }
                }
                quantized[id.index()] = true;
                after.insert(id);
            }
        }
    }
    // One rebuild of the node list (inserting one at a time is quadratic): each fake-quant
    // goes right after its node, and every later reader of that node reads it instead.
    let old = std::mem::take(&mut graph.nodes);
    let mut position = Vec::with_capacity(old.len());
    let mut value = Vec::with_capacity(old.len());
    for (i, mut node) in old.into_iter().enumerate() {
        node.inputs = node.inputs.iter().map(|x| value[x.index()]).collect();
        let id = NodeId(graph.nodes.len() as u32);
        let fq = after.contains(&NodeId(i as u32)).then(|| Node {
            name: format!("{}.fq", node.name),
            op: Op::FakeQuant {
                spec: node.quant.activations,
                range: RangeSource::Observed,
            },
            inputs: vec![id],
            shape: node.shape.clone(),
            span: node.span,
            quant: node.quant,
            block: node.block,
        });
        graph.nodes.push(node);
        position.push(id);
        match fq {
            Some(fq) => {
                value.push(NodeId(graph.nodes.len() as u32));
                graph.nodes.push(fq);
            }
            None => value.push(id),
        }
    }
    graph.inputs = graph.inputs.iter().map(|x| position[x.index()]).collect();
    graph.output = value[graph.output.index()];
    let shared = shared_ranges(graph);
    for id in graph.ids() {
        let source = shared[id.index()];
        let fixed = match &graph.node(id).op {
            Op::FakeQuant { spec, .. } => graph
                .node(graph.node(id).inputs[0])
                .op
                .role()
                .fixed_output()
                .map(|f| f.params(*spec)),
            _ => None,
        };
        // A fixed range wins over sharing: it is what the op's int8 kernel requires.
        let decided = match fixed {
            Some((scale, zero_point)) => Some(RangeSource::Fixed { scale, zero_point }),
            None if source != id => Some(RangeSource::SharedWith(graph.node(source).name.clone())),
            None => None,
        };
        if let (Some(decided), Op::FakeQuant { range, .. }) =
            (decided, &mut graph.nodes[id.index()].op)
        {
            *range = decided;
        }
    }
    !after.is_empty()
}

/// For every node, the fake-quant node whose observed range it uses, as the fake-quant
/// pass recorded it in the graph (itself when it observes its own).
pub fn range_sources(graph: &Graph) -> Vec<NodeId> {
    graph
        .ids()
        .map(|id| match &graph.node(id).op {
            Op::FakeQuant {
                range: RangeSource::SharedWith(source),
                ..
            } => graph
                .find(source)
                .expect("the fake-quant pass names an existing node"),
            _ => id,
        })
        .collect()
}

/// For every node, the fake-quant node whose range it uses: itself, except a fake-quant
/// read by a quantized concat (and by no other concat), which takes the fake-quant after
/// that concat (or the one that concat's range comes from): the range observed over all
/// joined values. Its other readers (conv2d,
/// dense, add...) take any input parameters.
fn shared_ranges(graph: &Graph) -> Vec<NodeId> {
    let consumers = graph.consumers();
    let direct: Vec<NodeId> = graph
        .ids()
        .map(|id| {
            let Op::FakeQuant { spec, .. } = graph.node(id).op else {
                return id;
            };
            let mut concats = consumers[id.index()]
                .iter()
                .copied()
                .filter(|&r| matches!(graph.node(r).op, Op::Concat { .. }));
            let Some(concat) = concats.next() else {
                return id;
            };
            if concats.any(|c| c != concat) || graph.node(concat).quant.float {
                return id;
            }
            let after = consumers[concat.index()]
                .iter()
                .copied()
                .find(|&c| matches!(graph.node(c).op, Op::FakeQuant { spec: s, .. } if s == spec));
            after.unwrap_or(id)
        })
        .collect();
    // A concat of a concat: follow the chain to the range that is observed.
    let mut resolved = direct.clone();
    for r in &mut resolved {
        while direct[r.index()] != *r {
            *r = direct[r.index()];
        }
    }
    resolved
}
