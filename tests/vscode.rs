//! The VS Code extension from a clean state, as a fresh clone has it:
//! `npm ci && npm test` (compile, grammar tokenization, the language server driven through
//! the protocol library the extension's client uses) and `vsce package`.
//! Needs npm; without it the test skips with a reason, and under CI=true it fails.

mod common;

use std::path::Path;
use std::process::Command;

fn npm(dir: &Path, args: &[&str]) {
    let out = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .env("QATC_BIN", common::qatc_bin())
        .output()
        .expect("npm runs");
    assert!(
        out.status.success(),
        "npm {} failed:\n{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn extension_installs_compiles_passes_its_tests_and_packages() {
    if Command::new("npm").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "npm is needed for the VS Code extension's tests (apt-get install npm)"
        );
        eprintln!("skipped: npm is not installed");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("editors/vscode");
    // A fresh clone has neither: the scripts must build what they need.
    for generated in ["out", "node_modules"] {
        let _ = std::fs::remove_dir_all(dir.join(generated));
    }
    npm(&dir, &["ci", "--no-audit", "--no-fund"]);
    npm(&dir, &["test"]);
    let vsix = std::env::temp_dir().join(format!("qat-language-{}.vsix", std::process::id()));
    npm(
        &dir,
        &["run", "package", "--", "--out", vsix.to_str().unwrap()],
    );
    let size = std::fs::metadata(&vsix)
        .expect("vsce wrote the package")
        .len();
    std::fs::remove_file(&vsix).unwrap();
    assert!(size > 10_000, "package of {size} bytes");
}
