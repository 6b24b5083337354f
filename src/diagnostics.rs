//! Diagnostics as data: every stage reports problems as [`Diagnostic`] values,
//! and only the edges (terminal, JSON, language server) decide how to show them.

use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term;
use serde::Serialize;

/// A byte range in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }
}

impl From<pest::Span<'_>> for Span {
    fn from(s: pest::Span<'_>) -> Self {
        Span::new(s.start(), s.end())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A place in the source with a short message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Label {
    pub span: Span,
    pub message: String,
}

/// One problem found in a source file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// A stable code such as `E0004`; `qatc explain` prints its long form.
    pub code: &'static str,
    pub message: String,
    pub primary: Label,
    pub secondary: Vec<Label>,
    pub notes: Vec<String>,
    pub help: Option<String>,
    /// An edit that fixes the problem, which editors offer as a quick fix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<Fix>,
}

/// Replacing `span` with `replacement` fixes a diagnostic (an empty span inserts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fix {
    /// What the editor's menu shows, e.g. "replace with `filters`".
    pub title: String,
    pub span: Span,
    pub replacement: String,
}

impl Diagnostic {
    pub fn error(
        code: &'static str,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            primary: Label {
                span,
                message: label.into(),
            },
            secondary: Vec::new(),
            notes: Vec::new(),
            help: None,
            fix: None,
        }
    }

    pub fn warning(
        code: &'static str,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Self::error(code, message, span, label)
        }
    }

    pub fn with_label(mut self, span: Span, message: impl Into<String>) -> Self {
        self.secondary.push(Label {
            span,
            message: message.into(),
        });
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_fix(
        mut self,
        title: impl Into<String>,
        span: Span,
        replacement: impl Into<String>,
    ) -> Self {
        self.fix = Some(Fix {
            title: title.into(),
            span,
            replacement: replacement.into(),
        });
        self
    }

    /// A did-you-mean: `suggestion` as the help, and replacing `span` with it as the fix.
    pub fn with_suggestion(self, span: Span, suggestion: &str) -> Self {
        self.with_help(format!("did you mean `{suggestion}`?"))
            .with_fix(format!("replace with `{suggestion}`"), span, suggestion)
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    fn to_codespan(&self) -> cs::Diagnostic<()> {
        let severity = match self.severity {
            Severity::Error => cs::Severity::Error,
            Severity::Warning => cs::Severity::Warning,
        };
        let mut labels =
            vec![
                cs::Label::primary((), self.primary.span.start..self.primary.span.end)
                    .with_message(&self.primary.message),
            ];
        labels.extend(
            self.secondary.iter().map(|l| {
                cs::Label::secondary((), l.span.start..l.span.end).with_message(&l.message)
            }),
        );
        let mut notes: Vec<String> = self.notes.iter().map(|n| format!("note: {n}")).collect();
        if let Some(help) = &self.help {
            notes.push(format!("help: {help}"));
        }
        cs::Diagnostic::new(severity)
            .with_code(self.code)
            .with_message(&self.message)
            .with_labels(labels)
            .with_notes(notes)
    }
}

/// A named source text, what diagnostics point into.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        SourceFile {
            name: name.into(),
            text: text.into(),
        }
    }

    /// 0-based (line, character) of a byte offset, characters counted in UTF-16 units as LSP does.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count();
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let character = self.text[line_start..offset].encode_utf16().count();
        (line, character)
    }
}

/// Renders diagnostics the way a terminal shows them (rustc style), with or without colour.
pub fn render_terminal(file: &SourceFile, diagnostics: &[Diagnostic], color: bool) -> String {
    let files = SimpleFile::new(file.name.as_str(), file.text.as_str());
    let config = term::Config::default();
    let mut out: Vec<u8> = Vec::new();
    {
        let mut ansi;
        let mut plain;
        let writer: &mut dyn term::termcolor::WriteColor = if color {
            ansi = term::termcolor::Ansi::new(&mut out);
            &mut ansi
        } else {
            plain = term::termcolor::NoColor::new(&mut out);
            &mut plain
        };
        for d in diagnostics {
            // Writing into a Vec cannot fail; a span outside the file would be a compiler bug.
            term::emit(writer, &config, &files, &d.to_codespan())
                .expect("diagnostic spans lie inside the file");
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The JSON form of one diagnostic, for editors and scripts (`--message-format json`).
#[derive(Debug, Serialize)]
pub struct JsonDiagnostic<'a> {
    pub severity: Severity,
    pub code: &'a str,
    pub message: &'a str,
    pub file: &'a str,
    pub range: JsonRange,
    pub labels: Vec<JsonLabel<'a>>,
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct JsonRange {
    pub start: JsonPosition,
    pub end: JsonPosition,
}

#[derive(Debug, Serialize)]
pub struct JsonPosition {
    pub line: usize,
    pub character: usize,
}

#[derive(Debug, Serialize)]
pub struct JsonLabel<'a> {
    pub primary: bool,
    pub message: &'a str,
    pub range: JsonRange,
}

impl<'a> JsonDiagnostic<'a> {
    pub fn new(file: &'a SourceFile, d: &'a Diagnostic) -> Self {
        let range = |s: Span| {
            let (l0, c0) = file.position(s.start);
            let (l1, c1) = file.position(s.end);
            JsonRange {
                start: JsonPosition {
                    line: l0,
                    character: c0,
                },
                end: JsonPosition {
                    line: l1,
                    character: c1,
                },
            }
        };
        let mut labels = vec![JsonLabel {
            primary: true,
            message: &d.primary.message,
            range: range(d.primary.span),
        }];
        labels.extend(d.secondary.iter().map(|l| JsonLabel {
            primary: false,
            message: &l.message,
            range: range(l.span),
        }));
        let mut notes = d.notes.clone();
        if let Some(h) = &d.help {
            notes.push(format!("help: {h}"));
        }
        JsonDiagnostic {
            severity: d.severity,
            code: d.code,
            message: &d.message,
            file: &file.name,
            range: range(d.primary.span),
            labels,
            notes,
        }
    }
}

/// The closest candidate to a misspelled name, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(d, c)| *d <= (name.len().max(c.len()) / 3).max(1))
        // Ties go to the alphabetically first name, so the hint does not depend on hash order.
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}
