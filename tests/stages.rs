//! Golden dumps of every model at every compiler stage: the safety net for refactoring
//! (issue 10). For each model of every `.qat` under `examples/`, `tests/tflite/` and
//! `tests/models/` (copies of the models other tests define inline), and for the
//! bit-width variants the demo builds, `tests/stages/<path>.<model>.txt` holds the graph
//! after `parsed`, `fused` and `quantized`, the int8 graph lowered with synthetic
//! parameters ([`synthetic_trained_tensors`]; no training, no libtorch), digests of its
//! integer tensors, the int8 runtime's output on a synthetic input, and the TFLite
//! listing read back from the exported bytes. A stage that refuses a model records its
//! error message instead.
//!
//! A golden changes only where a change is intended: after one, regenerate with
//! `QATC_BLESS=1 cargo test --release --locked --test stages` and review the diff.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use qatc::diagnostics::SourceFile;
use qatc::int8::{IntTensor, IntTensors};
use qatc::ir::ops::Activation;
use qatc::ir::{dump, Graph, Op};
use qatc::lower::{self, F32Tensor, TensorMap};
use qatc::passes::{self, BitWidths, Stage};

/// Bit-width variants (`qatc build --quant`) of example models, as the demo builds them.
const VARIANTS: &[(&str, &str)] = &[
    ("examples/fashion/cnn.qat", "w3a3"),
    ("examples/fashion/transfer.qat", "w2a8"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `.qat` files under `dir`, recursively, sorted.
fn qat_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("directory exists") {
        let path = entry.expect("readable directory").path();
        if path.is_dir() {
            out.extend(qat_files(&path));
        } else if path.extension().is_some_and(|e| e == "qat") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Every input file with the bit widths it is dumped at (`None`: as written).
fn inputs() -> Vec<(PathBuf, Option<&'static str>)> {
    let mut files: Vec<(PathBuf, Option<&str>)> = ["examples", "tests/tflite", "tests/models"]
        .iter()
        .flat_map(|dir| qat_files(&root().join(dir)))
        .map(|path| (path, None))
        .collect();
    files.extend(
        VARIANTS
            .iter()
            .map(|(path, bits)| (root().join(path), Some(*bits))),
    );
    files
}

/// SplitMix64: a small, well-known generator, so the goldens need no dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded by a name, so that a tensor's values depend only on its name.
    fn named(name: &str) -> SplitMix64 {
        SplitMix64(fnv1a64(name.as_bytes()))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), on a 2^-24 grid (exact in f32).
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi).
    fn between(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Synthetic, untrained stand-ins for what training saves, so that lowering and the exports can be
/// dumped without libtorch or data: every float tensor `lower::lower` reads from a
/// quantized-stage graph, with deterministic values that look like trained ones.
///
/// - conv2d / dense: `<node>.weight` (`[filters, in_channels / groups, k, k]` or
///   `[units, in_features]`, uniform in ±sqrt(3 / fan_in)) and, with a bias,
///   `<node>.bias` (`[out]`, ±0.1).
/// - a batch norm (fused, under its own name, or standalone): `<bn>.weight` (0.5..1.5),
///   `.bias` (±0.2), `.running_mean` (±0.2), `.running_var` (0.5..1.5), each `[out]`.
/// - every fake-quant node: `<fq>.min` / `<fq>.max` (`[1]`): `[0, 1]` after the input
///   (pixels / 255), `[0, 6]` after a relu6, `[0, hi]` after any other value that cannot
///   be negative, else `[-lo, hi]`, with `lo`, `hi` in 1..4. A fake-quant whose range
///   a concat shares (`passes::range_sources`) gets its source's range, as training
///   saves it.
///
/// No `<node>.weight_scale`: lowering then takes the min-max scales of the folded
/// weights. Each tensor's values come from a generator seeded by its name, so
/// reordering nodes or adding tensors elsewhere changes nothing else.
fn synthetic_trained_tensors(graph: &Graph) -> TensorMap {
    fn put(tensors: &mut TensorMap, name: String, shape: Vec<usize>, lo: f32, hi: f32) {
        let mut rng = SplitMix64::named(&name);
        let data = (0..shape.iter().product())
            .map(|_| rng.between(lo, hi))
            .collect();
        tensors.insert(name, F32Tensor { shape, data });
    }
    fn batch_norm(tensors: &mut TensorMap, name: &str, channels: usize) {
        put(tensors, format!("{name}.weight"), vec![channels], 0.5, 1.5);
        put(tensors, format!("{name}.bias"), vec![channels], -0.2, 0.2);
        put(
            tensors,
            format!("{name}.running_mean"),
            vec![channels],
            -0.2,
            0.2,
        );
        put(
            tensors,
            format!("{name}.running_var"),
            vec![channels],
            0.5,
            1.5,
        );
    }
    let mut tensors = TensorMap::new();
    // Parameters.
    for node in &graph.nodes {
        let (w_shape, bias, epilogue) = match &node.op {
            Op::Conv2d {
                filters,
                kernel,
                in_channels,
                groups,
                bias,
                epilogue,
                ..
            } => (
                vec![*filters, in_channels / groups, *kernel, *kernel],
                *bias,
                epilogue,
            ),
            Op::Dense {
                units,
                in_features,
                bias,
                epilogue,
            } => (vec![*units, *in_features], *bias, epilogue),
            Op::BatchNorm { channels, .. } => {
                batch_norm(&mut tensors, &node.name, *channels);
                continue;
            }
            Op::Input
            | Op::Relu
            | Op::Relu6
            | Op::Hardswish
            | Op::Hardsigmoid
            | Op::Sigmoid
            | Op::MaxPool2d { .. }
            | Op::AvgPool2d { .. }
            | Op::GlobalAvgPool
            | Op::Flatten
            | Op::Reshape { .. }
            | Op::Add { .. }
            | Op::Mul
            | Op::Concat { .. }
            | Op::Dropout { .. }
            | Op::Softmax { .. }
            | Op::Pad { .. }
            | Op::FakeQuant { .. } => continue,
        };
        let out = w_shape[0];
        if let Some(bn) = &epilogue.batch_norm {
            batch_norm(&mut tensors, &bn.name, out);
        }
        // Uniform with variance 1 / fan_in: values keep their size through the layers.
        let bound = (3.0 / w_shape[1..].iter().product::<usize>() as f32).sqrt();
        let name = &node.name;
        put(
            &mut tensors,
            format!("{name}.weight"),
            w_shape,
            -bound,
            bound,
        );
        if bias {
            put(&mut tensors, format!("{name}.bias"), vec![out], -0.1, 0.1);
        }
    }
    // Activation ranges: what each value can hold decides the shape of its range.
    #[derive(Clone, Copy, PartialEq)]
    enum Sign {
        Pixels,
        Relu6,
        NonNegative,
        Signed,
    }
    let mut sign = vec![Sign::Signed; graph.nodes.len()];
    for id in graph.ids() {
        let node = graph.node(id);
        let inputs_nonnegative = node.inputs.iter().all(|i| sign[i.index()] != Sign::Signed);
        let activation = |a: &Option<Activation>| match a {
            Some(Activation::Relu6) => Sign::Relu6,
            Some(Activation::Relu) => Sign::NonNegative,
            None => Sign::Signed,
        };
        sign[id.index()] = match &node.op {
            Op::Input => Sign::Pixels,
            Op::Relu6 => Sign::Relu6,
            Op::Relu | Op::Sigmoid | Op::Hardsigmoid | Op::Softmax { .. } => Sign::NonNegative,
            Op::Conv2d { epilogue, .. } | Op::Dense { epilogue, .. } => {
                activation(&epilogue.activation)
            }
            Op::Add {
                activation: fused @ Some(_),
            } => activation(fused),
            Op::MaxPool2d { .. }
            | Op::AvgPool2d { .. }
            | Op::Flatten
            | Op::Reshape { .. }
            | Op::Dropout { .. }
            | Op::Pad { .. }
            | Op::FakeQuant { .. } => sign[node.inputs[0].index()],
            Op::GlobalAvgPool | Op::Add { .. } | Op::Mul | Op::Concat { .. }
                if inputs_nonnegative =>
            {
                Sign::NonNegative
            }
            Op::GlobalAvgPool
            | Op::Add { .. }
            | Op::Mul
            | Op::Concat { .. }
            | Op::BatchNorm { .. }
            | Op::Hardswish => Sign::Signed,
        };
    }
    let shared = passes::range_sources(graph);
    for id in graph.ids() {
        let node = graph.node(id);
        if !matches!(node.op, Op::FakeQuant { .. }) {
            continue;
        }
        let source = graph.node(shared[id.index()]);
        let mut rng = SplitMix64::named(&format!("{}.range", source.name));
        let (min, max) = match sign[shared[id.index()].index()] {
            Sign::Pixels => (0.0, 1.0),
            Sign::Relu6 => (0.0, 6.0),
            Sign::NonNegative => (0.0, rng.between(1.0, 4.0)),
            Sign::Signed => (-rng.between(1.0, 4.0), rng.between(1.0, 4.0)),
        };
        let scalar = |v: f32| F32Tensor {
            shape: vec![1],
            data: vec![v],
        };
        tensors.insert(format!("{}.min", node.name), scalar(min));
        tensors.insert(format!("{}.max", node.name), scalar(max));
    }
    tensors
}

/// Name, dtype, shape and an FNV-1a digest of the values of every integer tensor:
/// `lower::graph::text` shows only shapes, and the weights must not change unnoticed.
fn tensor_digests(tensors: &IntTensors) -> String {
    let mut out = String::new();
    for (name, tensor) in tensors {
        let bytes: Vec<u8> = match tensor {
            IntTensor::I8 { data, .. } => data.iter().map(|&v| v as u8).collect(),
            IntTensor::I32 { data, .. } => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        let _ = writeln!(
            out,
            "  {name}: {}{:?} fnv1a64={:016x}",
            tensor.dtype(),
            tensor.shape(),
            fnv1a64(&bytes)
        );
    }
    out
}

/// Every stage of one model, in sections.
fn stages(graph: Graph) -> String {
    let mut out = String::new();
    for (name, stage) in [
        ("parsed", Stage::Parsed),
        ("fused", Stage::Fused),
        ("quantized", Stage::Quantized),
    ] {
        let _ = writeln!(out, "=== stage {name}");
        out.push_str(&dump::text(&passes::run(graph.clone(), stage)));
        out.push('\n');
    }
    let quantized = passes::run(graph, Stage::Quantized);
    let tensors = synthetic_trained_tensors(&quantized);
    out.push_str("=== int8 graph (synthetic parameters)\n");
    let int8 = match lower::lower(&quantized, &tensors, None) {
        Ok(lowered) => lowered,
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
            return out;
        }
    };
    out.push_str(&qatc::int8::text(int8.graph(), int8.tensors()));
    out.push_str("\n=== int8 tensors\n");
    out.push_str(&tensor_digests(int8.tensors()));
    out.push_str("\n=== int8 runtime output on a synthetic input\n");
    let model = qatc::runtime::Model::new(&int8);
    let mut rng = SplitMix64::named("input");
    let x: Vec<f32> = (0..model.input_len()).map(|_| rng.uniform()).collect();
    // One image on one thread, and shared out over three threads (rows of each layer
    // computed in parallel): the same integers.
    let on_threads = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| model.run(&x).map_err(|e| e.to_string()))
    };
    assert_eq!(
        on_threads(1),
        on_threads(3),
        "thread count changed the output"
    );
    match model.run(&x) {
        Ok(y) => {
            let _ = writeln!(out, "{y:?}");
        }
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
        }
    }
    out.push_str("\n=== tflite\n");
    let bytes = match qatc::export::tflite::to_bytes(&int8) {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
            return out;
        }
    };
    let _ = writeln!(
        out,
        "{} bytes, fnv1a64={:016x}",
        bytes.len(),
        fnv1a64(&bytes)
    );
    match qatc::export::tflite::read(&bytes) {
        Ok(model) => out.push_str(&qatc::export::tflite::text(&model)),
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
        }
    }
    out
}

