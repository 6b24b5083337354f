//! Turns source text into an [`ast::File`], or one syntax diagnostic.

use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest::Parser;

use super::ast::*;
use crate::diagnostics::{Diagnostic, Span};
use crate::limits::MAX_NESTING;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/qat.pest"]
struct QatParser;

/// Parses a whole file: the AST of every item that parsed, and a diagnostic per syntax error.
///
/// pest stops at the first error, so on failure the file is cut into top-level items
/// (at lines starting with an item keyword) and each is parsed on its own: one typo
/// costs one item, and errors in independent items are all reported. Each chunk is
/// parsed as its own text, so recovery stays linear in the size of the file.
pub fn parse(text: &str) -> (File, Vec<Diagnostic>) {
    // The parser and every walk of the AST recurse once per bracket: bound that first.
    if let Err(d) = nesting(text) {
        return (
            File {
                items: Vec::new(),
                broken: item_starts(text)
                    .iter()
                    .filter_map(|&s| broken_name(&text[s..]))
                    .collect(),
            },
            vec![d],
        );
    }
    // Tracking parse attempts slows every parse; it is only needed to explain an error.
    pest::set_error_detail(false);
    if let Ok(items) = parse_chunk(text, 0) {
        return (
            File {
                items,
                broken: Vec::new(),
            },
            Vec::new(),
        );
    }
    // Detailed attempts give the literal tokens expected at the furthest position.
    pest::set_error_detail(true);
    let starts = item_starts(text);
    if starts.len() < 2 {
        let first = match parse_chunk(text, 0) {
            Ok(items) => {
                return (
                    File {
                        items,
                        broken: Vec::new(),
                    },
                    Vec::new(),
                )
            }
            Err(d) => d,
        };
        return (
            File {
                items: Vec::new(),
                broken: broken_name(text).into_iter().collect(),
            },
            vec![first],
        );
    }
    let mut file = File {
        items: Vec::new(),
        broken: Vec::new(),
    };
    let mut errors = Vec::new();
    let ends = starts
        .iter()
        .skip(1)
        .copied()
        .chain(std::iter::once(text.len()));
    // Text before the first item keyword belongs to the first chunk.
    for (i, (start, end)) in starts.iter().copied().zip(ends).enumerate() {
        let start = if i == 0 { 0 } else { start };
        // Most chunks parse: only the broken ones pay for detailed error tracking.
        pest::set_error_detail(false);
        let quick = parse_chunk(&text[start..end], start);
        let parsed = match quick {
            Ok(items) => Ok(items),
            Err(_) => {
                pest::set_error_detail(true);
                parse_chunk(&text[start..end], start)
            }
        };
        match parsed {
            Ok(items) => file.items.extend(items),
            Err(d) => {
                file.broken.extend(broken_name(&text[start..end]));
                errors.push(d);
            }
        }
    }
    (file, errors)
}

/// E0023 when brackets nest deeper than [`MAX_NESTING`], at the bracket that does.
/// Brackets in comments and strings do not count.
fn nesting(text: &str) -> Result<(), Diagnostic> {
    let mut depth = 0usize;
    for (i, b) in super::delimiters::scan(text).brackets {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(Diagnostic::error(
                        crate::codes::TOO_DEEP,
                        format!("brackets nest more than {MAX_NESTING} deep"),
                        Span::new(i, i + 1),
                        format!("bracket {} opens here", MAX_NESTING + 1),
                    )
                    .with_note(format!(
                        "qatc accepts at most {MAX_NESTING} open `(`, `[` and `{{` at once"
                    ))
                    .with_help("bind inner calls with `let` instead of nesting them"));
                }
            }
            _ => depth = depth.saturating_sub(1),
        }
    }
    Ok(())
}

