//! Changes the editor applies: rename and references (bindings, parameters, blocks,
//! across the open files that import a block), and quick fixes from diagnostics.

use std::collections::HashMap;
use std::path::Path;

use lsp_types as lsp;

use super::convert::FixData;
use super::Server;
use crate::diagnostics::Span;
use crate::ir::index::Target;
use crate::ir::modules::normalize;
use crate::ir::ops;

/// Words the grammar reserves, which no binding or block may be renamed to.
const KEYWORDS: &[&str] = &[
    "model", "block", "use", "input", "let", "output", "quant", "default",
];

impl Server {
    /// Every place naming the definition under `pos`, per document: the definition first.
    fn occurrences(
        &self,
        pos: &lsp::TextDocumentPositionParams,
    ) -> Option<(String, Vec<(lsp::Url, Vec<Span>)>)> {
        let (doc, offset) = self.at(pos)?;
        let index = &doc.checked.index;
        // A use of an imported block leads to its file, when that file is open.
        let (uri, def) = match index.reference_at(offset).map(|r| &r.target) {
            Some(Target::External { path, span }) => {
                let uri = self
                    .documents
                    .iter()
                    .find(|(_, d)| normalize(Path::new(&d.text.file.name)) == *path)
                    .map(|(u, _)| u.clone())?;
                (uri, *span)
            }
            Some(Target::Op(_) | Target::File(_)) => return None,
            Some(Target::Local(def)) => (pos.text_document.uri.clone(), *def),
            None => (
                pos.text_document.uri.clone(),
                index.definition_at(offset)?.span,
            ),
        };
        let home = self.documents.get(&uri)?;
        let definition = home.checked.index.definition(def)?;
        let mut spans = vec![def];
        spans.extend(home.checked.index.references_to(def).map(|r| r.span));
        let mut out = vec![(uri, spans)];
        // Blocks (and their parameters, named in calls) are visible to importers too.
        {
            let path = normalize(Path::new(&home.text.file.name));
            for (u, d) in &self.documents {
                let spans: Vec<Span> = d
                    .checked
                    .index
                    .references
                    .iter()
                    .filter(|r| {
                        matches!(&r.target, Target::External { path: p, span } if *p == path && *span == def)
                    })
                    .map(|r| r.span)
                    .collect();
                if !spans.is_empty() {
                    out.push((u.clone(), spans));
                }
            }
        }
        Some((definition.name.clone(), out))
    }

    pub(super) fn references(
        &self,
        pos: &lsp::TextDocumentPositionParams,
        include_declaration: bool,
    ) -> Option<Vec<lsp::Location>> {
        let (_, groups) = self.occurrences(pos)?;
        let mut out = Vec::new();
        for (i, (uri, spans)) in groups.iter().enumerate() {
            let doc = self.documents.get(uri)?;
            let skip = usize::from(i == 0 && !include_declaration);
            for span in &spans[skip..] {
                out.push(lsp::Location::new(uri.clone(), doc.text.range(*span)));
            }
        }
        Some(out)
    }

    pub(super) fn prepare_rename(
        &self,
        pos: &lsp::TextDocumentPositionParams,
    ) -> Result<Option<lsp::PrepareRenameResponse>, String> {
        let Some((doc, offset)) = self.at(pos) else {
            return Ok(None);
        };
        let index = &doc.checked.index;
        if let Some(Target::Op(name)) = index.reference_at(offset).map(|r| &r.target) {
            return Err(format!("`{name}` is a built-in op; it cannot be renamed"));
        }
        let span = match (index.reference_at(offset), index.definition_at(offset)) {
            (Some(r), _) => r.span,
            (None, Some(d)) => d.span,
            (None, None) => return Ok(None),
        };
        if self.occurrences(pos).is_none() {
            return Err("open the file that defines this block to rename it".into());
        }
        Ok(Some(lsp::PrepareRenameResponse::Range(
            doc.text.range(span),
        )))
    }

    pub(super) fn rename(
        &self,
        pos: &lsp::TextDocumentPositionParams,
        new_name: &str,
    ) -> Result<Option<lsp::WorkspaceEdit>, String> {
        let valid = new_name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && new_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "`{new_name}` is not a name (letters, digits and `_`, not starting with a digit)"
            ));
        }
        if KEYWORDS.contains(&new_name) {
            return Err(format!("`{new_name}` is a keyword"));
        }
        if ops::lookup(new_name).is_some() {
            return Err(format!("`{new_name}` is the name of a built-in op"));
        }
        let Some((_, groups)) = self.occurrences(pos) else {
            return Ok(None);
        };
        let mut changes = HashMap::new();
        for (uri, spans) in groups {
            let Some(doc) = self.documents.get(&uri) else {
                continue;
            };
            let edits: Vec<lsp::TextEdit> = spans
                .iter()
                .map(|s| lsp::TextEdit::new(doc.text.range(*s), new_name.to_string()))
                .collect();
            changes.insert(uri, edits);
        }
        Ok(Some(lsp::WorkspaceEdit {
            changes: Some(changes),
            ..Default::default()
        }))
    }

    /// Quick fixes: each diagnostic in the range that carries a fix (a did-you-mean, a
    /// missing argument) becomes an edit. The fix travels as the diagnostic's `data`.
    pub(super) fn code_actions(
        &self,
        p: &lsp::CodeActionParams,
    ) -> Option<Vec<lsp::CodeActionOrCommand>> {
        let uri = &p.text_document.uri;
        let doc = self.documents.get(uri)?;
        // The client's copies first; our own diagnostics cover clients that drop `data`.
        let ours: Vec<lsp::Diagnostic> = doc
            .checked
            .diagnostics
            .iter()
            .filter(|d| d.fix.is_some())
            .map(|d| super::convert::diagnostic(&doc.text, uri, d))
            .filter(|d| overlaps(d.range, p.range))
            .collect();
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for d in p.context.diagnostics.iter().chain(&ours) {
            let Some(fix) = d
                .data
                .clone()
                .and_then(|v| serde_json::from_value::<FixData>(v).ok())
            else {
                continue;
            };
            if seen.contains(&fix) {
                continue;
            }
            seen.push(fix.clone());
            let edit = lsp::TextEdit::new(fix.range, fix.replacement.clone());
            out.push(lsp::CodeActionOrCommand::CodeAction(lsp::CodeAction {
                title: fix.title.clone(),
                kind: Some(lsp::CodeActionKind::QUICKFIX),
                diagnostics: Some(vec![d.clone()]),
                edit: Some(lsp::WorkspaceEdit {
                    changes: Some(HashMap::from([(uri.clone(), vec![edit])])),
                    ..Default::default()
                }),
                is_preferred: Some(true),
                ..Default::default()
            }));
        }
        Some(out)
    }
}

fn overlaps(a: lsp::Range, b: lsp::Range) -> bool {
    a.start <= b.end && b.start <= a.end
}
