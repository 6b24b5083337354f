//! Helpers shared by the integration tests that run the `qatc` binary.
#![allow(dead_code)] // each test crate uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `qatc` users run. light/ builds it from the same sources without libtorch, so Cargo
/// does not name it to this package's tests: it lies beside `qatc-train`. A `cargo test`
/// rebuilds this package but not light/, so a `qatc` older than a source it was built from
/// (Cargo lists them in `qatc.d` beside it) is refused rather than tested.
pub fn qatc_bin() -> PathBuf {
    static CHECKED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let qatc = Path::new(env!("CARGO_BIN_EXE_qatc-train")).with_file_name("qatc");
            let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified());
            let sources = std::fs::read_to_string(qatc.with_extension("d")).unwrap_or_default();
            let stale = match modified(&qatc) {
                Ok(built) => sources
                    .split_once(": ")
                    .map_or("", |(_, deps)| deps)
                    .split_whitespace()
                    // A name Cargo escaped (a space) is not checked rather than refused.
                    .find(|dep| modified(Path::new(dep)).is_ok_and(|m| m > built))
                    .map(|dep| format!("is older than {dep}")),
                Err(_) => Some("is missing".to_string()),
            };
            if let Some(why) = stale {
                panic!(
                    "{} {why}: `cargo build --release --locked` builds it (the workspace's \
                     light/ crate); then run the tests again",
                    qatc.display()
                );
            }
            qatc
        })
        .clone()
}

pub fn qatc(args: &[&str]) -> Output {
    Command::new(qatc_bin())
        .args(args)
        .output()
        .expect("qatc runs")
}

