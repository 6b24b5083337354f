//! Not a test: reports how long `qatc check` takes on generated models of growing
//! size, and the work the language server does per edit on a 2,000-line file.
//! Run with `cargo bench --no-default-features --bench check`.

use std::time::{Duration, Instant};

use qatc::diagnostics::SourceFile;

/// A model of `layers` dense+relu pairs (every `let` is one layer), all shadowing `x`.
fn model(layers: usize) -> String {
    let mut s = String::from("model Big {\n    input v: f32[32]\n");
    for i in 0..layers {
        if i % 2 == 0 {
            s.push_str(
                "    let x = dense(v, units = 32)\n"
                    .replace("(v,", if i == 0 { "(v," } else { "(x," })
                    .as_str(),
            );
        } else {
            s.push_str("    let x = relu(x)\n");
        }
    }
    s.push_str("    output x\n}\n");
    s
}

/// The best of a few runs, which is what a user sees on a quiet machine.
fn time(text: &str) -> Duration {
    let file = SourceFile::new("big.qat", text);
    (0..5)
        .map(|_| {
            let start = Instant::now();
            let checked = qatc::check_source(&file);
            assert!(!checked.has_errors());
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    println!("qatc check (parse + check + graph), best of 5:");
    let mut per_layer = Vec::new();
    for layers in [1_000, 10_000] {
        let d = time(&model(layers));
        per_layer.push(d.as_secs_f64() / layers as f64);
        println!("  {layers:>6} layers: {:>8.2} ms", d.as_secs_f64() * 1e3);
    }
    println!(
        "  growth: {:.2}x time per layer from 1,000 to 10,000 layers (1.00 = linear)",
        per_layer[1] / per_layer[0]
    );
    // ~2,000 lines: what `qatc lsp` re-checks on every change before publishing.
    let text = model(1_996);
    let lines = text.lines().count();
    println!(
        "language server, {lines}-line file, diagnostics per change: {:.2} ms",
        time(&text).as_secs_f64() * 1e3
    );
}
