//! The editor index: definitions and references recorded while checking, with the facts hover needs.

use super::{BlockRef, Checker, Ctx, GraphBuilder, Scope, Value};
use crate::diagnostics::Span;
use crate::ir::index::{Definition, Detail, Reference, Target, ValueFacts};
use crate::ir::ops::format_shape;
use crate::syntax::ast;

impl Checker<'_> {
    pub(super) fn define_index(
        &mut self,
        ctx: &Ctx,
        span: Span,
        name: &str,
        detail: Detail,
        scope: Span,
    ) {
        if !ctx.inlined() && ctx.module == 0 {
            self.index.definitions.push(Definition {
                span,
                name: name.to_string(),
                detail,
                scope,
                global: false,
                hint: false,
                visible_from: self.statement_end.max(span.end),
            });
        }
    }

    /// Indexes a name bound by `let`, with an inlay hint of its shape and quantization.
    /// `block` is the hover text of the block call that computed it, if any.
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
        self.index.definitions.push(Definition {
            span: name.span,
            name: name.name.clone(),
            detail: Detail::Value {
                value: value_facts(graph, value),
                block: block.map(str::to_string),
            },
            scope,
            global: false,
            hint: true,
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
}

/// Hover text for a bound value, as facts (the text is made when hover asks).
pub(super) fn value_detail(graph: &GraphBuilder, value: Value) -> Detail {
    Detail::Value {
        value: value_facts(graph, value),
        block: None,
    }
}

fn value_facts(graph: &GraphBuilder, value: Value) -> ValueFacts {
    match value {
        Value::Tensor(Some(id)) => {
            let node = &graph.nodes[id.index()];
            ValueFacts::Tensor {
                shape: node.shape.clone(),
                op: node.op.clone(),
                quant: node.quant,
            }
        }
        Value::Tensor(None) => ValueFacts::UnknownTensor,
        Value::Int(v) => ValueFacts::Int(v),
        Value::Op(op) => ValueFacts::Op(op),
    }
}
