//! Between qatc's byte spans and LSP's (line, UTF-16 character) positions, and from
//! [`Diagnostic`] values to LSP diagnostics.

use lsp_types as lsp;

use crate::diagnostics::{Diagnostic, Severity, SourceFile, Span};

/// A document's text with the byte offset of every line start, so that a position
/// costs a binary search and one line's scan instead of a scan from the file's start.
pub struct Text {
    pub file: SourceFile,
    line_starts: Vec<usize>,
}

impl Text {
    pub fn new(file: SourceFile) -> Text {
        let line_starts = std::iter::once(0)
            .chain(file.text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Text { file, line_starts }
    }

    pub fn as_str(&self) -> &str {
        &self.file.text
    }

    /// The (line, UTF-16 character) of a byte offset, clamped to the file.
    pub fn position(&self, offset: usize) -> lsp::Position {
        let text = self.as_str();
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let character = text[start..offset].encode_utf16().count();
        lsp::Position::new(line as u32, character as u32)
    }

    pub fn range(&self, span: Span) -> lsp::Range {
        lsp::Range::new(self.position(span.start), self.position(span.end))
    }

    /// The byte offset of an LSP position, clamped to the line and the file.
    pub fn offset(&self, pos: lsp::Position) -> usize {
        let text = self.as_str();
        let Some(&start) = self.line_starts.get(pos.line as usize) else {
            return text.len();
        };
        let end = self
            .line_starts
            .get(pos.line as usize + 1)
            .map_or(text.len(), |&next| next - 1);
        let mut units = 0u32;
        for (i, c) in text[start..end].char_indices() {
            if units >= pos.character {
                return start + i;
            }
            units += c.len_utf16() as u32;
        }
        end
    }

    pub fn span(&self, range: lsp::Range) -> Span {
        Span::new(self.offset(range.start), self.offset(range.end))
    }
}

/// The edit a quick fix applies, carried as the LSP diagnostic's `data`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FixData {
    pub title: String,
    pub range: lsp::Range,
    pub replacement: String,
}

pub fn diagnostic(text: &Text, uri: &lsp::Url, d: &Diagnostic) -> lsp::Diagnostic {
    let related = d
        .secondary
        .iter()
        .map(|l| lsp::DiagnosticRelatedInformation {
            location: lsp::Location::new(uri.clone(), text.range(l.span)),
            message: l.message.clone(),
        })
        .collect::<Vec<_>>();
    let mut message = format!("{}\n{}", d.message, d.primary.message);
    for n in &d.notes {
        message.push_str(&format!("\nnote: {n}"));
    }
    if let Some(h) = &d.help {
        message.push_str(&format!("\nhelp: {h}"));
    }
    let data = d.fix.as_ref().and_then(|f| {
        serde_json::to_value(FixData {
            title: f.title.clone(),
            range: text.range(f.span),
            replacement: f.replacement.clone(),
        })
        .ok()
    });
    lsp::Diagnostic {
        range: text.range(d.primary.span),
        severity: Some(match d.severity {
            Severity::Error => lsp::DiagnosticSeverity::ERROR,
            Severity::Warning => lsp::DiagnosticSeverity::WARNING,
        }),
        code: Some(lsp::NumberOrString::String(d.code.to_string())),
        source: Some("qatc".into()),
        message,
        related_information: (!related.is_empty()).then_some(related),
        data,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_positions_round_trip_with_utf16() {
        let text = "ab\n// é😀\nx";
        let t = Text::new(SourceFile::new("t.qat", text));
        for offset in [0, 1, 3, 6, 8, 12, 13, text.len()] {
            assert_eq!(t.offset(t.position(offset)), offset, "offset {offset}");
            let (line, character) = t.file.position(offset);
            assert_eq!(
                t.position(offset),
                lsp::Position::new(line as u32, character as u32)
            );
        }
        // Past the end of a line or of the file clamps.
        assert_eq!(t.offset(lsp::Position::new(0, 99)), 2);
        assert_eq!(t.offset(lsp::Position::new(9, 0)), text.len());
        assert_eq!(t.position(999), t.position(text.len()));
    }

    #[test]
    fn positions_at_line_ends_and_in_empty_lines() {
        let t = Text::new(SourceFile::new("t.qat", "a\n\nbc\n"));
        assert_eq!(t.position(1), lsp::Position::new(0, 1));
        assert_eq!(t.position(2), lsp::Position::new(1, 0));
        assert_eq!(t.position(3), lsp::Position::new(2, 0));
        assert_eq!(t.position(6), lsp::Position::new(3, 0));
        assert_eq!(t.offset(lsp::Position::new(1, 5)), 2);
        assert_eq!(t.offset(lsp::Position::new(3, 0)), 6);
    }
}
