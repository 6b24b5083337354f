//! Warnings about code that checks: unused bindings (W0001) and `@float` ops between
//! quantized ones (W0003).

use std::collections::HashSet;

use super::{Binding, Checker, Scope};
use crate::codes;
use crate::diagnostics::{Diagnostic, Span};
use crate::ir::{Graph, Op};

/// W0003: a `@float` op between quantized ones costs a dequantize before it and a
/// quantize after it in the deployed int8 model.
pub(super) fn float_sandwiches(graph: &Graph) -> Vec<Diagnostic> {
    let consumers = graph.consumers();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for id in graph.ids() {
        let node = graph.node(id);
        if !node.quant.float || node.op.shares_input_quant() || matches!(node.op, Op::Input) {
            continue;
        }
        let producer = node
            .inputs
            .iter()
            .map(|&i| graph.node(i))
            .find(|n| !n.quant.float || matches!(n.op, Op::Input));
        let consumer = consumers[id.index()]
            .iter()
            .map(|&c| graph.node(c))
            .find(|n| !n.quant.float);
        if let (Some(p), Some(c)) = (producer, consumer) {
            if !seen.insert(node.span) {
                continue;
            }
            out.push(
                Diagnostic::warning(
                    codes::FLOAT_SANDWICH,
                    format!("float op `{}` sits between quantized ops", node.name),
                    node.span,
                    "runs in float",
                )
                .with_label(p.span, "quantized value comes from here")
                .with_label(c.span, "and goes back to a quantized op here")
                .with_note(
                    "the int8 model will dequantize before this op and quantize again after it",
                )
                .with_help(
                    "keep the neighbours in float too, or drop `@float` if the op tolerates int8",
                ),
            );
        }
    }
    out
}

impl Checker<'_> {
    /// W0001 for every binding of a body that nothing read (after the body's own errors).
    pub(super) fn unused(&mut self, scope: &Scope) {
        let mut unused: Vec<(&String, &Binding)> = scope
            .bindings
            .iter()
            .filter(|(_, b)| !b.used && !b.poisoned)
            .collect();
        unused.sort_by_key(|(_, b)| b.span.start);
        let warnings: Vec<Diagnostic> = unused
            .into_iter()
            .map(|(name, b)| unused_warning(name, b.span))
            .collect();
        self.diagnostics.extend(warnings);
    }
}

pub(super) fn unused_warning(name: &str, span: Span) -> Diagnostic {
    Diagnostic::warning(
        codes::UNUSED_BINDING,
        format!("unused binding `{name}`"),
        span,
        "computed but never used",
    )
    .with_help("remove it, or use it in a later op or the output")
}
