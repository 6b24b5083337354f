//! The command line's arguments: what clap parses, with the help text users see.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::passes::{BitWidths, Stage};

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
    /// Classify images: an int8 artifact with the integer runtime (no libtorch), or a
    /// `.qat` model with a checkpoint (`--weights`) through libtorch. Prints
    /// `path  class  probability` per image; folders of class subfolders also give the
    /// accuracy and a confusion matrix.
    Run(RunArgs),
    /// Print an int8 artifact's integer graph (scales, zero points, clamps, multipliers),
    /// a TFLite file's tensors, quantization parameters and operators, or an ONNX
    /// model's inputs, outputs and nodes. Which one is told by the content, not the name.
    Inspect {
        /// An int8 artifact directory (or the build directory holding `int8/`), a
        /// `.tflite` or an `.onnx` file.
        artifact: PathBuf,
    },
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
    /// Pretrained weight files against a model.
    #[command(subcommand)]
    Weights(WeightsCommand),
}

/// `qatc weights ...`
#[derive(Subcommand, Debug)]
pub enum WeightsCommand {
    /// List which of the model's tensors a weight file (safetensors or a PyTorch `.pt`
    /// state_dict) has, which are missing and which are extra, shapes side by side,
    /// with `transfer.map` rules that would fill the gaps. Uses the recipe's
    /// `transfer.map` and `transfer.skip` when there is a recipe.
    Diff {
        /// The .qat model.
        file: PathBuf,
        /// The weight file.
        weights: PathBuf,
        /// Which model of the file (required when it has several).
        #[arg(long)]
        model: Option<String>,
        /// The recipe whose `transfer` rules apply; default: the one beside the model, if any.
        #[arg(long)]
        recipe: Option<PathBuf>,
    },
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
    /// Train data-parallel in N local processes (PyTorch's c10d: Gloo on the CPU, NCCL
    /// with `--device cuda`, one GPU per process), started and watched by this one;
    /// several machines: launch with `torchrun --no-python qatc build`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub nproc: Option<u16>,
}

/// Arguments of `qatc run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// An int8 artifact (build/<Model>/int8, or build/<Model>), or a .qat file with --weights.
    pub artifact: PathBuf,
    /// Image files (png, jpg, jpeg, bmp, webp), folders of them (`dir/<class>/*.png`: the
    /// subfolder names the true class), IDX3 image files or .npy arrays.
    pub inputs: Vec<PathBuf>,
    /// An IDX3 image file, gzipped or not (the same as naming it among the inputs).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// IDX1 or .npy labels of the one IDX or .npy input: adds the accuracy.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// A checkpoint `qatc build` wrote (float.safetensors, ptq.safetensors, qat.safetensors)
    /// for the .qat model: run it with libtorch (fake quantization when it has ranges).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Which model of the .qat file (required when it has several).
    #[arg(long)]
    pub model: Option<String>,
    /// Training recipe of the .qat model (its preprocessing); defaults to the model file with .yaml.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// Classes to print per image, most probable first.
    #[arg(long, default_value_t = 1)]
    pub top: usize,
    /// `text` (aligned columns), `json` (one document) or `csv`.
    #[arg(long, value_enum, default_value_t = RunFormat::Text)]
    pub format: RunFormat,
    /// Print every output value (float logits, or the int8 model's dequantized outputs)
    /// instead of classes.
    #[arg(long)]
    pub logits: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunFormat {
    Text,
    Json,
    Csv,
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
    pub(crate) fn enabled(self) -> bool {
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
    pub(crate) fn file_name(self) -> &'static str {
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
    /// A picture laid out by qatc itself (no Graphviz needed), blocks framed.
    Svg,
}
