#![cfg(feature = "train")]
//! Transfer learning: pretrained weights load by name, frozen layers stay
//! bit-identical through float training and QAT, and mismatches are explained.

use std::collections::HashMap;
mod common;

use std::path::{Path, PathBuf};

use common::{qatc, write};

fn data_dir() -> String {
    common::data_dir().display().to_string()
}

const MODEL: &str = "model Small {
    input image: f32[1, 28, 28]
    let conv1 = conv2d(image, filters = FILTERS, kernel = 3, stride = 2)
    let bn1 = batch_norm(conv1)
    let x = relu(bn1)
    let x = flatten(x)
    let head = dense(x, units = 5)
    output head
}";

/// Reads a safetensors file written by qatc: name → raw little-endian bytes.
fn tensors(path: &Path) -> HashMap<String, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let off = v["data_offsets"].as_array().unwrap();
            let (a, b) = (
                off[0].as_u64().unwrap() as usize,
                off[1].as_u64().unwrap() as usize,
            );
            (k.clone(), data[a..b].to_vec())
        })
        .collect()
}

/// `qatc build MODEL --recipe RECIPE --out OUT [extra…]`.
fn build(model: &Path, recipe: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "build",
        model.to_str().unwrap(),
        "--recipe",
        recipe.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    qatc(&args)
}

