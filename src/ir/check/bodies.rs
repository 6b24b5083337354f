//! Models and block bodies: parameters, `input`, `let` and `output` statements, and
//! the names they bind.

use super::indexing::value_detail;
use super::lints::unused_warning;
use super::{Binding, BlockRef, Checker, Ctx, GraphBuilder, Scope, Value};
use crate::codes;
use crate::diagnostics::{did_you_mean, Diagnostic, Span};
use crate::ir::index::{Definition, Detail, Target};
use crate::ir::ops::{self, format_shape};
use crate::ir::{Graph, NodeId, Op};
use crate::limits::{MAX_ARG_INT, MAX_MODEL_PARAMETERS, MAX_TENSOR_ELEMENTS};
use crate::syntax::ast;

impl<'a> Checker<'a> {
    /// Checks a block on its own, in the namespace of `module` (0: this file).
    pub(super) fn check_block(&mut self, b: &'a ast::BlockDef, module: usize) {
        let mut ctx = Ctx {
            module,
            prefix: format!("{}.", b.name.name),
            quant: self.default_quant(),
            inlining: Vec::new(),
        };
        let mut scope = Scope::default();
        let block = BlockRef { module, def: b };
        self.index.definitions.push(Definition {
            span: b.name.span,
            name: b.name.name.clone(),
            detail: Detail::Text(format!("```qat\n{}\n```", block.signature())),
            scope: self.file_span,
            global: true,
            hint: false,
            visible_from: 0,
        });
        let graph = GraphBuilder::default();
        // Parameters are visible from their own name on.
        self.statement_end = 0;
        for p in &b.params {
            let value = match p.ty.name.as_str() {
                "tensor" => {
                    if let Some(d) = &p.default {
                        self.diagnostics.push(
                            Diagnostic::error(
                                codes::INVALID_BLOCK_PARAMETER,
                                format!("tensor parameter `{}` cannot have a default", p.name.name),
                                d.span(),
                                "a default value for a tensor",
                            )
                            .with_help("every call passes its tensors; defaults are for `int` and `op` parameters"),
                        );
                    }
                    Value::Tensor(None)
                }
                "int" => {
                    // The default's kind is checked here; its value only at a call that uses it.
                    if let Some(d) = &p.default {
                        let _ = self.int_expr(&graph, &ctx, &mut scope, d);
                    }
                    Value::Int(None)
                }
                "op" => match &p.default {
                    Some(d) => Value::Op(
                        self.op_argument(&ctx, &mut scope, d, block, p)
                            .ok()
                            .flatten(),
                    ),
                    None => Value::Op(None),
                },
                other => {
                    let mut d = Diagnostic::error(
                        codes::INVALID_INPUT_TYPE,
                        format!("unknown parameter type `{other}`"),
                        p.ty.span,
                        "expected `tensor`, `int` or `op`",
                    );
                    if let Some(s) = did_you_mean(other, ["tensor", "int", "op"]) {
                        d = d.with_suggestion(p.ty.span, s);
                    }
                    self.diagnostics.push(d);
                    Value::Tensor(None)
                }
            };
            if let Some(first) = scope.bindings.get(&p.name.name) {
                let first = first.span;
                self.diagnostics.push(
                    Diagnostic::error(
                        codes::DUPLICATE_DEFINITION,
                        format!("parameter `{}` is declared twice", p.name.name),
                        p.name.span,
                        "declared again here",
                    )
                    .with_label(first, "first declared here"),
                );
                continue;
            }
            self.define_index(
                &ctx,
                p.name.span,
                &p.name.name,
                Detail::Text(format!(
                    "`{}: {}` (parameter of block `{}`)",
                    p.name.name, p.ty.name, b.name.name
                )),
                b.span,
            );
            scope.bindings.insert(
                p.name.name.clone(),
                Binding {
                    value,
                    span: p.name.span,
                    used: false,
                    poisoned: false,
                },
            );
        }
        let mut graph = graph;
        self.body(
            &mut graph,
            &mut ctx,
            &mut scope,
            &b.statements,
            Some(b),
            b.span,
        );
        self.unused(&scope);
    }