/// Parses `chunk` (which starts at byte `offset` of the file) with spans that count
/// from the start of the file.
fn parse_chunk(chunk: &str, offset: usize) -> Result<Vec<Item>, Diagnostic> {
    let mut pairs = QatParser::parse(Rule::file, chunk).map_err(|e| {
        let mut d = super::delimiters::explain(chunk, syntax_error(chunk, e));
        d.primary.span = shift(d.primary.span, offset);
        for label in &mut d.secondary {
            label.span = shift(label.span, offset);
        }
        d
    })?;
    let Some(file) = pairs.next() else {
        return Ok(Vec::new());
    };
    let mut items: Vec<Item> = file.into_inner().filter_map(item).collect();
    if offset != 0 {
        for item in &mut items {
            shift_item(item, offset);
        }
    }
    Ok(items)
}

fn shift(s: Span, by: usize) -> Span {
    Span::new(s.start + by, s.end + by)
}

fn shift_item(item: &mut Item, by: usize) {
    match item {
        Item::Use(u) => {
            u.path_span = shift(u.path_span, by);
            u.span = shift(u.span, by);
        }
        Item::QuantDefault(q) => {
            q.span = shift(q.span, by);
            for s in &mut q.settings {
                shift_ident(&mut s.name, by);
                shift_expr(&mut s.value, by);
            }
        }
        Item::Block(b) => {
            b.span = shift(b.span, by);
            shift_ident(&mut b.name, by);
            for p in &mut b.params {
                p.span = shift(p.span, by);
                shift_ident(&mut p.name, by);
                shift_ident(&mut p.ty, by);
                if let Some(d) = &mut p.default {
                    shift_expr(d, by);
                }
            }
            b.statements.iter_mut().for_each(|s| shift_statement(s, by));
        }
        Item::Model(m) => {
            m.span = shift(m.span, by);
            shift_ident(&mut m.name, by);
            m.statements.iter_mut().for_each(|s| shift_statement(s, by));
        }
    }
}

fn shift_statement(s: &mut Statement, by: usize) {
    match s {
        Statement::Input(i) => {
            i.span = shift(i.span, by);
            shift_ident(&mut i.name, by);
            i.ty.span = shift(i.ty.span, by);
            shift_ident(&mut i.ty.dtype, by);
            for (_, span) in &mut i.ty.dims {
                *span = shift(*span, by);
            }
        }
        Statement::Let(l) => {
            l.span = shift(l.span, by);
            for a in &mut l.annotations {
                a.span = shift(a.span, by);
                shift_ident(&mut a.name, by);
                a.args.iter_mut().for_each(|a| shift_arg(a, by));
            }
            l.names.iter_mut().for_each(|n| shift_ident(n, by));
            shift_call(&mut l.call, by);
        }
        Statement::IntLet(l) => {
            l.span = shift(l.span, by);
            shift_ident(&mut l.name, by);
            shift_expr(&mut l.value, by);
        }
        Statement::If(i) => {
            i.span = shift(i.span, by);
            shift_condition(&mut i.condition, by);
            i.then.iter_mut().for_each(|s| shift_statement(s, by));
            if let Some(o) = &mut i.otherwise {
                o.iter_mut().for_each(|s| shift_statement(s, by));
            }
        }
        Statement::Output(o) => {
            o.span = shift(o.span, by);
            o.names.iter_mut().for_each(|n| shift_ident(n, by));
        }
    }
}

fn shift_condition(c: &mut Condition, by: usize) {
    match c {
        Condition::Compare { lhs, rhs, span, .. } => {
            *span = shift(*span, by);
            shift_expr(lhs, by);
            shift_expr(rhs, by);
        }
        Condition::And(a, b) | Condition::Or(a, b) => {
            shift_condition(a, by);
            shift_condition(b, by);
        }
    }
}

fn shift_ident(i: &mut Ident, by: usize) {
    i.span = shift(i.span, by);
}

fn shift_call(c: &mut Call, by: usize) {
    c.span = shift(c.span, by);
    shift_ident(&mut c.callee, by);
    c.args.iter_mut().for_each(|a| shift_arg(a, by));
}

