//! Block calls: cycles of calls (E0016), arguments bound to parameters, and the
//! body inlined with the caller's shapes.

use std::collections::HashMap;

use super::{Binding, BlockRef, Checker, Ctx, GraphBuilder, Scope, Value};
use crate::codes;
use crate::diagnostics::{did_you_mean, Diagnostic, Span};
use crate::ir::index::Target;
use crate::ir::NodeQuant;
use crate::limits::{MAX_BLOCK_DEPTH, MAX_GRAPH_NODES};
use crate::syntax::ast;

impl<'a> Checker<'a> {
    /// E0016: reports each cycle of block calls in this file once, at the call that closes it.
    pub(super) fn recursion(&mut self, file: &'a ast::File) {
        let blocks: Vec<&ast::BlockDef> = file
            .items
            .iter()
            .filter_map(|i| {
                if let ast::Item::Block(b) = i {
                    Some(b)
                } else {
                    None
                }
            })
            .collect();
        let calls = |b: &'a ast::BlockDef| -> Vec<&'a ast::Call> {
            b.statements
                .iter()
                .filter_map(|s| {
                    if let ast::Statement::Let(l) = s {
                        Some(&l.call)
                    } else {
                        None
                    }
                })
                .collect()
        };
        // Depth-first search; `state`: 0 unvisited, 1 on the stack, 2 done.
        let index: HashMap<&str, usize> = blocks
            .iter()
            .enumerate()
            .map(|(i, b)| (b.name.name.as_str(), i))
            .collect();
        let mut state = vec![0u8; blocks.len()];
        for root in 0..blocks.len() {
            if state[root] != 0 {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
            state[root] = 1;
            while let Some(&mut (b, ref mut next)) = stack.last_mut() {
                let cs = calls(blocks[b]);
                if *next >= cs.len() {
                    state[b] = 2;
                    stack.pop();
                    continue;
                }
                let call = cs[*next];
                *next += 1;
                let Some(&callee) = index.get(call.callee.name.as_str()) else {
                    continue;
                };
                match state[callee] {
                    0 => {
                        state[callee] = 1;
                        stack.push((callee, 0));
                    }
                    1 => {
                        let at = stack.iter().position(|&(x, _)| x == callee).unwrap_or(0);
                        let path: Vec<&str> = stack[at..]
                            .iter()
                            .map(|&(x, _)| blocks[x].name.name.as_str())
                            .collect();
                        let message = if path.len() == 1 {
                            format!("block `{}` calls itself", path[0])
                        } else {
                            format!(
                                "blocks call each other in a cycle: {} -> {}",
                                path.join(" -> "),
                                path[0]
                            )
                        };
                        self.diagnostics.push(
                            Diagnostic::error(codes::RECURSIVE_BLOCK, message, call.callee.span, "this call closes the cycle")
                                .with_label(blocks[callee].name.span, format!("`{}` is defined here", blocks[callee].name.name))
                                .with_note("blocks are inlined into the model, so a block cannot reach itself")
                                .with_help("unroll the repetition: call the block several times from the model"),
                        );
                    }
                    _ => {}
                }
            }
        }
    }

    /// Checks a call of a block and inlines its body; returns one value per bound name.
    pub(super) fn block_call(
        &mut self,
        graph: &mut GraphBuilder,
        ctx: &mut Ctx<'a>,
        scope: &mut Scope,
        binding: &'a ast::LetBinding,
        block: BlockRef<'a>,
        quant: NodeQuant,
    ) -> Vec<Value> {
        let call = &binding.call;
        let poisoned = vec![Value::Tensor(None); binding.names.len()];
        let target = if block.module == 0 {
            Target::Local(block.def.name.span)
        } else {
            Target::External {
                path: self.modules.list[block.module - 1].path.clone(),
                span: block.def.name.span,
            }
        };
        self.reference(ctx, call.callee.span, target);
        let params = &block.def.params;
        // Bind arguments to parameters: positional in order, then by name.
        let mut bound: Vec<Option<(Value, Span)>> = vec![None; params.len()];
        let mut ok = true;
        let mut position = 0;
        for arg in &call.args {
            let slot = match &arg.name {
                None => {
                    let p = position;
                    position += 1;
                    if p >= params.len() {
                        ok = false;
                        self.report(
                            ctx,
                            Diagnostic::error(
                                codes::WRONG_INPUT_COUNT,
                                format!(
                                    "block `{}` takes {} argument{}, got more",
                                    block.def.name.name,
                                    params.len(),
                                    if params.len() == 1 { "" } else { "s" }
                                ),
                                arg.span,
                                "extra argument",
                            )
                            .with_note(block.signature()),
                        );
                        continue;
                    }
                    p
                }
                Some(name) => match params.iter().position(|p| p.name.name == name.name) {
                    Some(p) => {
                        // `filters = 8` names the parameter: rename and hover follow it.
                        let span = params[p].name.span;
                        let target = if block.module == 0 {
                            Target::Local(span)
                        } else {
                            Target::External {
                                path: self.modules.list[block.module - 1].path.clone(),
                                span,
                            }
                        };
                        self.reference(ctx, name.span, target);
                        p
                    }
                    None => {
                        ok = false;
                        let mut d = Diagnostic::error(
                            codes::UNKNOWN_ARGUMENT,
                            format!(
                                "block `{}` has no parameter `{}`",
                                block.def.name.name, name.name
                            ),
                            name.span,
                            "unknown argument",
                        );
                        if let Some(s) =
                            did_you_mean(&name.name, params.iter().map(|p| p.name.name.as_str()))
                        {
                            d = d.with_suggestion(name.span, s);
                        } else {
                            d = d.with_note(block.signature());
                        }
                        self.report(ctx, d);
                        continue;
                    }
                },
            };
            if let Some((_, first)) = bound[slot] {
                ok = false;
                self.report(
                    ctx,
                    Diagnostic::error(
                        codes::DUPLICATE_DEFINITION,
                        format!("parameter `{}` is given twice", params[slot].name.name),
                        arg.span,
                        "given again here",
                    )
                    .with_label(first, "first given here"),
                );
                continue;
            }
            let param = &params[slot];
            let value = match (param.ty.name.as_str(), &arg.value) {
                ("int", ast::Expr::Number { text, .. }) => match text.parse::<usize>() {
                    Ok(v) => Some(Value::Int(Some(v))),
                    Err(_) => None,
                },
                ("op", _) => match self.op_argument(ctx, scope, &arg.value, block, param) {
                    Ok(op) => Some(Value::Op(op)),
                    Err(()) => {
                        ok = false;
                        continue;
                    }
                },
                (_, ast::Expr::Ident(ident)) => match self.resolve(ctx, scope, ident) {
                    Some(v) => Some(v),
                    None => {
                        ok = false;
                        continue;
                    }
                },
                ("int", ast::Expr::Binary { .. } | ast::Expr::Call(_)) => {
                    match self.int_expr(graph, ctx, scope, &arg.value) {
                        Ok(v) => Some(Value::Int(v.and_then(|v| usize::try_from(v).ok()))),
                        Err(()) => {
                            ok = false;
                            continue;
                        }
                    }
                }
                _ => None,
            };
            let expected_int = param.ty.name == "int";
            let fits = match value {
                Some(Value::Int(_)) => expected_int,
                Some(Value::Tensor(_)) => !expected_int,
                Some(Value::Op(_)) => param.ty.name == "op",
                None => false,
            };
            if !fits {
                ok = false;
                // `-1` or `10^30` are integers, just not ones an `int` parameter holds.
                let whole_number = matches!(&arg.value, ast::Expr::Number { text, .. }
                    if text.trim_start_matches('-').bytes().all(|b| b.is_ascii_digit()));
                let (expected, got) = if expected_int && whole_number {
                    (
                        "an integer from 0 to 2^64 - 1",
                        "out of range (each use of `int` parameters checks its own range too)",
                    )
                } else if expected_int {
                    ("an integer", "this is not an integer")
                } else {
                    ("a tensor", "this is not a tensor")
                };
                let mut d = Diagnostic::error(
                    codes::BLOCK_ARGUMENT_TYPE,
                    format!(
                        "block `{}` expects {expected} for `{}`",
                        block.def.name.name, param.name.name
                    ),
                    arg.value.span(),
                    got,
                );
                if block.module == 0 {
                    d = d.with_label(
                        param.span,
                        format!("`{}` is declared `{}` here", param.name.name, param.ty.name),
                    );
                } else {
                    d = d.with_note(format!(
                        "declared as `{}: {}` in {}",
                        param.name.name,
                        param.ty.name,
                        self.modules.list[block.module - 1].path.display()
                    ));
                }
                if expected_int {
                    d = d.with_help("pass a whole number, e.g. `filters = 32`, or an `int` parameter of the enclosing block");
                } else {
                    d = d.with_help("pass the name of a tensor value bound by `input` or `let`");
                }
                self.report(ctx, d);
                continue;
            }
            bound[slot] = Some((value.unwrap_or(Value::Tensor(None)), arg.span));
        }
        for (p, b) in params.iter().zip(&bound) {
            if b.is_none() && ok && p.default.is_none() {
                ok = false;
                let mut d = Diagnostic::error(
                    codes::MISSING_ARGUMENT,
                    format!(
                        "block `{}` needs the argument `{}`",
                        block.def.name.name, p.name.name
                    ),
                    call.span,
                    format!("`{}` is missing", p.name.name),
                )
                .with_note(block.signature());
                // An int gets a number to edit; a tensor, a name that may already be bound.
                let value = if p.ty.name == "int" {
                    "1"
                } else {
                    p.name.name.as_str()
                };
                d = d.with_fix(
                    format!("add `{} = {value}`", p.name.name),
                    super::calls::insertion_point(call),
                    super::calls::insert_argument(call, &p.name.name, value),
                );
                if block.module == 0 {
                    d = d.with_label(p.span, "declared here");
                }
                self.report(ctx, d);
            }
        }
        let results = block.results();
        if results.len() != binding.names.len() && !results.is_empty() {
            let d = Diagnostic::error(
                codes::WRONG_RESULT_COUNT,
                format!(
                    "block `{}` has {} result{}, but {} name{} bound",
                    block.def.name.name,
                    results.len(),
                    if results.len() == 1 { "" } else { "s" },
                    binding.names.len(),
                    if binding.names.len() == 1 {
                        " is"
                    } else {
                        "s are"
                    }
                ),
                Span::new(
                    binding.names[0].span.start,
                    binding.names[binding.names.len() - 1].span.end,
                ),
                format!(
                    "expected {} name{}",
                    results.len(),
                    if results.len() == 1 { "" } else { "s" }
                ),
            )
            .with_note(block.signature())
            .with_help(format!(
                "bind them all: `let {} = {}(...)`",
                results.join(", "),
                block.def.name.name
            ));
            self.report(ctx, d);
            return poisoned;
        }
        // Inline only when every tensor argument is known and no call in the chain repeats.
        let known = bound.iter().zip(params).all(|(b, p)| match b {
            Some((Value::Tensor(Some(_)) | Value::Int(Some(_)) | Value::Op(Some(_)), _)) => true,
            Some((Value::Tensor(None) | Value::Int(None) | Value::Op(None), _)) => false,
            None => p.default.is_some(),
        });
        let recursive = ctx.inlining.iter().any(|(n, _)| *n == block.def.name.name);
        if !ok || !known || recursive || self.broken_imports && block.module != 0 || graph.limit_hit
        {
            return poisoned;
        }
        if ctx.inlining.len() >= MAX_BLOCK_DEPTH {
            graph.limit_hit = true;
            let d = self.limit_error(
                ctx,
                call,
                Diagnostic::error(
                    codes::TOO_DEEP,
                    format!("block calls nest more than {MAX_BLOCK_DEPTH} deep"),
                    call.span,
                    format!(
                        "this call of `{}` would be level {}",
                        block.def.name.name,
                        MAX_BLOCK_DEPTH + 1
                    ),
                ),
            );
            self.diagnostics.push(d.with_help(
                "blocks are inlined into the model: call blocks one after another from the model instead of inside each other",
            ));
            return poisoned;
        }
        if self.statements > MAX_GRAPH_NODES {
            graph.limit_hit = true;
            let d = self.limit_error(
                ctx,
                call,
                Diagnostic::error(
                    codes::GRAPH_TOO_LARGE,
                    format!(
                        "the model grows past {MAX_GRAPH_NODES} nodes once its blocks are inlined"
                    ),
                    call.span,
                    format!(
                        "inlining this call of `{}` passes the limit",
                        block.def.name.name
                    ),
                ),
            );
            self.diagnostics.push(d.with_note(
                "every call of a block copies its body; a block that calls another block twice doubles the graph at each level",
            ));
            return poisoned;
        }
        let site = if ctx.module == 0 {
            call.span
        } else {
            ctx.inlining.last().map_or(call.span, |s| s.1)
        };
        let mut inner = Ctx {
            module: block.module,
            prefix: format!("{}{}.", ctx.prefix, self.node_name(graph, ctx, binding)),
            quant,
            inlining: ctx.inlining.clone(),
        };
        inner.inlining.push((block.def.name.name.as_str(), site));
        // Parameters in order: a default is evaluated in the callee, from the ones before it.
        let mut inner_scope = Scope::default();
        for (p, b) in params.iter().zip(&bound) {
            let value = match (b, &p.default) {
                (Some((v, _)), _) => *v,
                (None, Some(default)) => match p.ty.name.as_str() {
                    "op" => match default {
                        ast::Expr::Ident(i) => {
                            Value::Op(crate::ir::ops::lookup(&i.name).map(|d| d.name))
                        }
                        _ => Value::Op(None),
                    },
                    _ => match self.int_expr(graph, &inner, &mut inner_scope, default) {
                        Ok(Some(v)) => Value::Int(usize::try_from(v).ok()),
                        Ok(None) | Err(()) => return poisoned,
                    },
                },
                (None, None) => return poisoned,
            };
            inner_scope.bindings.insert(
                p.name.name.clone(),
                Binding {
                    value,
                    span: p.name.span,
                    used: true,
                    poisoned: false,
                },
            );
        }
        let caller = graph.enter_block(&binding.names[0].name, &block.def.name.name);
        let (_, output) = self.body(
            graph,
            &mut inner,
            &mut inner_scope,
            &block.def.statements,
            Some(block.def),
            block.def.span,
        );
        graph.current_block = caller;
        match output {
            Some(values) if values.len() == binding.names.len() => values,
            _ => poisoned,
        }
    }

    /// A resource limit passed while inlining: reported at the model's outermost call
    /// (in this file), with the call that passed it as a second label.
    fn limit_error(&self, ctx: &Ctx, call: &ast::Call, d: Diagnostic) -> Diagnostic {
        let Some(&(outer, site)) = ctx.inlining.first() else {
            return d;
        };
        let mut d = d;
        let inner = std::mem::replace(
            &mut d.primary,
            crate::diagnostics::Label {
                span: site,
                message: format!("in this call of `{outer}`"),
            },
        );
        if ctx.module == 0 && call.span != site {
            d = d.with_label(inner.span, inner.message);
        } else {
            d = d.with_note(inner.message);
        }
        d
    }

    /// The op given to an `op` parameter: an op's name, or an `op` parameter of the
    /// enclosing block. `Ok(None)`: an `op` parameter not known until a call.
    pub(super) fn op_argument(
        &mut self,
        ctx: &Ctx,
        scope: &mut Scope,
        value: &ast::Expr,
        block: BlockRef,
        param: &ast::Param,
    ) -> Result<Option<&'static str>, ()> {
        let ident = match value {
            ast::Expr::Ident(i) => i,
            other => {
                self.report(
                    ctx,
                    Diagnostic::error(
                        codes::INVALID_BLOCK_PARAMETER,
                        format!(
                            "`{}` of block `{}` takes an op",
                            param.name.name, block.def.name.name
                        ),
                        other.span(),
                        "expected the name of an op, e.g. `relu6`",
                    ),
                );
                return Err(());
            }
        };
        if let Some(b) = scope.bindings.get_mut(&ident.name) {
            b.used = true;
            let (v, def) = (b.value, b.span);
            self.reference(ctx, ident.span, Target::Local(def));
            if let Value::Op(op) = v {
                return Ok(op);
            }
            self.report(
                ctx,
                Diagnostic::error(
                    codes::INVALID_BLOCK_PARAMETER,
                    format!("`{}` is not an op", ident.name),
                    ident.span,
                    format!(
                        "`{}` of block `{}` takes an op",
                        param.name.name, block.def.name.name
                    ),
                )
                .with_label(def, format!("`{}` is defined here", ident.name)),
            );
            return Err(());
        }
        let Some(def) = crate::ir::ops::lookup(&ident.name) else {
            let mut d = Diagnostic::error(
                codes::INVALID_BLOCK_PARAMETER,
                format!("unknown op `{}`", ident.name),
                ident.span,
                format!(
                    "`{}` of block `{}` takes an op",
                    param.name.name, block.def.name.name
                ),
            );
            if let Some(s) = did_you_mean(&ident.name, crate::ir::ops::OPS.iter().map(|o| o.name)) {
                d = d.with_help(format!("did you mean `{s}`?"));
            }
            self.report(ctx, d);
            return Err(());
        };
        // Called as `act(x)`: one tensor in, nothing else to say.
        let required: Vec<&str> = def
            .args
            .iter()
            .filter(|a| a.default.is_none())
            .map(|a| a.name)
            .collect();
        if def.inputs != 1 || def.variadic || !required.is_empty() {
            let why = if required.is_empty() {
                format!("`{}` takes {} tensor inputs", def.name, def.inputs)
            } else {
                format!("`{}` needs `{}`", def.name, required.join("`, `"))
            };
            self.report(
                ctx,
                Diagnostic::error(
                    codes::INVALID_BLOCK_PARAMETER,
                    format!("`{}` cannot be passed as an op", def.name),
                    ident.span,
                    why,
                )
                .with_note("an `op` parameter is called with one tensor and no arguments: `act(x)`")
                .with_help("pass an activation like `relu`, `relu6`, `hardswish` or `sigmoid`"),
            );
            return Err(());
        }
        self.reference(ctx, ident.span, Target::Op(def.name));
        Ok(Some(def.name))
    }
}
