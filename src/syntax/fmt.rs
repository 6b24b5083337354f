//! `qatc fmt`: one canonical layout for `.qat` files. Works from the AST, so layout
//! is decided here alone; comments are not in the AST and are put back by position
//! (before the statement that follows them, or at the end of the line they ended).
//! Blank lines between statements are kept (at most one); items get exactly one.

use super::ast::*;
use crate::diagnostics::{Diagnostic, Span};

const INDENT: &str = "    ";

/// The canonical layout of `text`, or its syntax errors (a file that does not parse is left alone).
pub fn format(text: &str) -> Result<String, Vec<Diagnostic>> {
    let (file, errors) = super::parse(text);
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut p = Printer {
        src: text,
        comments: comments(text),
        next: 0,
        out: String::new(),
        prev_end: None,
    };
    for item in &file.items {
        // Items are always separated by one blank line.
        if p.prev_end.is_some() && !p.out.ends_with("\n\n") {
            p.out.push('\n');
        }
        p.leading_comments(item.span().start, "");
        match item {
            Item::Use(u) => {
                let quoted = &text[u.path_span.start..u.path_span.end];
                p.line("", &format!("use {quoted}"), u.span)
            }
            Item::QuantDefault(q) => {
                p.open(
                    q.span.start,
                    "quant default {",
                    q.span.start + "quant".len(),
                );
                for s in &q.settings {
                    let span = Span::new(s.name.span.start, s.value.span().end);
                    p.leading_comments(span.start, INDENT);
                    let value = p.expr(&s.value, 0);
                    p.line(INDENT, &format!("{} = {value}", s.name.name), span);
                }
                p.close(q.span);
            }
            Item::Block(b) => {
                let params: Vec<String> = b
                    .params
                    .iter()
                    .map(|x| match &x.default {
                        Some(d) => format!("{}: {} = {}", x.name.name, x.ty.name, p.expr(d, 0)),
                        None => format!("{}: {}", x.name.name, x.ty.name),
                    })
                    .collect();
                p.open(
                    b.span.start,
                    &format!("block {}({}) {{", b.name.name, params.join(", ")),
                    b.name.span.end,
                );
                p.statements(&b.statements, 1);
                p.close(b.span);
            }
            Item::Model(m) => {
                p.open(
                    m.span.start,
                    &format!("model {} {{", m.name.name),
                    m.name.span.end,
                );
                p.statements(&m.statements, 1);
                p.close(m.span);
            }
        }
    }
    p.leading_comments(text.len(), "");
    let mut out = p.out;
    while out.ends_with("\n\n") {
        out.pop();
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

struct Comment {
    span: Span,
}

/// Every comment in the file, in order; string literals are skipped so `"a//b"` is not one.
fn comments(text: &str) -> Vec<Comment> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += 1;
                }
                i += 1;
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                let end = text[i..].find('\n').map_or(text.len(), |n| i + n);
                out.push(Comment {
                    span: Span::new(i, end),
                });
                i = end;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = text[i + 2..]
                    .find("*/")
                    .map_or(text.len(), |n| i + 2 + n + 2);
                out.push(Comment {
                    span: Span::new(i, end),
                });
                i = end;
            }
            _ => i += 1,
        }
    }
    out
}

struct Printer<'a> {
    src: &'a str,
    comments: Vec<Comment>,
    /// The first comment not printed yet.
    next: usize,
    out: String,
    /// End of the last thing printed from the source, for blank lines and trailing comments.
    prev_end: Option<usize>,
}

