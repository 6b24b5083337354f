//! Human- and machine-readable views of a graph (`qatc graph`), also used by golden tests.

use std::fmt::Write;

use super::ops::format_shape;
use super::{Graph, Op};

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
        if node.quant.float {
            out.push_str("  @float");
        } else if node.op.has_weights() {
            let _ = write!(out, "  weights={}", node.quant.weights);
        }
        out.push('\n');
    }
    let _ = writeln!(out, "  output %{}\n}}", graph.output.0);
    out
}

/// Graphviz source.
pub fn dot(graph: &Graph) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n",
        graph.name
    );
    for id in graph.ids() {
        let node = graph.node(id);
        let style = match node.op {
            Op::FakeQuant { .. } => ", style=filled, fillcolor=\"#ffe6a8\"",
            Op::Input => ", shape=ellipse",
            _ if node.quant.float => ", style=dashed",
            _ => "",
        };
        let label = format!(
            "{}\\n{}\\n{}",
            node.name,
            node.op,
            format_shape(&node.shape)
        )
        .replace('"', "\\\"");
        let _ = writeln!(out, "  n{} [label=\"{label}\"{style}];", id.0);
        for input in &node.inputs {
            let _ = writeln!(out, "  n{} -> n{};", input.0, id.0);
        }
    }
    out.push_str("}\n");
    out
}

pub fn json(graph: &Graph) -> String {
    serde_json::to_string_pretty(graph).expect("graphs serialize")
}