    pub(super) fn check_model(&mut self, model: &'a ast::Model) -> Option<Graph> {
        let mut ctx = Ctx {
            module: 0,
            prefix: String::new(),
            quant: self.default_quant(),
            inlining: Vec::new(),
        };
        let mut scope = Scope::default();
        let mut graph = GraphBuilder::default();
        self.index.definitions.push(Definition {
            span: model.name.span,
            name: model.name.name.clone(),
            detail: Detail::Text(format!("model `{}`", model.name.name)),
            scope: self.file_span,
            global: true,
            hint: false,
            visible_from: 0,
        });
        let (inputs, outputs) = self.body(
            &mut graph,
            &mut ctx,
            &mut scope,
            &model.statements,
            None,
            model.span,
        );
        // An `input` with an error of its own was reported already.
        let declared = model
            .statements
            .iter()
            .any(|s| matches!(s, ast::Statement::Input(_)));
        if inputs.is_empty() && !declared {
            self.diagnostics.push(
                Diagnostic::error(
                    codes::INVALID_INPUT_TYPE,
                    format!("model `{}` has no input", model.name.name),
                    model.name.span,
                    "no `input` statement in this model",
                )
                .with_help("declare the input first: `input image: f32[1, 28, 28]`"),
            );
        }
        if outputs.is_some() {
            self.unused(&scope);
        }
        let output = match outputs {
            None => {
                self.diagnostics.push(
                    Diagnostic::error(
                        codes::INVALID_OUTPUT,
                        format!("model `{}` has no output", model.name.name),
                        model.name.span,
                        "no `output` statement in this model",
                    )
                    .with_help("end the model with `output <name>`, naming the value it predicts"),
                );
                self.unused(&scope);
                return None;
            }
            Some(values) => match values.first() {
                Some(Value::Tensor(Some(id))) => *id,
                _ => return None,
            },
        };
        let parameters = graph
            .nodes
            .iter()
            .fold(0u64, |n, node| n.saturating_add(node.op.parameter_count()));
        if parameters > MAX_MODEL_PARAMETERS {
            self.diagnostics.push(
                Diagnostic::error(
                    codes::TOO_MANY_PARAMETERS,
                    format!("model `{}` has {parameters} parameters", model.name.name),
                    model.name.span,
                    format!("more than {MAX_MODEL_PARAMETERS} parameters in one model"),
                )
                .with_help("pool or stride before `dense` layers, or use fewer units or filters"),
            );
            return None;
        }
        Some(Graph {
            name: model.name.name.clone(),
            nodes: graph.nodes,
            inputs,
            output,
            blocks: graph.blocks,
        })
    }

