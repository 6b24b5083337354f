//! Front end: the pest grammar (`grammar/qat.pest`) and the AST it produces.

pub mod ast;
mod delimiters;
pub mod fmt;
mod parser;

pub use parser::parse;
