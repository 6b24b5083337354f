//! Human- and machine-readable views of a graph (`qatc graph`), also used by golden tests.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::ops::format_shape;
use super::{BlockCallId, Graph, Node, NodeId, Op};

/// One line per node: `%3 x: [32, 26, 26] = conv2d+relu(...)(%0)  w=int8(...)`.
pub fn text(graph: &Graph) -> String {
    let mut out = format!("graph {} {{\n", graph.name);
    for id in graph.ids() {
        let node = graph.node(id);
        let args = node
            .inputs
            .iter()
            .map(|i| format!("%{}", i.0))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(
            out,
            "  %{} {}: {} = {}({args})",
            id.0,
            node.name,
            format_shape(&node.shape),
            node.op
        );
        if let Some(annotation) = annotation(node) {
            let _ = write!(out, "  {annotation}");
        }
        out.push('\n');
    }
    let _ = writeln!(out, "  output %{}\n}}", graph.output.0);
    out
}

/// What a node's quantization says beyond its op: `@float`, or its weights' spec.
pub fn annotation(node: &Node) -> Option<String> {
    if node.quant.float {
        Some("@float".into())
    } else if node.op.has_weights() {
        Some(format!("weights={}", node.quant.weights))
    } else {
        None
    }
}

/// Graphviz source: one box per node with its annotation, the nodes of each block
/// call inside a cluster named by the call's binding (nested as the calls are).
pub fn dot(graph: &Graph) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n",
        graph.name
    );
    dot_cluster(graph, None, &block_members(graph), 1, &mut out);
    for id in graph.ids() {
        for input in &graph.node(id).inputs {
            let _ = writeln!(out, "  n{} -> n{};", input.0, id.0);
        }
    }
    out.push_str("}\n");
    out
}

/// The nodes made directly by each block call (`None`: by the model itself).
pub fn block_members(graph: &Graph) -> BTreeMap<Option<BlockCallId>, Vec<NodeId>> {
    let mut members: BTreeMap<Option<BlockCallId>, Vec<NodeId>> = BTreeMap::new();
    for id in graph.ids() {
        members.entry(graph.node(id).block).or_default().push(id);
    }
    members
}

/// The block calls made directly by `caller` (`None`: by the model).
pub fn calls_in(
    graph: &Graph,
    caller: Option<BlockCallId>,
) -> impl Iterator<Item = BlockCallId> + '_ {
    graph
        .blocks
        .iter()
        .enumerate()
        .filter(move |(_, call)| call.parent == caller)
        .map(|(i, _)| BlockCallId(i as u32))
}

/// How a block call is labelled: `stage1 = res_block`.
pub fn call_label(graph: &Graph, call: BlockCallId) -> String {
    let call = &graph.blocks[call.index()];
    format!("{} = {}", call.binding, call.block)
}

/// The nodes `caller` makes and, as nested subgraphs, the block calls it makes.
fn dot_cluster(
    graph: &Graph,
    caller: Option<BlockCallId>,
    members: &BTreeMap<Option<BlockCallId>, Vec<NodeId>>,
    depth: usize,
    out: &mut String,
) {
    let indent = "  ".repeat(depth);
    for &id in members.get(&caller).into_iter().flatten() {
        let node = graph.node(id);
        let style = match node.op {
            Op::FakeQuant { .. } => ", style=filled, fillcolor=\"#ffe6a8\"",
            Op::Input => ", shape=ellipse",
            _ if node.quant.float => ", style=dashed",
            _ => "",
        };
        let mut label = format!(
            "{}\\n{}\\n{}",
            node.name,
            node.op,
            format_shape(&node.shape)
        );
        if let Some(annotation) = annotation(node) {
            let _ = write!(label, "\\n{annotation}");
        }
        let label = label.replace('"', "\\\"");
        let _ = writeln!(out, "{indent}n{} [label=\"{label}\"{style}];", id.0);
    }
    for call in calls_in(graph, caller) {
        let _ = writeln!(
            out,
            "{indent}subgraph cluster_{} {{\n{indent}  label=\"{}\";\n{indent}  style=rounded;",
            call.0,
            call_label(graph, call)
        );
        dot_cluster(graph, Some(call), members, depth + 1, out);
        let _ = writeln!(out, "{indent}}}");
    }
}

pub fn json(graph: &Graph) -> String {
    serde_json::to_string_pretty(graph).expect("graphs serialize")
}
