//! Completion and signature help while typing. The line being typed rarely parses
//! (`let y = con`, `conv2d(x, fil`), and a broken line drops its whole item from
//! the AST, so what is in scope also comes from a lexical scan of the text before
//! the cursor; blocks come from this file's and its imports' ASTs and headers.

use std::collections::HashSet;
use std::path::Path;

use lsp_types as lsp;

use super::{Document, Server};
use crate::ir::modules::{normalize, Loader};
use crate::ir::ops::{self, OpDef};
use crate::syntax::{self, ast};

/// A block a call may name: defined in this file or in a file it imports.
struct BlockInfo {
    name: String,
    /// (name, type) of each parameter.
    params: Vec<(String, String)>,
    /// Where it comes from, for the completion's detail.
    origin: String,
}

impl BlockInfo {
    fn signature(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(n, t)| format!("{n}: {t}"))
            .collect();
        format!("block {}({})", self.name, params.join(", "))
    }
}

/// The call whose parentheses are open at the cursor.
struct OpenCall<'a> {
    name: &'a str,
    /// The byte offset just after its `(`.
    args_start: usize,
}

impl Server {
    pub(super) fn completion(
        &self,
        pos: &lsp::TextDocumentPositionParams,
    ) -> Option<lsp::CompletionResponse> {
        let (doc, offset) = self.at(pos)?;
        let before = &doc.text.as_str()[..offset];
        let blocks = self.blocks(doc);
        let mut items = Vec::new();
        // Inside `op(...)` or `block(...)`: the arguments not given yet, first.
        if let Some(call) = open_call(before) {
            let given = given_names(&before[call.args_start..]);
            if let Some(def) = ops::lookup(call.name) {
                for a in def.args.iter().filter(|a| !given.contains(a.name)) {
                    items.push(lsp::CompletionItem {
                        label: a.name.to_string(),
                        kind: Some(lsp::CompletionItemKind::FIELD),
                        detail: Some(match a.default {
                            Some(d) => format!("{} (default: {d})", a.ty),
                            None => format!("{} (required)", a.ty),
                        }),
                        documentation: Some(lsp::Documentation::String(a.doc.to_string())),
                        insert_text: Some(format!("{} = ", a.name)),
                        sort_text: Some(format!("0{}", a.name)),
                        ..Default::default()
                    });
                }
            } else if let Some(b) = blocks.iter().find(|b| b.name == call.name) {
                // Parameters filled by position are given too.
                let (position, _) = current_argument(&before[call.args_start..]);
                let remaining = b
                    .params
                    .iter()
                    .skip(position)
                    .filter(|(n, _)| !given.contains(n.as_str()));
                for (name, ty) in remaining {
                    items.push(lsp::CompletionItem {
                        label: name.clone(),
                        kind: Some(lsp::CompletionItemKind::FIELD),
                        detail: Some(format!("{ty} (required)")),
                        documentation: Some(lsp::Documentation::String(b.signature())),
                        insert_text: Some(format!("{name} = ")),
                        sort_text: Some(format!("0{name}")),
                        ..Default::default()
                    });
                }
            }
        }
        // Bindings: the checker's (with shapes) where the item parsed, else the scan's.
        let index = &doc.checked.index;
        let mut seen = HashSet::new();
        let checked = index
            .names_in_scope(offset)
            .into_iter()
            .rev()
            .filter(|d| !d.global)
            .map(|d| (d.name.clone(), Some(d)));
        let scanned = names_before(before).into_iter().map(|n| (n, None));
        // Hover text is made only for the names offered, not for every shadowed one.
        for (name, definition) in checked.chain(scanned) {
            if !seen.insert(name.clone()) {
                continue;
            }
            items.push(lsp::CompletionItem {
                label: name.clone(),
                kind: Some(lsp::CompletionItemKind::VARIABLE),
                documentation: definition.map(|d| {
                    lsp::Documentation::MarkupContent(lsp::MarkupContent {
                        kind: lsp::MarkupKind::Markdown,
                        value: d.hover(),
                    })
                }),
                sort_text: Some(format!("1{name}")),
                ..Default::default()
            });
        }
        for b in &blocks {
            if !seen.insert(b.name.clone()) {
                continue;
            }
            items.push(lsp::CompletionItem {
                label: b.name.clone(),
                kind: Some(lsp::CompletionItemKind::CLASS),
                detail: Some(format!("{} ({})", b.signature(), b.origin)),
                sort_text: Some(format!("2{}", b.name)),
                ..Default::default()
            });
        }
        for op in ops::OPS {
            items.push(lsp::CompletionItem {
                label: op.name.to_string(),
                kind: Some(lsp::CompletionItemKind::FUNCTION),
                detail: Some(op.signature()),
                documentation: Some(lsp::Documentation::MarkupContent(lsp::MarkupContent {
                    kind: lsp::MarkupKind::Markdown,
                    value: op.markdown(),
                })),
                sort_text: Some(format!("3{}", op.name)),
                ..Default::default()
            });
        }
        for kw in [
            "model", "block", "use", "input", "let", "output", "quant", "default",
        ] {
            items.push(lsp::CompletionItem {
                label: kw.into(),
                kind: Some(lsp::CompletionItemKind::KEYWORD),
                sort_text: Some(format!("4{kw}")),
                ..Default::default()
            });
        }
        Some(lsp::CompletionResponse::Array(items))
    }

