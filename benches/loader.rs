//! Not a test: the data loader's images/s beside training's for a 32×32 RGB model, to
//! show the loader is not the bottleneck. Decodes a generated folder of PNG and JPEG
//! files (cold: decode in parallel; warm: the on-disk cache), builds the normalized
//! batch tensors, then times training steps (forward, backward, SGD) of a small CNN.
//! `cargo bench --bench loader` (after `source scripts/env.sh`); `make test` runs it in
//! a quick mode (fewer images and steps).

use std::time::Instant;

use qatc::data::{self, Format};
use qatc::preprocess::Normalize;
use qatc::train::{normalized_images_to_tensor, Mode, Network};
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor};

const MODEL: &str = "
quant default {
    weights = int8(symmetric, per_channel)
    activations = int8(asymmetric, per_tensor)
}
model Bench {
    input image: f32[3, 32, 32]
    let x = conv2d(image, filters = 16, kernel = 3, padding = same)
    let x = batch_norm(x)
    let x = relu(x)
    let x = max_pool2d(x, size = 2)
    let x = conv2d(x, filters = 32, kernel = 3, padding = same)
    let x = batch_norm(x)
    let x = relu(x)
    let x = max_pool2d(x, size = 2)
    let x = global_avg_pool(x)
    let logits = dense(x, units = 10)
    output logits
}
";

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` (make test) does not.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (per_class, steps) = if quick { (40, 5) } else { (400, 40) };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("images");
    let mut s = 1u64;
    for split in ["train", "val"] {
        for c in 0..10 {
            let dir = root.join(split).join(format!("class{c}"));
            std::fs::create_dir_all(&dir).unwrap();
            let n = if split == "train" {
                per_class
            } else {
                per_class / 4
            };
            for i in 0..n {
                let img = image::RgbImage::from_fn(40, 36, |x, y| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                    let v = ((x * 5 + y * 3) as u64 + (s >> 60) + c * 20) as u8;
                    image::Rgb([v, v.wrapping_mul(3), 255 - v])
                });
                let ext = if i % 2 == 0 { "png" } else { "jpg" };
                img.save(dir.join(format!("{i}.{ext}"))).unwrap();
            }
        }
    }
    let images = (per_class * 10 + per_class / 4 * 10) as f64;
    std::env::set_var("QATC_CACHE_DIR", tmp.path().join("cache"));
    let load = || {
        let started = Instant::now();
        let sets = data::load(Format::Folder, &root, &[3, 32, 32], 0.2, 0).unwrap();
        (sets, started.elapsed().as_secs_f64())
    };
    let (sets, cold) = load();
    let (_, warm) = load();
    let normalize = Normalize {
        mean: vec![0.5; 3],
        std: vec![0.25; 3],
    };
    let started = Instant::now();
    let xs = normalized_images_to_tensor(&sets.train.pixels, &[3, 32, 32], &normalize, Device::Cpu);
    let to_tensor = started.elapsed().as_secs_f64();
    let n = sets.train.len() as i64;

    let checked = qatc::check_source(&qatc::diagnostics::SourceFile::new("bench.qat", MODEL));
    assert!(!checked.has_errors());
    let graph = qatc::passes::run(
        checked.graphs.into_iter().next().unwrap(),
        qatc::passes::Stage::Quantized,
    );
    let mut net = Network::new(&graph, Device::Cpu);
    let mut opt = tch::nn::Sgd::default().build(&net.vs, 0.01).unwrap();
    let labels = Tensor::from_slice(&sets.train.labels).to_kind(Kind::Int64);
    let batch = 64i64;
    let started = Instant::now();
    for step in 0..steps {
        let at = (step * batch) % (n - batch).max(1);
        let x = xs.narrow(0, at, batch.min(n));
        let y = labels.narrow(0, at, batch.min(n));
        let loss = net
            .forward(&x, Mode::Float, true)
            .cross_entropy_for_logits(&y);
        opt.backward_step(&loss);
    }
    let train = started.elapsed().as_secs_f64();
    let trained = (steps * batch) as f64;
    println!(
        "loader ({} threads): decode {:.0} img/s (cold), cache {:.0} img/s (warm), to tensors {:.0} img/s",
        rayon::current_num_threads(),
        images / cold,
        images / warm,
        n as f64 / to_tensor,
    );
    println!(
        "training (float, batch {batch}, 32x32 RGB CNN): {:.0} img/s{}",
        trained / train,
        if quick { "  [quick mode]" } else { "" }
    );
    assert!(images / cold > 0.0 && warm <= cold * 2.0);
}
