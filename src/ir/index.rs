//! What each name in a checked file refers to and what is known about it: the
//! data behind hover, go-to-definition and completion in the language server.

use std::path::PathBuf;

use crate::diagnostics::Span;
use crate::ir::ops::format_shape;
use crate::ir::{NodeQuant, Op, Shape};

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
    /// What hover shows for it.
    pub detail: Detail,
    /// The item (model or block) it is visible in; whole-file names use the file's extent.
    pub scope: Span,
    /// Blocks: callable anywhere in the file, before or after their definition.
    pub global: bool,
    /// `let` bindings: the inferred shape and quantization are shown inline after the name.
    pub hint: bool,
    /// Where the name starts to be usable: after the statement that binds it, so that
    /// `let y = con|` does not offer `y` itself.
    pub visible_from: usize,
}

/// What hover shows for a definition. Values keep the facts, not the text: only an
/// editor asks for it, and formatting it for every `let` was most of checking's time.
#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    /// Markdown made while checking: a block's signature, a model's name.
    Text(String),
    /// A bound value; `block`: the hover text of the block call that computed it.
    Value {
        value: ValueFacts,
        block: Option<String>,
    },
}

/// What is known about a bound value, for its hover text and inlay hint.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueFacts {
    Tensor {
        shape: Shape,
        op: Op,
        quant: NodeQuant,
    },
    /// Its shape depends on the block's inputs, or its call has an error.
    UnknownTensor,
    /// `None`: a block's `int` parameter while the block is checked on its own.
    Int(Option<usize>),
    /// `None`: an `op` parameter without a default while the block is checked on its own.
    Op(Option<&'static str>),
}

impl Definition {
    /// Markdown: the value's shape, dtype and quantization, or a block's signature.
    pub fn hover(&self) -> String {
        let (value, block) = match &self.detail {
            Detail::Text(text) => return text.clone(),
            Detail::Value { value, block } => (value, block),
        };
        let detail = value.hover(&self.name);
        match block {
            Some(call) => {
                // The first line (name and shape) stays; the block replaces its last inner op.
                let (head, rest) = detail.split_once("\n\n").unwrap_or((&detail, ""));
                let head = head.split(" = ").next().unwrap_or(head);
                format!("{head}\n\n{call}\n\n{rest}")
            }
            None => detail,
        }
    }

    /// The inlay hint after the name: `[8, 26, 26] W8A8`.
    pub fn inlay_hint(&self) -> Option<String> {
        let Detail::Value {
            value: ValueFacts::Tensor { shape, op, quant },
            ..
        } = &self.detail
        else {
            return None;
        };
        if !self.hint {
            return None;
        }
        let quant = if quant.float {
            "float".to_string()
        } else if op.has_weights() {
            format!("W{}A{}", quant.weights.bits, quant.activations.bits)
        } else {
            format!("A{}", quant.activations.bits)
        };
        Some(format!("{} {quant}", format_shape(shape)))
    }
}

impl ValueFacts {
    /// Hover text for a value bound to `name`: its shape, dtype and quantization when known.
    fn hover(&self, name: &str) -> String {
        match self {
            ValueFacts::Tensor { shape, op, quant } => {
                let mut s = format!("`{name}: f32{}` = `{op}`\n\n", format_shape(shape));
                if quant.float {
                    s.push_str("runs in float (`@float`)");
                } else {
                    if op.has_weights() {
                        s.push_str(&format!("weights: {}  \n", quant.weights));
                    }
                    s.push_str(&format!("activations: {}", quant.activations));
                }
                s
            }
            ValueFacts::UnknownTensor => format!(
                "`{name}: tensor` (shape depends on the block's inputs, or its call has an error)"
            ),
            ValueFacts::Int(Some(v)) => format!("`{name}: int = {v}`"),
            ValueFacts::Int(None) => format!("`{name}: int`"),
            ValueFacts::Op(Some(op)) => format!("`{name}: op = {op}`"),
            ValueFacts::Op(None) => format!("`{name}: op`"),
        }
    }
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
