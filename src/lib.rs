//! qatc: a compiler for declarative, quantization-aware neural-network models.
//!
//! The pipeline is the module tree: [`syntax`] (pest grammar → AST) → [`ir`]
//! (checked, shape-inferred graph) → [`passes`] (fusion, fake-quant insertion) →
//! `train` (libtorch: float training, PTQ calibration, QAT) → [`lower`] (integer-only
//! graph) → [`runtime`] (int8 kernels, no libtorch) → [`export`] (ONNX); [`report`].
//! [`diagnostics`] and [`cli`] sit beside them.

pub mod cli;
pub mod codes;
pub mod data;
pub mod diagnostics;
pub mod export;
pub mod ir;
pub mod lower;
pub mod passes;
pub mod recipe;
pub mod report;
pub mod runtime;
pub mod syntax;
#[cfg(feature = "train")]
pub mod train;

use diagnostics::{Diagnostic, SourceFile};

/// Parses and checks one source file: everything `qatc check` does.
pub fn check_source(file: &SourceFile) -> ir::CheckedFile {
    match syntax::parse(&file.text) {
        Ok(ast) => ir::check_file(&ast),
        Err(d) => ir::CheckedFile {
            diagnostics: vec![d],
            ..Default::default()
        },
    }
}

/// Convenience for tests and tools: all diagnostics for a source text.
pub fn diagnose(text: &str) -> Vec<Diagnostic> {
    check_source(&SourceFile::new("input.qat", text)).diagnostics
}
