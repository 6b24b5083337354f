//! What the editor shows about names: hover text, the definition a name leads to,
//! and inlay hints with each binding's inferred shape and quantization.

use lsp_types as lsp;

use super::convert::Text;
use super::{Document, Server};
use crate::diagnostics::SourceFile;
use crate::ir::index::{Definition, Detail, Target};
use crate::ir::modules::Loader;
use crate::ir::ops;

impl Server {
    pub(super) fn hover(&self, pos: &lsp::TextDocumentPositionParams) -> Option<lsp::Hover> {
        let (doc, offset) = self.at(pos)?;
        let index = &doc.checked.index;
        let (span, text) = if let Some(r) = index.reference_at(offset) {
            let text = match &r.target {
                Target::Op(name) => ops::lookup(name)?.markdown(),
                Target::Local(def) => index
                    .definition(*def)
                    .map_or_else(|| "defined in this file".to_string(), Definition::hover),
                Target::External { path, .. } => {
                    format!("block imported from `{}`", path.display())
                }
                Target::File(path) => format!("imports `{}`", path.display()),
            };
            (r.span, text)
        } else if let Some(d) = index.definition_at(offset) {
            match model_summary(doc, d) {
                Some(summary) => (d.span, summary),
                None => (d.span, d.hover()),
            }
        } else {
            return None;
        };
        Some(lsp::Hover {
            contents: lsp::HoverContents::Markup(lsp::MarkupContent {
                kind: lsp::MarkupKind::Markdown,
                value: text,
            }),
            range: Some(doc.text.range(span)),
        })
    }

    pub(super) fn definition(
        &self,
        pos: &lsp::TextDocumentPositionParams,
    ) -> Option<lsp::GotoDefinitionResponse> {
        let (doc, offset) = self.at(pos)?;
        let r = doc.checked.index.reference_at(offset)?;
        let location = match &r.target {
            Target::Local(span) => {
                lsp::Location::new(pos.text_document.uri.clone(), doc.text.range(*span))
            }
            Target::External { path, span } => {
                let text = self.overlay().load(path).ok()?;
                let file = Text::new(SourceFile::new(path.display().to_string(), text));
                lsp::Location::new(lsp::Url::from_file_path(path).ok()?, file.range(*span))
            }
            Target::File(path) => {
                lsp::Location::new(lsp::Url::from_file_path(path).ok()?, lsp::Range::default())
            }
            Target::Op(_) => return None,
        };
        Some(lsp::GotoDefinitionResponse::Scalar(location))
    }

    /// `: [8, 26, 26] W8A8` after every `let` name in `range` whose shape is known.
    pub(super) fn inlay_hints(
        &self,
        uri: &lsp::Url,
        range: lsp::Range,
    ) -> Option<Vec<lsp::InlayHint>> {
        let doc = self.documents.get(uri)?;
        let span = doc.text.span(range);
        let hints = doc
            .checked
            .index
            .definitions
            .iter()
            .filter(|d| span.start <= d.span.start && d.span.end <= span.end)
            .filter_map(|d| {
                let hint = d.inlay_hint()?;
                Some(lsp::InlayHint {
                    position: doc.text.position(d.span.end),
                    label: lsp::InlayHintLabel::String(format!(": {hint}")),
                    kind: Some(lsp::InlayHintKind::TYPE),
                    text_edits: None,
                    tooltip: Some(lsp::InlayHintTooltip::MarkupContent(lsp::MarkupContent {
                        kind: lsp::MarkupKind::Markdown,
                        value: d.hover(),
                    })),
                    padding_left: None,
                    padding_right: Some(true),
                    data: None,
                })
            })
            .collect();
        Some(hints)
    }
}

/// A model's name shows its summary: sizes and costs before training.
fn model_summary(doc: &Document, d: &Definition) -> Option<String> {
    let graph = doc.checked.graphs.iter().find(|g| {
        d.global && g.name == d.name && d.detail == Detail::Text(format!("model `{}`", g.name))
    })?;
    let quantized = crate::passes::run(graph.clone(), crate::passes::Stage::Quantized);
    let summary = crate::summary::summarize(graph, &quantized);
    Some(format!("{}\n\n```text\n{}```", d.hover(), summary.text()))
}
