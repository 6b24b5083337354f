//! qatc's int8 runtime vs libtorch float vs ONNX Runtime and LiteRT (on the exported
//! int8 `.onnx` and `.tflite` models): batch-1 latency and batch-64 throughput, on one
//! thread and on every core, the engines interleaved, three rounds; prints the median
//! and the spread (min–max) of each, the load average and the CPU's SIMD features, and
//! the ratios of medians measured in this run.
//!
//! `cargo bench --bench int8 -- [MODEL.qat[@SIZE] ...] [--qatc-only]` (after
//! `source scripts/env.sh`): by default the seed CNN and the transfer CNN; `@SIZE` sets
//! the input's height and width (`examples/zoo/mobilenet_v2.qat@96`). Weights are
//! random, calibrated on real Fashion-MNIST images for 1×28×28 models and on random
//! pixels otherwise: speed does not depend on what was learned. ONNX Runtime is timed
//! through Python (scripts/onnx_bench.py), LiteRT too (scripts/litert.py, with its default
//! XNNPACK delegate and with its builtin kernels); each is skipped, with the reason
//! printed, when it cannot run. `--qatc-only` times qatc alone (for profiling).
//! `cargo test` (make test) runs it without `--bench`: a quick mode, one round of short
//! measurements on the default models.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use qatc::data::{self, Split};
use qatc::diagnostics::SourceFile;
use qatc::lower::{self, F32Tensor, TensorMap};
use qatc::passes::{self, Stage};
use qatc::runtime::Model;
use qatc::train::{images_to_tensor, Mode, Network};

/// Images in a throughput batch (and in the calibration batch).
const BATCH: usize = 64;

/// Median wall-clock seconds per call, and the process's CPU seconds per call (every
/// thread's), running for about `budget` seconds (at least 3 calls). On a shared machine
/// the CPU time is the figure other processes' load disturbs least.
fn median_seconds(mut f: impl FnMut(), budget: f64) -> (f64, f64) {
    f();
    let mut times = Vec::new();
    let start = Instant::now();
    let cpu = cpu_seconds();
    while times.len() < 3 || start.elapsed().as_secs_f64() < budget {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    let cpu = (cpu_seconds() - cpu) / times.len() as f64;
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], cpu)
}

/// CPU time (user and system) of all this process's threads, those that ended included.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Times batch-1 calls (`run(false)`) and batch-[`BATCH`] calls (`run(true)`).
fn time_row(mut run: impl FnMut(bool), budget: f64) -> Row {
    let (l, lc) = median_seconds(|| run(false), budget);
    let (b, bc) = median_seconds(|| run(true), budget);
    Row {
        latency_us: l * 1e6,
        throughput: BATCH as f64 / b,
        cpu_latency_us: lc * 1e6,
        cpu_throughput: BATCH as f64 / bc,
    }
}

#[derive(Clone, Copy)]
struct Row {
    latency_us: f64,
    throughput: f64,
    /// CPU time (all threads) per batch-1 call, and images per CPU second at batch [`BATCH`].
    cpu_latency_us: f64,
    cpu_throughput: f64,
}

/// One figure of a [`Row`].
type Metric = fn(&Row) -> f64;

/// How long and how often to measure.
struct Plan {
    rounds: usize,
    /// Seconds per measurement.
    budget: f64,
    qatc_only: bool,
}

