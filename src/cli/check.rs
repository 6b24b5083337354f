//! `qatc check` and `qatc fmt`: the front end's commands, which report and rewrite files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{read_source_file, CliError, Color, MessageFormat};
use crate::diagnostics::{render_terminal, Diagnostic, JsonDiagnostic, SourceFile};
use crate::ir::Graph;

/// `qatc check`: every file is checked and its diagnostics printed.
pub(super) fn check(
    files: &[PathBuf],
    message_format: MessageFormat,
    color: Color,
) -> Result<ExitCode, CliError> {
    let mut failed = false;
    // Every file is checked, whatever happened to the ones before it.
    for path in files {
        let file = match read_source_file(path) {
            Ok(file) => file,
            Err(e) => {
                failed = true;
                match message_format {
                    MessageFormat::Json => {
                        let name = path.display().to_string();
                        let empty = SourceFile::new(name, "");
                        let d = e.diagnostic();
                        println!(
                            "{}",
                            serde_json::to_string(&JsonDiagnostic::new(&empty, &d))
                                .expect("diagnostics serialize")
                        );
                    }
                    MessageFormat::Human => {
                        eprintln!("error[{}]: {}", e.code, e.message)
                    }
                }
                continue;
            }
        };
        let mut checked = crate::check_source(&file);
        if !checked.has_errors() {
            let memory = training_memory(path, &checked.graphs);
            checked.diagnostics.extend(memory);
        }
        failed |= checked.has_errors();
        match message_format {
            MessageFormat::Json => {
                for d in &checked.diagnostics {
                    println!(
                        "{}",
                        serde_json::to_string(&JsonDiagnostic::new(&file, d))
                            .expect("diagnostics serialize")
                    );
                }
            }
            MessageFormat::Human => {
                eprint!(
                    "{}",
                    render_terminal(&file, &checked.diagnostics, color.enabled())
                );
                let errors = checked.diagnostics.iter().filter(|d| d.is_error()).count();
                let warnings = checked.diagnostics.len() - errors;
                if errors == 0 {
                    let models: Vec<String> = checked
                        .graphs
                        .iter()
                        .map(|g| format!("{} ({} nodes)", g.name, g.nodes.len()))
                        .collect();
                    println!(
                        "{}: ok, {} model{}: {}{}",
                        file.name,
                        models.len(),
                        if models.len() == 1 { "" } else { "s" },
                        models.join(", "),
                        plural_warnings(warnings)
                    );
                } else {
                    eprintln!(
                        "{}: {errors} error{}{}",
                        file.name,
                        if errors == 1 { "" } else { "s" },
                        plural_warnings(warnings)
                    );
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `qatc fmt`: formats in place, or with `--check` lists the files that would change.
pub(super) fn fmt(files: &[PathBuf], check: bool) -> Result<ExitCode, CliError> {
    let mut ok = true;
    // Every file is formatted, whatever happened to the ones before it.
    for path in files {
        let file = match read_source_file(path) {
            Ok(file) => file,
            Err(e) => {
                ok = false;
                eprintln!("error[{}]: {}", e.code, e.message);
                continue;
            }
        };
        match crate::syntax::fmt::format(&file.text) {
            Ok(formatted) if formatted == file.text => {}
            Ok(_) if check => {
                ok = false;
                println!("{} is not formatted", file.name);
            }
            Ok(formatted) => {
                if let Err(e) = std::fs::write(path, formatted) {
                    ok = false;
                    eprintln!("error: cannot write {}: {e}", path.display());
                }
            }
            Err(diagnostics) => {
                ok = false;
                eprint!(
                    "{}",
                    render_terminal(&file, &diagnostics, Color::Auto.enabled())
                );
                eprintln!("{}: not formatted: it has syntax errors", file.name);
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// E0027 for each model too large to train at the batch size of the recipe beside the
/// file; nothing when there is no recipe, or it has errors (`build` reports those).
fn training_memory(path: &Path, graphs: &[Graph]) -> Vec<Diagnostic> {
    let recipe_path = crate::recipe::Recipe::path_for(path);
    let Ok(recipe) = crate::recipe::Recipe::load(&recipe_path) else {
        return Vec::new();
    };
    graphs
        .iter()
        .filter_map(|g| crate::ir::memory::check_training_memory(g, recipe.train.batch_size))
        .collect()
}

fn plural_warnings(n: usize) -> String {
    match n {
        0 => String::new(),
        1 => ", 1 warning".into(),
        n => format!(", {n} warnings"),
    }
}
