//! What each name in a checked file refers to and what is known about it: the
//! data behind hover, go-to-definition and completion in the language server.

use std::path::PathBuf;

use crate::diagnostics::Span;

/// Where a name leads.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A definition in the same file.
    Local(Span),
    /// A definition in another file (an imported block).
    External { path: PathBuf, span: Span },
    /// A built-in op (its documentation is in `ir::ops`).
    Op(&'static str),
    /// A whole file (the string of a `use`).
    File(PathBuf),
}

/// A use of a name.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub span: Span,
    pub target: Target,
}

/// A name introduced in this file, with what hover shows for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub span: Span,
    pub name: String,
    /// Markdown: the value's shape, dtype and quantization, or a block's signature.
    pub detail: String,
    /// The item (model or block) it is visible in; whole-file names use the file's extent.
    pub scope: Span,
    /// Blocks: callable anywhere in the file, before or after their definition.
    pub global: bool,
    /// `let` bindings: the inferred shape and quantization, shown inline after the name.
    pub hint: Option<String>,
    /// Where the name starts to be usable: after the statement that binds it, so that
    /// `let y = con|` does not offer `y` itself.
    pub visible_from: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Index {
    pub references: Vec<Reference>,
    pub definitions: Vec<Definition>,
}

impl Index {
    /// The reference under a byte offset, if any.
    pub fn reference_at(&self, offset: usize) -> Option<&Reference> {
        self.references
            .iter()
            .find(|r| r.span.start <= offset && offset <= r.span.end)
    }

    /// The definition whose name is under a byte offset, if any.
    pub fn definition_at(&self, offset: usize) -> Option<&Definition> {
        self.definitions
            .iter()
            .find(|d| d.span.start <= offset && offset <= d.span.end)
    }

    /// The definition at exactly this span.
    pub fn definition(&self, span: Span) -> Option<&Definition> {
        self.definitions.iter().find(|d| d.span == span)
    }

    /// Every place that names the definition at `def` (uses only, not the definition).
    pub fn references_to(&self, def: Span) -> impl Iterator<Item = &Reference> {
        self.references
            .iter()
            .filter(move |r| r.target == Target::Local(def))
    }

    /// The definition a name at `offset` stands for: its own, or the one it refers to.
    pub fn definition_for(&self, offset: usize) -> Option<&Definition> {
        match self.reference_at(offset) {
            Some(Reference {
                target: Target::Local(def),
                ..
            }) => self.definition(*def),
            Some(_) => None,
            None => self.definition_at(offset),
        }
    }

    /// Names visible at a byte offset: definitions in the enclosing item that come before it.
    pub fn names_in_scope(&self, offset: usize) -> Vec<&Definition> {
        self.definitions
            .iter()
            .filter(|d| {
                d.global
                    || (d.scope.start <= offset && offset <= d.scope.end && d.visible_from < offset)
            })
            .collect()
    }
}
