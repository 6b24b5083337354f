//! The abstract syntax tree of a `.qat` file: what was written, with spans, no meaning yet.

use crate::diagnostics::Span;

#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub items: Vec<Item>,
    /// Names of blocks and models whose text did not parse (their uses are not reported again).
    pub broken: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Use(UseDecl),
    QuantDefault(QuantDefault),
    Block(BlockDef),
    Model(Model),
}

/// `use "layers.qat"`: the path as written (without quotes), relative to this file.
#[derive(Debug, Clone, PartialEq)]
pub struct UseDecl {
    pub path: String,
    /// The string literal, quotes included.
    pub path_span: Span,
    pub span: Span,
}

/// `block name(x: tensor, filters: int) { ... output y }`: a reusable subgraph.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockDef {
    pub name: Ident,
    pub params: Vec<Param>,
    pub statements: Vec<Statement>,
    pub span: Span,
}

/// A block parameter; `ty` is `tensor` or `int` when the file is valid.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: Ident,
    pub ty: Ident,
    pub span: Span,
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

/// `@quant(...) let x = conv2d(image, filters = 32)`, or `let a, b = block(x)`.
#[derive(Debug, Clone, PartialEq)]
pub struct LetBinding {
    pub annotations: Vec<Annotation>,
    /// One name per result; never empty.
    pub names: Vec<Ident>,
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
    List { items: Vec<Expr>, span: Span },
}

impl Expr {
    pub fn span(&self) -> Span {
        match self {
            Expr::Call(c) => c.span,
            Expr::Number { span, .. } => *span,
            Expr::Ident(i) => i.span,
            Expr::List { span, .. } => *span,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

impl Statement {
    pub fn span(&self) -> Span {
        match self {
            Statement::Input(i) => i.span,
            Statement::Let(l) => l.span,
            Statement::Output(o) => o.span,
        }
    }
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Use(u) => u.span,
            Item::QuantDefault(q) => q.span,
            Item::Block(b) => b.span,
            Item::Model(m) => m.span,
        }
    }
}
