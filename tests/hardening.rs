//! Hostile inputs to the front end (`check`, `fmt`, `graph`) and `run --threads`: one test
//! per class of failure: crash (stack overflow), hang (quadratic or exponential work),
//! exhaustion (memory), silent drop (a model vanishes), bad message (wrong limit, an
//! error that names no file, a batch that stops early). Tests assert on diagnostics;
//! the time guard only catches a hang and is far above what a loaded machine needs.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::Duration;

use qatc::diagnostics::{Diagnostic, SourceFile};

/// Runs `f` on a thread with the default (2 MiB) stack; fails if it takes longer than `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("did not finish within {limit:?} (or panicked)"))
}

const GUARD: Duration = Duration::from_secs(20);

fn diagnose(text: String) -> Vec<Diagnostic> {
    within(GUARD, move || qatc::diagnose(&text))
}

fn codes(diagnostics: &[Diagnostic]) -> Vec<&'static str> {
    diagnostics.iter().map(|d| d.code).collect()
}

fn qatc(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(common::qatc_bin())
        .current_dir(dir)
        .args(args)
        .output()
        .expect("qatc runs")
}

const MODEL: &str = "model M {\n    input x: f32[4]\n    let y = relu(x)\n    output y\n}\n";

// --- crash --------------------------------------------------------------------------

#[test]
fn crash_deeply_nested_expressions_and_annotations_are_e0023_not_a_stack_overflow() {
    for depth in [5_000, 20_000] {
        let text = format!(
            "model M {{\n    input x: f32[4]\n    let y = dense(x, units = {}1{})\n    output y\n}}\n",
            "f(".repeat(depth),
            ")".repeat(depth)
        );
        let d = diagnose(text.clone());
        assert_eq!(codes(&d), ["E0023"], "{depth} levels: {d:?}");
        assert!(
            d[0].message.contains("64"),
            "names the limit: {}",
            d[0].message
        );
        // The formatter parses the same text; it must refuse it the same way.
        let errors = within(GUARD, move || qatc::syntax::fmt::format(&text)).unwrap_err();
        assert_eq!(codes(&errors), ["E0023"]);
    }
    let annotation = format!(
        "model M {{\n    input x: f32[4]\n    @quant(weights = {}symmetric{})\n    let y = dense(x, units = 3)\n    output y\n}}\n",
        "int8(".repeat(5_000),
        ")".repeat(5_000)
    );
    assert_eq!(codes(&diagnose(annotation)), ["E0023"]);
    // Brackets in comments and strings do not count.
    let commented = format!(
        "// {}\n/* {} */\n{MODEL}",
        "(".repeat(1_000),
        "[".repeat(1_000)
    );
    assert!(diagnose(commented).is_empty());
    // 60 levels are within the limit: the value is wrong, not the nesting.
    let nested = format!(
        "model M {{\n    input x: f32[4]\n    let y = dense(x, units = {}1{})\n    output y\n}}\n",
        "[".repeat(60),
        "]".repeat(60)
    );
    assert_eq!(codes(&diagnose(nested)), ["E0006"]);
}

// --- hang ---------------------------------------------------------------------------

#[test]
fn hang_one_syntax_error_among_20000_items_is_recovered_in_linear_work() {
    // Re-parsing each item with the whole prefix as padding took minutes here.
    let mut text = String::new();
    for i in 0..20_000 {
        let call = if i == 3 || i == 19_000 {
            "relu(x("
        } else {
            "relu(x)"
        };
        text.push_str(&format!(
            "model M{i} {{\n    input x: f32[4]\n    let y = {call}\n    output y\n}}\n"
        ));
    }
    let file = SourceFile::new("many.qat", text.clone());
    let d = diagnose(text);
    let syntax: Vec<&Diagnostic> = d.iter().filter(|d| d.code == "E0001").collect();
    assert_eq!(syntax.len(), 2, "{:?}", codes(&d));
    // Each error is at the right place: the unclosed `(` on line 5 * i + 3 (0-based
    // 5 * i + 2), with `output y` on the next line as the place the parser gave up.
    let lines: Vec<usize> = syntax
        .iter()
        .map(|d| file.position(d.primary.span.start).0)
        .collect();
    assert_eq!(lines, [3 * 5 + 2, 19_000 * 5 + 2]);
    let gave_up: Vec<usize> = syntax
        .iter()
        .map(|d| file.position(d.secondary[0].span.start).0)
        .collect();
    assert_eq!(gave_up, [3 * 5 + 3, 19_000 * 5 + 3]);
}

