//! `qatc lsp`: a language server over stdio. Every change re-checks the document
//! (checking is fast enough to need no incremental state) and publishes its
//! diagnostics; hover, go-to-definition and completion read the checker's index,
//! documents symbols come from the AST, and formatting is `qatc fmt`.

mod convert;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lsp_server::{Connection, Message, Notification, Request, RequestId, Response};
use lsp_types as lsp;
use lsp_types::notification::Notification as _;
use lsp_types::request::Request as _;

use crate::diagnostics::SourceFile;
use crate::ir::index::Target;
use crate::ir::modules::Loader;
use crate::ir::{ops, CheckedFile};
use crate::syntax::{self, ast};

/// Runs the server until the client says `exit`.
pub fn run_stdio() -> Result<(), String> {
    let (connection, io_threads) = Connection::stdio();
    let capabilities = lsp::ServerCapabilities {
        text_document_sync: Some(lsp::TextDocumentSyncCapability::Kind(
            lsp::TextDocumentSyncKind::FULL,
        )),
        hover_provider: Some(lsp::HoverProviderCapability::Simple(true)),
        definition_provider: Some(lsp::OneOf::Left(true)),
        completion_provider: Some(lsp::CompletionOptions {
            trigger_characters: Some(vec!["(".into(), ",".into(), " ".into()]),
            ..Default::default()
        }),
        document_symbol_provider: Some(lsp::OneOf::Left(true)),
        document_formatting_provider: Some(lsp::OneOf::Left(true)),
        ..Default::default()
    };
    let caps = serde_json::to_value(capabilities).map_err(|e| e.to_string())?;
    connection
        .initialize(caps)
        .map_err(|e| format!("initialize failed: {e}"))?;
    let mut server = Server {
        documents: HashMap::new(),
    };
    for message in &connection.receiver {
        match message {
            Message::Request(req) => {
                if connection
                    .handle_shutdown(&req)
                    .map_err(|e| e.to_string())?
                {
                    break;
                }
                let response = server.request(req);
                connection
                    .sender
                    .send(Message::Response(response))
                    .map_err(|e| e.to_string())?;
            }
            Message::Notification(n) => {
                for out in server.notification(n) {
                    connection
                        .sender
                        .send(Message::Notification(out))
                        .map_err(|e| e.to_string())?;
                }
            }
            Message::Response(_) => {}
        }
    }
    drop(connection);
    io_threads.join().map_err(|e| e.to_string())
}

struct Document {
    file: SourceFile,
    checked: CheckedFile,
}

struct Server {
    documents: HashMap<lsp::Url, Document>,
}

/// Imports resolve to open buffers first (unsaved edits count), then to disk.
struct Overlay<'a> {
    open: HashMap<PathBuf, &'a str>,
}

impl Loader for Overlay<'_> {
    fn load(&mut self, path: &Path) -> std::io::Result<String> {
        match self.open.get(path) {
            Some(text) => Ok(text.to_string()),
            None => crate::ir::modules::read_source_text(path),
        }
    }
}

fn file_name(uri: &lsp::Url) -> String {
    uri.to_file_path()
        .map_or_else(|_| uri.path().to_string(), |p| p.display().to_string())
}

impl Server {
    fn open_paths(&self) -> HashMap<PathBuf, &str> {
        self.documents
            .values()
            .map(|d| (PathBuf::from(&d.file.name), d.file.text.as_str()))
            .collect()
    }

    fn update(&mut self, uri: lsp::Url, text: String) -> Notification {
        let file = SourceFile::new(file_name(&uri), text);
        let checked = crate::check_source_with(
            &file,
            &mut Overlay {
                open: self.open_paths(),
            },
        );
        let diagnostics = checked
            .diagnostics
            .iter()
            .map(|d| convert::diagnostic(&file, &uri, d))
            .collect();
        self.documents
            .insert(uri.clone(), Document { file, checked });
        publish(uri, diagnostics)
    }

