//! The abstract syntax tree of a `.qat` file: what was written, with spans, no meaning yet.

use crate::diagnostics::Span;

#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    QuantDefault(QuantDefault),
    Model(Model),
}

/// `quant default { weights = int8(...) activations = ... }`
#[derive(Debug, Clone, PartialEq)]
pub struct QuantDefault {
    pub settings: Vec<Setting>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub name: Ident,
    pub value: Expr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub name: Ident,
    pub statements: Vec<Statement>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    Input(InputDecl),
    Let(LetBinding),
    Output(OutputDecl),
}

/// `input image: f32[1, 28, 28]`
#[derive(Debug, Clone, PartialEq)]
pub struct InputDecl {
    pub name: Ident,
    pub ty: TensorType,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TensorType {
    pub dtype: Ident,
    pub dims: Vec<(u64, Span)>,
    pub span: Span,
}

/// `@quant(...) let x = conv2d(image, filters = 32)`
#[derive(Debug, Clone, PartialEq)]
pub struct LetBinding {
    pub annotations: Vec<Annotation>,
    pub name: Ident,
    pub call: Call,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Annotation {
    pub name: Ident,
    pub args: Vec<Arg>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutputDecl {
    pub names: Vec<Ident>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub callee: Ident,
    pub args: Vec<Arg>,
    pub span: Span,
}

/// A positional (`name` is `None`) or named argument.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Call(Call),
    Number { text: String, span: Span },
    Ident(Ident),
}

impl Expr {
    pub fn span(&self) -> Span {
        match self {
            Expr::Call(c) => c.span,
            Expr::Number { span, .. } => *span,
            Expr::Ident(i) => i.span,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}
