//! A bounded, structure-aware mutation fuzzer over `check`, `fmt` and `graph`: seeds
//! are every `.qat` file under `examples/` and `tests/`; mutations add deep nesting,
//! huge and degenerate numbers, block fan-out and chains, spliced items and token
//! edits. Every input must finish without a panic, a stack overflow or a hang, and a
//! file without errors must keep all its models (no silent drop).
//!
//! `cargo test --release --test fuzz` runs a few hundred inputs (seconds). A longer run:
//! `QATC_FUZZ_ITERS=20000 QATC_FUZZ_SEED=7 cargo test --release --test fuzz -- --nocapture`.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qatc::diagnostics::SourceFile;
use qatc::passes::{self, Stage};

/// A small deterministic generator (xorshift64*), so a failure replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn seed_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            seed_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "qat") {
            out.push(p);
        }
    }
}

fn seeds() -> Vec<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    seed_files(&root.join("examples"), &mut files);
    seed_files(&root.join("tests"), &mut files);
    let texts: Vec<String> = files
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        // Keep the generated stress files out of the seeds: they are mutated in anyway.
        .filter(|t| t.len() < 64 * 1024)
        .collect();
    assert!(texts.len() > 20, "too few seeds: {}", texts.len());
    texts
}

fn boundary(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Byte ranges of the numbers in `text`.
fn numbers(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            out.push((start, i));
        } else {
            i += 1;
        }
    }
    out
}

const HUGE: &[&str] = &[
    "0",
    "1",
    "63",
    "65",
    "1048576",
    "1048577",
    "2000000",
    "1000000000000",
    "18446744073709551615",
    "99999999999999999999999999",
    "-1",
    "1e308",
    "0.0",
];

const TOKENS: &[&str] = &[
    "(", ")", "[", "]", "{", "}", ",", "=", ":", "@", "\"", "\n", "/*", "//", "let ", "model ",
    "block ", "use ", "output ", "input ", "x", "int", "tensor", "@float", "@quant(", "int8(",
];

/// One structure-aware mutation of `text`; `others` supplies items to splice in.
fn mutate(rng: &mut Rng, text: &str, others: &[String]) -> (String, &'static str) {
    let mut text = text.to_string();
    let kind = rng.below(8);
    let what = match kind {
        0 => {
            // Deep nesting around a number, a name or a whole argument.
            let depth = *rng.pick(&[10, 63, 64, 65, 200, 5_000, 20_000]);
            let open = *rng.pick(&["f(", "[", "int8(", "(", "{"]);
            let close = match open {
                "[" => "]",
                "{" => "}",
                _ => ")",
            };
            let at = boundary(&text, rng.below(text.len() + 1));
            let inner = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            text.insert_str(at, &inner);
            "deep nesting"
        }
        1 => {
            // Huge, zero or malformed numbers in place of existing ones.
            let spots = numbers(&text);
            for _ in 0..1 + rng.below(3) {
                if spots.is_empty() {
                    break;
                }
                let (s, e) = *rng.pick(&spots);
                let n = *rng.pick(HUGE);
                text.replace_range(s..e, &format!("{n:width$}", width = e - s));
                // Replacements keep later ranges valid only when the width is kept; stop after a longer one.
                if n.len() > e - s {
                    break;
                }
            }
            "huge numbers"
        }
        2 => {
            // Block fan-out: each level calls the next `width` times.
            let depth = 1 + rng.below(30);
            let width = 2 + rng.below(2);
            let mut s = String::new();
            for i in 0..depth {
                s.push_str(&format!(
                    "block fz{i}(x: tensor) {{\n    let a0 = fz{}(x)\n",
                    i + 1
                ));
                for w in 1..width {
                    s.push_str(&format!("    let a{w} = fz{}(a{})\n", i + 1, w - 1));
                }
                s.push_str(&format!("    output a{}\n}}\n", width - 1));
            }
            s.push_str(&format!(
                "block fz{depth}(x: tensor) {{\n    let y = relu(x)\n    output y\n}}\nmodel FanOut {{\n    input v: f32[8]\n    let y = fz0(v)\n    output y\n}}\n"
            ));
            text.push_str(&s);
            "block fan-out"
        }
        3 => {
            // A chain of blocks, some deeper than the inlining limit, with an int parameter.
            let depth = *rng.pick(&[3, 63, 64, 65, 300]);
            let n = *rng.pick(HUGE);
            let mut s = String::new();
            for i in 0..depth {
                s.push_str(&format!(
                    "block ch{i}(x: tensor, n: int) {{\n    let a = ch{}(x, n = n)\n    output a\n}}\n",
                    i + 1
                ));
            }
            s.push_str(&format!(
                "block ch{depth}(x: tensor, n: int) {{\n    let y = dense(x, units = n)\n    output y\n}}\nmodel Chain {{\n    input v: f32[8]\n    let y = ch0(v, n = {n})\n    output y\n}}\n"
            ));
            text.push_str(&s);
            "block chain"
        }
        4 => {
            // Splice a slice of another seed.
            let other = rng.pick(others);
            let a = boundary(other, rng.below(other.len() + 1));
            let b = boundary(other, a + rng.below(400));
            let at = boundary(&text, rng.below(text.len() + 1));
            text.insert_str(at, &other[a..b.max(a)]);
            "splice"
        }
        5 => {
            // Many copies of the last item: size and repetition.
            let at = text.rfind("\nmodel ").map_or(0, |i| i + 1);
            let item = text[at..].to_string();
            let copies = 1 + rng.below(200);
            for k in 0..copies {
                text.push_str(&item.replacen("model ", &format!("model Copy{k}_"), 1));
            }
            "repeated items"
        }
        6 => {
            // Delete a range.
            let a = boundary(&text, rng.below(text.len() + 1));
            let b = boundary(&text, a + rng.below(40));
            text.replace_range(a..b.max(a), "");
            "deletion"
        }
        _ => {
            // Token insertions.
            for _ in 0..1 + rng.below(4) {
                let at = boundary(&text, rng.below(text.len() + 1));
                let token = *rng.pick(TOKENS);
                text.insert_str(at, token);
            }
            "token edits"
        }
    };
    (text, what)
}