fn pretrain(dir: &Path, filters: usize) -> PathBuf {
    let model = write(
        dir,
        &format!("pre{filters}.qat"),
        &MODEL.replace("FILTERS", &filters.to_string()),
    );
    let recipe = write(
        dir,
        &format!("pre{filters}.yaml"),
        &format!("data:\n  dir: {}\n  classes: [0, 1, 2, 3, 4]\n  train_limit: 500\n  test_limit: 200\ntrain:\n  epochs: 1\n  learning_rate: 0.002\nptq:\n  calibration_samples: 100\n", data_dir()),
    );
    let out = dir.join(format!("pre{filters}"));
    let run = build(&model, &recipe, &out, &["-q"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    out.join("float.safetensors")
}

/// Builds MODEL (with `source` edits) from pretrained weights, `freeze` naming the
/// recipe's frozen layers; checks that exactly `frozen` stay bit-identical through float
/// training and QAT while the others train.
fn check_frozen(edit: impl Fn(&str) -> String, freeze: &str, frozen: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let weights = pretrain(tmp.path(), 4);
    let model = write(tmp.path(), "t.qat", &edit(&MODEL.replace("FILTERS", "4")));
    let recipe = write(
        tmp.path(),
        "t.yaml",
        &format!(
            "data:\n  dir: {}\n  classes: [5, 6, 7, 8, 9]\n  train_limit: 300\n  test_limit: 200\ntransfer:\n  weights: {}\n  skip: [head]\n  freeze: [{freeze}]\ntrain:\n  epochs: 2\n  learning_rate: 0.01\nqat:\n  epochs: 1\n  learning_rate: 0.01\n  learn_ranges: true\n  freeze_bn_after: 0.5\nptq:\n  calibration_samples: 100\n",
            data_dir(),
            weights.display()
        ),
    );
    let out = tmp.path().join("t");
    let run = build(&model, &recipe, &out, &[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("frozen: {}", frozen.join(", "))),
        "{stderr}"
    );

    let before = tensors(&weights);
    let params = |layer: &str| -> Vec<String> {
        let suffixes: &[&str] = if layer.starts_with("bn") {
            &["weight", "bias", "running_mean", "running_var"]
        } else {
            &["weight", "bias"]
        };
        suffixes.iter().map(|s| format!("{layer}.{s}")).collect()
    };
    for stage in ["float.safetensors", "qat.safetensors"] {
        let after = tensors(&out.join(stage));
        for layer in ["conv1", "bn1"] {
            for name in params(layer) {
                if frozen.contains(&layer) {
                    assert_eq!(
                        before[&name], after[&name],
                        "{stage}: frozen {name} changed"
                    );
                } else if name != "conv1.bias" {
                    assert_ne!(before[&name], after[&name], "{stage}: {name} did not train");
                }
            }
        }
        assert_ne!(
            before["head.weight"], after["head.weight"],
            "{stage}: the new head did not train"
        );
    }
}

#[test]
fn frozen_layers_are_bit_identical_after_float_training_and_qat() {
    check_frozen(str::to_string, "conv1, bn1", &["conv1", "bn1"]);
}

/// `transfer.freeze` takes `*` patterns over layer names (`features_*` in a real net).
#[test]
fn freeze_patterns_freeze_the_layers_they_match() {
    check_frozen(str::to_string, "\"conv*\"", &["conv1"]);
    let tmp = tempfile::tempdir().unwrap();
    let weights = pretrain(tmp.path(), 4);
    let model = write(tmp.path(), "t.qat", &MODEL.replace("FILTERS", "4"));
    let recipe = write(
        tmp.path(),
        "t.yaml",
        &format!("data:\n  dir: {}\n  classes: [0, 1, 2, 3, 4]\ntransfer:\n  weights: {}\n  freeze: [\"stem_*\"]\ntrain:\n  epochs: 1\n  learning_rate: 0.01\n", data_dir(), weights.display()),
    );
    let stderr = common::build_fails(&model, recipe.to_str().unwrap(), &tmp.path().join("o"));
    assert!(
        stderr.contains("transfer.freeze pattern `stem_*` matches no layer")
            && stderr.contains("conv1"),
        "{stderr}"
    );
}

/// `@frozen` in the model freezes the same way as the recipe's list, per layer: a frozen
/// conv2d whose batch norm is not frozen keeps its weights while the batch norm trains.
#[test]
fn frozen_annotations_freeze_exactly_the_marked_layers() {
    check_frozen(
        |m| m.replace("    let conv1 =", "    @frozen\n    let conv1 ="),
        "",
        &["conv1"],
    );
    check_frozen(
        |m| {
            m.replace("    let conv1 =", "    @frozen\n    let conv1 =")
                .replace("    let bn1 =", "    @frozen\n    let bn1 =")
        },
        "",
        &["conv1", "bn1"],
    );
}

#[test]
fn mismatched_pretrained_weights_list_every_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = pretrain(tmp.path(), 4);
    let model = write(tmp.path(), "t.qat", &MODEL.replace("FILTERS", "8"));
    let recipe = write(
        tmp.path(),
        "t.yaml",
        &format!("data:\n  dir: {}\n  classes: [0, 1, 2, 3, 4]\ntransfer:\n  weights: {}\n  map:\n    head.bias: classifier.bias\ntrain:\n  epochs: 1\n  learning_rate: 0.01\n", data_dir(), weights.display()),
    );
    let stderr = common::build_fails(&model, recipe.to_str().unwrap(), &tmp.path().join("o"));
    // Shapes side by side, the mapped name that is missing, the unused tensor in the file.
    assert!(
        stderr.contains("conv1.weight")
            && stderr.contains("[8, 1, 3, 3]")
            && stderr.contains("[4, 1, 3, 3]"),
        "{stderr}"
    );
    assert!(stderr.contains("looked for `classifier.bias`"), "{stderr}");
    assert!(
        stderr.contains("in the file but not in the model") && stderr.contains("head.bias"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
}

#[test]
fn truncated_or_missing_weights_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = write(tmp.path(), "t.qat", &MODEL.replace("FILTERS", "4"));
    let broken = write(
        tmp.path(),
        "broken.safetensors",
        "\u{8}\0\0\0\0\0\0\0{\"a\":",
    );
    for (weights, expect) in [
        (broken, "cannot read pretrained weights"),
        (tmp.path().join("none.safetensors"), "do not exist"),
    ] {
        let recipe = write(tmp.path(), "t.yaml", &format!("data:\n  dir: {}\n  classes: [0, 1, 2, 3, 4]\ntransfer:\n  weights: {}\ntrain:\n  epochs: 1\n  learning_rate: 0.01\n", data_dir(), weights.display()));
        let stderr = common::build_fails(&model, recipe.to_str().unwrap(), &tmp.path().join("o"));
        assert!(stderr.contains(expect), "{stderr}");
    }
}

#[test]
fn unknown_frozen_layer_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = pretrain(tmp.path(), 4);
    let model = write(tmp.path(), "t.qat", &MODEL.replace("FILTERS", "4"));
    let recipe = write(
        tmp.path(),
        "t.yaml",
        &format!("data:\n  dir: {}\n  classes: [0, 1, 2, 3, 4]\ntransfer:\n  weights: {}\n  freeze: [conv_1]\ntrain:\n  epochs: 1\n  learning_rate: 0.01\n", data_dir(), weights.display()),
    );
    let stderr = common::build_fails(&model, recipe.to_str().unwrap(), &tmp.path().join("o"));
    assert!(
        stderr.contains("`conv_1`") && stderr.contains("did you mean `conv1`"),
        "{stderr}"
    );
}

/// Pretrains the 4-filter model, then builds the same model from its weights with a recipe
/// whose `transfer:` section goes on with `rest` (more transfer keys, then stages).
/// Returns the directory (kept alive), the pretrained weights, the output and the run.
fn build_from_pretrained(
    rest: &str,
) -> (tempfile::TempDir, PathBuf, PathBuf, std::process::Output) {
    let tmp = tempfile::tempdir().unwrap();
    let weights = pretrain(tmp.path(), 4);
    let model = write(tmp.path(), "t.qat", &MODEL.replace("FILTERS", "4"));
    let recipe = write(
        tmp.path(),
        "t.yaml",
        &format!("data:\n  dir: {}\n  classes: [0, 1, 2, 3, 4]\n  train_limit: 300\n  test_limit: 200\ntransfer:\n  weights: {}\n{rest}ptq:\n  calibration_samples: 100\n", data_dir(), weights.display()),
    );
    let out = tmp.path().join("t");
    let run = build(&model, &recipe, &out, &[]);
    (tmp, weights, out, run)
}

fn report(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap()
}

/// PTQ of a pretrained model: `epochs: 0` loads, calibrates and evaluates. The float
/// stage is the loaded model itself (same weights, same accuracy); no epoch runs.
#[test]
fn epochs_zero_builds_the_loaded_model_without_training() {
    let (_tmp, weights, out, run) =
        build_from_pretrained("train:\n  epochs: 0\nqat:\n  epochs: 0\n");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("float: no training (epochs: 0)"),
        "{stderr}"
    );
    assert!(!stderr.contains("epoch 1/"), "an epoch ran:\n{stderr}");
    // Without QAT epochs, control and QAT would only repeat PTQ: they are skipped, said
    // in the table and the report, and the int8 model delivered is PTQ's.
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("note: no QAT (qat.epochs is 0)"),
        "{stdout}"
    );
    assert!(stdout.contains("PTQ int8 (runtime)"), "{stdout}");
    for row in ["control:", "QAT (fake-quant)", "QAT int8", "QAT vs"] {
        assert!(!stdout.contains(row), "`{row}` in\n{stdout}");
    }
    let pretrained = report(weights.parent().unwrap());
    let built = report(&out);
    assert_eq!(
        built["float"]["accuracy"], pretrained["float"]["accuracy"],
        "the float stage is the loaded model"
    );
    assert_eq!(tensors(&out.join("float.safetensors")), tensors(&weights));
    assert_eq!(built["float"]["epochs"], 0);
    for absent in ["qat", "control"] {
        assert!(built.get(absent).is_none(), "report.json has `{absent}`");
    }
    assert!(built["artifacts"].get("qat").is_none());
    assert!(!out.join("qat.safetensors").exists());
    let ptq = built["ptq"]["accuracy"].as_f64().unwrap();
    assert!(ptq > 0.5, "PTQ accuracy {ptq} of a trained 5-class model");
    // The delivered model is PTQ's: its int8 form is written and its predictions fill
    // the confusion matrix.
    assert!(built["ptq"]["int8_accuracy"].as_f64().is_some());
    qatc::int8::artifact::read(&out.join("int8")).unwrap();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Confusion matrix (PTQ, test set)"));
    let confusion = built["confusion"].as_array().unwrap();
    let correct: u64 = (0..confusion.len())
        .map(|i| confusion[i][i].as_u64().unwrap())
        .sum();
    let total: u64 = confusion
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        correct as f64 / total as f64,
        built["ptq"]["accuracy"].as_f64().unwrap()
    );
}

