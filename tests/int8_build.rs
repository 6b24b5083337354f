//! The whole int8 flow on a small real subset of Fashion-MNIST: `qatc build --emit onnx`
//! trains, lowers PTQ and QAT to int8 and evaluates them with the integer runtime;
//! `qatc run` / `inspect` read the artifact; ONNX Runtime agrees with qatc's runtime.
#![cfg(feature = "train")]

use std::path::{Path, PathBuf};
use std::process::Command;

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

fn data_dir() -> PathBuf {
    std::env::var_os("QATC_FASHION_MNIST").map_or_else(
        || PathBuf::from("/usr/share/datasets/fashion-mnist"),
        PathBuf::from,
    )
}

fn qatc(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qatc"))
        .args(args)
        .output()
        .expect("qatc runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "qatc {args:?} failed:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

/// Makes sure Python's onnxruntime can be imported, installing it from PyPI when missing.
/// `Err` carries the reason it cannot be had.
fn onnxruntime() -> Result<(), String> {
    let import = || {
        Command::new("python3")
            .args(["-c", "import onnxruntime, numpy"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if import() {
        return Ok(());
    }
    eprintln!("installing onnxruntime from PyPI for the ONNX comparison");
    let installed = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "onnxruntime", "numpy"])
        .status();
    match installed {
        Ok(s) if s.success() && import() => Ok(()),
        Ok(s) => Err(format!("`pip install onnxruntime` exited with {s}")),
        Err(e) => Err(format!("cannot run python3: {e}")),
    }
}

#[test]
fn build_reports_int8_accuracy_and_onnx_runtime_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("recipe.yaml");
    std::fs::write(&recipe, RECIPE).unwrap();
    let out = tmp.path().join("out");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fashion/cnn.qat");
    let (table, _) = qatc(&[
        "build",
        model.to_str().unwrap(),
        "--recipe",
        recipe.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--emit",
        "onnx",
        "-q",
    ]);
    assert!(table.contains("QAT int8 (runtime)"), "{table}");

    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    for (name, stage) in [("ptq", &report.ptq), ("qat", &report.qat)] {
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
    let (predictions, _) = qatc(&[
        "run",
        int8_dir.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
    ]);
    let predicted: Vec<usize> = predictions.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(predicted.len(), 300);
    let (accuracy, _) = qatc(&[
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
    let (listing, _) = qatc(&["inspect", int8_dir.to_str().unwrap()]);
    assert!(
        listing.contains("conv2d(") && listing.contains("zp=") && listing.contains(" / 2^"),
        "{listing}"
    );

    // `qatc export` writes the same model as `build --emit onnx`.
    let exported = tmp.path().join("exported.onnx");
    qatc(&[
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

    // ONNX Runtime against qatc's runtime on the same images.
    if let Err(why) = onnxruntime() {
        eprintln!("SKIPPED the ONNX Runtime comparison: {why}");
        return;
    }
    let model = qatc::runtime::load(&int8_dir).unwrap();
    let x: Vec<f32> = test.pixels.iter().map(|&p| p as f32 / 255.0).collect();
    let ours = model.run(&x).unwrap();
    let (input, output) = (tmp.path().join("x.f32"), tmp.path().join("y.f32"));
    std::fs::write(
        &input,
        x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/onnx_run.py");
    let status = Command::new("python3")
        .args([
            script.to_str().unwrap(),
            onnx.to_str().unwrap(),
            input.to_str().unwrap(),
            "1",
            "28",
            "28",
            output.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "onnxruntime failed on the exported model");
    let theirs: Vec<f32> = std::fs::read(&output)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(theirs.len(), ours.len());
    let q = model.output_quant();
    let theirs_q: Vec<i8> = theirs
        .iter()
        .map(|&v| ((v / q.scale).round() as i32 + q.zero_point) as i8)
        .collect();
    let worst = ours
        .iter()
        .zip(&theirs_q)
        .map(|(a, b)| (*a as i32 - *b as i32).abs())
        .max()
        .unwrap();
    let differ = ours.iter().zip(&theirs_q).filter(|(a, b)| a != b).count();
    let same = model
        .argmax(&ours)
        .iter()
        .zip(model.argmax(&theirs_q))
        .filter(|(a, b)| **a == *b)
        .count();
    eprintln!("ONNX Runtime vs qatc on 300 images: argmax identical on {same}, {differ} of {} logits differ, by at most {worst} unit", ours.len());
    assert!(worst <= 1, "int8 outputs differ by {worst} units");
    assert!(
        same * 1000 >= 300 * 995,
        "argmax identical on only {same}/300"
    );
}
