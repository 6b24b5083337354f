#![cfg(feature = "train")]
//! `qatc build` on hostile output directories, recipes and data: everything it can check
//! is checked before training, errors name the file, and a rebuild never leaves parts of
//! two builds side by side. The data is tiny and synthetic, the model one dense layer.

mod common;

use std::path::{Path, PathBuf};

use common::{build_fails, qatc};

const TINY: &str = r#"
quant default {
    weights     = int8(symmetric, per_channel)
    activations = int8(asymmetric, per_tensor)
}
model Tiny {
    input image: f32[1, 28, 28]
    let f = flatten(image)
    let hidden = dense(f, units = 8)
    let hidden = relu(hidden)
    let logits = dense(hidden, units = 10)
    output logits
}
"#;

/// A directory with `n` train and `n` test images of 28×28 and the given labels (cycled).
fn tiny_data(dir: &Path, n: usize, labels: &[u8]) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let pixels: Vec<u8> = (0..n * 784).map(|i| (i * 37 % 251) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| labels[i % labels.len()]).collect();
    for split in ["train", "t10k"] {
        let images = data.join(format!("{split}-images-idx3-ubyte"));
        qatc::data::write_images(&images, &pixels, n, 28, 28).unwrap();
        let label_file = data.join(format!("{split}-labels-idx1-ubyte"));
        qatc::data::write_labels(&label_file, &labels).unwrap();
    }
    data
}

/// `tiny.qat` and its recipe (`extra` appended) in `dir`; returns the model's path.
fn tiny_model(dir: &Path, data: &Path, extra: &str) -> PathBuf {
    let model = dir.join("tiny.qat");
    std::fs::write(&model, TINY).unwrap();
    let recipe = format!(
        "data:\n  dir: {}\ntrain:\n  epochs: 1\n  batch_size: 16\n  learning_rate: 0.01\n  seed: 1\nqat:\n  epochs: 1\n  learning_rate: 0.001\nptq:\n  calibration_samples: 16\n{extra}",
        data.display()
    );
    std::fs::write(dir.join("tiny.yaml"), recipe).unwrap();
    model
}

fn recipe_of(model: &Path) -> String {
    model.with_extension("yaml").display().to_string()
}

/// Training had not started: no stage ran and nothing was written.
fn assert_not_trained(stderr: &str, out: &Path) {
    assert!(!stderr.contains("training images"), "{stderr}");
    assert!(!out.join("float.safetensors").exists());
}

#[test]
fn out_that_is_a_file_fails_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path(), 32, &[0, 1, 2, 3]);
    let model = tiny_model(dir.path(), &data, "");
    let file = dir.path().join("taken");
    std::fs::write(&file, b"keep me").unwrap();
    let stderr = build_fails(&model, &recipe_of(&model), &file);
    assert!(
        stderr.contains(&format!(
            "{}: it exists and is not a directory",
            file.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("training images"), "{stderr}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

#[test]
fn transfer_build_of_itself_is_a_cycle_not_a_deep_recursion() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path(), 32, &[0, 1, 2, 3]);
    let model = tiny_model(
        dir.path(),
        &data,
        "transfer:\n  weights: pre/float.safetensors\n  build: tiny.qat\n",
    );
    let out = dir.path().join("out");
    let stderr = build_fails(&model, &recipe_of(&model), &out);
    assert!(stderr.contains("transfer.build is a cycle"), "{stderr}");
    assert!(stderr.contains("tiny.qat → "), "{stderr}");
    assert!(!stderr.contains("syntax error"), "{stderr}");
    assert_not_trained(&stderr, &out);
}

#[test]
fn unknown_layers_in_transfer_skip_fail_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path(), 32, &[0, 1, 2, 3]);
    // The weights do not exist either: the names are checked first, without them.
    let model = tiny_model(
        dir.path(),
        &data,
        "transfer:\n  weights: pre/float.safetensors\n  skip: [logit]\n",
    );
    let out = dir.path().join("out");
    let stderr = build_fails(&model, &recipe_of(&model), &out);
    assert!(
        stderr.contains("transfer.skip names `logit`") && stderr.contains("`logits`"),
        "{stderr}"
    );
    assert_not_trained(&stderr, &out);
}

#[test]
fn out_of_range_labels_name_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path(), 32, &[200]);
    let model = tiny_model(dir.path(), &data, "");
    let out = dir.path().join("out");
    let stderr = build_fails(&model, &recipe_of(&model), &out);
    let labels = data.join("train-labels-idx1-ubyte");
    assert!(
        stderr.contains(&format!("{}: label 0 is 200", labels.display())),
        "{stderr}"
    );
    assert_not_trained(&stderr, &out);

    // Labels in range, but none among the recipe's classes: the message names the data.
    let data = tiny_data(dir.path(), 32, &[1, 2]);
    let model = tiny_model(dir.path(), &data, "");
    let recipe = std::fs::read_to_string(model.with_extension("yaml")).unwrap();
    let recipe = recipe.replace("data:\n", "data:\n  classes: [5, 6]\n");
    std::fs::write(model.with_extension("yaml"), recipe).unwrap();
    let stderr = build_fails(&model, &recipe_of(&model), &out);
    assert!(
        stderr.contains(&data.display().to_string()) && stderr.contains("[5, 6]"),
        "{stderr}"
    );
}

#[test]
fn recipe_errors_have_one_error_heading() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path(), 8, &[0]);
    let model = tiny_model(dir.path(), &data, "trian: {}\n");
    let stderr = build_fails(&model, &recipe_of(&model), &dir.path().join("out"));
    let headings: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(headings, ["error[E0015]: invalid recipe"], "{stderr}");
}

/// A rebuild into an existing `--out` replaces the int8 artifact whole and cleans what a
/// killed earlier build left behind (also with `--resume`).
#[test]
fn rebuild_cleans_stale_temporaries_and_leaves_a_consistent_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path(), 64, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let model = tiny_model(dir.path(), &data, "");
    let out = dir.path().join("out");
    // What a build killed mid-write leaves: temporary files and directories of a dead
    // process (no pid reaches 4,000,000,000) and an int8 directory moved aside.
    let dead = 4_000_000_000u32;
    std::fs::create_dir_all(out.join("checkpoints")).unwrap();
    std::fs::create_dir_all(out.join(format!(".tmp-{dead}-int8"))).unwrap();
    std::fs::write(out.join(format!(".tmp-{dead}-int8/graph.json")), b"{").unwrap();
    std::fs::write(out.join(format!(".tmp-{dead}-float.safetensors")), b"x").unwrap();
    std::fs::write(
        out.join(format!("checkpoints/.tmp-{dead}-progress.json")),
        b"x",
    )
    .unwrap();
    std::fs::write(out.join("report.json"), b"{\"stale\": true}").unwrap();
    let run = qatc(&[
        "build",
        model.to_str().unwrap(),
        "--recipe",
        &recipe_of(&model),
        "--out",
        out.to_str().unwrap(),
        "--resume",
        "--quiet",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let stale = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp-") || n.starts_with(".old-"))
            .collect()
    };
    assert!(stale(&out).is_empty(), "{:?}", stale(&out));
    assert!(stale(&out.join("checkpoints")).is_empty());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["model"], "Tiny");
    qatc::int8::artifact::read(&out.join("int8")).expect("the new artifact is whole");
}