    pub(super) fn signature_help(
        &self,
        pos: &lsp::TextDocumentPositionParams,
    ) -> Option<lsp::SignatureHelp> {
        let (doc, offset) = self.at(pos)?;
        let before = &doc.text.as_str()[..offset];
        let call = open_call(before)?;
        let args = &before[call.args_start..];
        let (position, current) = current_argument(args);
        // Parameters as (label, documentation); the first `positional` take positions.
        let (params, positional, doc_text): (Vec<(String, String)>, usize, String) =
            if let Some(def) = ops::lookup(call.name) {
                op_parameters(def)
            } else {
                let blocks = self.blocks(doc);
                let b = blocks.iter().find(|b| b.name == call.name)?;
                let params = b
                    .params
                    .iter()
                    .map(|(n, t)| (format!("{n}: {t}"), format!("`{n}`: {t}")))
                    .collect::<Vec<_>>();
                let n = params.len();
                (params, n, format!("{} ({})", b.signature(), b.origin))
            };
        let mut label = format!("{}(", call.name);
        let mut parameters = Vec::new();
        for (i, (p, pdoc)) in params.iter().enumerate() {
            if i > 0 {
                label.push_str(", ");
            }
            let start = label.encode_utf16().count() as u32;
            label.push_str(p);
            let end = label.encode_utf16().count() as u32;
            parameters.push(lsp::ParameterInformation {
                label: lsp::ParameterLabel::LabelOffsets([start, end]),
                documentation: Some(lsp::Documentation::String(pdoc.clone())),
            });
        }
        label.push(')');
        let name_of = |p: &str| p.split([' ', ':']).next().unwrap_or("").to_string();
        let given = given_names(args);
        let active = match current {
            Some(name) => params.iter().position(|(p, _)| name_of(p) == name),
            None if position < positional => Some(position),
            // Past the positional ones: the first named argument not given yet.
            None => params
                .iter()
                .enumerate()
                .skip(positional.min(params.len()))
                .find(|(_, (p, _))| !given.contains(name_of(p).as_str()))
                .map(|(i, _)| i),
        };
        Some(lsp::SignatureHelp {
            signatures: vec![lsp::SignatureInformation {
                label,
                documentation: Some(lsp::Documentation::MarkupContent(lsp::MarkupContent {
                    kind: lsp::MarkupKind::Markdown,
                    value: doc_text,
                })),
                parameters: Some(parameters),
                active_parameter: active.map(|a| a as u32),
            }],
            active_signature: Some(0),
            active_parameter: active.map(|a| a as u32),
        })
    }