    /// Checks the statements of a model (`block` is `None`) or block; returns the model's
    /// inputs and the values its `output` names (`None` when there is no output statement).
    pub(super) fn body(
        &mut self,
        graph: &mut GraphBuilder,
        ctx: &mut Ctx<'a>,
        scope: &mut Scope,
        statements: &'a [ast::Statement],
        block: Option<&'a ast::BlockDef>,
        item_span: Span,
    ) -> (Vec<NodeId>, Option<Vec<Value>>) {
        let mut inputs = Vec::new();
        let mut output: Option<Vec<Value>> = None;
        let mut output_seen: Option<Span> = None;
        for statement in statements {
            self.statements += 1;
            self.statement_end = statement.span().end;
            match statement {
                ast::Statement::Input(input) => {
                    if let Some(b) = block {
                        let d = Diagnostic::error(
                            codes::INVALID_INPUT_TYPE,
                            "blocks take their inputs as parameters",
                            input.span,
                            "`input` is only allowed in a model",
                        )
                        .with_help(format!(
                            "add a parameter instead: `block {}({}: tensor, ...)`",
                            b.name.name, input.name.name
                        ));
                        self.report(ctx, d);
                        continue;
                    }
                    if let Some(id) = self.input(graph, ctx, scope, input, item_span) {
                        inputs.push(id);
                    }
                }
                ast::Statement::Let(binding) => {
                    self.let_binding(graph, ctx, scope, binding, item_span)
                }
                ast::Statement::IntLet(l) => self.int_let(graph, ctx, scope, l, item_span),
                ast::Statement::If(stmt) => self.if_statement(graph, ctx, scope, stmt, item_span),
                ast::Statement::Output(decl) => {
                    if let Some(first) = output_seen.replace(decl.span) {
                        let what = if block.is_some() {
                            "a block"
                        } else {
                            "a model"
                        };
                        let d = Diagnostic::error(
                            codes::INVALID_OUTPUT,
                            format!("{what} has one `output` statement"),
                            decl.span,
                            "second output statement",
                        )
                        .with_label(first, "first one here");
                        self.report(ctx, d);
                        continue;
                    }
                    if block.is_none() && decl.names.len() > 1 {
                        self.report(
                            ctx,
                            Diagnostic::error(codes::INVALID_OUTPUT, "models with several outputs are not supported yet", decl.names[1].span, "second output")
                                .with_help("name the one value the model predicts, e.g. `output logits`; blocks may have several results"),
                        );
                    }
                    let mut values = Vec::new();
                    for name in &decl.names {
                        let v = self
                            .resolve(ctx, scope, name)
                            .unwrap_or(Value::Tensor(None));
                        if let Value::Int(_) | Value::Op(_) = v {
                            let what = if let Value::Op(_) = v {
                                "an op"
                            } else {
                                "an integer"
                            };
                            self.report(
                                ctx,
                                Diagnostic::error(
                                    codes::INVALID_OUTPUT,
                                    format!("`{}` is {what}, not a tensor", name.name),
                                    name.span,
                                    "outputs are tensors",
                                ),
                            );
                        }
                        values.push(v);
                    }
                    output = Some(values);
                }
            }
        }
        if let (Some(b), None) = (block, &output_seen) {
            self.report(
                ctx,
                Diagnostic::error(
                    codes::INVALID_OUTPUT,
                    format!("block `{}` has no output", b.name.name),
                    b.name.span,
                    "no `output` statement in this block",
                )
                .with_help("end the block with `output <name>`, naming its result(s)"),
            );
        }
        (inputs, output)
    }

    pub(super) fn define(&mut self, ctx: &Ctx, scope: &mut Scope, name: &ast::Ident, value: Value) {
        // In a model an unknown value means its call failed; in a block checked on its own,
        // values have unknown shapes anyway, and only an error reported by this `let` counts.
        let failed = self.diagnostics[self.let_start..]
            .iter()
            .any(Diagnostic::is_error);
        let poisoned = failed || (value == Value::Tensor(None) && ctx.prefix.is_empty());
        let previous = scope.bindings.insert(
            name.name.clone(),
            Binding {
                value,
                span: name.span,
                used: false,
                poisoned,
            },
        );
        if let Some(previous) = previous {
            if !previous.used && !previous.poisoned && !ctx.inlined() {
                self.diagnostics
                    .push(unused_warning(&name.name, previous.span).with_note(format!(
                        "it is shadowed by a later `{}` before any use",
                        name.name
                    )));
            }
        }
    }

    /// `None`: undefined (reported).
    pub(super) fn resolve(
        &mut self,
        ctx: &Ctx,
        scope: &mut Scope,
        name: &ast::Ident,
    ) -> Option<Value> {
        if let Some(b) = scope.bindings.get_mut(&name.name) {
            b.used = true;
            let (value, def) = (b.value, b.span);
            self.reference(ctx, name.span, Target::Local(def));
            return Some(value);
        }
        let mut d = Diagnostic::error(
            codes::UNDEFINED_NAME,
            format!(
                "cannot find value `{}` in this {}",
                name.name,
                if ctx.prefix.is_empty() {
                    "model"
                } else {
                    "block"
                }
            ),
            name.span,
            "not defined before this use",
        );
        if let Some(&branch) = scope.conditional.get(&name.name) {
            d = d
                .with_label(branch, "bound here, in only some branches of an `if`")
                .with_help(format!(
                    "bind `{}` in every branch (an `if` without `else` needs it bound before the `if` too)",
                    name.name
                ));
        } else if let Some(s) = did_you_mean(&name.name, scope.bindings.keys().map(String::as_str))
        {
            d = d.with_suggestion(name.span, s);
        }
        self.report(ctx, d);
        None
    }

