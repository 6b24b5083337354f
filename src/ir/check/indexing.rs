//! The editor index: definitions, references and hover text recorded while checking.

use super::{Checker, Ctx, GraphBuilder, Value};
use crate::diagnostics::Span;
use crate::ir::index::{Definition, Reference, Target};
use crate::ir::ops::format_shape;

impl Checker<'_> {
    pub(super) fn define_index(
        &mut self,
        ctx: &Ctx,
        span: Span,
        name: &str,
        detail: String,
        scope: Span,
    ) {
        if !ctx.inlined() && ctx.module == 0 {
            self.index.definitions.push(Definition {
                span,
                name: name.to_string(),
                detail,
                scope,
                global: false,
            });
        }
    }

    pub(super) fn reference(&mut self, ctx: &Ctx, span: Span, target: Target) {
        if !ctx.inlined() && ctx.module == 0 {
            self.index.references.push(Reference { span, target });
        }
    }

    /// Hover text for a bound value: its shape, dtype and quantization when known.
    pub(super) fn value_detail(&self, graph: &GraphBuilder, name: &str, value: Value) -> String {
        match value {
            Value::Tensor(Some(id)) => {
                let node = &graph.nodes[id.index()];
                let mut s = format!(
                    "`{name}: f32{}` = `{}`\n\n",
                    format_shape(&node.shape),
                    node.op
                );
                if node.quant.float {
                    s.push_str("runs in float (`@float`)");
                } else {
                    if node.op.has_weights() {
                        s.push_str(&format!("weights: {}  \n", node.quant.weights));
                    }
                    s.push_str(&format!("activations: {}", node.quant.activations));
                }
                s
            }
            Value::Tensor(None) => format!(
                "`{name}: tensor` (shape depends on the block's inputs, or its call has an error)"
            ),
            Value::Int(Some(v)) => format!("`{name}: int = {v}`"),
            Value::Int(None) => format!("`{name}: int`"),
            Value::Op(Some(op)) => format!("`{name}: op = {op}`"),
            Value::Op(None) => format!("`{name}: op`"),
        }
    }
}
