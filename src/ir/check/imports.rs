//! Imports and namespaces: which blocks each module sees, imported files checked on
//! their own, failed or cyclic imports reported at their `use`, clashing local blocks.

use std::collections::HashMap;

use super::{BlockRef, Checker, QuantDefaults};
use crate::codes;
use crate::diagnostics::{Diagnostic, Span};
use crate::ir::index::Index;
use crate::ir::modules::{Modules, Resolved};
use crate::ir::ops;
use crate::syntax::ast;

/// The blocks each module sees by name (0: this file, i + 1: `modules.list[i]`), and
/// whether an import failed. Import errors and clashing local blocks go to `diagnostics`.
pub(super) fn namespaces<'a>(
    file: &'a ast::File,
    modules: &'a Modules,
    uses: &[(Span, Resolved)],
    diagnostics: &mut Vec<Diagnostic>,
) -> (Vec<HashMap<&'a str, BlockRef<'a>>>, bool) {
    // Namespaces: module 0 is this file, module i + 1 is modules.list[i].
    let mut namespaces: Vec<HashMap<&str, BlockRef>> = vec![HashMap::new(); modules.list.len() + 1];
    for (i, m) in modules.list.iter().enumerate() {
        for item in &m.ast.items {
            if let ast::Item::Block(b) = item {
                namespaces[i + 1]
                    .entry(b.name.name.as_str())
                    .or_insert(BlockRef {
                        module: i + 1,
                        def: b,
                    });
            }
        }
    }
    for (i, m) in modules.list.iter().enumerate() {
        for &j in &m.imports {
            let imported: Vec<(&str, BlockRef)> = namespaces[j + 1]
                .iter()
                .filter(|(_, b)| b.module == j + 1)
                .map(|(k, v)| (*k, *v))
                .collect();
            for (k, v) in imported {
                namespaces[i + 1].entry(k).or_insert(v);
            }
        }
    }
    // Imported blocks are checked on their own too: an error inside one must not pass silently.
    // `modules.list` is in dependency order, so a module's imports are settled before it.
    let mut module_errors: Vec<Vec<Diagnostic>> = Vec::new();
    for (i, m) in modules.list.iter().enumerate() {
        let mut sub = Checker {
            modules,
            namespaces: &namespaces,
            broken: m.ast.broken.iter().map(String::as_str).collect(),
            broken_imports: false,
            defaults: QuantDefaults::default(),
            diagnostics: Vec::new(),
            index: Index::default(),
            file_span: Span::new(0, 0),
            let_start: 0,
            statement_end: 0,
            statements: 0,
        };
        sub.recursion(&m.ast);
        for item in &m.ast.items {
            if let ast::Item::Block(b) = item {
                sub.check_block(b, i + 1);
            }
        }
        let mut errors: Vec<Diagnostic> = m
            .errors
            .iter()
            .cloned()
            .chain(sub.diagnostics.into_iter().filter(Diagnostic::is_error))
            .collect();
        for &j in &m.imports {
            if errors.is_empty() {
                errors.extend(module_errors[j].iter().take(1).cloned());
            }
        }
        module_errors.push(errors);
    }
    let mut broken_imports = false;
    for (span, resolved) in uses {
        match resolved {
            Ok(i) => {
                let m = &modules.list[*i];
                let errors = &module_errors[*i];
                if let Some(cycle) = errors.iter().find(|e| e.code == codes::IMPORT_CYCLE) {
                    // The cycle passes through this `use`: report it here, where it can be cut.
                    broken_imports = true;
                    diagnostics.push(
                        Diagnostic::error(
                            codes::IMPORT_CYCLE,
                            cycle.message.clone(),
                            *span,
                            "this import leads back here",
                        )
                        .with_help("move the shared blocks into a third file that both import"),
                    );
                } else if let Some(first) = errors.first() {
                    broken_imports = true;
                    diagnostics.push(
                        Diagnostic::error(
                            codes::IMPORT_FAILED,
                            format!("imported file `{}` has errors", m.path.display()),
                            *span,
                            format!(
                                "{} error{} in this file",
                                errors.len(),
                                if errors.len() == 1 { "" } else { "s" }
                            ),
                        )
                        .with_note(format!("first: {}", first.message))
                        .with_help(format!("run `qatc check {}` to see them", m.path.display())),
                    );
                }
                let imported: Vec<(&str, BlockRef)> = namespaces[i + 1]
                    .iter()
                    .filter(|(_, b)| b.module == i + 1)
                    .map(|(k, v)| (*k, *v))
                    .collect();
                for (k, v) in imported {
                    namespaces[0].entry(k).or_insert(v);
                }
            }
            Err(d) => {
                broken_imports = true;
                diagnostics.push(d.clone());
            }
        }
    }
    // Local blocks shadow imported ones; a name defined twice locally is an error.
    let mut local_seen: HashMap<&str, Span> = HashMap::new();
    for item in &file.items {
        let ast::Item::Block(b) = item else { continue };
        let name = b.name.name.as_str();
        if let Some(first) = local_seen.insert(name, b.name.span) {
            diagnostics.push(
                Diagnostic::error(
                    codes::DUPLICATE_DEFINITION,
                    format!("block `{name}` is defined twice"),
                    b.name.span,
                    "redefined here",
                )
                .with_label(first, "first defined here"),
            );
            continue;
        }
        if ops::lookup(name).is_some() {
            diagnostics.push(
                Diagnostic::error(
                    codes::DUPLICATE_DEFINITION,
                    format!("block `{name}` has the name of a built-in op"),
                    b.name.span,
                    "this name is taken by an op",
                )
                .with_help(format!("rename the block, e.g. `{name}_block`")),
            );
            continue;
        }
        namespaces[0].insert(name, BlockRef { module: 0, def: b });
    }
    (namespaces, broken_imports)
}
