//! The `qatc` command line. Library errors become messages and exit codes here.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::codes;
use crate::diagnostics::{render_terminal, Diagnostic, JsonDiagnostic, Severity, SourceFile};
use crate::ir::{dump, ops, Graph};
use crate::passes::{self, BitWidths, Stage};

#[derive(Parser, Debug)]
#[command(name = "qatc", version, about = "Compiler for declarative, quantization-aware neural-network models", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Parse and check .qat files; report every problem found.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// `human` (rustc-style) or `json` (one object per line, LSP positions).
        #[arg(long, value_enum, default_value_t = MessageFormat::Human)]
        message_format: MessageFormat,
        #[arg(long, value_enum, default_value_t = Color::Auto)]
        color: Color,
    },
    /// Check, train float, calibrate PTQ, fine-tune with QAT, and report the accuracies side by side.
    Build(BuildArgs),
    /// Quantize one layer at a time and measure what each costs; suggests layers to keep in float.
    Sensitivity(SensitivityArgs),
    /// Run an int8 artifact (build/<Model>/int8) on IDX images: predictions, or accuracy with --labels.
    Run {
        artifact: PathBuf,
        /// IDX3 image file, gzipped or not (e.g. t10k-images-idx3-ubyte.gz).
        #[arg(long)]
        images: PathBuf,
        /// IDX1 label file: print the accuracy instead of one prediction per line.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Print an int8 artifact's integer graph (scales, zero points, clamps, multipliers),
    /// or a `.tflite` file's tensors, quantization parameters and operators.
    Inspect { artifact: PathBuf },
    /// Convert an int8 artifact to another format.
    Export {
        artifact: PathBuf,
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Output file; defaults to model.onnx or model.tflite beside the artifact directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show the graph of a model after a compiler stage.
    Graph {
        file: PathBuf,
        #[arg(long)]
        model: Option<String>,
        #[arg(long, value_enum, default_value_t = Stage::Quantized)]
        stage: Stage,
        #[arg(long, value_enum, default_value_t = Emit::Text)]
        emit: Emit,
        /// Bit widths for everything that uses the file's defaults, e.g. `w4a8`.
        #[arg(long, value_name = "wXaY")]
        quant: Option<BitWidths>,
    },
    /// Per layer: output shape, parameters, MACs, weight and activation bits, bytes in
    /// float and in int8; totals, and what fusion merged.
    Summary {
        file: PathBuf,
        #[arg(long)]
        model: Option<String>,
        /// Bit widths for everything that uses the file's defaults, e.g. `w4a8`.
        #[arg(long, value_name = "wXaY")]
        quant: Option<BitWidths>,
        /// `text` (a table) or `json`.
        #[arg(long, value_enum, default_value_t = SummaryFormat::Text)]
        format: SummaryFormat,
    },
    /// Print the default training recipe, every key commented; `--out FILE` writes it
    /// there instead (never over an existing file), ready to edit.
    Recipe {
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Combine the report.json of several builds into one comparison page
    /// (e.g. `qatc report build/*/report.json`).
    Report {
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// The page to write.
        #[arg(long, default_value = "comparison.html")]
        out: PathBuf,
    },
    /// Explain a diagnostic code (e.g. `qatc explain E0007`); `qatc explain codes` lists
    /// every code, `qatc explain ops` every op.
    Explain {
        /// A code such as E0007, or `codes`, or `ops`.
        code: String,
    },
    /// Rewrite .qat files in the canonical layout (comments are kept).
    Fmt {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Change nothing; fail if a file is not formatted, naming it.
        #[arg(long)]
        check: bool,
    },
    /// Run the language server on stdin and stdout (editors start this).
    Lsp,
}

/// What names a model to train and how: shared by `build` and `sensitivity`.
#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    pub file: PathBuf,
    /// Which model of the file to use (required when it has several).
    #[arg(long)]
    pub model: Option<String>,
    /// Training recipe (YAML); defaults to the model file with a .yaml extension.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// Bit widths for everything that uses the file's defaults, e.g. `w4a8` or `w2a8`.
    #[arg(long, value_name = "wXaY")]
    pub quant: Option<BitWidths>,
    /// `cpu`, or `cuda` when libtorch was built with CUDA.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    pub device: String,
    /// No progress bars or stage messages; only the final table.
    #[arg(long, short)]
    pub quiet: bool,
    /// Training progress on stderr: `auto` (bars on a terminal, one line per epoch
    /// otherwise), `text` (one line per epoch) or `json` (one JSON object per line).
    #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
}

/// Arguments of `qatc build`.
#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output directory; defaults to build/<Model>.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue an interrupted build from its per-epoch checkpoints in the output directory.
    #[arg(long)]
    pub resume: bool,
    /// Extra artifacts to write beside report.json: `onnx` (model.onnx) or `tflite`
    /// (model.tflite) of the QAT int8 model; repeat for both. `tflite` is checked before training.
    #[arg(long, value_enum)]
    pub emit: Vec<ExportFormat>,
}

