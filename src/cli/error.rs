//! Why a `qatc` command failed. Each stage keeps its own error type; `?` converts it into
//! a [`CliError`], and [`CliError::print`] renders it once, in `main`.

use crate::data::DataError;
use crate::export::inspect::DetectError;
use crate::export::tflite::ReadError as TfliteReadError;
use crate::int8::ArtifactError;
use crate::recipe::RecipeError;
use crate::runtime::RuntimeError;

/// Every way a command can fail, each stage's error as it is.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A message of the command line itself (a bad flag, a file it cannot use).
    #[error("{0}")]
    Message(String),
    /// A recipe that could not be read: already rendered with its heading and source lines.
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[cfg(feature = "train")]
    #[error(transparent)]
    Build(#[from] crate::driver::BuildError),
    #[cfg(feature = "train")]
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    #[cfg(feature = "train")]
    #[error(transparent)]
    Distributed(#[from] crate::train::distributed::DistError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Lsp(#[from] crate::lsp::LspError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Onnx(#[from] crate::export::ExportError),
    #[error(transparent)]
    Tflite(#[from] crate::export::tflite::ExportError),
    #[error(transparent)]
    TfliteRead(#[from] TfliteReadError),
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error("cannot start the worker threads: {0}")]
    Threads(#[from] rayon::ThreadPoolBuildError),
}

impl From<String> for CliError {
    fn from(message: String) -> Self {
        CliError::Message(message)
    }
}

impl From<&str> for CliError {
    fn from(message: &str) -> Self {
        CliError::Message(message.to_string())
    }
}

impl CliError {
    /// Prints the error on stderr: a rendered diagnostic as it is (it has its own
    /// `error[E…]` heading), anything else after `error: `.
    pub fn print(&self) {
        match self {
            CliError::Recipe(e) => eprintln!("{}", e.rendered.trim_end()),
            other => {
                let message = other.to_string();
                // A message that carries a rendered diagnostic at its start (as a nested
                // build's may) already has its heading.
                if message.starts_with("error[") {
                    eprintln!("{}", message.trim_end());
                } else {
                    eprintln!("error: {message}");
                }
            }
        }
    }
}
