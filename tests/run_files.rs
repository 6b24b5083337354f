//! `qatc run` on files: PNG and JPEG files and folders of class subfolders (accuracy and
//! confusion matrix), IDX and .npy arrays, `--top`, `--format json|csv`; class names
//! carried by the int8 artifact, the .tflite and the .onnx; and a float checkpoint run
//! through libtorch whose logits equal the library's.
#![cfg(feature = "train")]

mod common;

use std::path::{Path, PathBuf};

use common::{qatc, qatc_ok, write};
use qatc::diagnostics::SourceFile;
use qatc::ir::Graph;
use qatc::passes::{self, Stage};
use qatc::train::{images_to_tensor, Mode, Network};
use tch::{Device, Kind, Tensor};

const TINY: &str = "
quant default {
    weights = int8(symmetric, per_channel)
    activations = int8(asymmetric, per_tensor)
}
model Tiny {
    input image: f32[3, 12, 12]
    let x = conv2d(image, filters = 4, kernel = 3, padding = same)
    let x = batch_norm(x)
    let x = relu(x)
    let x = max_pool2d(x, size = 2)
    let x = flatten(x)
    let logits = dense(x, units = 3)
    output logits
}
";

const CLASSES: [&str; 3] = ["cat", "dog", "fox"];

fn quantized(src: &str) -> Graph {
    let checked = qatc::check_source(&SourceFile::new("t.qat", src));
    assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
    passes::run(checked.graphs.into_iter().next().unwrap(), Stage::Quantized)
}

/// A deterministic pseudo-random byte stream.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect()
}

/// Writes `dir/<class>/<i>.png|jpg` images of assorted sizes and colour types.
fn image_folder(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for (c, class) in CLASSES.iter().enumerate() {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..4 {
            let (w, h) = (12 + 4 * i as u32, 12 + 2 * c as u32);
            let raw = bytes((w * h * 3) as usize, (c * 10 + i) as u64);
            let rgb = image::RgbImage::from_raw(w, h, raw).unwrap();
            let path = match i % 3 {
                0 => dir.join(class).join(format!("{i}.png")),
                1 => dir.join(class).join(format!("{i}.jpg")),
                _ => {
                    let path = dir.join(class).join(format!("{i}.png"));
                    image::DynamicImage::ImageRgb8(rgb.clone())
                        .to_luma8()
                        .save(&path)
                        .unwrap();
                    files.push(path);
                    continue;
                }
            };
            rgb.save(&path).unwrap();
            files.push(path);
        }
    }
    write(dir, "notes.txt", "not an image");
    files
}

/// A float network with fresh weights and calibrated ranges, saved as a build would:
/// the checkpoint's path and the lowered int8 artifact's directory (with class names).
fn checkpoint_and_artifact(dir: &Path) -> (Graph, PathBuf, PathBuf) {
    tch::manual_seed(7);
    let graph = quantized(TINY);
    let mut net = Network::new(&graph, Device::Cpu);
    let shape = graph.node(graph.inputs[0]).shape.clone();
    let per: usize = shape.iter().product();
    let xs = images_to_tensor(&bytes(32 * per, 99), &shape, Device::Cpu);
    tch::no_grad(|| {
        // Batch-norm statistics move away from 0/1, then the ranges are observed.
        for _ in 0..3 {
            let _ = net.forward(&xs, Mode::Float, true);
        }
        net.reset_observers();
        let _ = net.forward(&xs, Mode::Calibrate, false);
    });
    net.finish_calibration(qatc::recipe::RangeMethod::MinMax);
    let weights = dir.join("ptq.safetensors");
    Tensor::write_safetensors(&net.named_tensors(), &weights).unwrap();
    let tensors = qatc::lower::read_f32_safetensors(&weights).unwrap();
    let model = qatc::lower::lower(&graph, &tensors, None)
        .unwrap()
        .with_class_names(CLASSES.iter().map(|s| s.to_string()).collect())
        .unwrap();
    let artifact = dir.join("int8");
    qatc::int8::artifact::save(&artifact, &model).unwrap();
    // A float checkpoint: the same network without its ranges.
    let float: Vec<(String, Tensor)> = net
        .named_tensors()
        .into_iter()
        .filter(|(n, _)| !n.ends_with(".min") && !n.ends_with(".max"))
        .collect();
    Tensor::write_safetensors(&float, dir.join("float.safetensors")).unwrap();
    (graph, dir.join("float.safetensors"), artifact)
}

fn write_npy(path: &Path, shape: &[u64], values: &[u8]) {
    use npyz::WriterBuilder;
    let file = std::fs::File::create(path).unwrap();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(std::io::BufWriter::new(file))
        .begin_nd()
        .unwrap();
    w.extend(values.iter().copied()).unwrap();
    w.finish().unwrap();
}