/// `tests/stages/<path from the root, '/' as '.'>.<model>[.<bits>].txt`.
fn golden_name(path: &Path, model: &str, bits: Option<&str>) -> String {
    let relative = path
        .strip_prefix(root())
        .expect("inputs are under the root");
    let stem = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_str().expect("UTF-8 path"))
        .collect::<Vec<_>>()
        .join(".");
    match bits {
        Some(bits) => format!("{stem}.{model}.{bits}.txt"),
        None => format!("{stem}.{model}.txt"),
    }
}

/// The first differing line and a few after it, numbered.
fn first_difference(expected: &str, got: &str) -> String {
    let (e, g): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), got.lines().collect());
    let at = e
        .iter()
        .zip(&g)
        .position(|(a, b)| a != b)
        .unwrap_or(e.len().min(g.len()));
    let show = |lines: &[&str]| {
        lines
            .iter()
            .enumerate()
            .skip(at)
            .take(6)
            .map(|(i, l)| format!("    {:>4} | {l}\n", i + 1))
            .collect::<String>()
    };
    format!(
        "  first difference at line {}\n  expected:\n{}  got:\n{}",
        at + 1,
        show(&e),
        show(&g)
    )
}

#[test]
fn every_model_at_every_stage_matches_its_golden_dump() {
    let dir = root().join("tests/stages");
    let bless = std::env::var_os("QATC_BLESS").is_some();
    let mut produced = Vec::new();
    let mut failures = Vec::new();
    let inputs = inputs();
    assert!(!inputs.is_empty(), "no .qat inputs found");
    for (path, bits) in &inputs {
        let text = std::fs::read_to_string(path).expect("readable input");
        let checked = qatc::check_source(&SourceFile::new(path.display().to_string(), text));
        assert!(
            !checked.has_errors(),
            "{}: {:?}",
            path.display(),
            checked.diagnostics
        );
        assert!(!checked.graphs.is_empty(), "{}: no models", path.display());
        for mut graph in checked.graphs {
            if let Some(bits) = bits {
                let widths: BitWidths = bits.parse().expect("valid bit widths");
                passes::override_default_bits(&mut graph, checked.defaults, widths);
            }
            let name = golden_name(path, &graph.name, *bits);
            let got = stages(graph);
            let golden = dir.join(&name);
            produced.push(name.clone());
            if bless {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&golden, &got).unwrap();
                continue;
            }
            match std::fs::read_to_string(&golden) {
                Ok(expected) if expected == got => {}
                Ok(expected) => failures.push(format!(
                    "tests/stages/{name} differs\n{}",
                    first_difference(&expected, &got)
                )),
                Err(_) => failures.push(format!(
                    "tests/stages/{name} is missing; create it with QATC_BLESS=1 cargo test --release --locked --test stages"
                )),
            }
        }
    }
    // Goldens no input produces any more: removed when blessing, else an error.
    let existing: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .map(|e| e.expect("readable directory").file_name())
                .filter_map(|n| n.to_str().map(str::to_string))
                .filter(|n| n.ends_with(".txt"))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !existing.is_empty(),
        "{} holds no golden dumps; create them with QATC_BLESS=1 cargo test --release --locked --test stages",
        dir.display()
    );
    for stale in existing.iter().filter(|n| !produced.contains(n)) {
        if bless {
            std::fs::remove_file(dir.join(stale)).unwrap();
        } else {
            failures.push(format!(
                "tests/stages/{stale} belongs to no model; remove it (QATC_BLESS=1 does)"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden stage dumps differ (after an intended change: QATC_BLESS=1 cargo test --release --locked --test stages, then review the diff):\n{}",
        failures.len(),
        produced.len(),
        failures.join("\n")
    );
}

/// `qatc graph --emit dot` of the quantized graph, with its block-call clusters, for
/// the examples that call blocks (one of them binds two calls to the same name).
/// Goldens in tests/dot/; bless as above.
#[test]
fn dot_graphs_with_block_clusters_match_their_goldens() {
    let bless = std::env::var_os("QATC_BLESS").is_some();
    let mut failures = Vec::new();
    for (file, model) in [
        ("examples/fashion/resnet.qat", "FashionResNet"),
        ("examples/fashion/se.qat", "FashionSE"),
        ("examples/fashion/mobilenet.qat", "FashionMobileNet"),
    ] {
        let path = root().join(file);
        let source = SourceFile::new(file, std::fs::read_to_string(&path).unwrap());
        let checked = qatc::check_source(&source);
        assert!(!checked.has_errors(), "{file}: {:?}", checked.diagnostics);
        let graph = checked
            .graphs
            .into_iter()
            .find(|g| g.name == model)
            .unwrap();
        let calls = graph.blocks.len();
        assert!(calls > 0, "{file} calls blocks");
        let dot = dump::dot(&passes::run(graph, Stage::Quantized));
        // One cluster per block call.
        assert_eq!(dot.matches("subgraph cluster_").count(), calls, "{file}");
        let golden = root().join("tests/dot").join(format!("{model}.dot"));
        if bless {
            std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
            std::fs::write(&golden, &dot).unwrap();
        } else if std::fs::read_to_string(&golden).ok().as_deref() != Some(dot.as_str()) {
            failures.push(golden.display().to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "dot graphs differ from (or lack) their goldens: {failures:?}; after an intended change: QATC_BLESS=1 cargo test --release --locked --test stages"
    );
}
