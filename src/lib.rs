//! qatc: a compiler for declarative, quantization-aware neural-network models.
//!
//! The pipeline is the module tree: [`syntax`] (pest grammar → AST) → [`ir`]
//! (checked, shape-inferred graph) → [`passes`] (fusion, fake-quant insertion) →
//! `train` (libtorch: float training, PTQ calibration, QAT) → [`lower`] (to the integer-only
//! graph); `driver` runs these stages in order for `qatc build` → [`int8`] (that graph, its validation and its artifact format) → [`runtime`]
//! (int8 kernels, no libtorch) → [`export`] (ONNX, TFLite); [`report`], and [`summary`] (sizes and costs per layer).
//! [`diagnostics`] and [`cli`] sit beside them.

// Diagnostics travel in `Result::Err` by value: they are made only on the error path,
// so boxing them would cost clarity for no measurable gain.
#![allow(clippy::result_large_err)]
pub mod cli;
pub mod codes;
pub mod data;
pub mod diagnostics;
#[cfg(feature = "train")]
pub mod driver;
pub mod export;
pub mod int8;
pub mod ir;
pub mod limits;
pub mod lower;
pub mod lsp;
pub mod passes;
pub mod preprocess;
pub mod quantized;
pub mod recipe;
pub mod report;
pub mod runtime;
pub mod summary;
pub mod syntax;
#[cfg(feature = "train")]
pub mod train;

use diagnostics::{Diagnostic, SourceFile};

/// Parses and checks one source file: everything `qatc check` does. Imports are
/// read from disk, relative to the file's name.
pub fn check_source(file: &SourceFile) -> ir::CheckedFile {
    check_source_with(file, &mut ir::modules::FsLoader)
}

/// [`check_source`] with imports read through `loader` (the language server's open buffers).
pub fn check_source_with(
    file: &SourceFile,
    loader: &mut dyn ir::modules::Loader,
) -> ir::CheckedFile {
    let (ast, syntax_errors) = syntax::parse(&file.text);
    check_parsed_with(file, &ast, syntax_errors, loader)
}

/// [`check_source_with`] for a file already parsed into `ast` with `syntax_errors`
/// (the language server keeps the AST for its outline and completion).
pub fn check_parsed_with(
    file: &SourceFile,
    ast: &syntax::ast::File,
    syntax_errors: Vec<Diagnostic>,
    loader: &mut dyn ir::modules::Loader,
) -> ir::CheckedFile {
    let mut checked = ir::check_file_at(ast, std::path::Path::new(&file.name), loader);
    if !syntax_errors.is_empty() {
        // Whatever the broken items would have defined is missing: NO_MODEL would only repeat that.
        checked.diagnostics.retain(|d| d.code != codes::NO_MODEL);
        let mut all = syntax_errors;
        all.append(&mut checked.diagnostics);
        all.sort_by_key(|d| d.primary.span.start);
        checked.diagnostics = all;
    }
    checked
}

/// Convenience for tests and tools: all diagnostics for a source text.
pub fn diagnose(text: &str) -> Vec<Diagnostic> {
    check_source(&SourceFile::new("input.qat", text)).diagnostics
}
