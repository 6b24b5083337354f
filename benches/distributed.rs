//! Not a test: data-parallel training speed on this machine. Builds a small MLP on
//! Fashion-MNIST in 1 process and in 2 local ranks (`qatc build --nproc 2`, c10d/Gloo
//! on loopback) and prints training images/s per stage and the time spent in collectives
//! per step; then a paper estimate of gradient traffic for MobileNetV2 on 8 nodes × 8 GPUs.
//! `cargo bench --bench distributed` (after `source scripts/env.sh`); not run by `make test`.

use std::path::Path;
use std::process::Command;

const MODEL: &str = "
model BenchMlp {
    input image: f32[784]
    let x = dense(image, units = 256)
    let x = relu(x)
    let x = dense(x, units = 128)
    let x = relu(x)
    let logits = dense(x, units = 10)
    output logits
}
";

fn main() {
    if !qatc::train::distributed::AVAILABLE {
        println!("this qatc was built without the c10d shim: nothing to measure");
        return;
    }
    let data = std::env::var("QATC_FASHION_MNIST").expect("source scripts/env.sh first");
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("bench.qat");
    std::fs::write(&model, MODEL).unwrap();
    let recipe = tmp.path().join("bench.yaml");
    std::fs::write(
        &recipe,
        format!("data:\n  dir: {data}\n  train_limit: 8000\n  test_limit: 500\ntrain:\n  epochs: 1\n  batch_size: 64\n  learning_rate: 0.01\nqat:\n  epochs: 1\n  learning_rate: 0.001\nptq:\n  calibration_samples: 256\n"),
    )
    .unwrap();
    let params: usize = 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10;
    println!(
        "MLP 784-256-128-10 ({params} parameters, {:.2} MB of f32 gradients per step), 8000 images, batch 64",
        params as f64 * 4.0 / 1e6
    );
    println!(
        "{:<7} {:>14} {:>14} {:>26}",
        "ranks", "float img/s", "QAT img/s", "collectives per step"
    );
    // One process with libtorch's default threads, one with one thread (what each of the
    // two ranks gets from the launcher on two cores), then two ranks.
    for (ranks, threads) in [(1, None), (1, Some("1")), (2, None)] {
        let out = tmp
            .path()
            .join(format!("out{ranks}{}", threads.unwrap_or("")));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_qatc-train"));
        if let Some(threads) = threads {
            cmd.env("OMP_NUM_THREADS", threads);
        }
        cmd.args([
            "build",
            model.to_str().unwrap(),
            "--recipe",
            recipe.to_str().unwrap(),
        ])
        .args(["--out", out.to_str().unwrap(), "--log-format", "text"]);
        if ranks > 1 {
            cmd.args(["--nproc", &ranks.to_string()]);
        }
        let run = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "{stderr}");
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(Path::new(&out).join("report.json")).unwrap())
                .unwrap();
        let speed = |stage: &str| {
            report[stage]["train_images_per_second"]
                .as_f64()
                .unwrap_or(0.0)
        };
        // "float: 1.23 s of 4.56 s in collectives over 2 ranks (3.21 ms per step)"
        let collectives: Vec<String> = stderr
            .lines()
            .filter(|l| l.contains("in collectives"))
            .filter_map(|l| {
                let stage = l.split(':').next()?;
                let per_step = l.rsplit_once('(')?.1.trim_end_matches(')');
                Some(format!("{stage} {per_step}"))
            })
            .collect();
        let label = match threads {
            Some(t) => format!("{ranks} ({t} thr)"),
            None => ranks.to_string(),
        };
        println!(
            "{label:<10} {:>11.0} {:>14.0} {:>26}",
            speed("float"),
            speed("qat"),
            if collectives.is_empty() {
                "-".to_string()
            } else {
                collectives.join(", ")
            }
        );
    }
    paper_estimate();
}

/// Gradient traffic of MobileNetV2 data-parallel on 8 nodes × 8 GPUs, on paper.
fn paper_estimate() {
    let params = 3.5e6; // MobileNetV2 1.0, 224×224
    let bytes = params * 4.0; // f32 gradients
    let gpus = 64.0;
    // A ring allreduce sends and receives 2(N-1)/N of the buffer per GPU; between nodes
    // the slowest link (100 Gb/s = 12.5 GB/s) bounds it.
    let per_gpu = 2.0 * (gpus - 1.0) / gpus * bytes;
    let link = 12.5e9;
    let comm_ms = per_gpu / link * 1e3;
    // An assumption, not a measurement: ~2,500 training images/s per GPU (depthwise
    // convolutions keep MobileNetV2 far from a GPU's peak), batch 64 per GPU.
    let images_per_s = 2500.0;
    let compute_ms = 64.0 / images_per_s * 1e3;
    println!();
    println!("paper estimate, MobileNetV2 on 8 nodes × 8 GPUs (64 ranks), batch 64 per GPU:");
    println!(
        "  {:.1} MB of gradients per step; ring allreduce moves {:.1} MB per GPU: {:.2} ms at 100 Gb/s",
        bytes / 1e6,
        per_gpu / 1e6,
        comm_ms
    );
    println!(
        "  compute {compute_ms:.1} ms per step (assuming {images_per_s} images/s per GPU): communication {:.0}% of a step without overlap, {:.0} images/s in all",
        comm_ms / (comm_ms + compute_ms) * 100.0,
        gpus * 64.0 / ((comm_ms + compute_ms) / 1e3)
    );
}
