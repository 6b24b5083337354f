//! The two binaries: `qatc` links no libtorch and hands the training commands to
//! `qatc-train` beside it (src/cli/libtorch.rs).

mod common;

use std::process::Command;

#[test]
fn qatc_links_no_libtorch_and_qatc_train_does() {
    let ldd = |path: &std::path::Path| {
        let out = Command::new("ldd")
            .arg(path)
            .output()
            .expect("ldd runs (glibc's libc-bin)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let light = ldd(&common::qatc_bin());
    assert!(
        !light.contains("libtorch") && !light.contains("libc10"),
        "qatc loads libtorch:\n{light}"
    );
    let train = ldd(env!("CARGO_BIN_EXE_qatc-train").as_ref());
    assert!(train.contains("libtorch_cpu"), "qatc-train:\n{train}");
}

/// Alone in a folder, `qatc` still checks, and says where training lives instead of failing
/// obscurely.
#[test]
fn qatc_without_qatc_train_beside_it_checks_and_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("qatc");
    std::fs::copy(common::qatc_bin(), &alone).unwrap();
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/fashion/cnn.qat");
    let check = Command::new(&alone)
        .args(["check", model])
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let build = Command::new(&alone)
        .args(["build", model])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&build.stderr);
    assert_eq!(build.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("qatc-train") && stderr.contains(&dir.path().display().to_string()),
        "{stderr}"
    );
}

/// `qatc build` reaches the training binary: a recipe error is one that only the
/// training side reads.
#[test]
fn qatc_hands_build_to_qatc_train() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.qat");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/fashion/cnn.qat"),
        &model,
    )
    .unwrap();
    std::fs::write(dir.path().join("m.yaml"), "train: {epochs: -1}\n").unwrap();
    let out = Command::new(common::qatc_bin())
        .arg("build")
        .arg(&model)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("m.yaml"), "{stderr}");
}