fn shift_arg(a: &mut Arg, by: usize) {
    a.span = shift(a.span, by);
    if let Some(n) = &mut a.name {
        shift_ident(n, by);
    }
    shift_expr(&mut a.value, by);
}

/// Recursion is bounded by [`nesting`]: an expression nests no deeper than its brackets.
fn shift_expr(e: &mut Expr, by: usize) {
    match e {
        Expr::Call(c) => shift_call(c, by),
        Expr::Number { span, .. } => *span = shift(*span, by),
        Expr::Ident(i) => shift_ident(i, by),
        Expr::List { items, span } => {
            *span = shift(*span, by);
            items.iter_mut().for_each(|e| shift_expr(e, by));
        }
        Expr::Str { span, .. } => *span = shift(*span, by),
        Expr::Binary { lhs, rhs, span, .. } => {
            *span = shift(*span, by);
            shift_expr(lhs, by);
            shift_expr(rhs, by);
        }
    }
}

/// Byte offsets of lines that start (in column 0) with a top-level keyword.
fn item_starts(text: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let word = line
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()
            .unwrap_or("");
        if matches!(word, "model" | "block" | "use" | "quant") {
            starts.push(offset);
        }
        offset += line.len();
    }
    starts
}

/// The name of the `block` or `model` a broken chunk defines, so that uses of it elsewhere are not reported too.
fn broken_name(chunk: &str) -> Option<String> {
    let mut words = chunk
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty());
    while let Some(w) = words.next() {
        if w == "block" || w == "model" {
            return words.next().map(str::to_string);
        }
    }
    None
}

fn item(p: Pair<Rule>) -> Option<Item> {
    Some(match p.as_rule() {
        Rule::use_decl => {
            let span = p.as_span().into();
            let s = p.into_inner().next()?;
            let quoted = s.as_str();
            Item::Use(UseDecl {
                path: quoted[1..quoted.len() - 1].to_string(),
                path_span: s.as_span().into(),
                span,
            })
        }
        Rule::quant_default => Item::QuantDefault(quant_default(p)),
        Rule::block_def => Item::Block(block_def(p)?),
        Rule::model => Item::Model(model(p)?),
        _ => return None, // EOI
    })
}

fn quant_default(p: Pair<Rule>) -> QuantDefault {
    let span = p.as_span().into();
    let settings = p
        .into_inner()
        .filter_map(|s| {
            let mut inner = s.into_inner();
            let name = ident(inner.next()?);
            let value = expr(inner.next()?)?;
            Some(Setting { name, value })
        })
        .collect();
    QuantDefault { settings, span }
}

fn block_def(p: Pair<Rule>) -> Option<BlockDef> {
    let span = p.as_span().into();
    let mut inner = p.into_inner();
    let name = ident(inner.next()?);
    let mut params = Vec::new();
    let mut statements = Vec::new();
    for part in inner {
        match part.as_rule() {
            Rule::param => {
                let start = part.as_span().start();
                let mut pi = part.into_inner();
                let name = ident(pi.next()?);
                let ty = ident(pi.next()?);
                let default = pi.next().and_then(expr);
                // The pair's own span can run on over whitespace and comments (pest skips
                // them before trying an operator); the parameter ends where its text does.
                let end = default.as_ref().map_or(ty.span.end, |d| d.span().end);
                let span = Span::new(start, end);
                params.push(Param {
                    name,
                    ty,
                    default,
                    span,
                });
            }
            Rule::body => statements = body(part),
            _ => {}
        }
    }
    Some(BlockDef {
        name,
        params,
        statements,
        span,
    })
}

fn model(p: Pair<Rule>) -> Option<Model> {
    let span = p.as_span().into();
    let mut inner = p.into_inner();
    let name = ident(inner.next()?);
    let statements = inner.next().map(body).unwrap_or_default();
    Some(Model {
        name,
        statements,
        span,
    })
}

