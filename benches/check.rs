//! Not a test: reports how long `qatc check` takes on generated models of growing
//! size, and how long the language server takes to answer on 2,000- and 20,000-line
//! files (diagnostics after an edit, outline, completion, inlay hints).
//! Run with `cargo bench --no-default-features --bench check`; without `--bench`
//! (as `make test` runs it) it measures the 2,000-line file only.

use std::time::{Duration, Instant};

use lsp_server::{Message, Notification, Request, RequestId};
use qatc::diagnostics::SourceFile;
use serde_json::{json, Value};

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

/// The best of `runs` timings of `f`.
fn best(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// The in-process language server with one open document, as `qatc lsp` runs it.
struct Session {
    server: qatc::lsp::Server,
    next_id: i32,
}

const URI: &str = "file:///tmp/qatc-bench/big.qat";

impl Session {
    fn notify(&mut self, method: &str, params: Value) -> Vec<Message> {
        self.server.handle(Message::Notification(Notification::new(
            method.into(),
            params,
        )))
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = RequestId::from(self.next_id);
        let out = self
            .server
            .handle(Message::Request(Request::new(id, method.into(), params)));
        match out.into_iter().next() {
            Some(Message::Response(r)) => r.result.expect("the request succeeds"),
            other => panic!("no response: {other:?}"),
        }
    }
}

/// Milliseconds per answer of the language server on a `lines`-line model.
fn language_server(lines: usize, runs: usize) {
    let text = model(lines - 4);
    let edited = text.replacen("units = 32", "units = 33", 1);
    let mut s = Session {
        server: qatc::lsp::Server::default(),
        next_id: 0,
    };
    let published = s.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": URI, "languageId": "qat", "version": 1, "text": text}}),
    );
    assert_eq!(published.len(), 1, "one publishDiagnostics");
    let mut version = 1;
    let diagnostics = best(runs, || {
        version += 1;
        let text = if version % 2 == 0 { &edited } else { &text };
        let out = s.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": URI, "version": version}, "contentChanges": [{"text": text}]}),
        );
        assert_eq!(out.len(), 1);
    });
    let outline = best(runs, || {
        let symbols = s.request(
            "textDocument/documentSymbol",
            json!({"textDocument": {"uri": URI}}),
        );
        assert_eq!(
            symbols[0]["children"].as_array().map(Vec::len),
            Some(lines - 3)
        );
    });
    let end = json!({"line": lines - 2, "character": 4});
    let completion = best(runs, || {
        let items = s.request(
            "textDocument/completion",
            json!({"textDocument": {"uri": URI}, "position": end}),
        );
        assert!(!items.as_array().expect("a list").is_empty());
    });
    let hints = best(runs, || {
        let hints = s.request(
            "textDocument/inlayHint",
            json!({"textDocument": {"uri": URI}, "range": {"start": {"line": 0, "character": 0}, "end": end}}),
        );
        assert_eq!(hints.as_array().map(Vec::len), Some(lines - 4));
    });
    let parse = best(runs, || {
        let (file, errors) = qatc::syntax::parse(&text);
        assert!(errors.is_empty() && !file.items.is_empty());
    });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "  {lines:>6} lines: diagnostics after an edit {:>7.2} ms (parsing alone {:>6.2} ms), outline {:>6.2} ms, completion {:>6.2} ms, inlay hints {:>6.2} ms",
        ms(diagnostics),
        ms(parse),
        ms(outline),
        ms(completion),
        ms(hints)
    );
}

/// The load average, so that a slow run on a busy machine can be told from a regression.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".to_string(),
        |l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

fn main() {
    println!("load average (1, 5, 15 min): {}", load_average());
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
    // Cargo passes `--bench` to benchmarks; `cargo test` runs them without it.
    let full = std::env::args().any(|a| a == "--bench");
    println!("language server (`qatc lsp` in process), best of 5:");
    language_server(2_000, 5);
    if full {
        language_server(20_000, 5);
    }
    println!("load average (1, 5, 15 min): {}", load_average());
}
