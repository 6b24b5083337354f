#![cfg(feature = "train")]
//! `qatc build` end to end on a small real subset of Fashion-MNIST, and its
//! errors on bad recipes and missing data. Needs the data set (`make test` installs it).

mod common;

use std::path::Path;
use std::process::Command;

use common::{data_dir, qatc};

fn seed_model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/fashion/cnn.qat")
        .display()
        .to_string()
}

fn write_recipe(dir: &Path, body: &str) -> String {
    let path = dir.join("recipe.yaml");
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

#[test]
fn build_trains_float_ptq_qat_and_control_on_real_data() {
    let data = data_dir();
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(
        tmp.path(),
        &format!(
            "data:\n  dir: {}\n  train_limit: 4000\n  test_limit: 1000\ntrain:\n  epochs: 1\n  learning_rate: 0.002\n  seed: 3\nqat:\n  epochs: 1\n  learning_rate: 0.0002\nptq:\n  calibration_samples: 500\n",
            data.display()
        ),
    );
    let out = tmp.path().join("out");
    let run = qatc(&[
        "build",
        &seed_model(),
        "--recipe",
        &recipe,
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "build failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for stage in ["float", "PTQ", "QAT", "control"] {
        assert!(stdout.contains(stage), "table lacks {stage}:\n{stdout}");
    }

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["model"], "FashionCnn");
    assert_eq!(report["data"]["train_images"], 4000);
    assert_eq!(report["data"]["test_images"], 1000);
    let acc = |stage: &str| {
        report[stage]["accuracy"]
            .as_f64()
            .unwrap_or_else(|| panic!("{stage}.accuracy missing"))
    };
    let (float, ptq, qat, control) = (acc("float"), acc("ptq"), acc("qat"), acc("control"));
    // Ten classes: chance is 0.1. One epoch on 4,000 images reaches about 0.75.
    assert!(float > 0.6, "float accuracy {float}");
    assert!(
        (qat - float).abs() < 0.05,
        "QAT {qat} strays from float {float}"
    );
    assert!(
        (ptq - float).abs() < 0.05,
        "int8 PTQ {ptq} strays from float {float}"
    );
    assert!(control > 0.6, "control {control}");
    assert!(report["float"]["train_images_per_second"].as_f64().unwrap() > 0.0);
    assert!(report["total_seconds"].as_f64().unwrap() > 0.0);

    // The weights are there, complete, with the quantization ranges QAT learned.
    let qat_file = std::fs::read(out.join("qat.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(qat_file[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&qat_file[8..8 + header_len]).unwrap();
    for key in [
        "x.weight",
        "x.bias",
        "x_1.running_mean",
        "x_1.running_var",
        "logits.weight",
        "image.fq.min",
        "x.fq.max",
        "logits.fq.max",
    ] {
        assert!(header.get(key).is_some(), "qat.safetensors lacks {key}");
    }
    assert!(out.join("float.safetensors").is_file());
    // Nothing half-written is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn same_seed_gives_the_same_numbers() {
    let data = data_dir();
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(
        tmp.path(),
        &format!("data:\n  dir: {}\n  train_limit: 600\n  test_limit: 300\ntrain:\n  epochs: 1\n  learning_rate: 0.002\n  seed: 11\nptq:\n  calibration_samples: 100\n", data.display()),
    );
    let accuracies = |out: &str| {
        let out = tmp.path().join(out);
        let run = qatc(&[
            "build",
            &seed_model(),
            "--recipe",
            &recipe,
            "--out",
            out.to_str().unwrap(),
            "-q",
        ]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
        ["float", "ptq", "qat", "control"].map(|s| r[s]["accuracy"].as_f64().unwrap())
    };
    assert_eq!(accuracies("a"), accuracies("b"));
}

#[test]
fn broken_recipe_is_a_located_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(tmp.path(), "train:\n  epochs: 1\n  learning_rate: fast\n");
    let run = qatc(&[
        "build",
        &seed_model(),
        "--recipe",
        &recipe,
        "--out",
        tmp.path().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("recipe.yaml:3:") && stderr.contains("learning_rate"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn missing_recipe_and_missing_data_say_how_to_fix_them() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m.qat");
    std::fs::copy(seed_model(), &model).unwrap();
    // A recipe named on the command line must exist.
    let missing = tmp.path().join("missing.yaml");
    let run = qatc(&[
        "build",
        model.to_str().unwrap(),
        "--recipe",
        missing.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        stderr.contains("missing.yaml") && stderr.contains("--recipe"),
        "{stderr}"
    );

    // Without one beside the model, the default recipe is used, and said so; here the
    // data it points at ($QATC_FASHION_MNIST) is missing, so nothing trains.
    let run = Command::new(common::qatc_bin())
        .args(["build", model.to_str().unwrap(), "--out"])
        .arg(tmp.path().join("d"))
        .env("QATC_FASHION_MNIST", tmp.path().join("nowhere"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no recipe at")
            && stderr.contains("m.yaml")
            && stderr.contains("using the default recipe"),
        "{stderr}"
    );
    assert!(stderr.contains("train-images-idx3-ubyte"), "{stderr}");

    let recipe = write_recipe(
        tmp.path(),
        &format!(
            "data:\n  dir: {}\ntrain:\n  epochs: 1\n  learning_rate: 0.01\n",
            tmp.path().join("nowhere").display()
        ),
    );
    let stderr = common::build_fails(&model, &recipe, &tmp.path().join("o"));
    assert!(
        stderr.contains("train-images-idx3-ubyte") && stderr.contains("setup-data.sh"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
}

#[test]
fn model_with_errors_is_not_trained() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("bad.qat");
    std::fs::write(
        &model,
        "model M { input x: f32[1, 28, 28]\n let y = dense(x, units = 10)\n output y }",
    )
    .unwrap();
    let run = qatc(&["build", model.to_str().unwrap(), "--color", "never"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        stderr.contains("error[E0007]") && stderr.contains("nothing was built"),
        "{stderr}"
    );
}

#[test]
fn wrong_output_size_for_the_data_is_explained() {
    let data = data_dir();
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m.qat");
    std::fs::write(&model, "model M { input x: f32[1, 28, 28]\n let f = flatten(x)\n let y = dense(f, units = 3)\n output y }").unwrap();
    let recipe = write_recipe(tmp.path(), &format!("data:\n  dir: {}\n  classes: [0, 1, 2, 3]\ntrain:\n  epochs: 1\n  learning_rate: 0.01\n", data.display()));
    let stderr = common::build_fails(&model, &recipe, &tmp.path().join("o"));
    assert!(
        stderr.contains("4 classes") && stderr.contains("units = 4"),
        "{stderr}"
    );
}

fn report_of(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap()
}

#[test]
fn resume_after_a_finished_build_restores_every_stage_exactly() {
    let data = data_dir();
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(
        tmp.path(),
        &format!("data:\n  dir: {}\n  train_limit: 600\n  test_limit: 300\ntrain:\n  epochs: 2\n  learning_rate: 0.002\nqat:\n  epochs: 1\n  learn_ranges: true\nptq:\n  calibration_samples: 100\n", data.display()),
    );
    let out = tmp.path().join("out");
    let args = [
        "build",
        &seed_model(),
        "--recipe",
        &recipe,
        "--out",
        out.to_str().unwrap(),
    ];
    let first = qatc(&args);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let before = report_of(&out);
    let progress: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("checkpoints/progress.json")).unwrap())
            .unwrap();
    assert_eq!(progress["stages"]["float"]["epochs_done"], 2);
    assert_eq!(progress["stages"]["QAT"]["epochs_done"], 1);

    let again = qatc(&[&args[..], &["--resume"]].concat());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(stderr.contains("resuming"), "{stderr}");
    let after = report_of(&out);
    for stage in ["float", "ptq", "control", "qat"] {
        assert_eq!(
            before[stage]["accuracy"], after[stage]["accuracy"],
            "{stage} differs after resuming"
        );
    }
}

#[test]
fn a_killed_build_resumes_from_its_last_epoch() {
    let data = data_dir();
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(
        tmp.path(),
        &format!("data:\n  dir: {}\n  train_limit: 3000\n  test_limit: 500\ntrain:\n  epochs: 4\n  learning_rate: 0.002\nptq:\n  calibration_samples: 200\n", data.display()),
    );
    let out = tmp.path().join("out");
    let mut child = Command::new(common::qatc_bin())
        .args([
            "build",
            &seed_model(),
            "--recipe",
            &recipe,
            "--out",
            out.to_str().unwrap(),
            "-q",
        ])
        .spawn()
        .unwrap();
    let progress = out.join("checkpoints/progress.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !std::fs::read_to_string(&progress).is_ok_and(|p| p.contains("\"epochs_done\": 1")) {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint after 300 s"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.join("report.json").exists());

    let resumed = qatc(&[
        "build",
        &seed_model(),
        "--recipe",
        &recipe,
        "--out",
        out.to_str().unwrap(),
        "--resume",
    ]);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(stderr.contains("resuming: float"), "{stderr}");
    let report = report_of(&out);
    assert_eq!(report["float"]["epochs"], 4);
    assert!(
        report["float"]["accuracy"].as_f64().unwrap() > 0.6,
        "{report}"
    );
}

/// `qatc build` that must succeed with PTQ and QAT int8 results whose argmax agrees with
/// fake quantization on ≥ 99% of the test images; returns the report.
fn build_agreeing_with_fake_quant(model: &Path, recipe: &str, out: &Path) -> serde_json::Value {
    let run = qatc(&[
        "build",
        model.to_str().unwrap(),
        "--recipe",
        recipe,
        "--out",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report = report_of(out);
    for stage in ["ptq", "qat"] {
        let agreement = report[stage]["int8_agreement"]
            .as_f64()
            .unwrap_or_else(|| panic!("{stage}: no int8 result: {report}"));
        eprintln!("{stage}: int8 argmax agreement {agreement:.4}");
        assert!(
            agreement >= 0.99,
            "{stage}: int8 agrees with fake-quant on only {agreement}"
        );
    }
    report
}

#[test]
fn depthwise_convolutions_lower_to_int8_and_agree_with_fake_quant() {
    let data = data_dir();
    let tmp = tempfile::tempdir().unwrap();
    let model = common::write(
        tmp.path(),
        "dw.qat",
        "model Depthwise {
            input image: f32[1, 28, 28]
            let x = conv2d(image, filters = 8, kernel = 3, stride = 2, padding = same)
            let x = batch_norm(x)
            let x = relu(x)
            let x = conv2d(x, filters = 8, kernel = 3, groups = 8, padding = same)
            let x = batch_norm(x)
            let x = relu(x)
            let x = conv2d(x, filters = 16, kernel = 1)
            let x = relu(x)
            let x = flatten(x)
            let logits = dense(x, units = 10)
            output logits
        }",
    );
    let recipe = write_recipe(
        tmp.path(),
        &format!("data:\n  dir: {}\n  train_limit: 2000\n  test_limit: 1000\ntrain:\n  epochs: 1\n  learning_rate: 0.003\nptq:\n  calibration_samples: 300\n", data.display()),
    );
    let out = tmp.path().join("out");
    build_agreeing_with_fake_quant(&model, &recipe, &out);
    let graph = std::fs::read_to_string(out.join("int8/graph.json")).unwrap();
    assert!(
        graph.contains("\"groups\": 8"),
        "the depthwise conv is not grouped in the int8 graph"
    );
}

#[test]
fn relu6_concat_and_average_pools_lower_to_int8_and_agree_with_fake_quant() {
    let data = data_dir();
    let tmp = tempfile::tempdir().unwrap();
    let model = common::write(
        tmp.path(),
        "branches.qat",
        "model Branches {
            input image: f32[1, 28, 28]
            let x = conv2d(image, filters = 8, kernel = 3, stride = 2, padding = same)
            let x = batch_norm(x)
            let x = relu6(x)
            let a = conv2d(x, filters = 8, kernel = 3, padding = same)
            let a = relu(a)
            let b = conv2d(x, filters = 4, kernel = 1)
            let b = relu6(b)
            let c = concat(a, b)
            let p = avg_pool2d(c, size = 2)
            let g = global_avg_pool(p)
            let f = flatten(p)
            let h = dense(f, units = 16)
            let h = relu(h)
            let v = concat(g, h)
            let logits = dense(v, units = 10)
            output logits
        }",
    );
    let recipe = write_recipe(
        tmp.path(),
        &format!("data:\n  dir: {}\n  train_limit: 2000\n  test_limit: 1000\ntrain:\n  epochs: 4\n  learning_rate: 0.003\nptq:\n  calibration_samples: 300\n", data.display()),
    );
    let out = tmp.path().join("out");
    let report = build_agreeing_with_fake_quant(&model, &recipe, &out);
    for stage in ["ptq", "qat"] {
        let (int8, fake) = (
            report[stage]["int8_accuracy"].as_f64().unwrap(),
            report[stage]["accuracy"].as_f64().unwrap(),
        );
        eprintln!("{stage}: fake-quant {fake:.4}, int8 {int8:.4}");
        assert!(
            (int8 - fake).abs() <= 0.01,
            "{stage}: int8 accuracy {int8} vs fake-quant {fake}"
        );
    }
    let graph = std::fs::read_to_string(out.join("int8/graph.json")).unwrap();
    for op in ["avg_pool2d", "global_avg_pool", "concat"] {
        assert!(
            graph.contains(&format!("\"op\": \"{op}\"")),
            "no {op} in the int8 graph"
        );
    }
}

#[test]
fn sensitivity_measures_every_quantized_layer() {
    let data = data_dir();
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(
        tmp.path(),
        &format!("data:\n  dir: {}\n  train_limit: 1500\n  test_limit: 500\ntrain:\n  epochs: 1\n  learning_rate: 0.002\nptq:\n  calibration_samples: 200\n", data.display()),
    );
    let out = tmp.path().join("out");
    let run = qatc(&[
        "sensitivity",
        &seed_model(),
        "--recipe",
        &recipe,
        "--quant",
        "w2a2",
        "--all-but-one",
        "--out",
        out.to_str().unwrap(),
        "-q",
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("sensitivity.json")).unwrap()).unwrap();
    let layers: Vec<&str> = result["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["layer"].as_str().unwrap())
        .collect();
    // The input's quantization, the fused conv and the dense head.
    assert_eq!(layers, vec!["image", "x", "logits"], "{stdout}");
    let float = result["float"].as_f64().unwrap();
    let everything = result["quantized"].as_f64().unwrap();
    assert!(
        everything < float - 0.05,
        "2-bit weights and activations should cost PTQ accuracy: {float} -> {everything}"
    );
    for layer in result["layers"].as_array().unwrap() {
        // Quantizing one layer alone never costs more than quantizing all of them.
        assert!(
            layer["alone"].as_f64().unwrap() >= everything - 0.02,
            "{layer}"
        );
        assert!(layer["all_but"].as_f64().is_some());
    }
    assert!(
        stdout.contains("only this") && stdout.contains("Suggestion")
            || stdout.contains("No single layer"),
        "{stdout}"
    );
}

fn tiny_recipe(dir: &Path) -> String {
    write_recipe(
        dir,
        &format!(
            "data:\n  dir: {}\n  train_limit: 300\n  test_limit: 100\ntrain:\n  epochs: 2\n  learning_rate: 0.002\n  seed: 5\nqat:\n  epochs: 1\n  learning_rate: 0.0002\nptq:\n  calibration_samples: 100\n",
            data_dir().display()
        ),
    )
}

#[test]
fn piped_log_has_one_line_per_epoch_and_evaluation_and_history_in_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path());
    let out = tmp.path().join("out");
    // Output captured by a pipe: stderr is not a terminal, so no bars.
    let (_, log) = common::qatc_ok(&[
        "build",
        &seed_model(),
        "--recipe",
        &recipe,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!log.contains('\r') && !log.contains('\x1b'), "{log}");
    let epoch_lines: Vec<&str> = log.lines().filter(|l| l.contains(" epoch ")).collect();
    let heads: Vec<&str> = epoch_lines
        .iter()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(
        heads,
        [
            "float epoch 1/2",
            "float epoch 2/2",
            "control epoch 1/1",
            "QAT epoch 1/1"
        ],
        "{log}"
    );
    for line in &epoch_lines {
        for part in [
            "loss ",
            "train accuracy ",
            "test accuracy ",
            "images/s",
            " s",
        ] {
            assert!(line.contains(part), "{line:?} lacks {part:?}");
        }
    }
    assert!(epoch_lines[3].contains("ranges moved"), "{log}");
    for stage in ["float", "PTQ", "control", "QAT"] {
        assert!(
            log.lines()
                .any(|l| l.starts_with(&format!("{stage} test: accuracy"))),
            "no evaluation line for {stage}:\n{log}"
        );
    }

    let report = report_of(&out);
    let history = |stage: &str| report[stage]["history"].as_array().cloned();
    assert_eq!(history("float").unwrap().len(), 2);
    assert_eq!(history("qat").unwrap().len(), 1);
    assert!(history("ptq").is_none(), "PTQ does not train");
    let last_float = &history("float").unwrap()[1];
    // The last epoch's validation is the stage's own test evaluation.
    assert_eq!(last_float["val_accuracy"], report["float"]["accuracy"]);
    assert_eq!(last_float["learning_rate"], 0.002);
    assert!(last_float["train_loss"].as_f64().unwrap() > 0.0);
    assert!(history("qat").unwrap()[0]["range_movement"]
        .as_f64()
        .is_some());
    assert!(last_float.get("range_movement").is_none());
    let env = &report["environment"];
    assert_eq!(env["qatc_version"], env!("CARGO_PKG_VERSION"));
    assert!(env["threads"].as_u64().unwrap() >= 1);
    assert_eq!(env["device"], "cpu");
    // `qatc` starts the training binary with threads that sleep rather than spin, unless
    // the user's environment says how they wait.
    let expected = match (
        std::env::var("OMP_WAIT_POLICY"),
        std::env::var_os("GOMP_SPINCOUNT"),
    ) {
        (Ok(theirs), _) => Some(theirs),
        (Err(_), Some(_)) => None,
        (Err(_), None) => Some("PASSIVE".to_string()),
    };
    assert_eq!(env["omp_wait_policy"].as_str(), expected.as_deref());
}

#[test]
fn json_log_is_one_object_per_line() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path());
    let out = tmp.path().join("out");
    let (_, log) = common::qatc_ok(&[
        "build",
        &seed_model(),
        "--recipe",
        &recipe,
        "--out",
        out.to_str().unwrap(),
        "--log-format",
        "json",
    ]);
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let epochs: Vec<(String, u64)> = events
        .iter()
        .filter(|e| e["event"] == "epoch")
        .map(|e| {
            (
                e["stage"].as_str().unwrap().to_string(),
                e["epoch"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = [("float", 1), ("float", 2), ("control", 1), ("QAT", 1)]
        .map(|(s, e)| (s.to_string(), e))
        .to_vec();
    assert_eq!(epochs, expected);
    let report = report_of(&out);
    let qat_eval = events
        .iter()
        .find(|e| e["event"] == "evaluation" && e["stage"] == "QAT")
        .expect("a QAT evaluation event");
    assert_eq!(qat_eval["accuracy"], report["qat"]["accuracy"]);
    assert!(events.iter().all(|e| e["event"].is_string()));
}

#[test]
fn printed_default_recipe_is_a_recipe_build_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.yaml");
    let (stdout, _) = common::qatc_ok(&["recipe"]);
    let (wrote, _) = common::qatc_ok(&["recipe", "--out", path.to_str().unwrap()]);
    assert!(wrote.contains("m.yaml"), "{wrote}");
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(written, stdout);
    assert!(
        written.contains("learning_rate:") && written.contains("# "),
        "{written}"
    );
    // It is never written over an existing file.
    let again = qatc(&["recipe", "--out", path.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    // Edited to a tiny run, `build` trains with it.
    let edited = written
        .replace("  # train_limit: 5000", "  train_limit: 200")
        .replace("  # test_limit: 1000", "  test_limit: 100")
        .replace("  epochs: 3", "  epochs: 1")
        .replace(
            "  # dir: /usr/share/datasets/fashion-mnist",
            &format!("  dir: {}", data_dir().display()),
        );
    assert_ne!(edited, written);
    std::fs::write(&path, edited).unwrap();
    let model = tmp.path().join("m.qat");
    std::fs::copy(seed_model(), &model).unwrap();
    let out = tmp.path().join("out");
    common::qatc_ok(&[
        "build",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "-q",
    ]);
    let report = report_of(&out);
    assert_eq!(report["data"]["train_images"], 200);
    assert_eq!(report["float"]["epochs"], 1);
}
