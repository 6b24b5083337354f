//! Loading the files a `.qat` file imports with `use "other.qat"`: paths are
//! relative to the importing file, each file is parsed once, and a cycle is an error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::codes;
use crate::diagnostics::{Diagnostic, Span};
use crate::limits::{MAX_BLOCK_DEPTH, MAX_SOURCE_BYTES};
use crate::syntax::{self, ast};

/// Reads source files; the language server supplies one that prefers open editor buffers.
pub trait Loader {
    fn load(&mut self, path: &Path) -> std::io::Result<String>;
}

/// Reads files from disk.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsLoader;

impl Loader for FsLoader {
    fn load(&mut self, path: &Path) -> std::io::Result<String> {
        read_source_text(path)
    }
}

/// Why a source file was not read: it is larger than [`MAX_SOURCE_BYTES`] (or endless, like `/dev/zero`).
#[derive(Debug, thiserror::Error)]
#[error(
    "it is larger than {} (the limit for .qat files)",
    crate::limits::format_bytes(MAX_SOURCE_BYTES)
)]
pub struct SourceTooLarge;

/// Reads at most [`MAX_SOURCE_BYTES`] of a source file; more is a [`SourceTooLarge`] error.
pub fn read_source_bytes(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let too_large = || std::io::Error::new(std::io::ErrorKind::InvalidData, SourceTooLarge);
    let file = std::fs::File::open(path)?;
    // A regular file says its size up front; devices and pipes are read up to the limit.
    if file
        .metadata()
        .is_ok_and(|m| m.is_file() && m.len() > MAX_SOURCE_BYTES)
    {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(MAX_SOURCE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SOURCE_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// [`read_source_bytes`] as UTF-8 text.
pub fn read_source_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_source_bytes(path)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Whether a read failed because of [`SourceTooLarge`].
pub fn is_too_large(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<SourceTooLarge>())
}

/// An imported file: its AST and which modules its own `use`s point to.
#[derive(Debug)]
pub struct Module {
    pub path: PathBuf,
    pub ast: ast::File,
    /// Indices (into [`Modules::list`]) of the files this one imports, in order.
    pub imports: Vec<usize>,
    /// Errors found while parsing or loading this file or the files it imports.
    pub errors: Vec<Diagnostic>,
}

/// Every file reachable through `use` from the file being checked (which is not in the list).
#[derive(Debug, Default)]
pub struct Modules {
    pub list: Vec<Module>,
    by_path: HashMap<PathBuf, usize>,
}

/// Where a `use` of the checked file led: a module index, or the diagnostic explaining why not.
pub type Resolved = Result<usize, Diagnostic>;

impl Modules {
    /// Loads the imports of `file` (at `origin`) and, transitively, theirs.
    pub fn load(
        file: &ast::File,
        origin: &Path,
        loader: &mut dyn Loader,
    ) -> (Modules, Vec<(Span, Resolved)>) {
        let mut modules = Modules::default();
        let mut stack = vec![normalize(origin)];
        let resolved = modules.load_uses(file, origin, loader, &mut stack);
        (modules, resolved)
    }

    fn load_uses(
        &mut self,
        file: &ast::File,
        origin: &Path,
        loader: &mut dyn Loader,
        stack: &mut Vec<PathBuf>,
    ) -> Vec<(Span, Resolved)> {
        let dir = origin.parent().unwrap_or(Path::new(""));
        let mut out = Vec::new();
        for item in &file.items {
            let ast::Item::Use(u) = item else { continue };
            let path = normalize(&dir.join(&u.path));
            out.push((u.path_span, self.load_one(u, &path, loader, stack)));
        }
        out
    }

    fn load_one(
        &mut self,
        u: &ast::UseDecl,
        path: &Path,
        loader: &mut dyn Loader,
        stack: &mut Vec<PathBuf>,
    ) -> Resolved {
        if let Some(at) = stack.iter().position(|p| p == path) {
            let chain: Vec<String> = stack[at..]
                .iter()
                .chain(std::iter::once(&path.to_path_buf()))
                .map(|p| file_name(p))
                .collect();
            return Err(Diagnostic::error(
                codes::IMPORT_CYCLE,
                format!("import cycle: {}", chain.join(" -> ")),
                u.path_span,
                "this import leads back to a file that imports it",
            )
            .with_help("move the shared blocks into a third file that both import"));
        }
        if let Some(&i) = self.by_path.get(path) {
            return Ok(i);
        }
        if stack.len() > MAX_BLOCK_DEPTH {
            return Err(Diagnostic::error(
                codes::TOO_DEEP,
                format!("imports nest more than {MAX_BLOCK_DEPTH} deep"),
                u.path_span,
                "this import is one level too many",
            )
            .with_help("import the shared files directly instead of through a chain"));
        }
        let text = loader.load(path).map_err(|e| {
            let code = if is_too_large(&e) {
                codes::FILE_TOO_LARGE
            } else {
                codes::IMPORT_FAILED
            };
            Diagnostic::error(
                code,
                format!("cannot import `{}`", u.path),
                u.path_span,
                format!("cannot read {}: {e}", path.display()),
            )
            .with_note("import paths are relative to the importing file")
        })?;
        let (ast, mut errors) = syntax::parse(&text);
        stack.push(path.to_path_buf());
        let uses = self.load_uses(&ast, path, loader, stack);
        stack.pop();
        let mut imports = Vec::new();
        for (_, r) in uses {
            match r {
                Ok(i) => {
                    imports.push(i);
                    errors.extend(self.list[i].errors.iter().take(1).cloned());
                }
                Err(d) => errors.push(d),
            }
        }
        let i = self.list.len();
        self.list.push(Module {
            path: path.to_path_buf(),
            ast,
            imports,
            errors,
        });
        self.by_path.insert(path.to_path_buf(), i);
        Ok(i)
    }
}

/// `a/./b/../c.qat` -> `a/c.qat`, without touching the disk (files may be unsaved buffers).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