/// Freezing every layer is legal: the training stages have nothing to step and are
/// skipped with a note (libtorch used to panic: "element 0 of tensors does not require grad").
#[test]
fn freezing_every_layer_skips_training_instead_of_crashing() {
    let (_tmp, weights, out, run) = build_from_pretrained(
        "  freeze: [conv1, bn1, head]\ntrain:\n  epochs: 1\n  learning_rate: 0.01\nqat:\n  epochs: 1\n",
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "exit {:?}\n{stderr}",
        run.status.code()
    );
    assert!(
        stderr.contains("float: skipped, nothing to train (every parameter is frozen)"),
        "{stderr}"
    );
    assert_eq!(tensors(&out.join("float.safetensors")), tensors(&weights));
    assert_eq!(report(&out)["float"]["epochs"], 0);
}

/// `transfer.build` builds the pretrained model first; its report describes that model
/// (its own summary), not the one that transfers from it.
#[test]
fn a_pretrained_model_built_first_reports_its_own_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let pre = write(
        tmp.path(),
        "pre.qat",
        &MODEL.replace("FILTERS", "4").replace("model ", "model Pre"),
    );
    write(
        tmp.path(),
        "pre.yaml",
        &format!("data:\n  dir: {}\n  classes: [0, 1, 2, 3, 4]\n  train_limit: 300\n  test_limit: 100\ntrain:\n  epochs: 1\nptq:\n  calibration_samples: 50\n", data_dir()),
    );
    let model = write(tmp.path(), "t.qat", &MODEL.replace("FILTERS", "4"));
    let recipe = write(
        tmp.path(),
        "t.yaml",
        &format!("data:\n  dir: {}\n  classes: [0, 1, 2, 3, 4]\n  train_limit: 300\n  test_limit: 100\ntransfer:\n  weights: pre/float.safetensors\n  build: {}\ntrain:\n  epochs: 0\nptq:\n  calibration_samples: 50\n", data_dir(), pre.display()),
    );
    let out = tmp.path().join("t");
    let run = build(&model, &recipe, &out, &["-q"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let pretrained = report(&tmp.path().join("pre"));
    let built = report(&out);
    assert_eq!(pretrained["model"], "PreSmall");
    assert_eq!(pretrained["summary"]["model"], "PreSmall");
    assert_eq!(built["summary"]["model"], "Small");
}
