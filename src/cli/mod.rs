//! The `qatc` command line. Library errors become messages and exit codes here.

mod args;
#[cfg(feature = "train")]
mod build;
mod check;
mod error;
#[cfg(feature = "train")]
mod launch;
mod libtorch;
mod run;
#[cfg(feature = "train")]
pub mod training;
#[cfg(feature = "train")]
mod weights;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

pub use args::*;
pub use error::CliError;
pub use libtorch::{Libtorch, LibtorchCommand, TRAIN_BINARY};

use crate::codes;
use crate::diagnostics::{render_terminal, Diagnostic, SourceFile};
use crate::ir::{dump, ops, Graph};
use crate::passes::{self, BitWidths, Stage};

/// `qatc`: runs every command that needs no libtorch; hands the others to `qatc-train`.
pub fn main() -> ExitCode {
    main_with(libtorch::hand_over)
}

/// The command line with `libtorch` carrying out the commands that need it: `qatc-train`
/// passes one that runs them in its own process (see [`training`]).
pub fn main_with(libtorch: libtorch::Libtorch) -> ExitCode {
    // `qatc graph | head` closes stdout early: end quietly, as other Unix tools do,
    // instead of panicking on the failed write (Rust ignores SIGPIPE by default).
    #[cfg(unix)]
    // SAFETY: restores the default action of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match run(cli.command, libtorch) {
        Ok(code) => code,
        Err(e) => {
            e.print();
            ExitCode::FAILURE
        }
    }
}

fn read_source(path: &Path) -> Result<SourceFile, String> {
    read_source_file(path).map_err(|e| e.message)
}

/// Why a source file could not be read: a stable code and a message naming the file.
struct ReadError {
    code: &'static str,
    message: String,
}

impl ReadError {
    /// The error as a diagnostic at the start of the file, for `--message-format json`.
    fn diagnostic(&self) -> Diagnostic {
        Diagnostic::error(
            self.code,
            self.message.clone(),
            crate::diagnostics::Span::new(0, 0),
            "",
        )
    }
}