/// Fashion-MNIST's directory (`make test` installs it).
/// Runs qatc, which must succeed; returns what it printed on stdout and stderr.
pub fn qatc_ok(args: &[&str]) -> (String, String) {
    let out = qatc(args);
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

/// `qatc build MODEL --recipe <recipe> --out DIR/out --emit EMIT -q`: the output
/// directory, the printed table and the report.
pub fn build_emitting(
    model: &Path,
    recipe: &str,
    dir: &Path,
    emit: &str,
) -> (PathBuf, String, qatc::report::Report) {
    let recipe = write(dir, "recipe.yaml", recipe);
    let out = dir.join("out");
    let (table, _) = qatc_ok(&[
        "build",
        model.to_str().unwrap(),
        "--recipe",
        recipe.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--emit",
        emit,
        "-q",
    ]);
    let report =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    (out, table, report)
}

/// Depthwise convolution, relu6, concat along channels and along a vector, avg_pool2d
/// and global_avg_pool: the ops the ONNX and TFLite exports gained for MobileNet- and
/// Inception-like models.
pub const BRANCHES: &str = "
quant default {
    weights = int8(symmetric, per_channel)
    activations = int8(asymmetric, per_tensor)
}
model Branches {
    input image: f32[1, 28, 28]
    let a = conv2d(image, filters = 8, kernel = 3, padding = same)
    let a = relu6(a)
    let b = conv2d(image, filters = 4, kernel = 1)
    let b = relu(b)
    let c = concat(a, b)
    let p = avg_pool2d(c, size = 2)
    let d = conv2d(p, filters = 12, kernel = 3, padding = same, groups = 12)
    let d = relu(d)
    let e = conv2d(d, filters = 16, kernel = 1)
    let e = relu6(e)
    let g = global_avg_pool(e)
    let h = dense(g, units = 8)
    let v = concat(g, h, axis = -1)
    let logits = dense(v, units = 10)
    output logits
}
";

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

/// Makes sure Python's onnxruntime can be imported, installing it from PyPI when missing.
/// `Err` carries the reason it cannot be had.
pub fn onnxruntime() -> Result<(), String> {
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

/// ONNX Runtime's int8 outputs against qatc's on the same inputs.
#[derive(Debug, Clone, Copy)]
pub struct OnnxAgreement {
    pub samples: usize,
    pub outputs: usize,
    /// Outputs that differ at all, and the largest difference in units.
    pub differ: usize,
    pub worst: i32,
    /// Samples whose argmax is the same.
    pub same_argmax: usize,
}

/// Runs `onnx` with ONNX Runtime (`scripts/onnx_run.py`, CPU) on the f32 inputs `x`
/// (samples of shape `dims`, written under `dir`), quantizes its float logits with the
/// output's parameters and compares them with qatc's int8 `model` on the same inputs.
/// `None` (after saying why) when onnxruntime cannot be had.
pub fn onnx_runtime_agreement(
    model: &qatc::runtime::Model,
    onnx: &Path,
    x: &[f32],
    dims: &[usize],
    dir: &Path,
) -> Option<OnnxAgreement> {
    if let Err(why) = onnxruntime() {
        eprintln!("SKIPPED the ONNX Runtime comparison: {why}");
        return None;
    }
    let ours = model.run(x).unwrap();
    let (input, output) = (dir.join("onnx_x.f32"), dir.join("onnx_y.f32"));
    std::fs::write(
        &input,
        x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/onnx_run.py");
    let mut args = vec![
        script.display().to_string(),
        onnx.display().to_string(),
        input.display().to_string(),
    ];
    args.extend(dims.iter().map(|d| d.to_string()));
    args.push(output.display().to_string());
    let status = Command::new("python3").args(&args).status().unwrap();
    assert!(status.success(), "onnxruntime failed on {}", onnx.display());
    let theirs: Vec<f32> = std::fs::read(&output)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(theirs.len(), ours.len());
    let q = model.output_quant();
    let theirs: Vec<i8> = theirs
        .iter()
        .map(|&v| ((v / q.scale).round() as i32 + q.zero_point) as i8)
        .collect();
    let diffs = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (*a as i32 - *b as i32).abs());
    let same_argmax = model
        .argmax(&ours)
        .iter()
        .zip(model.argmax(&theirs))
        .filter(|(a, b)| **a == *b)
        .count();
    Some(OnnxAgreement {
        samples: x.len() / dims.iter().product::<usize>(),
        outputs: ours.len(),
        differ: diffs.clone().filter(|&d| d > 0).count(),
        worst: diffs.max().unwrap_or(0),
        same_argmax,
    })
}

/// A Python with PyTorch and torchvision: `$QATC_TORCH_PYTHON`, or the cache venv
/// (~/.cache/qatc/venv), created and filled from PyPI when missing (never the system
/// Python's packages). `None` after printing why when that cannot be done; under
/// `CI=true` a missing peer fails the test instead.
pub fn torch_python() -> Option<PathBuf> {
    let works = |python: &Path| {
        Command::new(python)
            .args(["-c", "import torch, torchvision, safetensors"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if let Some(p) = std::env::var_os("QATC_TORCH_PYTHON").map(PathBuf::from) {
        if works(&p) {
            return Some(p);
        }
    }
    let venv = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cache/qatc/venv");
    let python = venv.join("bin/python");
    if works(&python) {
        return Some(python);
    }
    eprintln!(
        "installing torch, torchvision and safetensors into {}",
        venv.display()
    );
    let made = python.exists()
        || Command::new("python3")
            .args(["-m", "venv", venv.to_str().unwrap_or_default()])
            .status()
            .is_ok_and(|s| s.success());
    let installed = made
        && Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "torch",
                "torchvision",
                "safetensors",
            ])
            .status()
            .is_ok_and(|s| s.success());
    if installed && works(&python) {
        return Some(python);
    }
    let why = "no Python with torch, torchvision and safetensors (and installing them into the cache venv failed)";
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("SKIPPED: {why}");
    None
}

/// Makes sure Python can import the LiteRT interpreter, installing it from PyPI when missing.
pub fn litert() -> Result<(), String> {
    let import = || {
        Command::new("python3")
            .args(["-c", "import ai_edge_litert.interpreter, numpy"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if import() {
        return Ok(());
    }
    eprintln!("installing ai-edge-litert from PyPI for the LiteRT comparison");
    let installed = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "ai-edge-litert", "numpy"])
        .status();
    match installed {
        Ok(s) if s.success() && import() => Ok(()),
        Ok(s) => Err(format!("`pip install ai-edge-litert` exited with {s}")),
        Err(e) => Err(format!("cannot run python3: {e}")),
    }
}

/// Runs the int8 inputs through LiteRT (scripts/litert.py) and returns its int8 outputs.
pub fn litert_outputs(model: &Path, inputs: &[i8], dir: &Path) -> Vec<i8> {
    let (x, y) = (dir.join("x.i8"), dir.join("y.i8"));
    std::fs::write(&x, inputs.iter().map(|&v| v as u8).collect::<Vec<u8>>()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/litert.py");
    let status = Command::new("python3")
        .args([script.to_str().unwrap(), "run", model.to_str().unwrap()])
        .args([&x, &y])
        .status()
        .unwrap();
    assert!(status.success(), "LiteRT failed on {}", model.display());
    std::fs::read(&y)
        .unwrap()
        .into_iter()
        .map(|b| b as i8)
        .collect()
}
