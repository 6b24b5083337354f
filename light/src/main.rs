//! `qatc`: the command line without libtorch. Every command that needs no training runs
//! here and starts in milliseconds; `build`, `sensitivity`, `weights` and `run --weights`
//! are handed to `qatc-train` beside this binary (src/cli/libtorch.rs).
//!
//! The library's sources are compiled into this crate with the `train` feature off. Their
//! paths say `crate::ir`, `crate::cli`, …: the glob import below makes those names resolve.
//! (The pest grammar's path, `../grammar/qat.pest`, resolves from this crate's directory
//! as from `src/`.)

#[allow(dead_code, unused_imports, clippy::all)]
#[path = "../../src/lib.rs"]
mod qatc;

#[allow(unused_imports)]
use qatc::*;

fn main() -> std::process::ExitCode {
    qatc::cli::main()
}