fn json(args: &[&str]) -> serde_json::Value {
    let (out, _) = qatc_ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn run_classifies_a_folder_by_name_with_accuracy_confusion_and_formats() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, artifact) = checkpoint_and_artifact(tmp.path());
    let folder = tmp.path().join("images");
    let files = image_folder(&folder);
    let a = artifact.to_str().unwrap();
    let f = folder.to_str().unwrap();

    // What the runtime predicts on the same images, decoded and fitted by the library.
    let model = qatc::runtime::load(&artifact).unwrap();
    let inputs = qatc::data::inputs::read(&[folder.clone()], &[3, 12, 12], None).unwrap();
    assert_eq!(inputs.names.len(), files.len());
    assert_eq!(inputs.skipped, 1, "notes.txt is not an image");
    let predicted = model.argmax(&model.run_pixels(&inputs.images.pixels).unwrap());
    let truth: Vec<usize> = files
        .iter()
        .map(|p| {
            let class = p.parent().unwrap().file_name().unwrap().to_str().unwrap();
            CLASSES.iter().position(|c| *c == class).unwrap()
        })
        .collect();
    let correct = predicted.iter().zip(&truth).filter(|(p, t)| p == t).count();

    let (text, stderr) = qatc_ok(&["run", a, f]);
    assert!(
        stderr.contains("1 files that are not images were skipped"),
        "{stderr}"
    );
    let lines: Vec<&str> = text.lines().collect();
    for (i, path) in files.iter().enumerate() {
        let cols: Vec<&str> = lines[i].split_whitespace().collect();
        assert_eq!(cols[0], path.to_str().unwrap());
        assert_eq!(cols[1], CLASSES[predicted[i]], "{}", lines[i]);
        let p: f64 = cols[2].parse().unwrap();
        assert!(p > 1.0 / 3.0 - 1e-4 && p <= 1.0, "{}", lines[i]);
    }
    assert!(
        text.contains(&format!("accuracy: ")) && text.contains(&format!("({correct}/12)")),
        "{text}"
    );
    assert!(text.contains("confusion (rows: true class"), "{text}");

    let report = json(&["run", a, f, "--format", "json", "--top", "3"]);
    let confusion = &report["accuracy"]["confusion"];
    let total: u64 = (0..3)
        .flat_map(|i| (0..3).map(move |j| (i, j)))
        .map(|(i, j)| confusion[i][j].as_u64().unwrap())
        .sum();
    assert_eq!(total, 12);
    assert_eq!(report["accuracy"]["correct"], correct);
    assert_eq!(report["classes"], serde_json::json!(CLASSES));
    for (i, p) in report["predictions"].as_array().unwrap().iter().enumerate() {
        let top = p["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let probs: Vec<f64> = top
            .iter()
            .map(|r| r["probability"].as_f64().unwrap())
            .collect();
        assert!(probs.windows(2).all(|w| w[0] >= w[1]), "{probs:?}");
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert_eq!(top[0]["class"], CLASSES[predicted[i]]);
        assert_eq!(p["truth"], CLASSES[truth[i]]);
    }

    let (csv, _) = qatc_ok(&["run", a, f, "--format", "csv", "--top", "2"]);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "path,rank,class,probability,truth");
    assert_eq!(rows.len(), 1 + 2 * 12);
    assert!(
        rows[1].ends_with(&format!(",{}", CLASSES[truth[0]])),
        "{}",
        rows[1]
    );

    // One file, no truth: a line and no accuracy.
    let (one, _) = qatc_ok(&["run", a, files[0].to_str().unwrap()]);
    assert_eq!(one.lines().count(), 1, "{one}");
}

