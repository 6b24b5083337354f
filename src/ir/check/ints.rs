//! Integers known when a block is inlined: arithmetic on `int` parameters
//! (`cin * expand`), `channels(x)`, and the conditions of `if` statements.
//!
//! A block checked on its own does not know its `int` arguments, so values are
//! `Option`s: `None` is "known only at a call". Errors of kind (a tensor in
//! arithmetic) are found then; errors of value (a negative result, a division by
//! zero) only at a call, where they are reported with the call as a label.

use super::{Checker, Ctx, GraphBuilder, Scope, Value};
use crate::codes;
use crate::diagnostics::Diagnostic;
use crate::syntax::ast::{self, BinOp, Condition};

/// The built-in that reads a tensor's channel count (its first dimension).
pub(super) const CHANNELS: &str = "channels";

/// An integer's value; `Ok(None)`: known only at a call. `Err(())`: reported.
pub(super) type IntResult = Result<Option<u64>, ()>;

impl Checker<'_> {
    /// Evaluates an integer expression in `scope`.
    pub(super) fn int_expr(
        &mut self,
        graph: &GraphBuilder,
        ctx: &Ctx,
        scope: &mut Scope,
        e: &ast::Expr,
    ) -> IntResult {
        match e {
            ast::Expr::Number { text, span } => match text.parse::<u64>() {
                Ok(v) => Ok(Some(v)),
                Err(_) => {
                    self.report(
                        ctx,
                        Diagnostic::error(
                            codes::INVALID_INTEGER,
                            format!("`{text}` is not a whole number from 0 to 2^64 - 1"),
                            *span,
                            "expected a non-negative integer",
                        )
                        .with_note("integer expressions work on whole numbers; `/` rounds down"),
                    );
                    Err(())
                }
            },
            ast::Expr::Ident(i) => match self.resolve(ctx, scope, i) {
                Some(Value::Int(v)) => Ok(v.map(|v| v as u64)),
                Some(other) => {
                    let (what, help) = match other {
                        Value::Op(_) => (
                            "an op",
                            "pass integers to arithmetic; ops are called: `act(x)`".to_string(),
                        ),
                        Value::Tensor(_) | Value::Int(_) => (
                            "a tensor",
                            format!("`{CHANNELS}({})` gives its channel count", i.name),
                        ),
                    };
                    let def = scope.bindings.get(&i.name).map(|b| b.span);
                    let mut d = Diagnostic::error(
                        codes::INVALID_INTEGER,
                        format!("`{}` is {what}, not an integer", i.name),
                        i.span,
                        "expected an integer",
                    )
                    .with_help(help);
                    if let Some(def) = def.filter(|_| ctx.module == 0) {
                        d = d.with_label(def, format!("`{}` is defined here", i.name));
                    }
                    self.report(ctx, d);
                    Err(())
                }
                None => Err(()),
            },
            ast::Expr::Call(c) if c.callee.name == CHANNELS => self.channels(graph, ctx, scope, c),
            ast::Expr::Call(_) | ast::Expr::List { .. } | ast::Expr::Str { .. } => {
                let mut d = Diagnostic::error(
                    codes::INVALID_INTEGER,
                    "expected an integer expression",
                    e.span(),
                    "not an integer",
                );
                d = match e {
                    ast::Expr::Call(c) => d.with_note(format!(
                        "`{CHANNELS}(x)` is the only call inside an integer expression; `{}` makes a tensor",
                        c.callee.name
                    )),
                    _ => d.with_help("integers are written as numbers, `int` names, `channels(x)`, and `+ - * /` of them"),
                };
                self.report(ctx, d);
                Err(())
            }
            ast::Expr::Binary { op, lhs, rhs, span } => {
                // Both sides are checked, so that two errors are both reported.
                let a = self.int_expr(graph, ctx, scope, lhs);
                let b = self.int_expr(graph, ctx, scope, rhs);
                let (Some(a), Some(b)) = (a?, b?) else {
                    return Ok(None);
                };
                let value = match op {
                    BinOp::Add => a.checked_add(b),
                    BinOp::Sub => a.checked_sub(b),
                    BinOp::Mul => a.checked_mul(b),
                    BinOp::Div => a.checked_div(b),
                };
                match value {
                    Some(v) => Ok(Some(v)),
                    None => {
                        let (message, help) = match op {
                            BinOp::Sub => (
                                "is negative",
                                "integers in .qat are sizes and counts, never below 0",
                            ),
                            BinOp::Div => ("divides by zero", "the divisor is 0 at this call"),
                            BinOp::Add | BinOp::Mul => {
                                ("is too large", "integers go up to 2^64 - 1")
                            }
                        };
                        // Only a call gives the values: a block checked on its own cannot see this.
                        self.report_at_call(
                            ctx,
                            Diagnostic::error(
                                codes::INVALID_INTEGER,
                                format!("`{e}` {message}"),
                                *span,
                                format!("{a} {} {b} here", op.symbol()),
                            )
                            .with_help(help),
                        );
                        Err(())
                    }
                }
            }
        }
    }

    /// `channels(x)`: the first dimension of the tensor `x`.
    pub(super) fn channels(
        &mut self,
        graph: &GraphBuilder,
        ctx: &Ctx,
        scope: &mut Scope,
        call: &ast::Call,
    ) -> IntResult {
        let tensor = match call.args.as_slice() {
            [ast::Arg {
                name: None,
                value: ast::Expr::Ident(i),
                ..
            }] => i,
            _ => {
                self.report(
                    ctx,
                    Diagnostic::error(
                        codes::INVALID_INTEGER,
                        format!("`{CHANNELS}` takes one tensor"),
                        call.span,
                        "expected `channels(x)` with the name of a tensor",
                    ),
                );
                return Err(());
            }
        };
        match self.resolve(ctx, scope, tensor) {
            Some(Value::Tensor(Some(id))) => {
                Ok(graph.nodes[id.index()].shape.first().map(|&c| c as u64))
            }
            Some(Value::Tensor(None)) => Ok(None),
            Some(Value::Int(_) | Value::Op(_)) => {
                self.report(
                    ctx,
                    Diagnostic::error(
                        codes::INVALID_INTEGER,
                        format!("`{}` is not a tensor", tensor.name),
                        tensor.span,
                        "`channels` reads a tensor's first dimension",
                    ),
                );
                Err(())
            }
            None => Err(()),
        }
    }

    /// Decides a condition; `Ok(None)`: known only at a call.
    pub(super) fn condition(
        &mut self,
        graph: &GraphBuilder,
        ctx: &Ctx,
        scope: &mut Scope,
        c: &Condition,
    ) -> Result<Option<bool>, ()> {
        match c {
            Condition::Compare { lhs, op, rhs, .. } => {
                let a = self.int_expr(graph, ctx, scope, lhs);
                let b = self.int_expr(graph, ctx, scope, rhs);
                Ok(match (a?, b?) {
                    (Some(a), Some(b)) => Some(op.holds(a, b)),
                    _ => None,
                })
            }
            Condition::And(a, b) | Condition::Or(a, b) => {
                let x = self.condition(graph, ctx, scope, a);
                let y = self.condition(graph, ctx, scope, b);
                let (x, y) = (x?, y?);
                let and = matches!(c, Condition::And(..));
                Ok(match (x, y) {
                    (Some(x), Some(y)) => Some(if and { x && y } else { x || y }),
                    // One side decides: `false and ?`, `true or ?`.
                    (Some(v), None) | (None, Some(v)) if v != and => Some(v),
                    _ => None,
                })
            }
        }
    }
}
