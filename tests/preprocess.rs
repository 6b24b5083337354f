//! Preprocessing declared once (the recipe's `data.normalize`) and carried everywhere:
//! training batches equal the runtime's floats bit for bit, the int8 artifact stores it,
//! and the exported `.tflite` (LiteRT) and `.onnx` (ONNX Runtime), fed the raw uint8
//! pixels of real image files, agree with `qatc run` on the same files.
#![cfg(feature = "train")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{qatc, qatc_ok, write};
use image::{imageops::FilterType, Rgb, RgbImage};
use qatc::data::{self, Split};
use qatc::preprocess::Normalize;
use tch::{Device, Kind, Tensor};

const NAMES: [&str; 10] = [
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot",
];

const MODEL: &str = "
quant default {
    weights = int8(symmetric, per_channel)
    activations = int8(asymmetric, per_tensor)
}
model Colour {
    input image: f32[3, 16, 16]
    let x = conv2d(image, filters = 12, kernel = 3, padding = same)
    let x = batch_norm(x)
    let x = relu(x)
    let x = max_pool2d(x, size = 2)
    let x = conv2d(x, filters = 16, kernel = 3, padding = same)
    let x = relu(x)
    let x = max_pool2d(x, size = 2)
    let x = flatten(x)
    let logits = dense(x, units = 10)
    output logits
}
";

/// Real images as files: Fashion-MNIST clothes, coloured (garment and background colours
/// from the index) and scaled to 20×20, PNG and JPEG in turn, `dir/<split>/<class>/`.
fn fashion_folder(dir: &Path, train_per_class: usize, val_per_class: usize) {
    for (split, name, per) in [
        (Split::Train, "train", train_per_class),
        (Split::Test, "val", val_per_class),
    ] {
        let set = data::load_split(&common::data_dir(), split).unwrap();
        let mut written = [0usize; 10];
        for i in 0..set.len() {
            let label = set.labels[i] as usize;
            if written[label] >= per {
                continue;
            }
            let class_dir = dir.join(name).join(NAMES[label]);
            std::fs::create_dir_all(&class_dir).unwrap();
            let h = (i as u32).wrapping_mul(2654435761);
            let fg = [h as u8, (h >> 8) as u8, (h >> 16) as u8].map(|v| v as f32);
            let bg = [(h >> 24) as u8, (h >> 4) as u8, (h >> 12) as u8].map(|v| v as f32);
            let grey = set.image(i);
            let rgb = RgbImage::from_fn(28, 28, |x, y| {
                let a = grey[(y * 28 + x) as usize] as f32 / 255.0;
                Rgb([0, 1, 2].map(|c| (a * fg[c] + (1.0 - a) * bg[c]).round() as u8))
            });
            let rgb = image::imageops::resize(&rgb, 20, 20, FilterType::Triangle);
            let ext = if written[label] % 2 == 0 {
                "png"
            } else {
                "jpg"
            };
            rgb.save(class_dir.join(format!("{i:05}.{ext}"))).unwrap();
            written[label] += 1;
        }
    }
}

const NORMALIZE: &str = "{mean: [0.45, 0.4, 0.35], std: [0.3, 0.25, 0.28]}";

#[test]
fn training_batches_are_the_runtime_s_floats_bit_for_bit() {
    let n = Normalize {
        mean: vec![0.45, 0.4, 0.35],
        std: vec![0.3, 0.25, 0.28],
    };
    let pixels: Vec<u8> = (0..2 * 3 * 4 * 5).map(|i| (i * 37 % 256) as u8).collect();
    let ours = n.pixels(&pixels, 20);
    let xs = qatc::train::normalized_images_to_tensor(&pixels, &[3, 4, 5], &n, Device::Cpu);
    let torch = Vec::<f32>::try_from(xs.flatten(0, -1)).unwrap();
    assert_eq!(ours.len(), torch.len());
    for (a, b) in ours.iter().zip(&torch) {
        assert_eq!(a.to_bits(), b.to_bits(), "{a} vs {b}");
    }
    assert!(
        ours.iter().any(|&v| v < 0.0),
        "normalization moved the values"
    );
}

