//! Golden tests for diagnostics, in the manner of rustc's UI tests: every
//! `tests/ui/NAME.qat` is checked with `qatc check`, and its terminal output must
//! equal `tests/ui/NAME.stderr` byte for byte. Files with errors must exit 1,
//! warning-only files 0. After an intended change, regenerate with
//! `QATC_BLESS=1 cargo test --test ui` and review the diff.

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn diagnostics_match_checked_in_output() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let bless = std::env::var_os("QATC_BLESS").is_some();
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/ui exists")
        .map(|e| e.expect("readable dir").path())
        .filter(|p| p.extension().is_some_and(|e| e == "qat"))
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no .qat files in {}", dir.display());
    let mut failures = Vec::new();
    for input in &inputs {
        let name = input.file_name().unwrap().to_str().unwrap();
        let output = Command::new(common::qatc_bin())
            .current_dir(&dir)
            .args(["check", "--color", "never", name])
            .output()
            .expect("qatc runs");
        let stderr = String::from_utf8(output.stderr).expect("utf-8 output");
        assert!(
            !stderr.contains("panicked"),
            "{name}: qatc panicked:\n{stderr}"
        );
        let expected_path = input.with_extension("stderr");
        if bless {
            std::fs::write(&expected_path, &stderr).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
            panic!(
                "{name}: missing {}; run with QATC_BLESS=1",
                expected_path.display()
            )
        });
        if stderr != expected {
            failures.push(format!(
                "--- {name}: expected\n{expected}\n--- got\n{stderr}"
            ));
        }
        let has_error = expected.contains("error[");
        let want = if has_error { 1 } else { 0 };
        if output.status.code() != Some(want) {
            failures.push(format!(
                "{name}: exit code {:?}, expected {want}",
                output.status.code()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden files differ:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}
