//! The commands that need libtorch, carried out in `qatc-train`'s own process.

use std::process::ExitCode;

use super::{CliError, LibtorchCommand};

/// Carries out a command that needs libtorch in this process.
pub fn in_process(command: LibtorchCommand) -> Result<ExitCode, CliError> {
    match command {
        LibtorchCommand::Build(args) => super::build::build(args),
        LibtorchCommand::Sensitivity(args) => super::build::sensitivity(args),
        LibtorchCommand::WeightsDiff {
            file,
            weights,
            model,
            recipe,
        } => Ok(super::weights::diff(
            &file,
            &weights,
            model.as_deref(),
            recipe.as_deref(),
        )?),
        LibtorchCommand::RunCheckpoint(args) => super::run::checkpoint(args),
    }
}