/// Why the normalization is not folded into the first convolution: folded weights
/// `w / std` and bias `b - Σ w·mean/std` on `p / 255` equal the convolution of normalized
/// inputs inside the image, but not at a zero-padded border (0 there is `mean`, not 0).
#[test]
fn folding_into_a_padded_first_layer_is_exact_only_inside() {
    tch::manual_seed(1);
    let (mean, std) = ([0.45f64, 0.4, 0.35], [0.3f64, 0.25, 0.28]);
    let m = Tensor::from_slice(&mean)
        .view([1, 3, 1, 1])
        .to_kind(Kind::Float);
    let s = Tensor::from_slice(&std)
        .view([1, 3, 1, 1])
        .to_kind(Kind::Float);
    let x = Tensor::rand([2, 3, 8, 8], (Kind::Float, Device::Cpu));
    let w = Tensor::randn([4, 3, 3, 3], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([4], (Kind::Float, Device::Cpu));
    let folded_w = &w / &s;
    let folded_b = &b - (&w * &m / &s).sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Float);
    for pad in [0i64, 1] {
        let normalized = ((&x - &m) / &s).conv2d(&w, Some(&b), [1, 1], [pad, pad], [1, 1], 1);
        let folded = x.conv2d(&folded_w, Some(&folded_b), [1, 1], [pad, pad], [1, 1], 1);
        let diff = (&normalized - &folded).abs();
        let inside = if pad == 0 {
            diff.max().double_value(&[])
        } else {
            diff.narrow(2, 1, 6).narrow(3, 1, 6).max().double_value(&[])
        };
        assert!(inside < 1e-4, "pad {pad}: inside differs by {inside}");
        let all = diff.max().double_value(&[]);
        if pad == 0 {
            assert!(all < 1e-4);
        } else {
            assert!(all > 0.1, "the padded border should differ, by {all}");
        }
    }
}

fn pixels_nhwc(chw: &[u8], c: usize, hw: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(chw.len());
    for image in chw.chunks(c * hw) {
        for p in 0..hw {
            for ch in 0..c {
                out.push(image[ch * hw + p]);
            }
        }
    }
    out
}

fn argmax(rows: &[f32], k: usize) -> Vec<usize> {
    rows.chunks(k)
        .map(|r| {
            (0..k)
                .fold((0, f32::NEG_INFINITY), |best, i| {
                    if r[i] > best.1 {
                        (i, r[i])
                    } else {
                        best
                    }
                })
                .0
        })
        .collect()
}

