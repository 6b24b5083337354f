//! Where the commands that need libtorch run.
//!
//! Loading libtorch costs about a second, and `check`, `fmt`, `lsp`, `graph` and `run` on an
//! int8 artifact never use it. So there are two binaries: `qatc` (light/: these sources
//! without the `train` feature) hands the commands below to `qatc-train`, which it finds
//! beside itself; `qatc-train` runs every command in its own process
//! (`cli::training::in_process`).

use std::process::ExitCode;

use super::{BuildArgs, CliError, RunArgs, SensitivityArgs};

/// A command that trains, calibrates or runs a float checkpoint: each needs libtorch.
pub enum LibtorchCommand {
    Build(BuildArgs),
    Sensitivity(SensitivityArgs),
    WeightsDiff {
        file: std::path::PathBuf,
        weights: std::path::PathBuf,
        model: Option<String>,
        recipe: Option<std::path::PathBuf>,
    },
    /// `qatc run MODEL.qat --weights CHECKPOINT`.
    RunCheckpoint(RunArgs),
}

/// How the binary at hand carries out a [`LibtorchCommand`].
pub type Libtorch = fn(LibtorchCommand) -> Result<ExitCode, CliError>;

/// The binary that links libtorch, beside `qatc`.
pub const TRAIN_BINARY: &str = "qatc-train";

/// `qatc`: replaces this process with `qatc-train` and the same arguments, so that exit
/// codes, signals, stdin and stdout are the training binary's own.
pub fn hand_over(_: LibtorchCommand) -> Result<ExitCode, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find qatc's own path to start {TRAIN_BINARY}: {e}"))?;
    let train = exe.with_file_name(TRAIN_BINARY);
    if !train.is_file() {
        return Err(format!(
            "this command trains with libtorch, which `qatc` leaves to {TRAIN_BINARY}, and {} \
             is not there\n  hint: `cargo build --release` builds both binaries; \
             `cargo install --path . && cargo install --path light` installs both",
            train.display()
        )
        .into());
    }
    let mut command = std::process::Command::new(&train);
    command.args(std::env::args_os().skip(1));
    if std::env::var_os("OMP_WAIT_POLICY").is_none() && std::env::var_os("GOMP_SPINCOUNT").is_none()
    {
        command.env("OMP_WAIT_POLICY", OMP_WAIT_POLICY);
    }
    exec(command, &train)
}

/// How libtorch's OpenMP threads wait for work, unless the user says otherwise.
/// libgomp's default spins for up to 300,000 iterations at every barrier: when another
/// process wants the cores, the spinning threads take their time slices from the thread
/// that has work, and training ran 3-6 times slower on a busy 2-core machine (PyTorch
/// eager as well). Sleeping at once costs a futex wake per parallel region instead.
/// libgomp reads this when libtorch loads, before `main`, so it is set here for the
/// process about to start.
const OMP_WAIT_POLICY: &str = "PASSIVE";

#[cfg(unix)]
fn exec(mut command: std::process::Command, path: &std::path::Path) -> Result<ExitCode, CliError> {
    use std::os::unix::process::CommandExt;
    // `exec` returns only when it failed.
    let e = command.exec();
    Err(format!("cannot start {}: {e}", path.display()).into())
}

#[cfg(not(unix))]
fn exec(mut command: std::process::Command, path: &std::path::Path) -> Result<ExitCode, CliError> {
    let status = command
        .status()
        .map_err(|e| format!("cannot start {}: {e}", path.display()))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
