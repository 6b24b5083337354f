//! `qatc lsp`: a language server over stdio. Every change re-checks the document
//! (checking is fast enough to need no incremental state), and the open documents
//! that import it, and publishes their diagnostics. Hover, go-to-definition, rename,
//! references and inlay hints read the checker's index; completion and signature help
//! also work on unfinished lines, from the text before the cursor; quick fixes come
//! from the diagnostics' fixes; the outline comes from the AST, formatting is `qatc fmt`.

mod complete;
mod convert;
mod edit;
mod outline;
mod show;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lsp_server::{Connection, ErrorCode, Message, Notification, Request, RequestId, Response};
use lsp_types as lsp;
use lsp_types::notification::Notification as _;
use lsp_types::request::Request as _;

use crate::diagnostics::SourceFile;
use crate::ir::modules::{normalize, Loader};
use crate::ir::CheckedFile;
use convert::Text;

/// What the server offers; `initialize` answers with it.
pub fn capabilities() -> lsp::ServerCapabilities {
    lsp::ServerCapabilities {
        text_document_sync: Some(lsp::TextDocumentSyncCapability::Options(
            lsp::TextDocumentSyncOptions {
                open_close: Some(true),
                change: Some(lsp::TextDocumentSyncKind::FULL),
                save: Some(lsp::TextDocumentSyncSaveOptions::Supported(true)),
                ..Default::default()
            },
        )),
        hover_provider: Some(lsp::HoverProviderCapability::Simple(true)),
        definition_provider: Some(lsp::OneOf::Left(true)),
        references_provider: Some(lsp::OneOf::Left(true)),
        rename_provider: Some(lsp::OneOf::Right(lsp::RenameOptions {
            prepare_provider: Some(true),
            work_done_progress_options: Default::default(),
        })),
        completion_provider: Some(lsp::CompletionOptions {
            trigger_characters: Some(vec!["(".into(), ",".into(), " ".into()]),
            ..Default::default()
        }),
        signature_help_provider: Some(lsp::SignatureHelpOptions {
            trigger_characters: Some(vec!["(".into(), ",".into()]),
            retrigger_characters: None,
            work_done_progress_options: Default::default(),
        }),
        code_action_provider: Some(lsp::CodeActionProviderCapability::Simple(true)),
        inlay_hint_provider: Some(lsp::OneOf::Left(true)),
        document_symbol_provider: Some(lsp::OneOf::Left(true)),
        document_formatting_provider: Some(lsp::OneOf::Left(true)),
        ..Default::default()
    }
}

/// Why the server stopped before the client said `exit`.
#[derive(Debug, thiserror::Error)]
pub enum LspError {
    /// The client broke the protocol (e.g. no `initialized` after `initialize`).
    #[error("language server: {0}")]
    Protocol(#[from] lsp_server::ProtocolError),
    /// The client went away while the server was answering.
    #[error("language server: the client closed the connection")]
    Disconnected,
    #[error("language server: stdin or stdout failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the server until the client says `exit`.
pub fn run_stdio() -> Result<(), LspError> {
    let (connection, io_threads) = Connection::stdio();
    let caps = serde_json::to_value(capabilities()).expect("capabilities serialize");
    connection.initialize(caps)?;
    let mut server = Server::default();
    for message in &connection.receiver {
        if let Message::Request(req) = &message {
            if connection.handle_shutdown(req)? {
                break;
            }
        }
        for out in server.handle(message) {
            connection
                .sender
                .send(out)
                .map_err(|_| LspError::Disconnected)?;
        }
    }
    drop(connection);
    Ok(io_threads.join()?)
}

struct Document {
    text: Text,
    /// Kept for the outline and completion, which would otherwise parse again.
    ast: crate::syntax::ast::File,
    checked: CheckedFile,
    /// Every file its checking read through `use`, directly or not (normalized paths).
    imports: Vec<PathBuf>,
}

/// The server's state: the open documents, each checked. [`Server::handle`] answers one
/// message; [`run_stdio`] feeds it from stdin (benchmarks call it directly).
#[derive(Default)]
pub struct Server {
    documents: HashMap<lsp::Url, Document>,
}

/// Imports resolve to open buffers first (unsaved edits count), then to disk; every
/// path read is recorded, so that a change to it re-checks the importer.
struct Overlay<'a> {
    open: HashMap<PathBuf, &'a str>,
    loaded: Vec<PathBuf>,
}

impl Loader for Overlay<'_> {
    fn load(&mut self, path: &Path) -> std::io::Result<String> {
        self.loaded.push(normalize(path));
        match self.open.get(&normalize(path)) {
            Some(text) => Ok(text.to_string()),
            None => crate::ir::modules::read_source_text(path),
        }
    }
}

