//! Op calls: tensor inputs, named arguments checked against the op's definition and
//! filled with defaults (with did-you-mean help), and the op's shape inference.

use std::collections::HashMap;

use super::{vocabulary, Checker, Ctx, GraphBuilder, Scope, Value};
use crate::codes;
use crate::diagnostics::{did_you_mean, Diagnostic, Span};
use crate::ir::index::Target;
use crate::ir::ops::{self, format_shape, ArgType, ArgValue, Args, OpDef};
use crate::ir::{NodeId, NodeQuant, Op, Shape};
use crate::limits::{
    MAX_ARG_INT, MAX_AXIS, MAX_OP_PARAMETERS, MAX_SHAPE_RANK, MAX_TENSOR_ELEMENTS,
};
use crate::syntax::ast;

impl Checker<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn call(
        &mut self,
        graph: &mut GraphBuilder,
        ctx: &Ctx,
        scope: &mut Scope,
        call: &ast::Call,
        def: Option<&'static OpDef>,
        quant: NodeQuant,
        name: &str,
    ) -> Option<NodeId> {
        // Resolve tensor inputs first, even for an unknown op, so their uses count.
        let mut inputs: Vec<(Option<NodeId>, Span)> = Vec::new();
        let mut bad = false;
        for arg in call.args.iter().filter(|a| a.name.is_none()) {
            match &arg.value {
                ast::Expr::Ident(ident) => match self.resolve(ctx, scope, ident) {
                    Some(Value::Tensor(v)) => inputs.push((v, ident.span)),
                    Some(v @ (Value::Int(_) | Value::Op(_))) => {
                        bad = true;
                        let def_span = scope.bindings.get(&ident.name).map(|b| b.span);
                        let (what, declared) = match v {
                            Value::Op(_) => ("an op", "op"),
                            Value::Int(_) | Value::Tensor(_) => ("an integer", "int"),
                        };
                        let mut d = Diagnostic::error(codes::INVALID_ARGUMENT, format!("`{}` is {what}, not a tensor", ident.name), ident.span, "expected a tensor")
                            .with_help("positional arguments are tensors; pass integers by name: `filters = n`");
                        if let Some(s) = def_span {
                            d = d.with_label(
                                s,
                                format!("`{}` is declared `{declared}` here", ident.name),
                            );
                        }
                        self.report(ctx, d);
                    }
                    None => bad = true,
                },
                other => {
                    bad = true;
                    self.report(
                        ctx,
                        Diagnostic::error(
                            codes::INVALID_ARGUMENT,
                            "tensor arguments must be names",
                            other.span(),
                            "expected the name of a value",
                        )
                        .with_help("bind the inner call first: `let y = relu(x)`, then pass `y`"),
                    );
                }
            }
        }
        let Some(def) = def else {
            if self.broken.contains(call.callee.name.as_str()) || self.broken_imports {
                return None;
            }
            let mut d = Diagnostic::error(
                codes::UNKNOWN_OP,
                format!("unknown op or block `{}`", call.callee.name),
                call.callee.span,
                "not an op or block qatc knows",
            );
            let blocks: Vec<&str> = self.namespaces[ctx.module].keys().copied().collect();
            if let Some((to, note)) = vocabulary::op(&call.callee.name) {
                d = d.with_suggestion(call.callee.span, to).with_note(note);
            } else if let Some(s) = did_you_mean(
                &call.callee.name,
                ops::OPS
                    .iter()
                    .map(|o| o.name)
                    .chain(blocks.iter().copied()),
            ) {
                d = d.with_suggestion(call.callee.span, s);
            } else {
                d = d.with_note(format!(
                    "ops: {}",
                    ops::OPS
                        .iter()
                        .map(|o| o.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            self.report(ctx, d);
            return None;
        };
        let count_ok = if def.variadic {
            inputs.len() >= def.inputs
        } else {
            inputs.len() == def.inputs
        };
        if !count_ok && !bad {
            let plural = if def.inputs == 1 { "" } else { "s" };
            let expected = if def.variadic {
                format!("{} or more", def.inputs)
            } else {
                def.inputs.to_string()
            };
            self.report(
                ctx,
                Diagnostic::error(
                    codes::WRONG_INPUT_COUNT,
                    format!(
                        "`{}` takes {expected} tensor input{plural}, got {}",
                        def.name,
                        inputs.len()
                    ),
                    call.span,
                    format!("expected {expected} positional argument{plural}"),
                )
                .with_note(
                    "named arguments (`name = value`) set options; positional ones are tensors",
                ),
            );
            bad = true;
        }
        let args = self.args(graph, ctx, scope, call, def);
        let args = args?;
        if bad {
            return None;
        }
        let ids: Option<Vec<NodeId>> = inputs.iter().map(|(v, _)| *v).collect();
        let ids = ids?; // a poisoned input was already reported, or the shape is not known yet
        let shapes: Vec<&Shape> = ids
            .iter()
            .map(|&id| &graph.nodes[id.index()].shape)
            .collect();
        match ops::instantiate(def, &args, &shapes) {
            Ok((op, shape)) => {
                if !self.within_limits(ctx, call, &op, &shape) {
                    return None;
                }
                let span = if ctx.module == 0 {
                    call.span
                } else {
                    ctx.inlining.first().map_or(call.span, |s| s.1)
                };
                Some(graph.push(
                    &format!("{}{name}", ctx.prefix),
                    op,
                    ids,
                    shape,
                    span,
                    quant,
                ))
            }
            Err(e) => {
                let primary = match e.blame {
                    Some(i) => inputs[i].1,
                    None => call.callee.span,
                };
                let mut d =
                    Diagnostic::error(codes::SHAPE_MISMATCH, "shape mismatch", primary, e.message);
                for (i, (&id, &(_, span))) in ids.iter().zip(&inputs).enumerate() {
                    if Some(i) != e.blame || e.blame.is_none() {
                        d = d.with_label(
                            span,
                            format!(
                                "this has shape {}",
                                format_shape(&graph.nodes[id.index()].shape)
                            ),
                        );
                    }
                }
                if let Some(h) = e.help {
                    d = d.with_help(h);
                }
                self.report(ctx, d);
                None
            }
        }
    }

    /// Type-checks named arguments and fills in defaults; `None` if any was wrong (reported).
    pub(super) fn args(
        &mut self,
        graph: &GraphBuilder,
        ctx: &Ctx,
        scope: &mut Scope,
        call: &ast::Call,
        def: &OpDef,
    ) -> Option<Args> {
        let mut values: Vec<(&'static str, ArgValue)> = Vec::new();
        let mut spans: HashMap<&str, Span> = HashMap::new();
        let mut suggested: Vec<&str> = Vec::new();
        let mut ok = true;
        for arg in &call.args {
            let Some(name) = &arg.name else { continue };
            let Some(arg_def) = def.args.iter().find(|a| a.name == name.name) else {
                ok = false;
                let mut d = Diagnostic::error(
                    codes::UNKNOWN_ARGUMENT,
                    format!("`{}` has no argument `{}`", def.name, name.name),
                    name.span,
                    "unknown argument",
                );
                let foreign = vocabulary::argument(&name.name, def.args.iter().map(|a| a.name));
                if let Some(Ok((to, note))) = foreign {
                    suggested.push(to);
                    d = d.with_suggestion(name.span, to).with_note(note);
                } else if let Some(Err(why)) = foreign {
                    d = d.with_help(format!("remove it: {why}"));
                    if let Some(span) = removal_span(call, arg) {
                        d = d.with_fix(format!("remove `{}`", name.name), span, "");
                    }
                } else if let Some(s) = did_you_mean(&name.name, def.args.iter().map(|a| a.name)) {
                    suggested.push(s);
                    d = d.with_suggestion(name.span, s);
                } else if def.args.is_empty() {
                    d = d.with_note(format!("`{}` takes no named arguments", def.name));
                } else {
                    d = d.with_note(format!(
                        "`{}` takes {}",
                        def.name,
                        def.args
                            .iter()
                            .map(|a| format!("`{}`", a.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                self.report(ctx, d);
                continue;
            };
            if let Some(first) = spans.insert(arg_def.name, name.span) {
                ok = false;
                self.report(
                    ctx,
                    Diagnostic::error(
                        codes::DUPLICATE_DEFINITION,
                        format!("argument `{}` is given twice", name.name),
                        name.span,
                        "given again here",
                    )
                    .with_label(first, "first given here"),
                );
                continue;
            }
            // Arithmetic (`cin * expand`, `channels(x)`) gives an integer known at the call.
            if let (true, ast::Expr::Binary { .. } | ast::Expr::Call(_)) =
                (arg_def.ty.accepts_int(), &arg.value)
            {
                match self.int_expr(graph, ctx, scope, &arg.value) {
                    Ok(Some(v)) => {
                        let number = ast::Expr::Number {
                            text: v.to_string(),
                            span: arg.value.span(),
                        };
                        match arg_value(&number, arg_def.ty) {
                            Some(v) => values.push((arg_def.name, v)),
                            None => {
                                ok = false;
                                self.report_at_call(
                                    ctx,
                                    Diagnostic::error(
                                        codes::INVALID_ARGUMENT,
                                        format!("invalid value {v} for `{}`", arg_def.name),
                                        arg.value.span(),
                                        format!("expected {}", arg_def.ty),
                                    )
                                    .with_note(format!("`{}` is {v} here", arg.value)),
                                );
                            }
                        }
                    }
                    Ok(None) => values.push((arg_def.name, ArgValue::Int(1))),
                    Err(()) => ok = false,
                }
                continue;
            }
            // A name may stand for an `int` parameter of the enclosing block.
            if let (true, ast::Expr::Ident(ident)) = (arg_def.ty.accepts_int(), &arg.value) {
                if let Some(b) = scope.bindings.get_mut(&ident.name) {
                    b.used = true;
                    let (value, def_span) = (b.value, b.span);
                    self.reference(ctx, ident.span, Target::Local(def_span));
                    match value {
                        Value::Int(Some(v)) => {
                            let number = ast::Expr::Number {
                                text: v.to_string(),
                                span: ident.span,
                            };
                            match arg_value(&number, arg_def.ty) {
                                Some(v) => values.push((arg_def.name, v)),
                                // Only a call gives the value: the block checked on its own could not see this.
                                None => {
                                    ok = false;
                                    self.report_at_call(
                                        ctx,
                                        Diagnostic::error(
                                            codes::INVALID_ARGUMENT,
                                            format!("invalid value {v} for `{}`", arg_def.name),
                                            ident.span,
                                            format!("expected {}", arg_def.ty),
                                        )
                                        .with_note(format!(
                                            "`{}` is an `int` parameter of the block; the call gives it {v}",
                                            ident.name
                                        )),
                                    );
                                }
                            }
                        }
                        // Checked on its own, the block does not know the value yet; any fits.
                        Value::Int(None) => values.push((arg_def.name, ArgValue::Int(1))),
                        Value::Tensor(_) | Value::Op(_) => {
                            ok = false;
                            let what = if let Value::Op(_) = value {
                                "an op"
                            } else {
                                "a tensor"
                            };
                            self.report(
                                ctx,
                                Diagnostic::error(
                                    codes::INVALID_ARGUMENT,
                                    format!(
                                        "`{}` is {what}, not a value for `{}`",
                                        ident.name, arg_def.name
                                    ),
                                    ident.span,
                                    format!("expected {}", arg_def.ty),
                                )
                                .with_label(def_span, format!("`{}` is defined here", ident.name)),
                            );
                        }
                    }
                    continue;
                }
            }
            // A shape's dimensions may be integer expressions (`[c, 1, 1]`,
            // `[channels(x), 1, 1]`), known at the call; a block checked on its own
            // does not know them yet, and any fits.
            let evaluated;
            let value = match (arg_def.ty, &arg.value) {
                (ArgType::Shape, ast::Expr::List { items, span })
                    if items.iter().any(|e| !matches!(e, ast::Expr::Number { .. })) =>
                {
                    let mut numbers = Vec::with_capacity(items.len());
                    for item in items {
                        match self.int_expr(graph, ctx, scope, item) {
                            Ok(v) => numbers.push(ast::Expr::Number {
                                text: v.unwrap_or(1).to_string(),
                                span: item.span(),
                            }),
                            Err(()) => ok = false,
                        }
                    }
                    if numbers.len() < items.len() {
                        continue;
                    }
                    evaluated = ast::Expr::List {
                        items: numbers,
                        span: *span,
                    };
                    &evaluated
                }
                _ => &arg.value,
            };
            match arg_value(value, arg_def.ty) {
                Some(v) => values.push((arg_def.name, v)),
                None => {
                    ok = false;
                    let mut d = Diagnostic::error(
                        codes::INVALID_ARGUMENT,
                        format!("invalid value for `{}`", arg_def.name),
                        arg.value.span(),
                        format!("expected {}", arg_def.ty),
                    );
                    // Dimensions computed from the block's integers: only a call gives them.
                    let evaluated = !std::ptr::eq(value, &arg.value);
                    if evaluated {
                        d = d.with_note(format!("`{}` is {value} here", arg.value));
                    }
                    // A misspelled choice (`padding = sam`) gets a suggestion.
                    if let (ArgType::Choice(choices), ast::Expr::Ident(i)) =
                        (arg_def.ty, &arg.value)
                    {
                        if let Some(s) = did_you_mean(&i.name, choices.iter().copied()) {
                            d = d.with_suggestion(i.span, s);
                        }
                    }
                    // PyTorch's numeric padding, as the choice it means.
                    if let ("padding", ast::Expr::Number { text, span }) =
                        (arg_def.name, &arg.value)
                    {
                        if let Ok(n) = text.parse::<u64>() {
                            let kernel = named_number(call, &["kernel", "kernel_size"]);
                            let dilation =
                                named_number(call, &["dilation", "dilation_rate"]).unwrap_or(1);
                            match vocabulary::padding(n, kernel, dilation) {
                                Ok(choice) => {
                                    d = d.with_suggestion(*span, choice).with_note(format!(
                                    "`padding = {n}` (PyTorch's style) pads like `{choice}` here"
                                ))
                                }
                                Err(help) => d = d.with_help(help),
                            }
                        }
                    }
                    match evaluated {
                        true => self.report_at_call(ctx, d),
                        false => self.report(ctx, d),
                    }
                }
            }
        }
        for arg_def in def.args {
            if spans.contains_key(arg_def.name) {
                continue;
            }
            match arg_def.default {
                // Misspelled arguments suggest a name; that name is then not also "missing".
                None if suggested.contains(&arg_def.name) => ok = false,
                None => {
                    ok = false;
                    self.report(
                        ctx,
                        Diagnostic::error(
                            codes::MISSING_ARGUMENT,
                            format!("`{}` needs the argument `{}`", def.name, arg_def.name),
                            call.span,
                            format!("`{}` is missing", arg_def.name),
                        )
                        .with_help(format!(
                            "add `{} = ...`: {} ({})",
                            arg_def.name, arg_def.doc, arg_def.ty
                        ))
                        .with_fix(
                            format!("add `{} = {}`", arg_def.name, arg_def.ty.example()),
                            insertion_point(call),
                            insert_argument(call, arg_def.name, arg_def.ty.example()),
                        ),
                    );
                }
                // A default that names another argument (stride = size) is resolved by the op.
                Some(text) => {
                    if let Some(v) = default_value(text, arg_def.ty) {
                        values.push((arg_def.name, v));
                    }
                }
            }
        }
        ok.then_some(Args(values))
    }
}

/// Where a missing argument goes: after the last one, or inside empty parentheses.
pub(super) fn insertion_point(call: &ast::Call) -> Span {
    let at = call
        .args
        .last()
        .map_or(call.span.end.saturating_sub(1), |a| a.span.end);
    Span::new(at, at)
}

/// The text that adds `name = value` at [`insertion_point`].
pub(super) fn insert_argument(call: &ast::Call, name: &str, value: &str) -> String {
    if call.args.is_empty() {
        format!("{name} = {value}")
    } else {
        format!(", {name} = {value}")
    }
}

fn default_value(text: &'static str, ty: ArgType) -> Option<ArgValue> {
    match ty {
        ArgType::PositiveInt | ArgType::NonNegativeInt => text.parse().ok().map(ArgValue::Int),
        ArgType::Axis => text.parse().ok().map(ArgValue::Signed),
        ArgType::PositiveFloat | ArgType::Fraction | ArgType::Rate => {
            text.parse().ok().map(ArgValue::Float)
        }
        ArgType::Shape => None,
        ArgType::Bool => Some(ArgValue::Bool(text == "true")),
        ArgType::Choice(_) => Some(ArgValue::Choice(text)),
    }
}

fn arg_value(expr: &ast::Expr, ty: ArgType) -> Option<ArgValue> {
    match (ty, expr) {
        (ArgType::PositiveInt, ast::Expr::Number { text, .. }) => text
            .parse::<usize>()
            .ok()
            .filter(|&v| v > 0 && v <= MAX_ARG_INT)
            .map(ArgValue::Int),
        (ArgType::PositiveFloat, ast::Expr::Number { text, .. }) => text
            .parse::<f64>()
            .ok()
            .filter(|v| *v > 0.0 && v.is_finite())
            .map(ArgValue::Float),
        (ArgType::Fraction, ast::Expr::Number { text, .. }) => text
            .parse::<f64>()
            .ok()
            .filter(|v| *v > 0.0 && *v < 1.0)
            .map(ArgValue::Float),
        (ArgType::Bool, ast::Expr::Ident(i)) => match i.name.as_str() {
            "true" => Some(ArgValue::Bool(true)),
            "false" => Some(ArgValue::Bool(false)),
            _ => None,
        },
        (ArgType::Choice(choices), ast::Expr::Ident(i)) => choices
            .iter()
            .find(|c| **c == i.name)
            .map(|c| ArgValue::Choice(c)),
        (ArgType::NonNegativeInt, ast::Expr::Number { text, .. }) => text
            .parse::<usize>()
            .ok()
            .filter(|&v| v <= MAX_ARG_INT)
            .map(ArgValue::Int),
        (ArgType::Axis, ast::Expr::Number { text, .. }) => text
            .parse::<i64>()
            .ok()
            .filter(|v| v.abs() <= MAX_AXIS)
            .map(ArgValue::Signed),
        (ArgType::Rate, ast::Expr::Number { text, .. }) => text
            .parse::<f64>()
            .ok()
            .filter(|v| (0.0..1.0).contains(v))
            .map(ArgValue::Float),
        (ArgType::Shape, ast::Expr::List { items, .. })
            if !items.is_empty() && items.len() <= MAX_SHAPE_RANK =>
        {
            items
                .iter()
                .map(|e| match e {
                    ast::Expr::Number { text, .. } => text
                        .parse::<usize>()
                        .ok()
                        .filter(|&v| v > 0 && v <= MAX_ARG_INT),
                    _ => None,
                })
                .collect::<Option<Vec<usize>>>()
                .map(ArgValue::List)
        }
        _ => None,
    }
}

impl Checker<'_> {
    /// E0025 and E0026 for an op whose result or parameters would not fit in memory.
    fn within_limits(&mut self, ctx: &Ctx, call: &ast::Call, op: &Op, shape: &Shape) -> bool {
        let elements = element_count(shape);
        if elements > MAX_TENSOR_ELEMENTS {
            self.report(
                ctx,
                Diagnostic::error(
                    codes::TENSOR_TOO_LARGE,
                    format!(
                        "`{}` makes a value of {elements} elements per sample",
                        op.name()
                    ),
                    call.span,
                    format!(
                        "shape {}: more than {MAX_TENSOR_ELEMENTS} elements",
                        format_shape(shape)
                    ),
                )
                .with_help("use fewer filters or units, a stride, or pooling before this op"),
            );
            return false;
        }
        let parameters = op.parameter_count();
        if parameters > MAX_OP_PARAMETERS {
            self.report(
                ctx,
                Diagnostic::error(
                    codes::TOO_MANY_PARAMETERS,
                    format!("`{}` has {parameters} parameters", op.name()),
                    call.span,
                    format!("more than {MAX_OP_PARAMETERS} parameters in one op"),
                )
                .with_help("pool or stride before a `dense` layer, or use fewer units or filters"),
            );
            return false;
        }
        true
    }
}

/// Elements of one sample of a value of this shape, saturating.
pub(super) fn element_count(shape: &[usize]) -> u64 {
    shape.iter().fold(1u64, |n, &d| n.saturating_mul(d as u64))
}

/// The literal number given to the first of `names` in `call`, if any.
fn named_number(call: &ast::Call, names: &[&str]) -> Option<u64> {
    call.args.iter().find_map(|a| match (&a.name, &a.value) {
        (Some(n), ast::Expr::Number { text, .. }) if names.contains(&n.name.as_str()) => {
            text.parse().ok()
        }
        _ => None,
    })
}

/// The text to delete to remove `arg` from `call`, with the comma that joins it to its
/// neighbour (the next one's, or else the previous one's).
fn removal_span(call: &ast::Call, arg: &ast::Arg) -> Option<Span> {
    let i = call.args.iter().position(|a| std::ptr::eq(a, arg))?;
    match (
        call.args.get(i + 1),
        i.checked_sub(1).map(|p| &call.args[p]),
    ) {
        (Some(next), _) => Some(Span::new(arg.span.start, next.span.start)),
        (None, Some(previous)) => Some(Span::new(previous.span.end, arg.span.end)),
        (None, None) => Some(arg.span),
    }
}
