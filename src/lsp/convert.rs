//! Between qatc's byte spans and LSP's (line, UTF-16 character) positions, and from
//! [`Diagnostic`] values to LSP diagnostics.

use lsp_types as lsp;

use crate::diagnostics::{Diagnostic, Severity, SourceFile, Span};

pub fn position(file: &SourceFile, offset: usize) -> lsp::Position {
    let (line, character) = file.position(offset);
    lsp::Position::new(line as u32, character as u32)
}

pub fn range(file: &SourceFile, span: Span) -> lsp::Range {
    lsp::Range::new(position(file, span.start), position(file, span.end))
}

/// The byte offset of an LSP position, clamped to the line and the file.
pub fn offset(text: &str, pos: lsp::Position) -> usize {
    let mut line_start = 0;
    for _ in 0..pos.line {
        match text[line_start..].find('\n') {
            Some(n) => line_start += n + 1,
            None => return text.len(),
        }
    }
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |n| line_start + n);
    let mut units = 0u32;
    for (i, c) in text[line_start..line_end].char_indices() {
        if units >= pos.character {
            return line_start + i;
        }
        units += c.len_utf16() as u32;
    }
    line_end
}

pub fn diagnostic(file: &SourceFile, uri: &lsp::Url, d: &Diagnostic) -> lsp::Diagnostic {
    let related = d
        .secondary
        .iter()
        .map(|l| lsp::DiagnosticRelatedInformation {
            location: lsp::Location::new(uri.clone(), range(file, l.span)),
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
    lsp::Diagnostic {
        range: range(file, d.primary.span),
        severity: Some(match d.severity {
            Severity::Error => lsp::DiagnosticSeverity::ERROR,
            Severity::Warning => lsp::DiagnosticSeverity::WARNING,
        }),
        code: Some(lsp::NumberOrString::String(d.code.to_string())),
        source: Some("qatc".into()),
        message,
        related_information: (!related.is_empty()).then_some(related),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_positions_round_trip_with_utf16() {
        let text = "ab\n// é😀\nx";
        let file = SourceFile::new("t.qat", text);
        for offset in [0, 1, 3, 6, 8, 12, 13, text.len()] {
            assert_eq!(
                super::offset(text, position(&file, offset)),
                offset,
                "offset {offset}"
            );
        }
        // Past the end of a line or of the file clamps.
        assert_eq!(super::offset(text, lsp::Position::new(0, 99)), 2);
        assert_eq!(super::offset(text, lsp::Position::new(9, 0)), text.len());
    }
}
