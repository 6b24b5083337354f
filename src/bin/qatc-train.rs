//! `qatc-train`: the `qatc` command line with libtorch linked in. `qatc` hands it the
//! commands that train (see `cli::libtorch`); it also runs every other command itself.

fn main() -> std::process::ExitCode {
    qatc::cli::main_with(qatc::cli::training::in_process)
}
