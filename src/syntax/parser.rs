//! Turns source text into an [`ast::File`], or one syntax diagnostic.

use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest::Parser;

use super::ast::*;
use crate::diagnostics::{Diagnostic, Span};

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/qat.pest"]
struct QatParser;

/// Parses a whole file. Syntax errors stop the parse: the grammar has no recovery.
pub fn parse(text: &str) -> Result<File, Diagnostic> {
    // Detailed attempts give the literal tokens expected at the furthest position.
    pest::set_error_detail(true);
    let mut pairs = QatParser::parse(Rule::file, text).map_err(|e| syntax_error(text, e))?;
    let file = pairs.next().expect("the file rule always yields one pair");
    let items = file
        .into_inner()
        .filter(|p| p.as_rule() != Rule::EOI)
        .map(|p| match p.as_rule() {
            Rule::quant_default => Item::QuantDefault(quant_default(p)),
            Rule::model => Item::Model(model(p)),
            r => unreachable!("grammar yields only items at top level, got {r:?}"),
        })
        .collect();
    Ok(File { items })
}

fn quant_default(p: Pair<Rule>) -> QuantDefault {
    let span = p.as_span().into();
    let settings = p
        .into_inner()
        .map(|s| {
            let mut inner = s.into_inner();
            let name = ident(inner.next().expect("setting has a name"));
            let value = expr(inner.next().expect("setting has a value"));
            Setting { name, value }
        })
        .collect();
    QuantDefault { settings, span }
}

fn model(p: Pair<Rule>) -> Model {
    let span = p.as_span().into();
    let mut inner = p.into_inner();
    let name = ident(inner.next().expect("model has a name"));
    let statements = inner
        .map(|s| match s.as_rule() {
            Rule::input_decl => Statement::Input(input_decl(s)),
            Rule::let_binding => Statement::Let(let_binding(s)),
            Rule::output_decl => Statement::Output(OutputDecl {
                span: s.as_span().into(),
                names: s.into_inner().map(ident).collect(),
            }),
            r => unreachable!("grammar yields only statements in a model, got {r:?}"),
        })
        .collect();
    Model {
        name,
        statements,
        span,
    }
}

fn input_decl(p: Pair<Rule>) -> InputDecl {
    let span = p.as_span().into();
    let mut inner = p.into_inner();
    let name = ident(inner.next().expect("input has a name"));
    let ty = inner.next().expect("input has a type");
    let ty_span = ty.as_span().into();
    let mut ty_inner = ty.into_inner();
    let dtype = ident(ty_inner.next().expect("type has a dtype"));
    let dims = ty_inner
        .next()
        .expect("type has dims")
        .into_inner()
        .map(|d| {
            (
                d.as_str().parse::<u64>().unwrap_or(u64::MAX),
                d.as_span().into(),
            )
        })
        .collect();
    InputDecl {
        name,
        ty: TensorType {
            dtype,
            dims,
            span: ty_span,
        },
        span,
    }
}

fn let_binding(p: Pair<Rule>) -> LetBinding {
    let span = p.as_span().into();
    let mut annotations = Vec::new();
    let mut name = None;
    let mut call_node = None;
    for part in p.into_inner() {
        match part.as_rule() {
            Rule::annotation => {
                let span = part.as_span().into();
                let mut inner = part.into_inner();
                let name = ident(inner.next().expect("annotation has a name"));
                annotations.push(Annotation {
                    name,
                    args: inner.map(arg).collect(),
                    span,
                });
            }
            Rule::ident => name = Some(ident(part)),
            Rule::call => call_node = Some(call(part)),
            r => unreachable!("unexpected {r:?} in let"),
        }
    }
    LetBinding {
        annotations,
        name: name.expect("let has a name"),
        call: call_node.expect("let has a call"),
        span,
    }
}

fn call(p: Pair<Rule>) -> Call {
    let span = p.as_span().into();
    let mut inner = p.into_inner();
    let callee = ident(inner.next().expect("call has a callee"));
    Call {
        callee,
        args: inner.map(arg).collect(),
        span,
    }
}

fn arg(p: Pair<Rule>) -> Arg {
    let span = p.as_span().into();
    let parts: Vec<_> = p.into_inner().collect();
    match parts.len() {
        1 => Arg {
            name: None,
            value: expr(parts[0].clone()),
            span,
        },
        _ => Arg {
            name: Some(ident(parts[0].clone())),
            value: expr(parts[1].clone()),
            span,
        },
    }
}

fn expr(p: Pair<Rule>) -> Expr {
    match p.as_rule() {
        Rule::call => Expr::Call(call(p)),
        Rule::number => Expr::Number {
            text: p.as_str().to_string(),
            span: p.as_span().into(),
        },
        Rule::ident => Expr::Ident(ident(p)),
        r => unreachable!("unexpected {r:?} in expression"),
    }
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
        Rule::model => "`model Name { ... }`",
        Rule::setting => "a setting `name = value`",
        Rule::input_decl => "`input name: f32[...]`",
        Rule::let_binding => "`let name = op(...)`",
        Rule::output_decl => "`output name`",
        Rule::annotation => "an annotation like `@float`",
        Rule::tensor_type => "a tensor type like `f32[1, 28, 28]`",
        Rule::dims | Rule::integer => "an integer",
        Rule::call => "an op call like `relu(x)`",
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
    if expected.iter().any(|e| e == "`(`") {
        d.with_help("a `let` binds the result of one op call, e.g. `let y = relu(x)`; arguments go in parentheses")
    } else {
        d
    }
}