    pub(super) fn input(
        &mut self,
        graph: &mut GraphBuilder,
        ctx: &Ctx,
        scope: &mut Scope,
        input: &ast::InputDecl,
        item_span: Span,
    ) -> Option<NodeId> {
        if let Some(b) = scope.bindings.get(&input.name.name) {
            let first = b.span;
            self.diagnostics.push(
                Diagnostic::error(
                    codes::DUPLICATE_DEFINITION,
                    format!("`{}` is already defined", input.name.name),
                    input.name.span,
                    "defined again here",
                )
                .with_label(first, "first defined here"),
            );
            return None;
        }
        let mut ok = true;
        if input.ty.dtype.name != "f32" {
            ok = false;
            self.diagnostics.push(
                Diagnostic::error(
                    codes::INVALID_INPUT_TYPE,
                    format!("inputs must be `f32`, not `{}`", input.ty.dtype.name),
                    input.ty.dtype.span,
                    "unsupported element type",
                )
                .with_help(
                    "quantization happens inside the model; declare the input as `f32[...]`",
                ),
            );
        }
        if !matches!(input.ty.dims.len(), 1 | 3) {
            ok = false;
            self.diagnostics.push(
                Diagnostic::error(
                    codes::INVALID_INPUT_TYPE,
                    format!(
                        "inputs are 1-D or 3-D, this one is {}-D",
                        input.ty.dims.len()
                    ),
                    input.ty.span,
                    "expected `f32[C, H, W]` or `f32[N]`",
                )
                .with_note("shapes are written without the batch dimension"),
            );
        }
        for &(d, span) in &input.ty.dims {
            if d == 0 || d > MAX_ARG_INT as u64 {
                ok = false;
                self.diagnostics.push(Diagnostic::error(
                    codes::INVALID_INPUT_TYPE,
                    format!(
                        "dimension {} is out of range",
                        if d == u64::MAX {
                            "too large".to_string()
                        } else {
                            d.to_string()
                        }
                    ),
                    span,
                    format!("dimensions go from 1 to {MAX_ARG_INT}"),
                ));
            }
        }
        let elements = super::calls::element_count(
            &input
                .ty
                .dims
                .iter()
                .map(|&(d, _)| d as usize)
                .collect::<Vec<_>>(),
        );
        if ok && elements > MAX_TENSOR_ELEMENTS {
            ok = false;
            self.diagnostics.push(
                Diagnostic::error(
                    codes::TENSOR_TOO_LARGE,
                    format!(
                        "input `{}` has {elements} elements per sample",
                        input.name.name
                    ),
                    input.ty.span,
                    format!("more than {MAX_TENSOR_ELEMENTS} elements"),
                )
                .with_help("use a smaller input; shapes are written without the batch dimension"),
            );
        }
        let value = ok.then(|| {
            let shape: Vec<usize> = input.ty.dims.iter().map(|&(d, _)| d as usize).collect();
            self.define_index(
                ctx,
                input.name.span,
                &input.name.name,
                Detail::Text(format!(
                    "`{}: f32{}` (model input)\n\nactivations: {}",
                    input.name.name,
                    format_shape(&shape),
                    self.defaults.activations
                )),
                item_span,
            );
            graph.push(
                &input.name.name,
                Op::Input,
                Vec::new(),
                shape,
                input.span,
                ctx.quant,
            )
        });
        // An input is "used" by definition: the caller supplies it.
        scope.bindings.insert(
            input.name.name.clone(),
            Binding {
                value: Value::Tensor(value),
                span: input.name.span,
                used: true,
                poisoned: false,
            },
        );
        value
    }