#[test]
fn run_reads_idx_and_npy_arrays_with_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, artifact) = checkpoint_and_artifact(tmp.path());
    let a = artifact.to_str().unwrap();
    // Grey 20×20 IDX images become 3×12×12 inputs.
    let pixels = bytes(5 * 400, 3);
    let idx = tmp.path().join("images.idx");
    qatc::data::write_images(&idx, &pixels, 5, 20, 20).unwrap();
    let labels = tmp.path().join("labels.idx");
    qatc::data::write_labels(&labels, &[0, 1, 2, 1, 0]).unwrap();
    let report = json(&[
        "run",
        a,
        idx.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(report["predictions"].as_array().unwrap().len(), 5);
    assert_eq!(
        report["predictions"][3]["path"],
        format!("{}:3", idx.display())
    );
    assert_eq!(report["predictions"][3]["truth"], "dog");
    assert_eq!(report["accuracy"]["total"], 5);

    // The same images as a .npy array [N, H, W] give the same predictions.
    let npy = tmp.path().join("images.npy");
    write_npy(&npy, &[5, 20, 20], &pixels);
    let from_npy = json(&["run", a, npy.to_str().unwrap(), "--format", "json"]);
    for i in 0..5 {
        assert_eq!(
            from_npy["predictions"][i]["top"],
            report["predictions"][i]["top"]
        );
    }

    // A label the model has no class for names the image.
    qatc::data::write_labels(&labels, &[0, 1, 7, 1, 0]).unwrap();
    let out = qatc(&[
        "run",
        a,
        idx.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{}:2: label 7", idx.display())),
        "{stderr}"
    );
}

#[test]
fn run_refuses_a_class_folder_the_model_does_not_know() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, artifact) = checkpoint_and_artifact(tmp.path());
    let folder = tmp.path().join("images");
    image_folder(&folder);
    std::fs::rename(folder.join("fox"), folder.join("wolf")).unwrap();
    let out = qatc(&["run", artifact.to_str().unwrap(), folder.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("wolf")
            && stderr.contains("class `wolf`")
            && stderr.contains("cat, dog, fox"),
        "{stderr}"
    );
    // A corrupt image names its file.
    std::fs::write(folder.join("cat").join("0.png"), b"not a png").unwrap();
    let out = qatc(&[
        "run",
        artifact.to_str().unwrap(),
        folder.join("cat").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("0.png") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn class_names_travel_into_the_tflite_and_onnx_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, artifact) = checkpoint_and_artifact(tmp.path());
    let (listing, _) = qatc_ok(&["inspect", artifact.to_str().unwrap()]);
    assert!(listing.contains("class names: cat, dog, fox"), "{listing}");
    let labels = r#"["cat","dog","fox"]"#;
    for format in ["tflite", "onnx"] {
        let out = tmp.path().join(format!("model.{format}"));
        qatc_ok(&[
            "export",
            artifact.to_str().unwrap(),
            "--format",
            format,
            "--out",
            out.to_str().unwrap(),
        ]);
        let bytes = std::fs::read(&out).unwrap();
        assert!(
            bytes.windows(labels.len()).any(|w| w == labels.as_bytes()),
            "{format} does not carry the class names"
        );
    }
}

#[test]
fn float_logits_of_run_with_weights_equal_the_library_s() {
    let tmp = tempfile::tempdir().unwrap();
    let (graph, float, _) = checkpoint_and_artifact(tmp.path());
    let model = write(tmp.path(), "tiny.qat", TINY);
    // Files straight in a folder: no class to check (no report.json names them here).
    image_folder(&tmp.path().join("images"));
    let folder = tmp.path().join("images").join("dog");
    let report = json(&[
        "run",
        model.to_str().unwrap(),
        "--weights",
        float.to_str().unwrap(),
        folder.to_str().unwrap(),
        "--logits",
        "--format",
        "json",
    ]);
    assert_eq!(report["runner"], "float");

    let inputs = qatc::data::inputs::read(&[folder], &[3, 12, 12], None).unwrap();
    let mut net = Network::new(&graph, Device::Cpu);
    let saved: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&float)
        .unwrap()
        .into_iter()
        .collect();
    net.restore(&saved).unwrap();
    let xs = images_to_tensor(&inputs.images.pixels, &[3, 12, 12], Device::Cpu);
    let ys = tch::no_grad(|| net.forward(&xs, Mode::Float, false)).to_kind(Kind::Float);
    let expected = Vec::<f32>::try_from(ys.flatten(0, -1)).unwrap();
    let got: Vec<f32> = report["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(got.len(), expected.len());
    let worst = got
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-5, "float logits differ by {worst}");
    assert!(
        expected.iter().any(|&v| v.abs() > 1e-3),
        "logits are not all zero"
    );

    // The PTQ checkpoint (with ranges) runs with fake quantization.
    let ptq = tmp.path().join("ptq.safetensors");
    let report = json(&[
        "run",
        model.to_str().unwrap(),
        "--weights",
        ptq.to_str().unwrap(),
        tmp.path().join("images").join("cat").to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(report["runner"], "fake-quant");
}

#[test]
fn run_on_an_exported_tflite_says_why_not_and_points_at_its_artifact() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, artifact) = checkpoint_and_artifact(tmp.path());
    let folder = tmp.path().join("images");
    image_folder(&folder);
    // Exported beside the artifact, as `qatc build --emit tflite` writes it.
    let tflite = tmp.path().join("model.tflite");
    qatc_ok(&[
        "export",
        artifact.to_str().unwrap(),
        "--format",
        "tflite",
        "--out",
        tflite.to_str().unwrap(),
    ]);
    let out = qatc(&["run", tflite.to_str().unwrap(), folder.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is a TFLite model")
            && stderr.contains(&format!("qatc run {}", artifact.display())),
        "{stderr}"
    );
    // Elsewhere, the hint names the runtimes that do run it.
    let alone = tmp.path().join("alone");
    std::fs::create_dir_all(&alone).unwrap();
    std::fs::copy(&tflite, alone.join("m.tflite")).unwrap();
    let out = qatc(&[
        "run",
        alone.join("m.tflite").to_str().unwrap(),
        folder.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is a TFLite model") && stderr.contains("LiteRT"),
        "{stderr}"
    );
}