    fn notification(&mut self, n: Notification) -> Vec<Notification> {
        match n.method.as_str() {
            lsp::notification::DidOpenTextDocument::METHOD => {
                match serde_json::from_value::<lsp::DidOpenTextDocumentParams>(n.params) {
                    Ok(p) => vec![self.update(p.text_document.uri, p.text_document.text)],
                    Err(_) => Vec::new(),
                }
            }
            lsp::notification::DidChangeTextDocument::METHOD => {
                match serde_json::from_value::<lsp::DidChangeTextDocumentParams>(n.params) {
                    // Full sync: the last change holds the whole text.
                    Ok(p) => match p.content_changes.into_iter().last() {
                        Some(change) => vec![self.update(p.text_document.uri, change.text)],
                        None => Vec::new(),
                    },
                    Err(_) => Vec::new(),
                }
            }
            lsp::notification::DidCloseTextDocument::METHOD => {
                match serde_json::from_value::<lsp::DidCloseTextDocumentParams>(n.params) {
                    Ok(p) => {
                        self.documents.remove(&p.text_document.uri);
                        vec![publish(p.text_document.uri, Vec::new())]
                    }
                    Err(_) => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }

    fn request(&mut self, req: Request) -> Response {
        let id = req.id.clone();
        let result = match req.method.as_str() {
            lsp::request::HoverRequest::METHOD => params::<lsp::HoverParams>(req)
                .map(|p| to_json(self.hover(&p.text_document_position_params))),
            lsp::request::GotoDefinition::METHOD => params::<lsp::GotoDefinitionParams>(req)
                .map(|p| to_json(self.definition(&p.text_document_position_params))),
            lsp::request::Completion::METHOD => params::<lsp::CompletionParams>(req)
                .map(|p| to_json(self.completion(&p.text_document_position))),
            lsp::request::DocumentSymbolRequest::METHOD => params::<lsp::DocumentSymbolParams>(req)
                .map(|p| to_json(self.symbols(&p.text_document.uri))),
            lsp::request::Formatting::METHOD => params::<lsp::DocumentFormattingParams>(req)
                .map(|p| to_json(self.format(&p.text_document.uri))),
            _ => Err(format!("unsupported request {}", req.method)),
        };
        match result {
            Ok(value) => Response::new_ok(id, value),
            Err(message) => error_response(id, message),
        }
    }

    fn at(&self, pos: &lsp::TextDocumentPositionParams) -> Option<(&Document, usize)> {
        let doc = self.documents.get(&pos.text_document.uri)?;
        Some((doc, convert::offset(&doc.file.text, pos.position)))
    }

    fn hover(&self, pos: &lsp::TextDocumentPositionParams) -> Option<lsp::Hover> {
        let (doc, offset) = self.at(pos)?;
        let index = &doc.checked.index;
        let (span, text) = if let Some(r) = index.reference_at(offset) {
            let text = match &r.target {
                Target::Op(name) => ops::lookup(name)?.markdown(),
                Target::Local(def) => index
                    .definition(*def)
                    .map_or_else(|| "defined in this file".to_string(), |d| d.detail.clone()),
                Target::External { path, .. } => {
                    format!("block imported from `{}`", path.display())
                }
                Target::File(path) => format!("imports `{}`", path.display()),
            };
            (r.span, text)
        } else if let Some(d) = index.definition_at(offset) {
            let model = doc.checked.graphs.iter().find(|g| {
                d.global && g.name == d.name && d.detail == format!("model `{}`", g.name)
            });
            match model {
                // A model's name shows its summary: sizes and costs before training.
                Some(graph) => {
                    let quantized =
                        crate::passes::run(graph.clone(), crate::passes::Stage::Quantized);
                    let summary = crate::summary::summarize(graph, &quantized);
                    (
                        d.span,
                        format!("{}\n\n```text\n{}```", d.detail, summary.text()),
                    )
                }
                None => (d.span, d.detail.clone()),
            }
        } else {
            return None;
        };
        Some(lsp::Hover {
            contents: lsp::HoverContents::Markup(lsp::MarkupContent {
                kind: lsp::MarkupKind::Markdown,
                value: text,
            }),
            range: Some(convert::range(&doc.file, span)),
        })
    }

    fn definition(
        &self,
        pos: &lsp::TextDocumentPositionParams,
    ) -> Option<lsp::GotoDefinitionResponse> {
        let (doc, offset) = self.at(pos)?;
        let r = doc.checked.index.reference_at(offset)?;
        let location = match &r.target {
            Target::Local(span) => lsp::Location::new(
                pos.text_document.uri.clone(),
                convert::range(&doc.file, *span),
            ),
            Target::External { path, span } => {
                let text = Overlay {
                    open: self.open_paths(),
                }
                .load(path)
                .ok()?;
                let file = SourceFile::new(path.display().to_string(), text);
                lsp::Location::new(
                    lsp::Url::from_file_path(path).ok()?,
                    convert::range(&file, *span),
                )
            }
            Target::File(path) => {
                lsp::Location::new(lsp::Url::from_file_path(path).ok()?, lsp::Range::default())
            }
            Target::Op(_) => return None,
        };
        Some(lsp::GotoDefinitionResponse::Scalar(location))
    }

    fn completion(&self, pos: &lsp::TextDocumentPositionParams) -> Option<lsp::CompletionResponse> {
        let (doc, offset) = self.at(pos)?;
        let mut items = Vec::new();
        // Inside `op(...)`: its argument names first.
        if let Some(def) = enclosing_call(&doc.file.text[..offset]).and_then(ops::lookup) {
            for a in def.args {
                items.push(lsp::CompletionItem {
                    label: a.name.to_string(),
                    kind: Some(lsp::CompletionItemKind::FIELD),
                    detail: Some(format!(
                        "{} (default: {})",
                        a.ty,
                        a.default.unwrap_or("required")
                    )),
                    documentation: Some(lsp::Documentation::String(a.doc.to_string())),
                    insert_text: Some(format!("{} = ", a.name)),
                    sort_text: Some(format!("0{}", a.name)),
                    ..Default::default()
                });
            }
        }
        let mut seen = std::collections::HashSet::new();
        for d in doc.checked.index.names_in_scope(offset).into_iter().rev() {
            if seen.insert(d.name.clone()) {
                let kind = if d.global {
                    lsp::CompletionItemKind::FUNCTION
                } else {
                    lsp::CompletionItemKind::VARIABLE
                };
                items.push(lsp::CompletionItem {
                    label: d.name.clone(),
                    kind: Some(kind),
                    documentation: Some(lsp::Documentation::MarkupContent(lsp::MarkupContent {
                        kind: lsp::MarkupKind::Markdown,
                        value: d.detail.clone(),
                    })),
                    sort_text: Some(format!("1{}", d.name)),
                    ..Default::default()
                });
            }
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
                sort_text: Some(format!("2{}", op.name)),
                ..Default::default()
            });
        }
        for kw in [
            "model", "block", "use", "input", "let", "output", "quant", "default",
        ] {
            items.push(lsp::CompletionItem {
                label: kw.into(),
                kind: Some(lsp::CompletionItemKind::KEYWORD),
                sort_text: Some(format!("3{kw}")),
                ..Default::default()
            });
        }
        Some(lsp::CompletionResponse::Array(items))
    }

    fn symbols(&self, uri: &lsp::Url) -> Option<lsp::DocumentSymbolResponse> {
        let doc = self.documents.get(uri)?;
        let (file, _) = syntax::parse(&doc.file.text);
        let f = &doc.file;
        #[allow(deprecated)] // `deprecated` is a required field of the struct
        let symbol =
            |name: &str,
             detail: Option<String>,
             kind,
             span: crate::diagnostics::Span,
             sel: crate::diagnostics::Span,
             children: Option<Vec<lsp::DocumentSymbol>>| lsp::DocumentSymbol {
                name: name.to_string(),
                detail,
                kind,
                tags: None,
                deprecated: None,
                range: convert::range(f, span),
                selection_range: convert::range(f, sel),
                children,
            };
        let bindings = |statements: &[ast::Statement]| -> Vec<lsp::DocumentSymbol> {
            flatten(statements)
                .into_iter()
                .flat_map(|s| match s {
                    ast::Statement::Input(i) => vec![symbol(
                        &i.name.name,
                        Some("input".into()),
                        lsp::SymbolKind::VARIABLE,
                        i.span,
                        i.name.span,
                        None,
                    )],
                    ast::Statement::Let(l) => l
                        .names
                        .iter()
                        .map(|n| {
                            symbol(
                                &n.name,
                                Some(l.call.callee.name.clone()),
                                lsp::SymbolKind::VARIABLE,
                                l.span,
                                n.span,
                                None,
                            )
                        })
                        .collect(),
                    ast::Statement::IntLet(l) => vec![symbol(
                        &l.name.name,
                        Some("int".into()),
                        lsp::SymbolKind::VARIABLE,
                        l.span,
                        l.name.span,
                        None,
                    )],
                    // Flattened: the branches' statements come in their place.
                    ast::Statement::If(_) | ast::Statement::Output(_) => Vec::new(),
                })
                .collect()
        };
        let mut out = Vec::new();
        for item in &file.items {
            match item {
                ast::Item::Model(m) => out.push(symbol(
                    &m.name.name,
                    Some("model".into()),
                    lsp::SymbolKind::CLASS,
                    m.span,
                    m.name.span,
                    Some(bindings(&m.statements)),
                )),
                ast::Item::Block(b) => out.push(symbol(
                    &b.name.name,
                    Some("block".into()),
                    lsp::SymbolKind::FUNCTION,
                    b.span,
                    b.name.span,
                    Some(bindings(&b.statements)),
                )),
                ast::Item::Use(u) => out.push(symbol(
                    &u.path,
                    Some("use".into()),
                    lsp::SymbolKind::FILE,
                    u.span,
                    u.path_span,
                    None,
                )),
                ast::Item::QuantDefault(q) => out.push(symbol(
                    "quant default",
                    None,
                    lsp::SymbolKind::NAMESPACE,
                    q.span,
                    q.span,
                    None,
                )),
            }
        }
        Some(lsp::DocumentSymbolResponse::Nested(out))
    }

    fn format(&self, uri: &lsp::Url) -> Option<Vec<lsp::TextEdit>> {
        let doc = self.documents.get(uri)?;
        let formatted = syntax::fmt::format(&doc.file.text).ok()?;
        if formatted == doc.file.text {
            return Some(Vec::new());
        }
        let end = convert::position(&doc.file, doc.file.text.len());
        Some(vec![lsp::TextEdit::new(
            lsp::Range::new(lsp::Position::new(0, 0), end),
            formatted,
        )])
    }
}

/// The name of the call whose parentheses are still open at the end of `before`.
fn enclosing_call(before: &str) -> Option<&str> {
    let mut depth = 0i32;
    for (i, c) in before.char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' if depth == 0 => {
                let head = before[..i].trim_end();
                let start = head
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(0, |n| n + 1);
                return Some(&head[start..]);
            }
            '(' => depth -= 1,
            '\n' if depth == 0 && before[i..].trim().is_empty() => {}
            _ => {}
        }
    }
    None
}

fn publish(uri: lsp::Url, diagnostics: Vec<lsp::Diagnostic>) -> Notification {
    Notification::new(
        lsp::notification::PublishDiagnostics::METHOD.into(),
        lsp::PublishDiagnosticsParams {
            uri,
            diagnostics,
            version: None,
        },
    )
}

fn params<P: serde::de::DeserializeOwned>(req: Request) -> Result<P, String> {
    serde_json::from_value(req.params).map_err(|e| format!("invalid params: {e}"))
}

fn to_json<T: serde::Serialize>(value: T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

fn error_response(id: RequestId, message: String) -> Response {
    Response::new_err(id, lsp_server::ErrorCode::InvalidParams as i32, message)
}

/// The statements of a body with the branches of each `if` in its place, in source order.
fn flatten(statements: &[ast::Statement]) -> Vec<&ast::Statement> {
    let mut out = Vec::new();
    for s in statements {
        out.push(s);
        if let ast::Statement::If(i) = s {
            out.extend(flatten(&i.then));
            if let Some(o) = &i.otherwise {
                out.extend(flatten(o));
            }
        }
    }
    out
}