fn main() {
    // libtorch's OpenMP threads spin between parallel regions by default, taking the CPU
    // from whatever is timed next in this process; libgomp reads the policy when it is
    // loaded, so set it by running this benchmark again with it.
    if std::env::var_os("OMP_WAIT_POLICY").is_none() {
        let status = Command::new(std::env::current_exe().unwrap())
            .args(std::env::args_os().skip(1))
            .env("OMP_WAIT_POLICY", "passive")
            .status()
            .unwrap();
        std::process::exit(status.code().unwrap_or(1));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Cargo passes `--bench` to benchmarks; `cargo test --all-targets` (make test) does not.
    let full = args.iter().any(|a| a == "--bench");
    let plan = Plan {
        rounds: if full { 3 } else { 1 },
        budget: if full { 1.0 } else { 0.2 },
        qatc_only: args.iter().any(|a| a == "--qatc-only"),
    };
    let chosen: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let models = if chosen.is_empty() {
        vec!["examples/fashion/cnn.qat", "examples/fashion/transfer.qat"]
    } else {
        chosen.iter().map(|s| s.as_str()).collect()
    };
    for model in models {
        bench(model, &plan);
        println!();
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The model's source with its input's height and width set to `size` (the
/// `input NAME: f32[C, H, W]` line).
fn resize_input(src: &str, size: usize) -> String {
    src.lines()
        .map(|line| match line.trim_start().strip_prefix("input ") {
            Some(rest) if rest.contains("f32[") => {
                let open = line.find("f32[").unwrap() + 4;
                let close = open + line[open..].find(']').unwrap();
                let c = line[open..close].split(',').next().unwrap().trim();
                format!("{}{c}, {size}, {size}{}", &line[..open], &line[close..])
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn bench(spec: &str, plan: &Plan) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (model_file, size) = match spec.split_once('@') {
        Some((file, size)) => (file, Some(size.parse::<usize>().expect("MODEL.qat@SIZE"))),
        None => (spec, None),
    };
    let mut src = std::fs::read_to_string(root.join(model_file)).unwrap();
    if let Some(size) = size {
        src = resize_input(&src, size);
    }
    let checked = qatc::check_source(&SourceFile::new(model_file, &src));
    let graph = passes::run(
        checked.graphs.into_iter().next().expect("one model"),
        Stage::Quantized,
    );
    let shape = graph.node(graph.inputs[0]).shape.clone();
    let per: usize = shape.iter().product();
    let pixels: Vec<u8> = if shape == [1, 28, 28] {
        let dir = std::env::var_os("QATC_FASHION_MNIST").map_or_else(
            || std::path::PathBuf::from("/usr/share/datasets/fashion-mnist"),
            Into::into,
        );
        data::load_split(&dir, Split::Test)
            .expect("Fashion-MNIST (bash scripts/setup-data.sh)")
            .select(None, Some(BATCH))
            .pixels
    } else {
        // Random pixels: a small LCG, so the bench needs no extra crate.
        let mut s = 1u64;
        (0..BATCH * per)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 56) as u8
            })
            .collect()
    };

    tch::manual_seed(1);
    let mut net = Network::new(&graph, tch::Device::Cpu);
    let xs = images_to_tensor(&pixels, &shape, tch::Device::Cpu);
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
    let x: Vec<f32> = pixels.iter().map(|&p| p as f32 / 255.0).collect();

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let features: Vec<&str> = [
        ("avx2", std::is_x86_feature_detected!("avx2")),
        ("fma", std::is_x86_feature_detected!("fma")),
        ("avxvnni", std::is_x86_feature_detected!("avxvnni")),
        ("avx512f", std::is_x86_feature_detected!("avx512f")),
        ("avx512vnni", std::is_x86_feature_detected!("avx512vnni")),
    ]
    .into_iter()
    .filter_map(|(n, on)| on.then_some(n))
    .collect();
    println!(
        "{} {shape:?}: {cores} cores, SIMD {features:?}, qatc kernels: {}, load average {}",
        graph.name,
        model.isa().name(),
        load_average()
    );

    let (peak, all) = model.activation_bytes();
    println!(
        "qatc int8 activations per image: {} KiB at the busiest step ({} KiB if every value were kept)",
        peak / 1024,
        all / 1024
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
    let dims: Vec<String> = if shape.len() == 3 {
        shape.iter().map(usize::to_string).collect()
    } else {
        vec![per.to_string(), "1".into(), "1".into()]
    };

    let threads_list: Vec<usize> = if cores > 1 { vec![1, cores] } else { vec![1] };
    let engines: &[&str] = if plan.qatc_only {
        &["qatc int8"]
    } else {
        &[
            "qatc int8",
            "libtorch float",
            "onnxruntime int8 (py)",
            "litert xnnpack int8 (py)",
            "litert builtin int8 (py)",
        ]
    };
    let budget = plan.budget;
    let py_budget = budget.to_string();
    // samples[threads][engine]: one Row per round (None: skipped).
    let mut samples = vec![vec![Vec::<Row>::new(); engines.len()]; threads_list.len()];
    for round in 0..plan.rounds {
        println!(
            "round {} of {}: load average {}",
            round + 1,
            plan.rounds,
            load_average()
        );
        for (ti, &threads) in threads_list.iter().enumerate() {
            for (ei, &engine) in engines.iter().enumerate() {
                let row = match engine {
                    "qatc int8" => {
                        let pool = rayon::ThreadPoolBuilder::new()
                            .num_threads(threads)
                            .build()
                            .unwrap();
                        pool.install(|| {
                            Some(time_row(
                                |batch| {
                                    drop(model.run(if batch { &x } else { &x[..per] }).unwrap())
                                },
                                budget,
                            ))
                        })
                    }
                    "libtorch float" => {
                        tch::set_num_threads(threads as i32);
                        let one = xs.narrow(0, 0, 1);
                        tch::no_grad(|| {
                            Some(time_row(
                                |batch| {
                                    drop(net.forward(
                                        if batch { &xs } else { &one },
                                        Mode::Float,
                                        false,
                                    ))
                                },
                                budget,
                            ))
                        })
                    }
                    "onnxruntime int8 (py)" => {
                        let mut run = Command::new("python3");
                        run.arg(root.join("scripts/onnx_bench.py"))
                            .arg(&onnx)
                            .arg(&input)
                            .args(&dims)
                            .arg(threads.to_string())
                            .arg(BATCH.to_string())
                            .arg(&py_budget);
                        python_row("ONNX Runtime", run)
                    }
                    litert => {
                        // LiteRT with its default XNNPACK delegate, or with its builtin kernels.
                        let resolver = if litert.contains("builtin") {
                            "builtin"
                        } else {
                            "auto"
                        };
                        let mut run = Command::new("python3");
                        run.arg(root.join("scripts/litert.py"))
                            .arg("bench")
                            .arg(&tflite)
                            .arg(threads.to_string())
                            .arg(BATCH.to_string())
                            .arg(&py_budget)
                            .env("QATC_LITERT_RESOLVER", resolver);
                        python_row("LiteRT", run)
                    }
                };
                samples[ti][ei].extend(row);
            }
        }
    }
    println!("load average at the end: {}", load_average());

    let stats = |rows: &[Row], f: fn(&Row) -> f64| -> Option<(f64, f64, f64)> {
        let mut v: Vec<f64> = rows.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| (v[v.len() / 2], v[0], v[v.len() - 1]))
    };
    let tables: [(&str, Metric, Metric); 2] = [
        ("wall clock", |r| r.latency_us, |r| r.throughput),
        (
            "CPU time of all the engine's threads (less disturbed by other processes' load)",
            |r| r.cpu_latency_us,
            |r| r.cpu_throughput,
        ),
    ];
    for (title, latency, throughput) in tables {
        println!(
            "\n{title}\n{:<8} {:<26} {:>28} {:>32}",
            "threads",
            "engine",
            "batch-1 latency us (min-max)",
            format!("batch-{BATCH} images/s (min-max)")
        );
        for (ti, threads) in threads_list.iter().enumerate() {
            for (ei, engine) in engines.iter().enumerate() {
                let rows = &samples[ti][ei];
                if let (Some(l), Some(t)) = (stats(rows, latency), stats(rows, throughput)) {
                    println!(
                        "{threads:<8} {engine:<26} {:>10.1} ({:>7.1}-{:>7.1}) {:>12.0} ({:>7.0}-{:>7.0})",
                        l.0, l.1, l.2, t.0, t.1, t.2
                    );
                }
            }
        }
        println!("ratios of medians (> 1: qatc int8 is faster)");
        for (ti, threads) in threads_list.iter().enumerate() {
            let q = &samples[ti][0];
            let (Some(ql), Some(qt)) = (stats(q, latency), stats(q, throughput)) else {
                continue;
            };
            for (ei, engine) in engines.iter().enumerate().skip(1) {
                let rows = &samples[ti][ei];
                if let (Some(l), Some(t)) = (stats(rows, latency), stats(rows, throughput)) {
                    println!(
                        "  {threads} thread(s): vs {engine}: throughput x{:.2}, latency x{:.2}",
                        qt.0 / t.0,
                        l.0 / ql.0
                    );
                }
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
            Some(Row {
                latency_us: field("latency_us=")?,
                throughput: field("throughput=")?,
                cpu_latency_us: field("cpu_latency_us=")?,
                cpu_throughput: field("cpu_throughput=")?,
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
