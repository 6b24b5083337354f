//! qatc's int8 runtime vs libtorch float vs ONNX Runtime and LiteRT (on the exported
//! int8 `.onnx` and `.tflite` models),
//! on the seed model and the transfer CNN (or the model files given as arguments): batch-1 latency and batch-256 throughput, one thread and all.
//! Prints a table and the ratios measured in this run.
//!
//! `cargo bench --bench int8` (after `source scripts/env.sh`). Weights are random,
//! calibrated on real Fashion-MNIST images: speed does not depend on what was learned.
//! ONNX Runtime is timed through Python (scripts/onnx_bench.py); it is skipped, with the
//! reason printed, when `import onnxruntime` fails; LiteRT likewise (scripts/litert.py, with
//! its default XNNPACK delegate and with its builtin kernels).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use qatc::data::{self, Split};
use qatc::diagnostics::SourceFile;
use qatc::lower::{self, F32Tensor, TensorMap};
use qatc::passes::{self, Stage};
use qatc::runtime::Model;
use qatc::train::{images_to_tensor, Mode, Network};

/// Median seconds per call, running for about `budget` seconds.
fn median_seconds(mut f: impl FnMut(), budget: f64) -> f64 {
    f();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || start.elapsed().as_secs_f64() < budget {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

struct Row {
    latency_us: f64,
    throughput: f64,
}

fn main() {
    // Model files as arguments (cargo passes its own `--bench` flag too), else the two
    // small ones `make test` runs: `cargo bench --bench int8 -- examples/fashion/mobilenet.qat`.
    let chosen: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let models = if chosen.is_empty() {
        vec![
            "examples/fashion/cnn.qat".to_string(),
            "examples/fashion/transfer.qat".to_string(),
        ]
    } else {
        chosen
    };
    for model in &models {
        bench(model);
        println!();
    }
}

fn bench(model_file: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = std::fs::read_to_string(root.join(model_file)).unwrap();
    let checked = qatc::check_source(&SourceFile::new(model_file, &src));
    let graph = passes::run(
        checked.graphs.into_iter().next().expect("one model"),
        Stage::Quantized,
    );
    let dir = std::env::var_os("QATC_FASHION_MNIST").map_or_else(
        || std::path::PathBuf::from("/usr/share/datasets/fashion-mnist"),
        Into::into,
    );
    let test = data::load_split(&dir, Split::Test)
        .expect("Fashion-MNIST (bash scripts/setup-data.sh)")
        .select(None, Some(256));
    let shape = graph.node(graph.inputs[0]).shape.clone();
    let per: usize = shape.iter().product();

    tch::manual_seed(1);
    let mut net = Network::new(&graph, tch::Device::Cpu);
    let xs = images_to_tensor(&test.pixels, &shape, tch::Device::Cpu);
    let _ = tch::no_grad(|| net.forward(&xs, Mode::Calibrate, false));
    let tensors: TensorMap = net
        .named_tensors()
        .into_iter()
        .map(|(name, t)| {
            let shape = t.size().iter().map(|&d| d as usize).collect();
            (
                name,
                F32Tensor {
                    shape,
                    data: Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap(),
                },
            )
        })
        .collect();
    let int8_model = lower::lower(&graph, &tensors, None).unwrap();
    let model = Model::new(&int8_model);
    let x: Vec<f32> = test.pixels.iter().map(|&p| p as f32 / 255.0).collect();

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let features: Vec<&str> = [
        ("avx2", std::is_x86_feature_detected!("avx2")),
        ("fma", std::is_x86_feature_detected!("fma")),
        ("avx512f", std::is_x86_feature_detected!("avx512f")),
        ("avx512vnni", std::is_x86_feature_detected!("avx512vnni")),
    ]
    .into_iter()
    .filter_map(|(n, on)| on.then_some(n))
    .collect();
    println!(
        "{}: {cores} cores, SIMD {features:?}, qatc kernels: {}",
        graph.name,
        model.isa().name()
    );

    let tmp = tempfile::tempdir().unwrap();
    let onnx = tmp.path().join("model.onnx");
    qatc::export::onnx::write(&onnx, &int8_model).unwrap();
    let tflite = tmp.path().join("model.tflite");
    qatc::export::tflite::write(&tflite, &int8_model).unwrap();
    let input = tmp.path().join("x.f32");
    std::fs::write(
        &input,
        x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();

    let mut table = Vec::new();
    for threads in [1, cores] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let qatc_row = pool.install(|| Row {
            latency_us: median_seconds(|| drop(model.run(&x[..per]).unwrap()), 1.0) * 1e6,
            throughput: 256.0 / median_seconds(|| drop(model.run(&x).unwrap()), 1.0),
        });
        tch::set_num_threads(threads as i32);
        let one = xs.narrow(0, 0, 1);
        let torch_row = tch::no_grad(|| Row {
            latency_us: median_seconds(|| drop(net.forward(&one, Mode::Float, false)), 1.0) * 1e6,
            throughput: 256.0 / median_seconds(|| drop(net.forward(&xs, Mode::Float, false)), 1.0),
        });
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        let dims = if dims.len() == 3 {
            dims
        } else {
            vec![dims[0].clone(), "1".into(), "1".into()]
        };
        let mut onnx_run = Command::new("python3");
        onnx_run
            .arg(root.join("scripts/onnx_bench.py"))
            .arg(&onnx)
            .arg(&input)
            .args(&dims)
            .arg(threads.to_string());
        let mut peers = vec![
            ("libtorch float", Some(torch_row)),
            (
                "onnxruntime int8 (py)",
                python_row("ONNX Runtime", onnx_run),
            ),
        ];
        // LiteRT with its default XNNPACK delegate, and with its own builtin kernels.
        for (name, resolver) in [
            ("litert int8 (py)", "auto"),
            ("litert builtin int8 (py)", "builtin"),
        ] {
            let mut run = Command::new("python3");
            run.arg(root.join("scripts/litert.py"))
                .arg("bench")
                .arg(&tflite)
                .arg(threads.to_string())
                .env("QATC_LITERT_RESOLVER", resolver);
            peers.push((name, python_row("LiteRT", run)));
        }
        table.push((threads, qatc_row, peers));
    }

    println!(
        "\n{:<8} {:<26} {:>16} {:>20}",
        "threads", "engine", "batch-1 latency", "batch-256 images/s"
    );
    for (threads, q, peers) in &table {
        let rows = std::iter::once(("qatc int8", Some(q)))
            .chain(peers.iter().map(|(n, r)| (*n, r.as_ref())));
        for (name, row) in rows {
            if let Some(r) = row {
                println!(
                    "{threads:<8} {name:<26} {:>13.1} us {:>20.0}",
                    r.latency_us, r.throughput
                );
            }
        }
    }
    println!("\nratios (> 1: qatc int8 is faster)");
    for (threads, q, peers) in &table {
        for (name, row) in peers {
            if let Some(r) = row {
                println!(
                    "  {threads} thread(s): vs {name}: throughput x{:.2}, latency x{:.2}",
                    q.throughput / r.throughput,
                    r.latency_us / q.latency_us
                );
            }
        }
    }
}

/// Runs a Python timing script that prints `latency_us=.. throughput=..`; None (with the
/// reason printed) when it cannot run.
fn python_row(what: &str, mut command: Command) -> Option<Row> {
    match command.output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let field = |k: &str| {
                text.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .and_then(|v| v.parse::<f64>().ok())
            };
            field("latency_us=")
                .zip(field("throughput="))
                .map(|(latency_us, throughput)| Row {
                    latency_us,
                    throughput,
                })
        }
        Ok(out) => {
            eprintln!(
                "{what} skipped: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("failed")
            );
            None
        }
        Err(e) => {
            eprintln!("{what} skipped: cannot run python3: {e}");
            None
        }
    }
}