/// Arguments of `qatc sensitivity`.
#[derive(clap::Args, Debug)]
pub struct SensitivityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Float weights to analyse (e.g. build/<Model>/float.safetensors); trains them when absent.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Also quantize everything but one layer at a time.
    #[arg(long)]
    pub all_but_one: bool,
    /// Where sensitivity.json goes; defaults to build/<Model>.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MessageFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SummaryFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

impl Color {
    fn enabled(self) -> bool {
        match self {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => {
                std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Onnx,
    Tflite,
}

impl ExportFormat {
    fn file_name(self) -> &'static str {
        match self {
            ExportFormat::Onnx => "model.onnx",
            ExportFormat::Tflite => "model.tflite",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    Text,
    Dot,
    Json,
}

pub fn main() -> ExitCode {
    // `qatc graph | head` closes stdout early: end quietly, as other Unix tools do,
    // instead of panicking on the failed write (Rust ignores SIGPIPE by default).
    #[cfg(unix)]
    // SAFETY: restores the default action of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        // A rendered diagnostic (a recipe's `error[E0015]: ...` with its source lines)
        // has its own heading; anything else gets one.
        Err(message) if message.starts_with("error[") => {
            eprintln!("{}", message.trim_end());
            ExitCode::FAILURE
        }
        Err(message) => {
            eprintln!("error: {message}");
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

fn run(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Check {
            files,
            message_format,
            color,
        } => {
            let mut failed = false;
            // Every file is checked, whatever happened to the ones before it.
            for path in &files {
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
            )),
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
        Command::Fmt { files, check } => fmt(&files, check),
        Command::Lsp => crate::lsp::run_stdio().map(|()| ExitCode::SUCCESS),
        Command::Build(args) => build(args),
        Command::Sensitivity(args) => sensitivity(args),
        Command::Run {
            artifact,
            images,
            labels,
            threads,
        } => run_int8(&artifact, &images, labels.as_deref(), threads),
        Command::Inspect { artifact } => {
            if artifact.is_file() || artifact.extension().is_some_and(|e| e == "tflite") {
                let model =
                    crate::export::tflite::read_file(&artifact).map_err(|e| e.to_string())?;
                print!("{}", crate::export::tflite::text(&model));
                return Ok(ExitCode::SUCCESS);
            }
            let model = crate::int8::artifact::read(&artifact).map_err(|e| e.to_string())?;
            print!("{}", crate::int8::text(model.graph(), model.tensors()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            artifact,
            format,
            out,
        } => {
            let model = crate::int8::artifact::read(&artifact).map_err(|e| e.to_string())?;
            let dir = crate::int8::artifact::resolve(&artifact);
            let out = out.unwrap_or_else(|| {
                dir.parent()
                    .unwrap_or(Path::new("."))
                    .join(format.file_name())
            });
            match format {
                ExportFormat::Onnx => {
                    crate::export::onnx::write(&out, &model).map_err(|e| e.to_string())?
                }
                ExportFormat::Tflite => {
                    crate::export::tflite::write(&out, &model).map_err(|e| e.to_string())?
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

/// `qatc fmt`: formats in place, or with `--check` lists the files that would change.
fn fmt(files: &[PathBuf], check: bool) -> Result<ExitCode, String> {
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

/// `qatc run`: predictions (one class per line) or, with labels, the accuracy.
fn run_int8(
    artifact: &Path,
    images: &Path,
    labels: Option<&Path>,
    threads: Option<usize>,
) -> Result<ExitCode, String> {
    // Thousands of threads only thrash the machine: refuse them before loading anything big.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max_threads = cores * crate::limits::THREADS_PER_CORE;
    if let Some(t) = threads.filter(|&t| t > max_threads) {
        return Err(format!(
            "--threads {t} is too many: at most {max_threads} ({} per core, {cores} cores here)",
            crate::limits::THREADS_PER_CORE
        ));
    }
    let model = crate::runtime::load(artifact).map_err(|e| e.to_string())?;
    let (pixels, count, rows, cols) =
        crate::data::read_images(images).map_err(|e| e.to_string())?;
    let input = &model.graph().input.shape;
    // Images are one channel, `rows` × `cols`: an [1, H, W] input takes exactly that
    // geometry, a vector input any of its size.
    let fits = match input[..] {
        [1, h, w] => (rows, cols) == (h, w),
        [f] => rows * cols == f,
        _ => false,
    };
    if !fits {
        return Err(format!(
            "{} has {rows}x{cols} images; model `{}` takes {input:?}",
            images.display(),
            model.graph().model,
        ));
    }
    let labels = match labels {
        Some(path) => {
            let l = crate::data::read_labels(path).map_err(|e| e.to_string())?;
            if l.len() != count {
                return Err(format!(
                    "{} has {count} images but {} has {} labels",
                    images.display(),
                    path.display(),
                    l.len()
                ));
            }
            // A label the model cannot predict would only count as wrong, silently.
            let outputs = crate::int8::graph::output_count(model.graph());
            let known = |label: u8| match &model.graph().classes {
                Some(classes) => classes.contains(&label),
                None => (label as usize) < outputs,
            };
            if let Some(at) = l.iter().position(|&x| !known(x)) {
                let classes = match &model.graph().classes {
                    Some(c) => format!("{c:?}"),
                    None => format!("0 to {}", outputs.saturating_sub(1)),
                };
                return Err(format!(
                    "{}: label {at} is {}, but model `{}` classifies {classes}",
                    path.display(),
                    l[at],
                    model.graph().model
                ));
            }
            Some(l)
        }
        None => None,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .build()
        .map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let outputs = pool
        .install(|| model.run_pixels(&pixels))
        .map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    let class = |i: usize| {
        model
            .graph()
            .classes
            .as_ref()
            .and_then(|c| c.get(i).copied())
            .map_or(i, usize::from)
    };
    let predicted: Vec<usize> = model.argmax(&outputs).into_iter().map(class).collect();
    match labels {
        Some(labels) => {
            let correct = predicted
                .iter()
                .zip(&labels)
                .filter(|(p, l)| **p == **l as usize)
                .count();
            println!(
                "accuracy: {:.2}% ({correct}/{count})",
                correct as f64 / count.max(1) as f64 * 100.0
            );
            eprintln!(
                "{count} images in {seconds:.3} s ({:.0} images/s, {} kernels, {} threads)",
                count as f64 / seconds.max(1e-9),
                model.isa().name(),
                pool.current_num_threads()
            );
        }
        None => {
            let mut out = String::with_capacity(predicted.len() * 3);
            for p in predicted {
                out.push_str(&format!("{p}\n"));
            }
            print!("{out}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks the model, loads its recipe and runs the passes: what training starts from.
#[cfg(feature = "train")]
fn prepared(
    args: &ModelArgs,
) -> Result<(Graph, crate::recipe::Recipe, crate::train::BuildOptions), String> {
    let graph = checked_graph(&args.file, args.model.as_deref(), args.quant, args.color)?;
    let summary = model_summary(graph.clone());
    let log = match (args.quiet, args.log_format) {
        (true, _) => crate::train::progress::Log::Quiet,
        (false, LogFormat::Auto) => crate::train::progress::Log::auto(),
        (false, LogFormat::Text) => crate::train::progress::Log::Lines,
        (false, LogFormat::Json) => crate::train::progress::Log::Json,
    };
    let progress = crate::train::progress::Progress { log };
    let beside = crate::recipe::Recipe::path_for(&args.file);
    let recipe = match &args.recipe {
        // Only the recipe that goes with the model is optional; one named must exist.
        None if !beside.exists() => {
            progress.message(&format!(
                "no recipe at {}: using the default recipe (see it with `qatc recipe`; `qatc recipe --out {}` writes it there to edit)",
                beside.display(),
                beside.display()
            ));
            crate::recipe::Recipe::default()
        }
        path => crate::recipe::Recipe::load(path.as_ref().unwrap_or(&beside)).map_err(|e| {
            e.rendered
                .trim_start_matches("error: ")
                .trim_end()
                .to_string()
        })?,
    };
    // Refuse before libtorch allocates anything.
    if let Some(d) = crate::ir::memory::check_training_memory(&graph, recipe.train.batch_size) {
        let file = read_source(&args.file)?;
        eprint!("{}", render_terminal(&file, &[d], args.color.enabled()));
        return Err(format!(
            "{}: one training batch would not fit in memory; nothing was built",
            args.file.display()
        ));
    }
    let quantized = passes::run(graph, Stage::Quantized);
    let opts = crate::train::BuildOptions {
        out_dir: PathBuf::from("build").join(&quantized.name),
        device: crate::train::device(&args.device).map_err(|e| e.to_string())?,
        log,
        resume: false,
        emit_onnx: false,
        emit_tflite: false,
        summary: Some(summary),
    };
    Ok((quantized, recipe, opts))
}

#[cfg(feature = "train")]
fn build(args: BuildArgs) -> Result<ExitCode, String> {
    let (graph, recipe, mut opts) = prepared(&args.model)?;
    if let Some(out) = args.out {
        opts.out_dir = out;
    }
    opts.resume = args.resume;
    opts.emit_onnx = args.emit.contains(&ExportFormat::Onnx);
    opts.emit_tflite = args.emit.contains(&ExportFormat::Tflite);
    // Before any training: what has no int8 form would only show at the end.
    let (problems, format) = if opts.emit_tflite {
        (crate::export::tflite::check(&graph), Some("TFLite"))
    } else if opts.emit_onnx {
        (
            crate::lower::check(&graph, codes::NO_INT8_FORM),
            Some("ONNX"),
        )
    } else {
        let warnings = crate::lower::check(&graph, codes::NO_INT8_MODEL)
            .into_iter()
            .map(|d| Diagnostic {
                severity: Severity::Warning,
                ..d
            })
            .collect();
        (warnings, None)
    };
    if !problems.is_empty() {
        let file = read_source(&args.model.file)?;
        eprint!(
            "{}",
            render_terminal(&file, &problems, args.model.color.enabled())
        );
        if let Some(format) = format {
            return Err(format!(
                "{} cannot be exported to {format} ({} problem{}); nothing was built",
                args.model.file.display(),
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            ));
        }
    }
    // The summary once the model is known to build (a refused one gets only its errors).
    if let Some(summary) = &opts.summary {
        crate::train::progress::Progress { log: opts.log }.summary(summary);
    }
    let report = crate::train::build(&graph, &recipe, &opts).map_err(|e| e.to_string())?;
    println!("{}", report.table());
    let a = &report.artifacts;
    let extra: Vec<&str> = [&a.ptq, &a.int8, &a.onnx, &a.tflite, &a.html]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    println!(
        "wrote {}, {}, {}, {}",
        a.float,
        a.qat,
        extra.join(", "),
        a.report
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "train")]
fn sensitivity(args: SensitivityArgs) -> Result<ExitCode, String> {
    let (graph, recipe, mut opts) = prepared(&args.model)?;
    if let Some(out) = args.out {
        opts.out_dir = out;
    }
    let result = crate::train::sensitivity::analyze(
        &graph,
        &recipe,
        &opts,
        args.weights.as_deref(),
        args.all_but_one,
    )
    .map_err(|e| e.to_string())?;
    print!("{}", result.table());
    let path = opts.out_dir.join("sensitivity.json");
    let json = serde_json::to_string_pretty(&result).expect("results serialize");
    crate::report::write_atomic_bytes(&path, json.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "train"))]
fn build(_: BuildArgs) -> Result<ExitCode, String> {
    Err(NO_TRAIN.into())
}

#[cfg(not(feature = "train"))]
fn sensitivity(_: SensitivityArgs) -> Result<ExitCode, String> {
    Err(NO_TRAIN.into())
}

#[cfg(not(feature = "train"))]
const NO_TRAIN: &str = "this qatc was built without the `train` feature (libtorch); rebuild with default features to train";