#[test]
fn hang_block_fan_out_24_deep_is_e0024_not_an_exponential_graph() {
    let mut text = String::new();
    for i in 0..24 {
        text.push_str(&format!(
            "block b{i}(x: tensor) {{\n    let a = b{n}(x)\n    let c = b{n}(a)\n    output c\n}}\n",
            n = i + 1
        ));
    }
    text.push_str("block b24(x: tensor) {\n    let y = relu(x)\n    output y\n}\n");
    text.push_str("model M {\n    input x: f32[4]\n    let y = b0(x)\n    output y\n}\n");
    let d = diagnose(text);
    assert_eq!(codes(&d), ["E0024"]);
    assert!(d[0].message.contains("100000"), "{}", d[0].message);
}

#[test]
fn hang_many_models_each_under_the_limit_share_one_inlining_budget() {
    // Found by tests/fuzz.rs: 150 models of 4,096 inlined statements each took 20 s.
    let mut text = String::new();
    for i in 0..12 {
        text.push_str(&format!(
            "block b{i}(x: tensor) {{\n    let a = b{n}(x)\n    let c = b{n}(a)\n    output c\n}}\n",
            n = i + 1
        ));
    }
    text.push_str("block b12(x: tensor) {\n    let y = relu(x)\n    output y\n}\n");
    for m in 0..150 {
        text.push_str(&format!(
            "model M{m} {{\n    input x: f32[4]\n    let y = b0(x)\n    output y\n}}\n"
        ));
    }
    let checked = within(GUARD, move || {
        qatc::check_source(&SourceFile::new("many.qat", text))
    });
    let built = checked.graphs.len();
    assert!(built < 30, "{built} models of 4,097 nodes were built");
    // Every model that was not built says why.
    let refused = codes(&checked.diagnostics)
        .iter()
        .filter(|c| **c == "E0024")
        .count();
    assert_eq!(built + refused, 150);
}

#[test]
fn hang_graph_passes_are_linear_on_large_graphs() {
    // Found by tests/fuzz.rs: `qatc graph --stage quantized` on 16,000 nodes took 24 s
    // (a fake-quant inserted one at a time, a fusion found by a new scan each time).
    let mut text = String::from(
        "model Deep {\n    input v: f32[4]\n    let x = dense(v, units = 4)\n    let x = relu(x)\n",
    );
    for _ in 1..20_000 {
        text.push_str("    let x = dense(x, units = 4)\n    let x = relu(x)\n");
    }
    text.push_str("    output x\n}\n");
    let (fused, quantized) = within(GUARD, move || {
        let mut checked = qatc::check_source(&SourceFile::new("deep.qat", text));
        assert!(!checked.has_errors());
        let graph = checked.graphs.pop().unwrap();
        let fused = qatc::passes::run(graph.clone(), qatc::passes::Stage::Fused);
        let quantized = qatc::passes::run(graph, qatc::passes::Stage::Quantized);
        (fused, quantized)
    });
    // Every relu fused into its dense; one fake-quant after the input and after each dense.
    assert_eq!(fused.nodes.len(), 1 + 20_000);
    assert_eq!(quantized.nodes.len(), 2 * (1 + 20_000));
    assert!(quantized.nodes[quantized.output.index()]
        .name
        .ends_with(".fq"));
}

// --- exhaustion ---------------------------------------------------------------------

#[test]
fn exhaustion_use_of_an_endless_file_is_e0028() {
    let text = format!("use \"/dev/zero\"\n{MODEL}");
    let d = diagnose(text);
    assert_eq!(codes(&d), ["E0028"]);
    assert!(d[0].primary.message.contains("4.0 MiB"), "{d:?}");
}