/// Everything `check`, `fmt` and `graph` do with a file; panics on any broken promise.
fn exercise(text: &str) {
    let file = SourceFile::new("fuzz.qat", text);
    let checked = qatc::check_source(&file);
    let _ = qatc::diagnostics::render_terminal(&file, &checked.diagnostics, false);
    if !checked.has_errors() {
        assert_eq!(
            checked.graphs.len(),
            checked.model_names.len(),
            "a model vanished without a diagnostic"
        );
        for graph in checked.graphs {
            let graph = passes::run(graph, Stage::Quantized);
            let _ = qatc::ir::dump::text(&graph);
            let _ = qatc::ir::dump::json(&graph);
        }
    }
    if let Ok(once) = qatc::syntax::fmt::format(text) {
        assert!(
            qatc::syntax::fmt::format(&once).is_ok(),
            "formatted text does not parse"
        );
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn structure_aware_mutations_never_crash_hang_or_drop_models() {
    let iterations = env_number("QATC_FUZZ_ITERS", 300);
    let seed = env_number("QATC_FUZZ_SEED", 0x5eed);
    // A hang is a failure: the work runs on its own thread, watched with a generous limit per input.
    let per_input = Duration::from_secs(20);
    let current: Arc<Mutex<(u64, &'static str, String)>> =
        Arc::new(Mutex::new((0, "", String::new())));
    let (progress, watch) = mpsc::channel::<Result<(), ()>>();
    let shared = Arc::clone(&current);
    let worker = std::thread::spawn(move || {
        let seeds = seeds();
        let mut rng = Rng(seed | 1);
        let mut stats = (0u64, 0u64);
        for i in 0..iterations {
            let base = rng.pick(&seeds).clone();
            let (mut text, mut what) = mutate(&mut rng, &base, &seeds);
            // Stack a second mutation on some inputs.
            if rng.below(3) == 0 {
                let (t, w) = mutate(&mut rng, &text, &seeds);
                text = t;
                what = w;
            }
            *shared.lock().unwrap() = (i, what, text.clone());
            exercise(&text);
            stats.0 += 1;
            stats.1 += text.len() as u64;
            if progress.send(Ok(())).is_err() {
                return stats;
            }
        }
        stats
    });
    let started = Instant::now();
    for _ in 0..iterations {
        match watch.recv_timeout(per_input) {
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let (i, what, text) = current.lock().unwrap().clone();
                let path = std::env::temp_dir().join(format!("qatc-fuzz-hang-{seed}-{i}.qat"));
                let _ = std::fs::write(&path, &text);
                panic!(
                    "input {i} ({what}) ran for more than {per_input:?}; saved to {}",
                    path.display()
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    match worker.join() {
        Ok((inputs, bytes)) => {
            assert_eq!(inputs, iterations);
            println!(
                "fuzz: {inputs} inputs ({} MB) from seed {seed} in {:.1} s, no failure",
                bytes / 1_000_000,
                started.elapsed().as_secs_f64()
            );
        }
        Err(panic) => {
            let (i, what, text) = current.lock().unwrap().clone();
            let path = std::env::temp_dir().join(format!("qatc-fuzz-{seed}-{i}.qat"));
            let _ = std::fs::write(&path, &text);
            panic!(
                "input {i} ({what}) failed: {:?}; saved to {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or(panic.downcast_ref::<&str>().copied()),
                path.display()
            );
        }
    }
}
