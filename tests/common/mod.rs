//! Helpers shared by the integration tests that run the `qatc` binary.
#![allow(dead_code)] // each test crate uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn qatc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qatc"))
        .args(args)
        .output()
        .expect("qatc runs")
}

/// Fashion-MNIST's directory (`make test` installs it).
pub fn data_dir() -> PathBuf {
    let dir = std::env::var_os("QATC_FASHION_MNIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/share/datasets/fashion-mnist".into());
    assert!(
        dir.join("train-images-idx3-ubyte.gz").is_file(),
        "Fashion-MNIST is missing from {}: run `bash scripts/setup-data.sh` (make test does)",
        dir.display()
    );
    dir
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `qatc build MODEL --recipe RECIPE --out OUT`, which must fail cleanly (exit 1,
/// no panic); returns what it printed on stderr.
pub fn build_fails(model: &Path, recipe: &str, out: &Path) -> String {
    let run = qatc(&[
        "build",
        model.to_str().unwrap(),
        "--recipe",
        recipe,
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}
