//! The whole int8 flow on a small real subset of Fashion-MNIST: `qatc build --emit onnx`
//! trains, lowers PTQ and QAT to int8 and evaluates them with the integer runtime;
//! `qatc run` / `inspect` read the artifact; ONNX Runtime agrees with qatc's runtime.
#![cfg(feature = "train")]

mod common;

use std::path::{Path, PathBuf};

use common::{data_dir, qatc, qatc_ok};
use qatc::data::{self, Split};
use qatc::report::Report;

const RECIPE: &str = "
data:
  train_limit: 3000
  test_limit: 1000
train:
  epochs: 1
  batch_size: 64
  optimizer: adam
  learning_rate: 0.002
  seed: 3
qat:
  epochs: 1
  learning_rate: 0.0001
ptq:
  calibration_samples: 300
";

/// `qatc build MODEL --emit onnx` with [`RECIPE`] under `dir`.
fn build(model: &Path, dir: &Path) -> (PathBuf, String, Report) {
    common::build_emitting(model, RECIPE, dir, "onnx")
}

/// ONNX Runtime against qatc's runtime on the first `n` Fashion-MNIST test images: int8
/// logits within one unit (ONNX Runtime rounds ties to even, qatc up or away from zero),
/// argmax identical on ≥ 99.5%.
fn check_onnx_runtime(int8_dir: &Path, onnx: &Path, n: usize, dir: &Path) {
    let test = data::load_split(&data_dir(), Split::Test)
        .unwrap()
        .select(None, Some(n));
    let model = qatc::runtime::load(int8_dir).unwrap();
    let x: Vec<f32> = test.pixels.iter().map(|&p| p as f32 / 255.0).collect();
    let Some(a) = common::onnx_runtime_agreement(&model, onnx, &x, &[1, 28, 28], dir) else {
        return;
    };
    eprintln!(
        "{}: ONNX Runtime vs qatc on {n} images: argmax identical on {}, {} of {} int8 logits differ, by at most {} unit(s)",
        model.graph().model, a.same_argmax, a.differ, a.outputs, a.worst
    );
    assert_eq!(a.samples, n);
    assert!(a.worst <= 1, "int8 outputs differ by {} units", a.worst);
    assert!(
        a.same_argmax * 1000 >= n * 995,
        "argmax identical on only {}/{n}",
        a.same_argmax
    );
}