#[test]
fn tflite_and_onnx_take_raw_pixels_of_image_files_and_agree_with_qatc_run() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("clothes");
    fashion_folder(&root, 40, 25);
    let recipe = format!(
        "data:\n  format: folder\n  dir: {}\n  normalize: {NORMALIZE}\ntrain:\n  epochs: 2\n  batch_size: 32\n  learning_rate: 0.003\n  seed: 3\nqat:\n  epochs: 1\nptq:\n  calibration_samples: 200\n",
        root.display()
    );
    let model = write(tmp.path(), "colour.qat", MODEL);
    let (out, _, report) = common::build_emitting(&model, &recipe, tmp.path(), "tflite");
    // The int8 runtime on the test images agrees with fake quantization: training and
    // the artifact normalize alike.
    let agreement = report.qat.expect("qat.epochs is 1").int8_agreement;
    assert!(agreement.unwrap() >= 0.98, "{agreement:?}");
    let int8_dir = out.join("int8");
    let artifact = qatc::int8::artifact::read(&int8_dir).unwrap();
    let stored = artifact.graph().input.normalize.clone().unwrap();
    assert_eq!(stored.mean, vec![0.45, 0.4, 0.35]);
    assert_eq!(stored.std, vec![0.3, 0.25, 0.28]);
    let names = artifact.graph().class_names.clone().unwrap();
    let mut sorted = NAMES.to_vec();
    sorted.sort();
    assert_eq!(names, sorted);

    // `qatc run` on the validation files.
    let val = root.join("val");
    let (listing, _) = qatc_ok(&[
        "run",
        int8_dir.to_str().unwrap(),
        val.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let listing: serde_json::Value = serde_json::from_str(&listing).unwrap();
    let ours: Vec<usize> = listing["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let class = p["top"][0]["class"].as_str().unwrap();
            names.iter().position(|n| n == class).unwrap()
        })
        .collect();
    let n = ours.len();
    assert_eq!(n, 250);

    // The same files' raw pixels, decoded and fitted as qatc does.
    let inputs = data::inputs::read(&[val], &[3, 16, 16], None).unwrap();
    let pixels = &inputs.images.pixels;
    let agree = |theirs: &[usize]| ours.iter().zip(theirs).filter(|(a, b)| a == b).count();

    // LiteRT: uint8 NHWC pixels straight in.
    let x = tmp.path().join("pixels.u8");
    std::fs::write(&x, pixels_nhwc(pixels, 3, 256)).unwrap();
    let y = tmp.path().join("litert.i8");
    let tflite = out.join("model.tflite");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/litert.py");
    let ran = Command::new("python3")
        .args([script.to_str().unwrap(), "run", tflite.to_str().unwrap()])
        .args([&x, &y])
        .status()
        .unwrap();
    assert!(ran.success(), "LiteRT failed on {}", tflite.display());
    let litert: Vec<f32> = std::fs::read(&y)
        .unwrap()
        .into_iter()
        .map(|b| b as i8 as f32)
        .collect();
    let litert = argmax(&litert, 10);
    let same = agree(&litert);
    eprintln!("LiteRT on raw uint8 pixels of {n} files: argmax = qatc run on {same}");
    assert!(same * 1000 >= n * 995, "LiteRT agrees on only {same}/{n}");

    // ONNX Runtime: uint8 NCHW pixels straight in.
    let onnx = tmp.path().join("model.onnx");
    qatc_ok(&[
        "export",
        int8_dir.to_str().unwrap(),
        "--format",
        "onnx",
        "--out",
        onnx.to_str().unwrap(),
    ]);
    if let Err(why) = common::onnxruntime() {
        eprintln!("SKIPPED the ONNX Runtime comparison: {why}");
        return;
    }
    let xo = tmp.path().join("pixels_nchw.u8");
    std::fs::write(&xo, pixels).unwrap();
    let yo = tmp.path().join("onnx.f32");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/onnx_run.py");
    let ran = Command::new("python3")
        .args([
            script.to_str().unwrap(),
            onnx.to_str().unwrap(),
            xo.to_str().unwrap(),
        ])
        .args(["3", "16", "16", yo.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(ran.success(), "onnxruntime failed on {}", onnx.display());
    let logits: Vec<f32> = std::fs::read(&yo)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let same = agree(&argmax(&logits, 10));
    eprintln!("ONNX Runtime on raw uint8 pixels of {n} files: argmax = qatc run on {same}");
    assert!(
        same * 1000 >= n * 995,
        "ONNX Runtime agrees on only {same}/{n}"
    );
}

#[test]
fn normalization_that_does_not_fit_the_input_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("clothes");
    fashion_folder(&root, 2, 1);
    let model = write(tmp.path(), "colour.qat", MODEL);
    let recipe = write(
        tmp.path(),
        "r.yaml",
        &format!(
            "data:\n  format: folder\n  dir: {}\n  normalize: {{mean: [0.5], std: [0.5]}}\ntrain:\n  epochs: 1\n  learning_rate: 0.01\n",
            root.display()
        ),
    );
    let stderr = common::build_fails(&model, recipe.to_str().unwrap(), &tmp.path().join("out"));
    assert!(
        stderr.contains("data.normalize") && stderr.contains("3 channel"),
        "{stderr}"
    );
    // A zero std is refused when the recipe is read.
    let recipe = write(
        tmp.path(),
        "r0.yaml",
        "data:\n  normalize: {mean: [0.5], std: [0]}\ntrain:\n  epochs: 1\n  learning_rate: 0.01\n",
    );
    let out = qatc(&[
        "build",
        model.to_str().unwrap(),
        "--recipe",
        recipe.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("positive"),
        "{stderr}"
    );
    let _: PathBuf = recipe;
}

/// Two builds that differ only in `train.augment`, with a learning rate so small that
/// training leaves the weights (almost) where the seed put them: the training loss sees
/// the augmented images, while evaluation (same accuracy to the image) and calibration
/// (same ranges) see the images as they are.
#[test]
fn augmentation_changes_training_batches_but_never_calibration_or_evaluation() {
    const PLAIN: &str = "
quant default {
    weights = int8(symmetric, per_channel)
    activations = int8(asymmetric, per_tensor)
}
model Plain {
    input image: f32[3, 16, 16]
    let x = conv2d(image, filters = 8, kernel = 3, padding = same)
    let x = relu(x)
    let x = max_pool2d(x, size = 2)
    let x = flatten(x)
    let logits = dense(x, units = 10)
    output logits
}
";
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("clothes");
    fashion_folder(&root, 12, 8);
    let model = write(tmp.path(), "plain.qat", PLAIN);
    let build = |name: &str, augment: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let recipe = format!(
            "data:\n  format: folder\n  dir: {}\ntrain:\n  epochs: 1\n  batch_size: 16\n  optimizer: sgd\n  learning_rate: 1.0e-12\n  seed: 4\n{augment}qat:\n  epochs: 1\n  learning_rate: 1.0e-12\nptq:\n  calibration_samples: 80\n",
            root.display()
        );
        let (out, _, report) = common::build_emitting(&model, &recipe, &dir, "onnx");
        let ranges = qatc::lower::read_f32_safetensors(&out.join("ptq.safetensors")).unwrap();
        (report, ranges)
    };
    let (plain, plain_ranges) = build("plain", "");
    let (augmented, augmented_ranges) = build(
        "augmented",
        "  augment: {flip: true, crop_padding: 3, resized_crop: [0.3, 0.7]}\n",
    );
    let loss = |r: &qatc::report::Report| r.float.history[0].train_loss;
    assert!(
        (loss(&plain) - loss(&augmented)).abs() > 1e-4,
        "training saw the same images: loss {} vs {}",
        loss(&plain),
        loss(&augmented)
    );
    assert_eq!(plain.float.accuracy, augmented.float.accuracy, "evaluation");
    assert_eq!(plain.ptq.accuracy, augmented.ptq.accuracy, "evaluation");
    let mut compared = 0;
    for (name, t) in &plain_ranges {
        if name.ends_with(".min") || name.ends_with(".max") {
            let (a, b) = (t.data[0], augmented_ranges[name].data[0]);
            assert!(
                (a - b).abs() <= 1e-4 * a.abs().max(1e-3),
                "calibration range {name}: {a} vs {b}"
            );
            compared += 1;
        }
    }
    assert!(compared >= 4, "{compared} ranges");
}
