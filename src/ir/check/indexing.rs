//! The editor index: definitions, references and hover text recorded while checking.

use super::{BlockRef, Checker, Ctx, GraphBuilder, Scope, Value};
use crate::diagnostics::Span;
use crate::ir::index::{Definition, Reference, Target};
use crate::ir::ops::format_shape;
use crate::syntax::ast;

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
                hint: None,
                visible_from: self.statement_end.max(span.end),
            });
        }
    }

    /// Indexes a name bound by `let`: hover text, and the inlay hint with its shape and
    /// quantization. `block` is the hover text of the block call that computed it, if any.
    pub(super) fn define_value_index(
        &mut self,
        ctx: &Ctx,
        graph: &GraphBuilder,
        name: &ast::Ident,
        value: Value,
        scope: Span,
        block: Option<&str>,
    ) {
        if ctx.inlined() || ctx.module != 0 {
            return;
        }
        let mut detail = self.value_detail(graph, &name.name, value);
        if let Some(call) = block {
            // The first line (name and shape) stays; the block replaces its last inner op.
            let (head, rest) = detail.split_once("\n\n").unwrap_or((&detail, ""));
            let head = head.split(" = ").next().unwrap_or(head);
            detail = format!("{head}\n\n{call}\n\n{rest}");
        }
        let hint = match value {
            Value::Tensor(Some(id)) => {
                let node = &graph.nodes[id.index()];
                let quant = if node.quant.float {
                    "float".to_string()
                } else if node.op.has_weights() {
                    format!(
                        "W{}A{}",
                        node.quant.weights.bits, node.quant.activations.bits
                    )
                } else {
                    format!("A{}", node.quant.activations.bits)
                };
                Some(format!("{} {quant}", format_shape(&node.shape)))
            }
            Value::Tensor(None) | Value::Int(_) | Value::Op(_) => None,
        };
        self.index.definitions.push(Definition {
            span: name.span,
            name: name.name.clone(),
            detail,
            scope,
            global: false,
            hint,
            visible_from: self.statement_end.max(name.span.end),
        });
    }

    /// Hover text for a block call: the block's signature and what it was called with.
    pub(super) fn block_call_detail(
        &self,
        graph: &GraphBuilder,
        scope: &Scope,
        block: BlockRef,
        call: &ast::Call,
    ) -> String {
        let args: Vec<String> = call
            .args
            .iter()
            .map(|a| {
                let value = match &a.value {
                    ast::Expr::Ident(i) => match scope.bindings.get(&i.name).map(|b| b.value) {
                        Some(Value::Tensor(Some(id))) => format!(
                            "{}: f32{}",
                            i.name,
                            format_shape(&graph.nodes[id.index()].shape)
                        ),
                        Some(Value::Int(Some(v))) => format!("{} = {v}", i.name),
                        _ => i.name.clone(),
                    },
                    ast::Expr::Number { text, .. } => text.clone(),
                    ast::Expr::Call(c) => format!("{}(...)", c.callee.name),
                    ast::Expr::List { .. } => "[...]".to_string(),
                    other @ (ast::Expr::Str { .. } | ast::Expr::Binary { .. }) => other.to_string(),
                };
                match &a.name {
                    Some(n) => format!("`{} = {value}`", n.name),
                    None => format!("`{value}`"),
                }
            })
            .collect();
        let from = if block.module == 0 {
            String::new()
        } else {
            format!(
                " (from `{}`)",
                self.modules.list[block.module - 1].path.display()
            )
        };
        format!(
            "block call{from}:\n```qat\n{}\n```\ncalled with {}",
            block.signature(),
            if args.is_empty() {
                "no arguments".to_string()
            } else {
                args.join(", ")
            }
        )
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