    pub(super) fn let_binding(
        &mut self,
        graph: &mut GraphBuilder,
        ctx: &mut Ctx<'a>,
        scope: &mut Scope,
        binding: &'a ast::LetBinding,
        item_span: Span,
    ) {
        self.let_start = self.diagnostics.len();
        let call = &binding.call;
        let name = &binding.names[0];
        // An `op` parameter of the enclosing block stands for the op it was given.
        let op_parameter = match scope.bindings.get_mut(&call.callee.name) {
            Some(b) => match b.value {
                Value::Op(op) => {
                    b.used = true;
                    let def_span = b.span;
                    self.reference(ctx, call.callee.span, Target::Local(def_span));
                    Some(op)
                }
                Value::Tensor(_) | Value::Int(_) => None,
            },
            None => None,
        };
        if let Some(op) = op_parameter {
            let Some(def) = op.and_then(ops::lookup) else {
                // Not known until a call: only the uses of its inputs count.
                for arg in call.args.iter().filter(|a| a.name.is_none()) {
                    if let ast::Expr::Ident(i) = &arg.value {
                        let _ = self.resolve(ctx, scope, i);
                    }
                }
                for n in &binding.names {
                    self.define(ctx, scope, n, Value::Tensor(None));
                }
                return;
            };
            let quant = self.annotations(ctx, binding, Some(def));
            let node = self.node_name(graph, ctx, binding);
            let value = self.call(graph, ctx, scope, call, Some(def), quant, node);
            let detail = value_detail(graph, Value::Tensor(value));
            self.define_index(ctx, name.span, &name.name, detail, item_span);
            self.define(ctx, scope, name, Value::Tensor(value));
            return;
        }
        if call.callee.name == super::ints::CHANNELS
            && !self.namespaces[ctx.module].contains_key(super::ints::CHANNELS)
        {
            let value = self
                .channels(graph, ctx, scope, call)
                .ok()
                .flatten()
                .map(|v| v as usize);
            let value = Value::Int(value);
            let detail = value_detail(graph, value);
            self.define_index(ctx, name.span, &name.name, detail, item_span);
            self.define(ctx, scope, name, value);
            return;
        }
        let block = if ops::lookup(&call.callee.name).is_some() {
            None
        } else {
            self.namespaces[ctx.module]
                .get(call.callee.name.as_str())
                .copied()
        };
        if let Some(block) = block {
            let quant = self.annotations(ctx, binding, None);
            let values = self.block_call(graph, ctx, scope, binding, block, quant);
            let call_detail = self.block_call_detail(graph, scope, block, call);
            for (n, v) in binding.names.iter().zip(values) {
                self.define_value_index(ctx, graph, n, v, item_span, Some(&call_detail));
                self.define(ctx, scope, n, v);
            }
            return;
        }
        let def = ops::lookup(&call.callee.name);
        if def.is_some() {
            self.reference(
                ctx,
                call.callee.span,
                Target::Op(def.map_or("", |d| d.name)),
            );
        }
        let quant = self.annotations(ctx, binding, def);
        let node = self.node_name(graph, ctx, binding);
        let value = self.call(graph, ctx, scope, call, def, quant, node);
        if def.is_some() && binding.names.len() > 1 {
            self.report(
                ctx,
                Diagnostic::error(
                    codes::WRONG_RESULT_COUNT,
                    format!(
                        "`{}` has one result, but {} names are bound",
                        call.callee.name,
                        binding.names.len()
                    ),
                    binding.names[1].span,
                    "no result for this name",
                )
                .with_note("only blocks can have several results"),
            );
        }
        self.define_value_index(ctx, graph, name, Value::Tensor(value), item_span, None);
        self.define(ctx, scope, name, Value::Tensor(value));
        for extra in &binding.names[1..] {
            self.define(ctx, scope, extra, Value::Tensor(None));
        }
    }

    /// `let hidden = cin * expand`, or `let h = x`.
    fn int_let(
        &mut self,
        graph: &mut GraphBuilder,
        ctx: &mut Ctx<'a>,
        scope: &mut Scope,
        l: &'a ast::IntLet,
        item_span: Span,
    ) {
        self.let_start = self.diagnostics.len();
        let value = match &l.value {
            // `let h = x`: another name for any value (a branch's "nothing to do").
            ast::Expr::Ident(i) => self.resolve(ctx, scope, i).unwrap_or(Value::Tensor(None)),
            other => match self.int_expr(graph, ctx, scope, other) {
                Ok(v) => Value::Int(v.and_then(|v| usize::try_from(v).ok())),
                Err(()) => Value::Int(None),
            },
        };
        let detail = value_detail(graph, value);
        self.define_index(ctx, l.name.span, &l.name.name, detail, item_span);
        self.define(ctx, scope, &l.name, value);
    }