#[test]
fn build_reports_int8_accuracy_and_onnx_runtime_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fashion/cnn.qat");
    let (out, table, report) = build(&model, tmp.path());
    assert!(table.contains("QAT int8 (runtime)"), "{table}");

    let qat = report.qat.as_ref().expect("the default recipe runs QAT");
    for (name, stage) in [("ptq", &report.ptq), ("qat", qat)] {
        let int8 = stage.int8_accuracy.expect("int8 accuracy is reported");
        let agreement = stage.int8_agreement.expect("agreement is reported");
        eprintln!(
            "{name}: fake-quant {:.4}, int8 {int8:.4}, argmax agreement {agreement:.4}",
            stage.accuracy
        );
        assert!(
            (int8 - stage.accuracy).abs() <= 0.002,
            "{name}: int8 {int8} vs fake-quant {}",
            stage.accuracy
        );
        assert!(agreement >= 0.995, "{name}: agreement {agreement}");
    }
    let int8_dir = PathBuf::from(report.artifacts.int8.as_deref().expect("artifacts.int8"));
    let onnx = PathBuf::from(report.artifacts.onnx.as_deref().expect("artifacts.onnx"));
    assert!(int8_dir.join("graph.json").is_file() && onnx.is_file());
    let float_bytes = std::fs::metadata(&report.artifacts.float).unwrap().len() as f64;
    let int8_bytes = std::fs::metadata(int8_dir.join("weights.safetensors"))
        .unwrap()
        .len() as f64;
    assert!(
        int8_bytes < float_bytes * 0.3,
        "int8 {int8_bytes} bytes vs float {float_bytes}"
    );

    // `qatc run` and `qatc inspect` on a small IDX subset.
    let test = data::load_split(&data_dir(), Split::Test)
        .unwrap()
        .select(None, Some(300));
    let (images, labels) = (tmp.path().join("images.idx"), tmp.path().join("labels.idx"));
    data::write_images(&images, &test.pixels, test.len(), test.rows, test.cols).unwrap();
    data::write_labels(&labels, &test.labels).unwrap();
    let (predictions, _) = qatc_ok(&[
        "run",
        int8_dir.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
    ]);
    // `path:index  class  probability` per image.
    let predicted: Vec<usize> = predictions
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(predicted.len(), 300);
    let (accuracy, _) = qatc_ok(&[
        "run",
        out.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
    ]);
    let correct = predicted
        .iter()
        .zip(&test.labels)
        .filter(|(p, l)| **p == **l as usize)
        .count();
    assert!(accuracy.contains(&format!("({correct}/300)")), "{accuracy}");
    let (listing, _) = qatc_ok(&["inspect", int8_dir.to_str().unwrap()]);
    assert!(
        listing.contains("conv2d(") && listing.contains("zp=") && listing.contains(" / 2^"),
        "{listing}"
    );

    // `qatc export` writes the same model as `build --emit onnx`.
    let exported = tmp.path().join("exported.onnx");
    qatc_ok(&[
        "export",
        int8_dir.to_str().unwrap(),
        "--format",
        "onnx",
        "--out",
        exported.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(&exported).unwrap(),
        std::fs::read(&onnx).unwrap()
    );

    // `qatc inspect` tells the formats apart by content, whatever the file is called.
    let renamed = tmp.path().join("model.bin");
    std::fs::copy(&exported, &renamed).unwrap();
    let (listing, _) = qatc_ok(&["inspect", renamed.to_str().unwrap()]);
    assert!(
        listing.starts_with("ONNX model `") && listing.contains("QLinearConv ("),
        "{listing}"
    );
    let tflite = tmp.path().join("model.data");
    qatc_ok(&[
        "export",
        int8_dir.to_str().unwrap(),
        "--format",
        "tflite",
        "--out",
        tflite.to_str().unwrap(),
    ]);
    let (listing, _) = qatc_ok(&["inspect", tflite.to_str().unwrap()]);
    assert!(listing.starts_with("tflite model"), "{listing}");
    let truncated = tmp.path().join("truncated.onnx");
    std::fs::write(&truncated, &std::fs::read(&exported).unwrap()[..100]).unwrap();
    let out = qatc(&["inspect", truncated.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("truncated.onnx is not a model qatc reads") && !stderr.contains("panicked"),
        "{stderr}"
    );

    // ONNX Runtime against qatc's runtime on the same images.
    check_onnx_runtime(&int8_dir, &onnx, 300, tmp.path());
}

#[test]
fn pools_and_concats_export_to_onnx_and_onnx_runtime_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("branches.qat");
    std::fs::write(&model, common::BRANCHES).unwrap();
    let (_, table, report) = build(&model, tmp.path());
    assert!(table.contains("QAT int8 (runtime)"), "{table}");
    let int8_dir = PathBuf::from(report.artifacts.int8.as_deref().expect("artifacts.int8"));
    let onnx = PathBuf::from(report.artifacts.onnx.as_deref().expect("artifacts.onnx"));
    let kinds: Vec<&str> = qatc::runtime::load(&int8_dir)
        .unwrap()
        .graph()
        .ops
        .iter()
        .map(|op| op.kind())
        .collect();
    for kind in ["avg_pool2d", "global_avg_pool", "concat"] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }
    check_onnx_runtime(&int8_dir, &onnx, 1000, tmp.path());
}

/// The squeeze-and-excitation example trained and exported: hardswish and sigmoid as
/// lookup tables, mul broadcasting the channel gates; ONNX Runtime (its own hardswish in
/// f32, QLinearSigmoid, QLinearMul) agrees with qatc's runtime on real images.
#[test]
fn squeeze_and_excitation_exports_to_onnx_and_onnx_runtime_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fashion/se.qat");
    let (_, table, report) = build(&model, tmp.path());
    assert!(table.contains("QAT int8 (runtime)"), "{table}");
    let int8_dir = PathBuf::from(report.artifacts.int8.as_deref().expect("artifacts.int8"));
    let onnx = PathBuf::from(report.artifacts.onnx.as_deref().expect("artifacts.onnx"));
    let kinds: Vec<&str> = qatc::runtime::load(&int8_dir)
        .unwrap()
        .graph()
        .ops
        .iter()
        .map(|op| op.kind())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "lookup").count(),
        4,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "mul").count(),
        2,
        "{kinds:?}"
    );
    check_onnx_runtime(&int8_dir, &onnx, 1000, tmp.path());
}
