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

/// A block parameter; `ty` is `tensor`, `int` or `op` when the file is valid.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: Ident,
    pub ty: Ident,
    /// `= value`: what the parameter is when a call leaves it out.
    pub default: Option<Expr>,
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
    /// `let hidden = cin * expand`, or `let h = x` (a second name for a value)
    IntLet(IntLet),
    If(IfStatement),
    Output(OutputDecl),
}

/// `let name = <integer expression>`
#[derive(Debug, Clone, PartialEq)]
pub struct IntLet {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

/// `if <condition> { ... } else { ... }`: one branch is inlined, chosen by integers
/// known at the block's call.
#[derive(Debug, Clone, PartialEq)]
pub struct IfStatement {
    pub condition: Condition,
    pub then: Vec<Statement>,
    /// `None` without `else`.
    pub otherwise: Option<Vec<Statement>>,
    pub span: Span,
}

/// A condition on integers: comparisons joined by `and` (binds tighter) and `or`.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Compare {
        lhs: Expr,
        op: CompareOp,
        rhs: Expr,
        span: Span,
    },
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
}

impl Condition {
    pub fn span(&self) -> Span {
        match self {
            Condition::Compare { span, .. } => *span,
            Condition::And(a, b) | Condition::Or(a, b) => Span::new(a.span().start, b.span().end),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CompareOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CompareOp::Eq => "==",
            CompareOp::Ne => "!=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        }
    }

    pub fn holds(self, a: u64, b: u64) -> bool {
        match self {
            CompareOp::Eq => a == b,
            CompareOp::Ne => a != b,
            CompareOp::Lt => a < b,
            CompareOp::Le => a <= b,
            CompareOp::Gt => a > b,
            CompareOp::Ge => a >= b,
        }
    }
}

/// Integer arithmetic; `Div` rounds down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        }
    }

    /// `*` and `/` bind tighter than `+` and `-`.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Add | BinOp::Sub => 1,
            BinOp::Mul | BinOp::Div => 2,
        }
    }
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
    Number {
        text: String,
        span: Span,
    },
    Ident(Ident),
    List {
        items: Vec<Expr>,
        span: Span,
    },
    /// A string literal without its quotes (`@name("features.3")`).
    Str {
        value: String,
        span: Span,
    },
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
        span: Span,
    },
}

impl Expr {
    pub fn span(&self) -> Span {
        match self {
            Expr::Call(c) => c.span,
            Expr::Number { span, .. } => *span,
            Expr::Ident(i) => i.span,
            Expr::List { span, .. } => *span,
            Expr::Str { span, .. } => *span,
            Expr::Binary { span, .. } => *span,
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
            Statement::IntLet(l) => l.span,
            Statement::If(i) => i.span,
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

/// The canonical text of an expression (what `qatc fmt` prints): parentheses only
/// where precedence needs them, one space around operators.
impl std::fmt::Display for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expr::Number { text, .. } => f.write_str(text),
            Expr::Ident(i) => f.write_str(&i.name),
            Expr::Str { value, .. } => write!(f, "\"{value}\""),
            Expr::Call(c) => write!(f, "{c}"),
            Expr::List { items, .. } => {
                f.write_str("[")?;
                for (k, item) in items.iter().enumerate() {
                    if k > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Expr::Binary { op, lhs, rhs, .. } => {
                // A looser operand on either side, or an equally tight one on the right
                // (`a - (b - c)`), keeps its parentheses.
                let side = |f: &mut std::fmt::Formatter<'_>, x: &Expr, right: bool| match x {
                    Expr::Binary { op: inner, .. }
                        if inner.precedence() < op.precedence()
                            || (right && inner.precedence() == op.precedence()) =>
                    {
                        write!(f, "({x})")
                    }
                    _ => write!(f, "{x}"),
                };
                side(f, lhs, false)?;
                write!(f, " {} ", op.symbol())?;
                side(f, rhs, true)
            }
        }
    }
}

/// `callee(a, name = b)`
impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}(", self.callee.name)?;
        for (k, a) in self.args.iter().enumerate() {
            if k > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{a}")?;
        }
        f.write_str(")")
    }
}

impl std::fmt::Display for Arg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{} = {}", n.name, self.value),
            None => write!(f, "{}", self.value),
        }
    }
}

/// `a == b and (c < d or e)`
impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Condition::Compare { lhs, op, rhs, .. } => write!(f, "{lhs} {} {rhs}", op.symbol()),
            Condition::And(a, b) => {
                // `or` inside `and` needs its parentheses back.
                for (k, side) in [a, b].into_iter().enumerate() {
                    if k > 0 {
                        f.write_str(" and ")?;
                    }
                    match side.as_ref() {
                        Condition::Or(..) => write!(f, "({side})")?,
                        Condition::Compare { .. } | Condition::And(..) => write!(f, "{side}")?,
                    }
                }
                Ok(())
            }
            Condition::Or(a, b) => write!(f, "{a} or {b}"),
        }
    }
}