#[test]
fn exhaustion_shapes_too_large_to_train_are_refused_at_check() {
    let cases = [
        // A million filters: 49 billion values per sample.
        (
            "input x: f32[3, 224, 224]\n    let y = conv2d(x, filters = 1000000, kernel = 3)",
            "E0025",
        ),
        // 10^12 weights.
        (
            "input x: f32[1000000]\n    let y = dense(x, units = 1000000)",
            "E0026",
        ),
        // Padding of 10^6 on each side.
        (
            "input x: f32[3, 28, 28]\n    let y = pad(x, size = 1000000)",
            "E0025",
        ),
        // An input of 2^30 values per sample.
        (
            "input x: f32[1024, 1024, 1024]\n    let y = relu(x)",
            "E0025",
        ),
    ];
    for (body, code) in cases {
        let text = format!("model M {{\n    {body}\n    output y\n}}\n");
        let d = diagnose(text);
        assert_eq!(codes(&d), [code], "{body}: {d:?}");
    }
    // Five layers of 67 million weights: each fits, the model does not.
    let mut layers =
        String::from("model M {\n    input v: f32[8192]\n    let h = dense(v, units = 8192)\n");
    for _ in 0..4 {
        layers.push_str("    let h = dense(h, units = 8192)\n");
    }
    layers.push_str("    output h\n}\n");
    assert_eq!(codes(&diagnose(layers)), ["E0026"]);
}

// --- silent drop --------------------------------------------------------------------

#[test]
fn silent_drop_block_calls_nested_past_64_are_e0023_not_a_vanished_model() {
    let mut text = String::new();
    for i in 0..70 {
        text.push_str(&format!(
            "block c{i}(x: tensor) {{\n    let a = c{}(x)\n    output a\n}}\n",
            i + 1
        ));
    }
    text.push_str("block c70(x: tensor) {\n    let y = relu(x)\n    output y\n}\n");
    text.push_str("model M {\n    input x: f32[4]\n    let y = c0(x)\n    output y\n}\n");
    let d = diagnose(text);
    assert_eq!(codes(&d), ["E0023"]);
}

#[test]
fn silent_drop_block_int_arguments_are_checked_where_used_with_the_call_as_label() {
    let text = |value: &str, use_site: &str| {
        format!(
            "block unit(x: tensor, n: int) {{\n    let y = {use_site}\n    output y\n}}\n\
             model M {{\n    input x: f32[1, 28, 28]\n    let y = unit(x, n = {value})\n    output y\n}}\n"
        )
    };
    for (value, use_site) in [
        ("0", "conv2d(x, filters = n, kernel = 3)"),
        (
            "100000000000",
            "conv2d(x, filters = 4, kernel = 3, stride = n)",
        ),
    ] {
        let source = text(value, use_site);
        let d = diagnose(source.clone());
        assert_eq!(codes(&d), ["E0006"], "{value}: {d:?}");
        // Primary label at the use of `n` in the block, secondary at the call in the model.
        let n_at = source.find("= n").unwrap() + 2;
        assert_eq!(d[0].primary.span.start, n_at);
        let call_at = source.find("unit(x, n").unwrap();
        assert!(
            d[0].secondary.iter().any(|l| l.span.start == call_at),
            "call site labelled: {:?}",
            d[0].secondary
        );
    }
}

// --- bad message --------------------------------------------------------------------

#[test]
fn bad_message_argument_errors_state_the_real_limit() {
    let d = diagnose(
        "model M {\n    input x: f32[4]\n    let y = dense(x, units = 2000000)\n    output y\n}\n"
            .to_string(),
    );
    assert_eq!(codes(&d), ["E0006"]);
    assert!(
        d[0].primary.message.contains("1048576"),
        "{}",
        d[0].primary.message
    );
}

fn batch_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.qat"), MODEL).unwrap();
    std::fs::write(
        dir.path().join("c.qat"),
        MODEL.replace("model M", "model C"),
    )
    .unwrap();
    std::fs::write(dir.path().join("bad.qat"), b"model \xff\xfe M {}").unwrap();
    dir
}