fn body(p: Pair<Rule>) -> Vec<Statement> {
    p.into_inner()
        .filter_map(|s| {
            Some(match s.as_rule() {
                Rule::input_decl => Statement::Input(input_decl(s)?),
                Rule::let_binding => Statement::Let(let_binding(s)?),
                Rule::int_let => {
                    let start = s.as_span().start();
                    let mut inner = s.into_inner();
                    let name = ident(inner.next()?);
                    let value = expr(inner.next()?)?;
                    let span = Span::new(start, value.span().end);
                    Statement::IntLet(IntLet { name, value, span })
                }
                Rule::if_stmt => {
                    let start = s.as_span().start();
                    let mut inner = s.into_inner();
                    let condition = condition(inner.next()?)?;
                    let then_pair = inner.next()?;
                    // Without `else`, pest's span runs on over what it skipped looking
                    // for one: the statement ends at the `}` of its last body.
                    let mut end = then_pair.as_span().end();
                    let then = body(then_pair);
                    let otherwise = inner.next().map(|b| {
                        end = b.as_span().end();
                        body(b)
                    });
                    let span = Span::new(start, end);
                    Statement::If(IfStatement {
                        condition,
                        then,
                        otherwise,
                        span,
                    })
                }
                Rule::output_decl => {
                    let start = s.as_span().start();
                    let names: Vec<Ident> = s.into_inner().map(ident).collect();
                    // pest's span runs on over the whitespace and comments it skipped
                    // looking for another `, name`: end at the last name.
                    let end = names.last().map_or(start, |n| n.span.end);
                    Statement::Output(OutputDecl {
                        span: Span::new(start, end),
                        names,
                    })
                }
                _ => return None,
            })
        })
        .collect()
}

fn input_decl(p: Pair<Rule>) -> Option<InputDecl> {
    let span = p.as_span().into();
    let mut inner = p.into_inner();
    let name = ident(inner.next()?);
    let ty = inner.next()?;
    let ty_span = ty.as_span().into();
    let mut ty_inner = ty.into_inner();
    let dtype = ident(ty_inner.next()?);
    let dims = ty_inner
        .next()?
        .into_inner()
        .map(|d| {
            (
                d.as_str().parse::<u64>().unwrap_or(u64::MAX),
                d.as_span().into(),
            )
        })
        .collect();
    Some(InputDecl {
        name,
        ty: TensorType {
            dtype,
            dims,
            span: ty_span,
        },
        span,
    })
}

fn let_binding(p: Pair<Rule>) -> Option<LetBinding> {
    let start = p.as_span().start();
    let mut annotations = Vec::new();
    let mut names = Vec::new();
    let mut call_node = None;
    for part in p.into_inner() {
        match part.as_rule() {
            Rule::annotation => {
                // pest's implicit whitespace before the optional `(` stays in the pair.
                let start = part.as_span().start();
                let span = Span::new(start, start + part.as_str().trim_end().len());
                let mut inner = part.into_inner();
                let name = ident(inner.next()?);
                annotations.push(Annotation {
                    name,
                    args: inner.filter_map(arg).collect(),
                    span,
                });
            }
            Rule::ident => names.push(ident(part)),
            Rule::call => call_node = call(part),
            _ => {}
        }
    }
    if names.is_empty() {
        return None;
    }
    let call = call_node?;
    // The rule's lookahead for an operator after the call makes pest skip the
    // whitespace and comments that follow; the binding ends with its call.
    let span = Span::new(start, call.span.end);
    Some(LetBinding {
        annotations,
        names,
        call,
        span,
    })
}

fn call(p: Pair<Rule>) -> Option<Call> {
    let span = p.as_span().into();
    let mut inner = p.into_inner();
    let callee = ident(inner.next()?);
    Some(Call {
        callee,
        args: inner.filter_map(arg).collect(),
        span,
    })
}

