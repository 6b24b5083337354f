//! Brackets and block comments as the lexer sees them (outside comments and strings).
//! pest reports a missing `)` where it gave up, often lines later; this walk finds the
//! bracket or `/*` that was left open, so the error can point at it.

use crate::diagnostics::{Diagnostic, Span};

/// Every bracket outside comments and strings, with its byte offset, and where a block
/// comment opens that never closes.
pub(super) struct Scan {
    pub brackets: Vec<(usize, u8)>,
    pub unclosed_comment: Option<usize>,
}

pub(super) fn scan(text: &str) -> Scan {
    let bytes = text.as_bytes();
    let mut brackets = Vec::new();
    let mut unclosed_comment = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                i = text[i..].find('\n').map_or(bytes.len(), |n| i + n);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                match text[i + 2..].find("*/") {
                    Some(n) => i += 2 + n + 2,
                    None => {
                        unclosed_comment = Some(i);
                        i = bytes.len();
                    }
                }
                continue;
            }
            b'"' => {
                i = text[i + 1..]
                    .find(['"', '\n'])
                    .map_or(bytes.len(), |n| i + 1 + n);
            }
            b @ (b'(' | b'[' | b'{' | b')' | b']' | b'}') => brackets.push((i, b)),
            _ => {}
        }
        i += 1;
    }
    Scan {
        brackets,
        unclosed_comment,
    }
}

fn closer(open: u8) -> u8 {
    match open {
        b'(' => b')',
        b'[' => b']',
        _ => b'}',
    }
}

/// A syntax error `d` found by pest in `text`, told at the place to fix when a
/// delimiter left open (or closed by the wrong bracket) before it explains it, or a
/// `let x =` with nothing after it on its line.
pub(super) fn explain(text: &str, d: Diagnostic) -> Diagnostic {
    let at = d.primary.span.start;
    let scan = scan(text);
    if let Some(open) = scan.unclosed_comment.filter(|&open| open <= at) {
        return Diagnostic::error(
            crate::codes::SYNTAX,
            "syntax error: unclosed block comment",
            Span::new(open, open + 2),
            "this `/*` is never closed by `*/`",
        );
    }
    let mut open: Vec<(usize, u8)> = Vec::new();
    for &(pos, b) in &scan.brackets {
        if pos > at {
            break;
        }
        match b {
            b'(' | b'[' | b'{' => open.push((pos, b)),
            _ => match open.pop() {
                Some((o, ob)) if closer(ob) != b => {
                    return Diagnostic::error(
                        crate::codes::SYNTAX,
                        format!("syntax error: `{}` closed by `{}`", ob as char, b as char),
                        Span::new(pos, pos + 1),
                        format!("expected `{}` here", closer(ob) as char),
                    )
                    .with_label(Span::new(o, o + 1), format!("`{}` opens here", ob as char));
                }
                _ => {}
            },
        }
    }
    if let Some(d) = empty_let(text, at) {
        return d;
    }
    // The innermost bracket open where pest gave up that the rest of the text does not
    // close: a closer of another kind (the block's `}` after `relu(x`) gives it away.
    let mut stack: Vec<(Option<usize>, u8)> = open.iter().map(|&(p, b)| (Some(p), b)).collect();
    let mut unclosed = None;
    for &(_, b) in scan.brackets.iter().filter(|(pos, _)| *pos > at) {
        match b {
            b'(' | b'[' | b'{' => stack.push((None, b)),
            _ => match stack.pop() {
                Some((Some(pos), ob)) if closer(ob) != b => {
                    unclosed = Some((pos, ob));
                    break;
                }
                _ => {}
            },
        }
    }
    let unclosed =
        unclosed.or_else(|| stack.iter().rev().find_map(|&(pos, b)| pos.map(|p| (p, b))));
    match unclosed {
        Some((pos, b)) => Diagnostic::error(
            crate::codes::SYNTAX,
            format!("syntax error: unclosed `{}`", b as char),
            Span::new(pos, pos + 1),
            format!("this `{}` is never closed", b as char),
        )
        .with_label(
            d.primary.span,
            format!(
                "expected `{}` before this ({})",
                closer(b) as char,
                d.primary.message
            ),
        ),
        None => d,
    }
}

/// `let z =` with nothing after the `=` on its line, when the error comes after it:
/// pest reads on into the next line and complains there.
fn empty_let(text: &str, at: usize) -> Option<Diagnostic> {
    let line_start = text[..at].rfind('\n').map_or(0, |n| n + 1);
    // The last non-blank line before the error's line.
    let before = &text[..line_start];
    let prev_start = before.trim_end().rfind('\n').map_or(0, |n| n + 1);
    let prev = &text[prev_start..line_start];
    let code = prev.find("//").map_or(prev, |c| &prev[..c]).trim_end();
    if !(code.trim_start().starts_with("let ") && code.ends_with('=')) {
        return None;
    }
    let eq = prev_start + code.len() - 1;
    Some(
        Diagnostic::error(
            crate::codes::SYNTAX,
            "syntax error: nothing after `=`",
            Span::new(eq, eq + 1),
            "expected an op or block call after `=`",
        )
        .with_help("a `let` binds the result of one call, e.g. `let y = relu(x)`"),
    )
}