fn file_name(uri: &lsp::Url) -> String {
    uri.to_file_path()
        .map_or_else(|_| uri.path().to_string(), |p| p.display().to_string())
}

/// An error answer: the JSON-RPC code and a message for the user.
type Failure = (ErrorCode, String);

impl Server {
    /// Answers one message from the client: a response for a request, diagnostics for
    /// document changes. `shutdown` and `exit` are the transport's business.
    pub fn handle(&mut self, message: Message) -> Vec<Message> {
        match message {
            Message::Request(req) => vec![Message::Response(self.request(req))],
            Message::Notification(n) => self
                .notification(n)
                .into_iter()
                .map(Message::Notification)
                .collect(),
            Message::Response(_) => Vec::new(),
        }
    }

    fn overlay(&self) -> Overlay<'_> {
        Overlay {
            open: self
                .documents
                .values()
                .map(|d| (normalize(Path::new(&d.text.file.name)), d.text.as_str()))
                .collect(),
            loaded: Vec::new(),
        }
    }

    fn check(&self, uri: &lsp::Url, text: String) -> Document {
        let file = SourceFile::new(file_name(uri), text);
        let mut overlay = self.overlay();
        let (ast, syntax_errors) = crate::syntax::parse(&file.text);
        let checked = crate::check_parsed_with(&file, &ast, syntax_errors, &mut overlay);
        let imports = overlay.loaded;
        Document {
            text: Text::new(file),
            ast,
            checked,
            imports,
        }
    }

    /// Re-checks a document, then the open documents that import it; publishes all.
    fn update(&mut self, uri: lsp::Url, text: String) -> Vec<Notification> {
        let doc = self.check(&uri, text);
        let path = normalize(Path::new(&doc.text.file.name));
        let mut out = vec![publish_document(&uri, &doc)];
        self.documents.insert(uri.clone(), doc);
        out.extend(self.recheck_importers(&uri, &path));
        out
    }

    fn recheck_importers(&mut self, changed: &lsp::Url, path: &Path) -> Vec<Notification> {
        let importers: Vec<(lsp::Url, String)> = self
            .documents
            .iter()
            .filter(|(u, d)| **u != *changed && d.imports.iter().any(|p| p == path))
            .map(|(u, d)| (u.clone(), d.text.as_str().to_string()))
            .collect();
        let mut out = Vec::new();
        for (uri, text) in importers {
            let doc = self.check(&uri, text);
            out.push(publish_document(&uri, &doc));
            self.documents.insert(uri, doc);
        }
        out
    }

    fn notification(&mut self, n: Notification) -> Vec<Notification> {
        match n.method.as_str() {
            lsp::notification::DidOpenTextDocument::METHOD => {
                match serde_json::from_value::<lsp::DidOpenTextDocumentParams>(n.params) {
                    Ok(p) => self.update(p.text_document.uri, p.text_document.text),
                    Err(_) => Vec::new(),
                }
            }
            lsp::notification::DidChangeTextDocument::METHOD => {
                match serde_json::from_value::<lsp::DidChangeTextDocumentParams>(n.params) {
                    // Full sync: the last change holds the whole text.
                    Ok(p) => match p.content_changes.into_iter().last() {
                        Some(change) => self.update(p.text_document.uri, change.text),
                        None => Vec::new(),
                    },
                    Err(_) => Vec::new(),
                }
            }
            // Saving may follow edits made outside the editor: re-check with the saved text.
            lsp::notification::DidSaveTextDocument::METHOD => {
                match serde_json::from_value::<lsp::DidSaveTextDocumentParams>(n.params) {
                    Ok(p) => {
                        let uri = p.text_document.uri;
                        let text = p.text.or_else(|| {
                            self.documents
                                .get(&uri)
                                .map(|d| d.text.as_str().to_string())
                        });
                        match text {
                            Some(text) => self.update(uri, text),
                            None => Vec::new(),
                        }
                    }
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
        use lsp::request as r;
        let id = req.id.clone();
        let result = match req.method.as_str() {
            r::HoverRequest::METHOD => answer(req, |p: lsp::HoverParams| {
                self.hover(&p.text_document_position_params)
            }),
            r::GotoDefinition::METHOD => answer(req, |p: lsp::GotoDefinitionParams| {
                self.definition(&p.text_document_position_params)
            }),
            r::Completion::METHOD => answer(req, |p: lsp::CompletionParams| {
                self.completion(&p.text_document_position)
            }),
            r::SignatureHelpRequest::METHOD => answer(req, |p: lsp::SignatureHelpParams| {
                self.signature_help(&p.text_document_position_params)
            }),
            r::References::METHOD => answer(req, |p: lsp::ReferenceParams| {
                self.references(&p.text_document_position, p.context.include_declaration)
            }),
            r::PrepareRenameRequest::METHOD => {
                try_answer(req, |p: lsp::TextDocumentPositionParams| {
                    self.prepare_rename(&p)
                })
            }
            r::Rename::METHOD => try_answer(req, |p: lsp::RenameParams| {
                self.rename(&p.text_document_position, &p.new_name)
            }),
            r::CodeActionRequest::METHOD => {
                answer(req, |p: lsp::CodeActionParams| self.code_actions(&p))
            }
            r::InlayHintRequest::METHOD => answer(req, |p: lsp::InlayHintParams| {
                self.inlay_hints(&p.text_document.uri, p.range)
            }),
            r::DocumentSymbolRequest::METHOD => answer(req, |p: lsp::DocumentSymbolParams| {
                self.symbols(&p.text_document.uri)
            }),
            r::Formatting::METHOD => answer(req, |p: lsp::DocumentFormattingParams| {
                self.format(&p.text_document.uri)
            }),
            _ => Err((
                ErrorCode::MethodNotFound,
                format!("unsupported request {}", req.method),
            )),
        };
        match result {
            // Not `Response::new_ok`, which would serialize the value a second time.
            Ok(value) => Response {
                id,
                result: Some(value),
                error: None,
            },
            Err((code, message)) => error_response(id, code, message),
        }
    }

    fn at(&self, pos: &lsp::TextDocumentPositionParams) -> Option<(&Document, usize)> {
        let doc = self.documents.get(&pos.text_document.uri)?;
        Some((doc, doc.text.offset(pos.position)))
    }

    fn format(&self, uri: &lsp::Url) -> Option<Vec<lsp::TextEdit>> {
        let doc = self.documents.get(uri)?;
        let formatted = crate::syntax::fmt::format(doc.text.as_str()).ok()?;
        if formatted == doc.text.as_str() {
            return Some(Vec::new());
        }
        let end = doc.text.position(doc.text.as_str().len());
        Some(vec![lsp::TextEdit::new(
            lsp::Range::new(lsp::Position::new(0, 0), end),
            formatted,
        )])
    }
}

fn publish_document(uri: &lsp::Url, doc: &Document) -> Notification {
    let diagnostics = doc
        .checked
        .diagnostics
        .iter()
        .map(|d| convert::diagnostic(&doc.text, uri, d))
        .collect();
    publish(uri.clone(), diagnostics)
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

/// Decodes the parameters and answers with what `handler` returns.
fn answer<P: serde::de::DeserializeOwned, R: serde::Serialize>(
    req: Request,
    handler: impl FnOnce(P) -> R,
) -> Result<serde_json::Value, Failure> {
    try_answer(req, |p| Ok(handler(p)))
}

/// [`answer`] for handlers that can refuse (an invalid new name for a rename).
fn try_answer<P: serde::de::DeserializeOwned, R: serde::Serialize>(
    req: Request,
    handler: impl FnOnce(P) -> Result<R, String>,
) -> Result<serde_json::Value, Failure> {
    let p = serde_json::from_value(req.params)
        .map_err(|e| (ErrorCode::InvalidParams, format!("invalid params: {e}")))?;
    let result = handler(p).map_err(|message| (ErrorCode::RequestFailed, message))?;
    Ok(serde_json::to_value(result).unwrap_or(serde_json::Value::Null))
}

fn error_response(id: RequestId, code: ErrorCode, message: String) -> Response {
    Response::new_err(id, code as i32, message)
}