#[test]
fn bad_message_check_reports_every_file_after_an_unreadable_one_and_fails_at_the_end() {
    let dir = batch_dir();
    let out = qatc(
        dir.path(),
        &["check", "a.qat", "MISSING.qat", "bad.qat", "c.qat"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stdout.contains("a.qat: ok") && stdout.contains("c.qat: ok"),
        "{stdout}"
    );
    assert!(stderr.contains("MISSING.qat"), "{stderr}");
    assert!(stderr.contains("bad.qat is not UTF-8"), "{stderr}");
}

#[test]
fn bad_message_json_mode_prints_only_json_naming_each_file() {
    let dir = batch_dir();
    let out = qatc(
        dir.path(),
        &[
            "check",
            "--message-format",
            "json",
            "MISSING.qat",
            "bad.qat",
            "a.qat",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let files: Vec<String> = stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("every line is JSON");
            v["file"].as_str().expect("names its file").to_string()
        })
        .collect();
    assert_eq!(files, ["MISSING.qat", "bad.qat"]);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_message_fmt_formats_every_file_after_an_unreadable_one_and_fails_at_the_end() {
    let dir = batch_dir();
    std::fs::write(dir.path().join("c.qat"), MODEL.replace("    ", "  ")).unwrap();
    let out = qatc(dir.path(), &["fmt", "MISSING.qat", "bad.qat", "c.qat"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("MISSING.qat") && stderr.contains("bad.qat"),
        "{stderr}"
    );
    // c.qat came after both and was still formatted.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("c.qat")).unwrap(),
        MODEL
    );
}

#[test]
fn exhaustion_run_refuses_thread_counts_far_above_the_cores() {
    let dir = tempfile::tempdir().unwrap();
    let out = qatc(
        dir.path(),
        &[
            "run",
            "--threads",
            "100000",
            "--images",
            "none.idx",
            "no-artifact",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--threads 100000 is too many"),
        "refused before reading anything: {stderr}"
    );
}

#[test]
fn exhaustion_build_refuses_a_model_whose_training_batch_would_not_fit() {
    let ui = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let dir = tempfile::tempdir().unwrap();
    for ext in ["qat", "yaml"] {
        let name = format!("limit_training_memory.{ext}");
        std::fs::copy(ui.join(&name), dir.path().join(&name)).unwrap();
    }
    let out = qatc(dir.path(), &["build", "limit_training_memory.qat"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error[E0027]"), "{stderr}");
    assert!(
        stderr.contains("limit_training_memory.qat:5:13"),
        "located: {stderr}"
    );
    assert!(!dir.path().join("build").exists(), "nothing was built");
}

#[test]
fn crash_a_closed_stdout_ends_quietly_not_with_a_panic() {
    // `qatc graph big.qat | head -1`: the reader goes away while qatc still writes.
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("model Long {\n    input v: f32[4]\n    let x = relu(v)\n");
    for _ in 0..20_000 {
        text.push_str("    let x = relu(x)\n");
    }
    text.push_str("    output x\n}\n");
    std::fs::write(dir.path().join("long.qat"), text).unwrap();
    let mut child = Command::new(common::qatc_bin())
        .current_dir(dir.path())
        .args(["graph", "long.qat"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("qatc runs");
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
}

#[test]
fn crash_import_chains_deeper_than_64_are_e0023() {
    // Loading imports recurses once per file of the chain.
    let dir = tempfile::tempdir().unwrap();
    for i in 0..80 {
        let body = if i == 79 {
            "block leaf(x: tensor) {\n    let y = relu(x)\n    output y\n}\n".to_string()
        } else {
            format!("use \"f{}.qat\"\n", i + 1)
        };
        std::fs::write(dir.path().join(format!("f{i}.qat")), body).unwrap();
    }
    let main = format!("use \"f0.qat\"\n{MODEL}");
    std::fs::write(dir.path().join("main.qat"), &main).unwrap();
    let path = dir.path().join("main.qat");
    let checked = within(GUARD, move || {
        qatc::check_source(&SourceFile::new(path.display().to_string(), main))
    });
    // The chain breaks at its 65th link, which makes every file above it fail to import.
    assert_eq!(codes(&checked.diagnostics), ["E0017"]);
    let note = checked.diagnostics[0].notes.join(" ");
    assert!(note.contains("imports nest more than 64 deep"), "{note}");
}

#[test]
fn bad_message_a_200_kb_line_is_shown_cut_around_the_error_with_its_true_column() {
    let dir = tempfile::tempdir().unwrap();
    let padding = " ".repeat(200_000);
    let text = format!(
        "model M {{\n    input image: f32[1, 28, 28]\n    let x = flatten(image)\n    let y = dense(x, units = 10,{padding}foo = 3)\n    output y\n}}\n"
    );
    std::fs::write(dir.path().join("long.qat"), &text).unwrap();
    let out = qatc(dir.path(), &["check", "long.qat"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.len() < 2_000, "echoed {} bytes", stderr.len());
    let column = text.lines().nth(3).unwrap().find("foo").unwrap() + 1;
    assert!(stderr.contains(&format!("long.qat:4:{column}")), "{stderr}");
    assert!(
        stderr.contains("…") && stderr.contains("foo = 3)"),
        "{stderr}"
    );
    assert!(stderr.contains("^^^ unknown argument"), "{stderr}");
}