fn read_source_file(path: &Path) -> Result<SourceFile, ReadError> {
    let text = crate::ir::modules::read_source_bytes(path).map_err(|e| ReadError {
        code: if crate::ir::modules::is_too_large(&e) {
            codes::FILE_TOO_LARGE
        } else {
            codes::UNREADABLE_FILE
        },
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    let text = String::from_utf8(text).map_err(|e| ReadError {
        code: codes::UNREADABLE_FILE,
        message: format!(
            "{} is not UTF-8 text (byte {} is invalid)",
            path.display(),
            e.utf8_error().valid_up_to()
        ),
    })?;
    Ok(SourceFile::new(path.display().to_string(), text))
}

/// Checks a file and prints its diagnostics; the graph of the chosen model if it is clean.
/// Checks a file and prints its diagnostics; returns the chosen model's graph if the
/// file is clean, with `--quant` bit widths applied.
fn checked_graph(
    path: &Path,
    model: Option<&str>,
    quant: Option<BitWidths>,
    color: Color,
) -> Result<Graph, String> {
    let (mut graph, defaults) = checked_model(path, model, color)?;
    if let Some(bits) = quant {
        passes::override_default_bits(&mut graph, defaults, bits);
    }
    Ok(graph)
}

fn checked_model(
    path: &Path,
    model: Option<&str>,
    color: Color,
) -> Result<(Graph, crate::ir::QuantDefaults), String> {
    let file = read_source(path)?;
    let checked = crate::check_source(&file);
    eprint!(
        "{}",
        render_terminal(&file, &checked.diagnostics, color.enabled())
    );
    if checked.has_errors() {
        let n = checked.diagnostics.iter().filter(|d| d.is_error()).count();
        return Err(format!(
            "{} has {n} error{}; nothing was built",
            path.display(),
            if n == 1 { "" } else { "s" }
        ));
    }
    let names = checked.model_names.join(", ");
    let defaults = checked.defaults;
    let graph = match model {
        Some(name) => checked
            .graphs
            .into_iter()
            .find(|g| g.name == name)
            .ok_or_else(|| format!("{} has no model `{name}` (models: {names})", path.display())),
        None if checked.graphs.len() == 1 => {
            Ok(checked.graphs.into_iter().next().expect("one graph"))
        }
        None => Err(format!(
            "{} defines several models ({names}); choose one with --model",
            path.display()
        )),
    }?;
    Ok((graph, defaults))
}

fn run(command: Command, libtorch: libtorch::Libtorch) -> Result<ExitCode, CliError> {
    match command {
        Command::Check {
            files,
            message_format,
            color,
        } => check::check(&files, message_format, color),
        Command::Graph {
            file,
            model,
            stage,
            emit,
            quant,
        } => {
            let graph = passes::run(
                checked_graph(&file, model.as_deref(), quant, Color::Auto)?,
                stage,
            );
            print!(
                "{}",
                match emit {
                    Emit::Text => dump::text(&graph),
                    Emit::Dot => dump::dot(&graph),
                    Emit::Json => dump::json(&graph) + "\n",
                    Emit::Svg => crate::ir::svg::svg(&graph) + "\n",
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Summary {
            file,
            model,
            quant,
            format,
        } => {
            let graph = checked_graph(&file, model.as_deref(), quant, Color::Auto)?;
            let summary = model_summary(graph);
            match format {
                SummaryFormat::Text => print!("{}", summary.text()),
                SummaryFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&summary).expect("summaries serialize")
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { reports, out } => {
            let mut loaded = Vec::new();
            for path in &reports {
                let bytes = std::fs::read(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let report: crate::report::Report = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{} is not a qatc report.json: {e}", path.display()))?;
                // A build directory's name tells builds of one model apart (build/w4a4/...).
                let label = path
                    .parent()
                    .and_then(|d| d.file_name())
                    .map_or_else(|| report.model.clone(), |d| d.to_string_lossy().into_owned());
                loaded.push((label, report));
            }
            let page = crate::report::html::comparison_page(&loaded);
            crate::report::write_atomic_bytes(&out, page.as_bytes())
                .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
            println!("wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Recipe { out } => match out {
            None => {
                print!("{}", crate::recipe::DEFAULT_RECIPE);
                Ok(ExitCode::SUCCESS)
            }
            Some(path) if path.exists() => Err(format!(
                "{} already exists; not overwriting it\n  hint: choose another --out, or remove the file first",
                path.display()
            )
            .into()),
            Some(path) => {
                crate::report::write_atomic_bytes(&path, crate::recipe::DEFAULT_RECIPE.as_bytes())
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                println!("wrote {}", path.display());
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Explain { code } => {
            if code == "ops" {
                for op in ops::OPS {
                    println!(
                        "{}\n    {}\n    shape: {}\n    quantization: {}",
                        op.signature(),
                        op.doc,
                        op.shape_rule,
                        op.role.describe()
                    );
                    for arg in op.args {
                        println!(
                            "    {:<10} {} (default: {}): {}",
                            arg.name,
                            arg.ty,
                            arg.default.unwrap_or("required"),
                            arg.doc
                        );
                    }
                    println!();
                }
                return Ok(ExitCode::SUCCESS);
            }
            if code == "codes" {
                let mut all = crate::codes::EXPLANATIONS.to_vec();
                all.sort_by_key(|(code, _, _)| *code);
                for (code, title, _) in all {
                    println!("{code}  {title}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            let (title, text) = crate::codes::explain(&code).ok_or_else(|| {
                format!("no diagnostic has the code `{code}`; `qatc explain codes` lists them")
            })?;
            println!("{}: {title}\n\n{text}", code.to_ascii_uppercase());
            Ok(ExitCode::SUCCESS)
        }
        Command::Fmt { files, check } => check::fmt(&files, check),
        Command::Lsp => Ok(crate::lsp::run_stdio().map(|()| ExitCode::SUCCESS)?),
        Command::Weights(args::WeightsCommand::Diff {
            file,
            weights,
            model,
            recipe,
        }) => libtorch(LibtorchCommand::WeightsDiff {
            file,
            weights,
            model,
            recipe,
        }),
        Command::Build(args) => libtorch(LibtorchCommand::Build(args)),
        Command::Sensitivity(args) => libtorch(LibtorchCommand::Sensitivity(args)),
        Command::Run(args) if args.weights.is_some() => {
            libtorch(LibtorchCommand::RunCheckpoint(args))
        }
        Command::Run(args) => run::int8(args),
        Command::Inspect { artifact } => {
            use crate::export::inspect::{self, ModelFile};
            match inspect::detect(&artifact)? {
                ModelFile::Tflite => {
                    let model =
                        crate::export::tflite::read_file(&artifact)?;
                    print!("{}", crate::export::tflite::text(&model));
                }
                ModelFile::Onnx => {
                    let model = inspect::read_onnx(&artifact)
                        .map_err(|why| format!("{}: {why}", artifact.display()))?;
                    print!("{}", inspect::onnx_text(&model));
                }
                ModelFile::Int8Artifact(dir) => {
                    let model = crate::int8::artifact::read(&dir)?;
                    print!("{}", crate::int8::text(model.graph(), model.tensors()));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            artifact,
            format,
            out,
        } => {
            let model = crate::int8::artifact::read(&artifact)?;
            let dir = crate::int8::artifact::resolve(&artifact);
            let out = out.unwrap_or_else(|| {
                dir.parent()
                    .unwrap_or(Path::new("."))
                    .join(format.file_name())
            });
            match format {
                ExportFormat::Onnx => {
                    crate::export::onnx::write(&out, &model)?
                }
                ExportFormat::Tflite => {
                    crate::export::tflite::write(&out, &model)?
                }
            }
            println!("wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The summary of a checked model (before the passes), as `qatc summary` prints it.
fn model_summary(parsed: Graph) -> crate::summary::Summary {
    let quantized = passes::run(parsed.clone(), Stage::Quantized);
    crate::summary::summarize(&parsed, &quantized)
}