    /// Blocks a call in `doc` may name: its own (parsed, or scanned from headers when
    /// their item is broken) and those of the files it imports.
    fn blocks(&self, doc: &Document) -> Vec<BlockInfo> {
        let text = doc.text.as_str();
        let file = &doc.ast;
        let mut out: Vec<BlockInfo> = blocks_of(file, "this file");
        for (name, params) in scanned_headers(text) {
            if !out.iter().any(|b| b.name == name) {
                out.push(BlockInfo {
                    name,
                    params,
                    origin: "this file".into(),
                });
            }
        }
        let dir = Path::new(&doc.text.file.name)
            .parent()
            .unwrap_or(Path::new(""))
            .to_path_buf();
        let mut overlay = self.overlay();
        for item in &file.items {
            let ast::Item::Use(u) = item else { continue };
            let Ok(imported) = overlay.load(&normalize(&dir.join(&u.path))) else {
                continue;
            };
            let (imported, _) = syntax::parse(&imported);
            out.extend(blocks_of(&imported, &u.path));
        }
        out
    }
}

fn blocks_of(file: &ast::File, origin: &str) -> Vec<BlockInfo> {
    file.items
        .iter()
        .filter_map(|item| match item {
            ast::Item::Block(b) => Some(BlockInfo {
                name: b.name.name.clone(),
                params: b
                    .params
                    .iter()
                    .map(|p| (p.name.name.clone(), p.ty.name.clone()))
                    .collect(),
                origin: origin.to_string(),
            }),
            _ => None,
        })
        .collect()
}

/// An op's parameters for signature help: its tensors, then its named arguments.
fn op_parameters(def: &OpDef) -> (Vec<(String, String)>, usize, String) {
    let tensors: Vec<(String, String)> = if def.variadic {
        vec![("x1, x2, ...".into(), "tensors".into())]
    } else {
        (0..def.inputs)
            .map(|i| {
                let name = if def.inputs == 1 {
                    "x".to_string()
                } else {
                    format!("x{}", i + 1)
                };
                (name, "a tensor".to_string())
            })
            .collect()
    };
    let positional = if def.variadic { usize::MAX } else { def.inputs };
    let named = def.args.iter().map(|a| {
        let label = match a.default {
            Some(d) => format!("{} = {d}", a.name),
            None => a.name.to_string(),
        };
        (label, format!("{} ({})", a.doc, a.ty))
    });
    let params = tensors.into_iter().chain(named).collect();
    (params, positional, def.doc.to_string())
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The call whose parentheses are still open at the end of `before`.
fn open_call(before: &str) -> Option<OpenCall<'_>> {
    let mut depth = 0i32;
    for (i, c) in before.char_indices().rev() {
        match c {
            ')' | ']' => depth += 1,
            '[' if depth > 0 => depth -= 1,
            // An unclosed list inside the call (`shape = [4, `).
            '[' => {}
            '(' if depth == 0 => {
                let head = before[..i].trim_end();
                let start = head.rfind(|c: char| !is_ident(c)).map_or(0, |n| n + 1);
                let name = &head[start..];
                // `@quant(` and `block b(` are not calls.
                let prefix = head[..start].trim_end();
                if name.is_empty() || prefix.ends_with('@') || prefix.ends_with("block") {
                    return None;
                }
                return Some(OpenCall {
                    name,
                    args_start: i + 1,
                });
            }
            '(' => depth -= 1,
            '{' | '}' => return None,
            _ => {}
        }
    }
    None
}

/// Splits the text of a call's arguments at its top-level commas.
fn top_level_args(args: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in args.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&args[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&args[start..]);
    out
}

/// The names of the named arguments already written in an open call.
fn given_names(args: &str) -> HashSet<&str> {
    top_level_args(args)
        .into_iter()
        .filter_map(|a| a.split_once('=').map(|(n, _)| n.trim()))
        .collect()
}

/// The index of the argument being typed, and its name if it is a named one.
fn current_argument(args: &str) -> (usize, Option<&str>) {
    let all = top_level_args(args);
    let current = all.last().copied().unwrap_or("");
    let name = current
        .split_once('=')
        .map(|(n, _)| n.trim())
        .filter(|n| !n.is_empty() && n.chars().all(is_ident));
    (all.len() - 1, name)
}

