//! Source lines too long to echo (a generated file, a 200 KB line) are shown cut around
//! what the diagnostic points at, marked with `…`, while the header keeps the true line
//! and column: codespan renders a cut copy of the text through [`CutFile`], which maps
//! columns back to the original.

use std::ops::Range;

use codespan_reporting::files::{self, Files, SimpleFile};

use super::Span;

/// Lines longer than this many bytes are cut.
const LONG_LINE: usize = 240;
/// Bytes kept on each side of what the labels cover.
const CONTEXT: usize = 60;
/// At most this many bytes of labelled text are kept of one line.
const MAX_LABELLED: usize = 240;
const ELLIPSIS: &str = "…";

/// A source text with some long lines cut; line numbers are unchanged.
pub struct CutFile<'a> {
    cut: SimpleFile<&'a str, String>,
    original: &'a str,
    /// `(start in cut text, start in original, length)` of each copied piece, in order.
    pieces: Vec<(usize, usize, usize)>,
}

impl<'a> CutFile<'a> {
    /// `text` with every line longer than [`LONG_LINE`] that a span touches cut around
    /// the spans on it; `None` when no such line exists (render the text as it is).
    pub fn new(name: &'a str, text: &'a str, spans: &[Span]) -> Option<CutFile<'a>> {
        let mut cut = String::new();
        let mut pieces = Vec::new();
        let mut copied = 0; // original bytes up to here are in `cut` (or dropped)
        let mut line_start = 0;
        for line in text.split_inclusive('\n') {
            let line_end = line_start + line.trim_end_matches(['\n', '\r']).len();
            let touching = spans
                .iter()
                .filter(|s| s.start <= line_end && s.end >= line_start);
            let (lo, hi) = touching.fold((usize::MAX, 0), |(lo, hi), s| {
                (lo.min(s.start.max(line_start)), hi.max(s.end.min(line_end)))
            });
            if line_end - line_start > LONG_LINE && lo != usize::MAX {
                let hi = hi.max(lo).min(lo + MAX_LABELLED);
                let from = floor_boundary(text, lo.saturating_sub(CONTEXT).max(line_start));
                let to = ceil_boundary(text, (hi + CONTEXT).min(line_end));
                push(&mut cut, &mut pieces, copied, &text[copied..line_start]);
                if from > line_start {
                    cut.push_str(ELLIPSIS);
                }
                push(&mut cut, &mut pieces, from, &text[from..to]);
                if to < line_end {
                    cut.push_str(ELLIPSIS);
                }
                copied = line_end;
            }
            line_start += line.len();
        }
        if pieces.is_empty() {
            return None;
        }
        push(&mut cut, &mut pieces, copied, &text[copied..]);
        Some(CutFile {
            cut: SimpleFile::new(name, cut),
            original: text,
            pieces,
        })
    }

    /// Where original byte `at` lies in the cut text (the nearest kept byte when cut away).
    pub fn to_cut(&self, at: usize) -> usize {
        let mut best = 0;
        for &(cut, original, len) in &self.pieces {
            if at < original {
                break;
            }
            best = cut + (at - original).min(len);
        }
        best
    }

    /// `span` in the cut text.
    pub fn span(&self, span: Span) -> Range<usize> {
        let start = self.to_cut(span.start);
        start..self.to_cut(span.end).max(start)
    }

    fn to_original(&self, at: usize) -> usize {
        let mut best = 0;
        for &(cut, original, len) in &self.pieces {
            if at < cut {
                break;
            }
            best = original + (at - cut).min(len);
        }
        best
    }
}

fn push(cut: &mut String, pieces: &mut Vec<(usize, usize, usize)>, original: usize, text: &str) {
    if !text.is_empty() {
        pieces.push((cut.len(), original, text.len()));
        cut.push_str(text);
    }
}

fn floor_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn ceil_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

impl<'a> Files<'a> for CutFile<'a> {
    type FileId = ();
    type Name = &'a str;
    type Source = &'a str;

    fn name(&'a self, (): ()) -> Result<&'a str, files::Error> {
        Files::name(&self.cut, ())
    }

    fn source(&'a self, (): ()) -> Result<&'a str, files::Error> {
        Files::source(&self.cut, ())
    }

    fn line_index(&'a self, (): (), byte_index: usize) -> Result<usize, files::Error> {
        Files::line_index(&self.cut, (), byte_index)
    }

    fn line_range(&'a self, (): (), line_index: usize) -> Result<Range<usize>, files::Error> {
        Files::line_range(&self.cut, (), line_index)
    }

    /// The column in the original line, which the header shows.
    fn column_number(
        &'a self,
        (): (),
        _line_index: usize,
        byte_index: usize,
    ) -> Result<usize, files::Error> {
        let at = self.to_original(byte_index);
        let line_start = self.original[..at].rfind('\n').map_or(0, |i| i + 1);
        Ok(self.original[line_start..at].chars().count() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_lines_are_left_alone() {
        assert!(CutFile::new("f", "let x = relu(y)\n", &[Span::new(4, 5)]).is_none());
    }

    #[test]
    fn a_long_line_is_cut_around_the_span_and_columns_stay_true() {
        let text = format!(
            "first\n{}foo = 3{}\nlast\n",
            " ".repeat(5000),
            "x".repeat(5000)
        );
        let at = text.find("foo").unwrap();
        let file = CutFile::new("f", &text, &[Span::new(at, at + 3)]).unwrap();
        let source = file.source(()).unwrap();
        let line = source.lines().nth(1).unwrap();
        assert!(line.len() < 2 * CONTEXT + 20, "{line}");
        assert!(
            line.starts_with(ELLIPSIS) && line.ends_with(ELLIPSIS),
            "{line}"
        );
        let range = file.span(Span::new(at, at + 3));
        assert_eq!(&source[range.clone()], "foo");
        assert_eq!(source.lines().next(), Some("first"));
        assert_eq!(source.lines().nth(2), Some("last"));
        assert_eq!(file.column_number((), 1, range.start).unwrap(), 5001);
        assert_eq!(file.line_index((), range.start).unwrap(), 1);
    }

    #[test]
    fn cuts_respect_multibyte_characters() {
        let text = format!("{}é bad é{}\n", "é".repeat(300), "é".repeat(300));
        let at = text.find("bad").unwrap();
        let file = CutFile::new("f", &text, &[Span::new(at, at + 3)]).unwrap();
        let range = file.span(Span::new(at, at + 3));
        assert_eq!(&file.source(()).unwrap()[range.clone()], "bad");
        assert_eq!(file.column_number((), 0, range.start).unwrap(), 303);
    }
}