    /// `if condition { ... } else { ... }`: the branch the condition picks, or, while
    /// a block is checked on its own, both; then only names that every branch binds
    /// stay usable after it.
    fn if_statement(
        &mut self,
        graph: &mut GraphBuilder,
        ctx: &mut Ctx<'a>,
        scope: &mut Scope,
        stmt: &'a ast::IfStatement,
        item_span: Span,
    ) {
        let decided = self.condition(graph, ctx, scope, &stmt.condition);
        let empty: &'a [ast::Statement] = &[];
        let otherwise = stmt.otherwise.as_deref().unwrap_or(empty);
        match decided {
            Ok(Some(true)) => self.branch(graph, ctx, scope, &stmt.then, item_span),
            Ok(Some(false)) => self.branch(graph, ctx, scope, otherwise, item_span),
            // Not known yet (or the condition has an error): check both.
            Ok(None) | Err(()) => {
                let before = scope.clone();
                let mut merged = scope.clone();
                let mut branches = Vec::new();
                for statements in [&stmt.then[..], otherwise] {
                    let mut s = before.clone();
                    self.branch(graph, ctx, &mut s, statements, item_span);
                    branches.push(s);
                }
                // Uses inside a branch count as uses of what was bound before it.
                for (name, b) in merged.bindings.iter_mut() {
                    b.used |= branches.iter().any(|s| {
                        s.bindings
                            .get(name)
                            .is_some_and(|x| x.used && x.span == b.span)
                    });
                }
                let (a, b) = (&branches[0], &branches[1]);
                for (name, x) in a.bindings.iter().chain(&b.bindings) {
                    let fresh = before.bindings.get(name).is_none_or(|p| p.span != x.span);
                    if !fresh {
                        continue;
                    }
                    let in_both = a.bindings.contains_key(name) && b.bindings.contains_key(name);
                    if in_both || before.bindings.contains_key(name) {
                        // Usable after the `if`; which binding depends on the call.
                        let value = match x.value {
                            Value::Tensor(_) => Value::Tensor(None),
                            Value::Int(_) => Value::Int(None),
                            Value::Op(_) => Value::Op(None),
                        };
                        // Bound and used in both branches: used (a later use is not needed).
                        let used_in_both = in_both
                            && [a, b]
                                .iter()
                                .all(|s| s.bindings.get(name).is_some_and(|y| y.used));
                        let entry = merged.bindings.entry(name.clone()).or_insert(x.clone());
                        entry.value = value;
                        entry.used = used_in_both;
                        entry.poisoned |= x.poisoned;
                    } else {
                        merged.conditional.insert(name.clone(), x.span);
                    }
                }
                *scope = merged;
            }
        }
    }

    /// The statements of one branch of an `if`, in the scope around it.
    fn branch(
        &mut self,
        graph: &mut GraphBuilder,
        ctx: &mut Ctx<'a>,
        scope: &mut Scope,
        statements: &'a [ast::Statement],
        item_span: Span,
    ) {
        for statement in statements {
            self.statements += 1;
            self.statement_end = statement.span().end;
            match statement {
                ast::Statement::Let(binding) => {
                    self.let_binding(graph, ctx, scope, binding, item_span)
                }
                ast::Statement::IntLet(l) => self.int_let(graph, ctx, scope, l, item_span),
                ast::Statement::If(stmt) => self.if_statement(graph, ctx, scope, stmt, item_span),
                ast::Statement::Input(input) => self.report(
                    ctx,
                    Diagnostic::error(
                        codes::INVALID_INPUT_TYPE,
                        "`input` cannot be inside an `if`",
                        input.span,
                        "inputs are declared at the top level of a model",
                    ),
                ),
                ast::Statement::Output(decl) => self.report(
                    ctx,
                    Diagnostic::error(
                        codes::INVALID_OUTPUT,
                        "`output` cannot be inside an `if`",
                        Span::new(
                            decl.span.start,
                            decl.names.last().map_or(decl.span.end, |n| n.span.end),
                        ),
                        "outputs are named once, after the `if`",
                    )
                    .with_help("bind the result in every branch, then `output` it after the `if`"),
                ),
            }
        }
    }
}