fn arg(p: Pair<Rule>) -> Option<Arg> {
    let start = p.as_span().start();
    let mut parts: Vec<_> = p.into_inner().collect();
    let value = expr(parts.pop()?)?;
    let name = parts.pop().map(ident);
    // Ends with its value, not with the whitespace pest skipped looking for an operator.
    let span = Span::new(start, value.span().end);
    Some(Arg { name, value, span })
}

/// `a or b and c`: `and` binds tighter; both associate to the left.
fn condition(p: Pair<Rule>) -> Option<Condition> {
    match p.as_rule() {
        Rule::condition | Rule::conjunction => {
            let or = p.as_rule() == Rule::condition;
            let mut parts = p.into_inner().filter_map(condition);
            let first = parts.next()?;
            Some(parts.fold(first, |a, b| {
                if or {
                    Condition::Or(Box::new(a), Box::new(b))
                } else {
                    Condition::And(Box::new(a), Box::new(b))
                }
            }))
        }
        Rule::comparison => {
            let start = p.as_span().start();
            let mut inner = p.into_inner();
            let first = inner.next()?;
            if first.as_rule() == Rule::condition {
                return condition(first);
            }
            let lhs = expr(first)?;
            let op = match inner.next()?.as_str() {
                "==" => CompareOp::Eq,
                "!=" => CompareOp::Ne,
                "<=" => CompareOp::Le,
                ">=" => CompareOp::Ge,
                "<" => CompareOp::Lt,
                _ => CompareOp::Gt,
            };
            let rhs = expr(inner.next()?)?;
            let span = Span::new(start, rhs.span().end);
            Some(Condition::Compare { lhs, op, rhs, span })
        }
        _ => None,
    }
}

fn expr(p: Pair<Rule>) -> Option<Expr> {
    Some(match p.as_rule() {
        // A chain of one precedence level, folded to the left: `a - b - c` is `(a - b) - c`.
        Rule::sum | Rule::product => {
            let mut inner = p.into_inner();
            let mut e = expr(inner.next()?)?;
            while let (Some(op), Some(rhs)) = (inner.next(), inner.next()) {
                let op = match op.as_str() {
                    "+" => BinOp::Add,
                    "-" => BinOp::Sub,
                    "*" => BinOp::Mul,
                    _ => BinOp::Div,
                };
                let rhs = expr(rhs)?;
                let span = Span::new(e.span().start, rhs.span().end);
                e = Expr::Binary {
                    op,
                    lhs: Box::new(e),
                    rhs: Box::new(rhs),
                    span,
                };
            }
            e
        }
        Rule::paren => expr(p.into_inner().next()?)?,
        Rule::string => {
            let quoted = p.as_str();
            Expr::Str {
                value: quoted[1..quoted.len() - 1].to_string(),
                span: p.as_span().into(),
            }
        }
        Rule::call => Expr::Call(call(p)?),
        Rule::number => Expr::Number {
            text: p.as_str().to_string(),
            span: p.as_span().into(),
        },
        Rule::ident => Expr::Ident(ident(p)),
        Rule::list => Expr::List {
            span: p.as_span().into(),
            items: p.into_inner().filter_map(expr).collect(),
        },
        _ => return None,
    })
}

fn ident(p: Pair<Rule>) -> Ident {
    Ident {
        name: p.as_str().to_string(),
        span: p.as_span().into(),
    }
}