impl Printer<'_> {
    /// Whether the source has a blank line between the last printed thing and `start`.
    fn blank_before(&self, start: usize) -> bool {
        self.prev_end
            .is_some_and(|end| end <= start && self.src[end..start].matches('\n').count() >= 2)
    }

    /// Prints, on their own lines, the comments that start before `pos`.
    fn leading_comments(&mut self, pos: usize, indent: &str) {
        while let Some(c) = self.comments.get(self.next).filter(|c| c.span.start < pos) {
            let span = c.span;
            self.next += 1;
            if self.blank_before(span.start)
                && !self.out.ends_with("{\n")
                && !self.out.ends_with("\n\n")
                && !self.out.is_empty()
            {
                self.out.push('\n');
            }
            let text = self.src[span.start..span.end].trim_end();
            self.out.push_str(indent);
            self.out.push_str(text);
            self.out.push('\n');
            self.prev_end = Some(span.end);
        }
    }

    /// Appends comments that start on the line where the source of the last line ended.
    fn trailing_comments(&mut self, end: usize) {
        while let Some(c) = self
            .comments
            .get(self.next)
            .filter(|c| c.span.start >= end && !self.src[end..c.span.start].contains('\n'))
        {
            let span = c.span;
            self.next += 1;
            if self.out.ends_with('\n') {
                self.out.pop();
            }
            self.out.push_str("  ");
            self.out.push_str(self.src[span.start..span.end].trim_end());
            self.out.push('\n');
            self.prev_end = Some(span.end);
        }
    }

    fn line(&mut self, indent: &str, text: &str, span: Span) {
        if self.blank_before(span.start)
            && !self.out.ends_with("{\n")
            && !self.out.ends_with("\n\n")
        {
            self.out.push('\n');
        }
        for (i, l) in text.lines().enumerate() {
            if i > 0 || !l.is_empty() {
                self.out.push_str(indent);
            }
            self.out.push_str(l);
            self.out.push('\n');
        }
        // Comments inside the construct keep their order, on their own lines after it
        // (after a comment trailing the line, which the source has later still).
        let mut inside = Vec::new();
        while let Some(c) = self
            .comments
            .get(self.next)
            .filter(|c| c.span.start < span.end)
        {
            inside.push(c.span);
            self.next += 1;
        }
        self.prev_end = Some(span.end);
        self.trailing_comments(span.end);
        for s in inside {
            self.out.push_str(indent);
            self.out.push_str(self.src[s.start..s.end].trim_end());
            self.out.push('\n');
        }
    }

    /// `model M {`: comments on the header line stay there.
    fn open(&mut self, start: usize, header: &str, header_end: usize) {
        if self.blank_before(start) && !self.out.ends_with("\n\n") {
            self.out.push('\n');
        }
        self.out.push_str(header);
        self.out.push('\n');
        // Anything between the header and `{` moves with the header.
        let brace = self.src[header_end..]
            .find('{')
            .map_or(header_end, |n| header_end + n + 1);
        self.prev_end = Some(brace);
        // Only a comment right after `{` trails the header; one after a statement on the
        // same line belongs to that statement.
        if self.comments.get(self.next).is_some_and(|c| {
            c.span.start >= brace && self.src[brace..c.span.start].trim().is_empty()
        }) {
            self.trailing_comments(brace);
        }
    }

    fn close(&mut self, span: Span) {
        self.leading_comments(span.end - 1, INDENT);
        self.out.push_str("}\n");
        self.prev_end = Some(span.end);
        self.trailing_comments(span.end);
    }

    /// `if condition {` ... `} else {` ... `}` at `depth` levels of indentation.
    fn if_statement(&mut self, i: &IfStatement, depth: usize) {
        let indent = INDENT.repeat(depth);
        if self.blank_before(i.span.start)
            && !self.out.ends_with("{\n")
            && !self.out.ends_with("\n\n")
        {
            self.out.push('\n');
        }
        let header = format!("{indent}if {} {{", i.condition);
        self.open(i.span.start, &header, i.condition.span().end);
        self.statements(&i.then, depth + 1);
        let then_end = i
            .then
            .last()
            .map_or(i.condition.span().end, |s| s.span().end);
        let inner = INDENT.repeat(depth + 1);
        if let Some(otherwise) = &i.otherwise {
            // The `}` that closes the first branch, then `else {`.
            let else_at = self.src[then_end..i.span.end]
                .find("else")
                .map_or(then_end, |n| then_end + n);
            self.leading_comments(else_at, &inner);
            self.out.push_str(&format!("{indent}}} else {{\n"));
            let brace = self.src[else_at..]
                .find('{')
                .map_or(else_at, |n| else_at + n + 1);
            self.prev_end = Some(brace);
            self.statements(otherwise, depth + 1);
        }
        self.leading_comments(i.span.end - 1, &inner);
        self.out.push_str(&format!("{indent}}}\n"));
        self.prev_end = Some(i.span.end);
        self.trailing_comments(i.span.end);
    }

    fn statements(&mut self, statements: &[Statement], depth: usize) {
        let indent = INDENT.repeat(depth);
        for s in statements {
            self.leading_comments(s.span().start, &indent);
            let text = match s {
                Statement::If(i) => {
                    self.if_statement(i, depth);
                    continue;
                }
                Statement::IntLet(l) => format!("let {} = {}", l.name.name, self.expr(&l.value, 0)),
                Statement::Input(i) => {
                    let dims: Vec<&str> =
                        i.ty.dims
                            .iter()
                            .map(|(_, sp)| &self.src[sp.start..sp.end])
                            .collect();
                    format!(
                        "input {}: {}[{}]",
                        i.name.name,
                        i.ty.dtype.name,
                        dims.join(", ")
                    )
                }
                Statement::Let(l) => {
                    let mut t = String::new();
                    for a in &l.annotations {
                        t.push('@');
                        t.push_str(&a.name.name);
                        if self.src[a.name.span.end..a.span.end].contains('(') {
                            t.push_str(&format!("({})", self.args(&a.args)));
                        }
                        t.push('\n');
                    }
                    let names: Vec<&str> = l.names.iter().map(|n| n.name.as_str()).collect();
                    let call = self.call(&l.call, 0);
                    t.push_str(&format!("let {} = {call}", names.join(", ")));
                    t
                }
                Statement::Output(o) => format!(
                    "output {}",
                    o.names
                        .iter()
                        .map(|n| n.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            self.line(&indent, &text, s.span());
        }
    }

    /// A call on one line; across lines, one argument per line, when a `//` comment
    /// sits among its arguments (so that each comment stays with its argument).
    /// Block comments stay inline, before the argument they precede.
    fn call(&mut self, c: &Call, depth: usize) -> String {
        let multiline = self.comments[self.next..]
            .iter()
            .take_while(|k| k.span.start < c.span.end)
            .any(|k| k.span.start > c.callee.span.end && self.is_line_comment(k));
        let mut parts: Vec<(String, Vec<String>)> = Vec::new();
        for (i, a) in c.args.iter().enumerate() {
            let mut part = String::new();
            // Comments before this argument: trailing the previous one when on its line.
            while let Some(k) = self.take_comment_before(a.span.start) {
                let text = self.src[k.start..k.end].trim_end().to_string();
                let on_previous_line =
                    i > 0 && !self.src[c.args[i - 1].span.end..k.start].contains('\n') && multiline;
                match parts.last_mut() {
                    Some((_, trailing)) if on_previous_line => trailing.push(text),
                    _ if multiline && text.starts_with("//") => {
                        // A `//` comment on its own line before the argument.
                        part.push_str(&text);
                        part.push('\n');
                    }
                    _ => {
                        part.push_str(&text);
                        part.push(' ');
                    }
                }
            }
            match &a.name {
                Some(n) => {
                    let value = self.expr(&a.value, depth + 1);
                    part.push_str(&format!("{} = {value}", n.name));
                }
                None => part.push_str(&self.expr(&a.value, depth + 1)),
            }
            parts.push((part, Vec::new()));
        }
        // Comments after the last argument, before `)`.
        let mut closing = Vec::new();
        while let Some(k) = self.take_comment_before(c.span.end) {
            let text = self.src[k.start..k.end].trim_end().to_string();
            match parts.last_mut() {
                Some((_, trailing))
                    if multiline
                        && !self.src[c.args[c.args.len() - 1].span.end..k.start].contains('\n') =>
                {
                    trailing.push(text)
                }
                _ => closing.push(text),
            }
        }
        if !multiline {
            let mut args: Vec<String> = parts.into_iter().map(|(p, _)| p).collect();
            if !closing.is_empty() {
                let last = args.pop().unwrap_or_default();
                args.push(format!("{last} {}", closing.join(" ")).trim().to_string());
            }
            return format!("{}({})", c.callee.name, args.join(", "));
        }
        let inner = INDENT.repeat(depth + 1);
        let mut out = format!("{}(\n", c.callee.name);
        let count = parts.len();
        for (i, (part, trailing)) in parts.into_iter().enumerate() {
            for (j, line) in part.lines().enumerate() {
                if j > 0 {
                    out.push('\n');
                }
                out.push_str(&inner);
                out.push_str(line);
            }
            if i + 1 < count {
                out.push(',');
            }
            for comment in trailing {
                out.push_str("  ");
                out.push_str(&comment);
            }
            out.push('\n');
        }
        for comment in closing {
            out.push_str(&inner);
            out.push_str(&comment);
            out.push('\n');
        }
        out.push_str(&INDENT.repeat(depth));
        out.push(')');
        out
    }

    fn is_line_comment(&self, c: &Comment) -> bool {
        self.src[c.span.start..].starts_with("//")
    }

    /// The next comment, when it starts before `pos`; it counts as printed.
    fn take_comment_before(&mut self, pos: usize) -> Option<Span> {
        let c = self
            .comments
            .get(self.next)
            .filter(|c| c.span.start < pos)?;
        self.next += 1;
        Some(c.span)
    }

    fn args(&mut self, args: &[Arg]) -> String {
        args.iter()
            .map(|a| match &a.name {
                Some(n) => format!("{} = {}", n.name, self.expr(&a.value, 0)),
                None => self.expr(&a.value, 0),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn expr(&mut self, e: &Expr, depth: usize) -> String {
        match e {
            // Calls keep the comments among their arguments; the rest prints as written.
            Expr::Call(c) => self.call(c, depth),
            other => other.to_string(),
        }
    }
}