/// The names bound before the cursor in the enclosing model or block, found in the
/// text alone (parameters, `input`s and `let`s on complete lines), latest first.
fn names_before(before: &str) -> Vec<String> {
    let complete = match before.rfind('\n') {
        Some(n) => &before[..n],
        None => return Vec::new(),
    };
    let mut names = Vec::new();
    for line in complete.lines().rev() {
        let line = strip_comment(line).trim();
        if let Some(rest) = keyword(line, "let").or_else(|| {
            // `@quant(...) let x = ...`
            if line.starts_with('@') {
                line.find(" let ").map(|n| line[n + 5..].trim_start())
            } else {
                None
            }
        }) {
            if let Some((lhs, _)) = rest.split_once('=') {
                for n in lhs.split(',') {
                    push_ident(&mut names, n.trim());
                }
            }
        } else if let Some(rest) = keyword(line, "input") {
            push_ident(&mut names, rest.split(':').next().unwrap_or("").trim());
        } else if let Some(rest) = keyword(line, "block") {
            if let Some((_, params)) = parse_header(rest) {
                for (n, _) in params {
                    push_ident(&mut names, &n);
                }
            }
            break;
        } else if keyword(line, "model").is_some() {
            break;
        }
    }
    names
}

fn push_ident(names: &mut Vec<String>, name: &str) {
    if !name.is_empty() && name.chars().all(is_ident) && !names.iter().any(|n| n == name) {
        names.push(name.to_string());
    }
}

fn strip_comment(line: &str) -> &str {
    line.split("//").next().unwrap_or(line)
}

/// The rest of `line` after a leading keyword (followed by a space), if it starts with it.
fn keyword<'a>(line: &'a str, word: &str) -> Option<&'a str> {
    line.strip_prefix(word)
        .filter(|rest| rest.starts_with(char::is_whitespace))
        .map(str::trim_start)
}

/// `name(x: tensor, n: int) {` -> the name and its (parameter, type) pairs.
fn parse_header(rest: &str) -> Option<(String, Vec<(String, String)>)> {
    let (name, tail) = rest.split_once('(').unwrap_or((rest, ""));
    let name = name.trim();
    if name.is_empty() || !name.chars().all(is_ident) {
        return None;
    }
    let params = tail
        .split(')')
        .next()
        .unwrap_or("")
        .split(',')
        .filter_map(|p| {
            let (n, t) = p.split_once(':')?;
            Some((n.trim().to_string(), t.trim().to_string()))
        })
        .filter(|(n, _)| !n.is_empty() && n.chars().all(is_ident))
        .collect();
    Some((name.to_string(), params))
}

/// Block headers (`block name(...)`) anywhere in the text.
fn scanned_headers(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    text.lines()
        .filter_map(|l| keyword(strip_comment(l).trim(), "block"))
        .filter_map(parse_header)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_call_finds_the_innermost_unclosed_call() {
        let c = open_call("let y = conv2d(x, fil").unwrap();
        assert_eq!(c.name, "conv2d");
        assert_eq!(c.args_start, "let y = conv2d(".len());
        assert_eq!(
            open_call("let y = reshape(x, shape = [4, ").unwrap().name,
            "reshape"
        );
        assert!(open_call("let y = relu(x)\n").is_none());
        assert!(open_call("@quant(").is_none());
        assert!(open_call("block b(").is_none());
    }

    #[test]
    fn the_argument_being_typed_is_counted_at_top_level() {
        assert_eq!(current_argument("x, fil"), (1, None));
        assert_eq!(current_argument("x, kernel = "), (1, Some("kernel")));
        assert_eq!(current_argument("x, shape = [1, 2"), (1, Some("shape")));
        assert_eq!(
            given_names("x, filters = 8, kernel = 3, s"),
            HashSet::from(["filters", "kernel"])
        );
    }

    #[test]
    fn names_before_scans_the_enclosing_item_only() {
        let text = "model A {\n    input a: f32[4]\n}\nblock b(t: tensor, n: int) {\n    input bad\n    @quant(weights = int4) let u, v = split(t)\n    // let no = relu(t)\n    let w = relu(u)\n    let y = con";
        assert_eq!(names_before(text), ["w", "u", "v", "bad", "t", "n"]);
        assert_eq!(names_before("let y = con"), Vec::<String>::new());
    }

    #[test]
    fn block_headers_are_scanned_from_text() {
        let headers = scanned_headers("block conv_bn(x: tensor, filters: int) {\n  // block no(\n");
        assert_eq!(
            headers,
            vec![(
                "conv_bn".to_string(),
                vec![
                    ("x".to_string(), "tensor".to_string()),
                    ("filters".to_string(), "int".to_string())
                ]
            )]
        );
    }
}