/// What a user calls each grammar rule in "expected ..." messages.
fn describe(rule: &Rule) -> &'static str {
    match rule {
        Rule::EOI => "end of file",
        Rule::quant_default => "`quant default { ... }`",
        Rule::use_decl => "`use \"file.qat\"`",
        Rule::string => "a string like `\"blocks.qat\"`",
        Rule::block_def => "`block name(x: tensor) { ... }`",
        Rule::param => "a parameter like `x: tensor`",
        Rule::body => "`{`",
        Rule::list => "a list like `[1, 2]`",
        Rule::model => "`model Name { ... }`",
        Rule::setting => "a setting `name = value`",
        Rule::input_decl => "`input name: f32[...]`",
        Rule::let_binding => "`let name = op(...)`",
        Rule::output_decl => "`output name`",
        Rule::annotation => "an annotation like `@float`",
        Rule::tensor_type => "a tensor type like `f32[1, 28, 28]`",
        Rule::dims | Rule::integer => "an integer",
        Rule::call => "an op call like `relu(x)`",
        Rule::if_stmt => "`if condition { ... }`",
        Rule::int_let => "`let name = integer expression`",
        Rule::condition | Rule::conjunction | Rule::comparison => "a comparison like `stride == 1`",
        Rule::compare_op => "a comparison (`==`, `!=`, `<`, `<=`, `>`, `>=`)",
        Rule::sum | Rule::product | Rule::paren => "an expression",
        Rule::add_op | Rule::mul_op => "an operator (`+`, `-`, `*`, `/`)",
        Rule::arg => "an argument",
        Rule::number => "a number",
        Rule::ident | Rule::annotation_name => "a name",
        Rule::keyword => "a keyword",
        _ => "something else",
    }
}

fn syntax_error(text: &str, e: pest::error::Error<Rule>) -> Diagnostic {
    let (mut start, mut end) = match e.location {
        InputLocation::Pos(p) => (p, p),
        InputLocation::Span((s, e)) => (s, e),
    };
    let mut expected: Vec<String> = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            positives.iter().map(|r| describe(r).to_string()).collect()
        }
        ErrorVariant::CustomError { .. } => Vec::new(),
    };
    if let Some(attempts) = e.parse_attempts() {
        if attempts.max_position >= start {
            start = attempts.max_position.min(text.len());
            end = start;
            // pest keeps its token type private; literal tokens print as themselves.
            let tokens = attempts
                .expected_tokens()
                .into_iter()
                .map(|t| t.to_string())
                // Whitespace and comments may go anywhere; listing them helps nobody.
                .filter(|t| {
                    !t.trim().is_empty()
                        && !matches!(t.as_str(), "BUILTIN_RULE" | "//" | "/*")
                        && !t.contains("..")
                })
                .map(|t| {
                    if t == "_" {
                        "a name".to_string()
                    } else {
                        format!("`{t}`")
                    }
                });
            let rules = attempts
                .call_stacks()
                .into_iter()
                .filter_map(|c| c.parent)
                .map(|r| describe(&r).to_string());
            expected = tokens
                .chain(rules)
                .filter(|s| s != "something else")
                .collect();
        }
    }
    // Point at the offending token (up to the next separator), or at the end of the file.
    if end <= start {
        let rest = &text[start..];
        let token_len = rest
            .find(|c: char| c.is_whitespace() || "(){}[],=:@".contains(c))
            .unwrap_or(rest.len());
        end = start + token_len.max(rest.chars().next().map_or(0, char::len_utf8));
    }
    let found = &text[start..end];
    let found_desc = if found.is_empty() {
        "end of file".to_string()
    } else {
        format!("`{found}`")
    };
    expected.sort_unstable();
    expected.dedup();
    // After a value, an operator could always follow; listing them only helps when
    // nothing else could.
    let operators = ["`*`", "`+`", "`-`", "`/`"];
    if expected.iter().any(|e| !operators.contains(&e.as_str())) {
        expected.retain(|e| !operators.contains(&e.as_str()));
    }
    let expected_text = match expected.as_slice() {
        [] => "something else".to_string(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    };
    let d = Diagnostic::error(
        crate::codes::SYNTAX,
        format!("syntax error: unexpected {found_desc}"),
        Span::new(start, end),
        format!("expected {expected_text}"),
    );
    // Inside an `if` condition a `(` is one of many things; the hint is about `let`.
    if expected.iter().any(|e| e == "`(`") && !expected.iter().any(|e| e == "`==`") {
        d.with_help("a `let` binds the result of one op call, e.g. `let y = relu(x)`; arguments go in parentheses")
    } else {
        d
    }
}
