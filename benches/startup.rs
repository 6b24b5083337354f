//! Not a test: how long whole `qatc` processes take for the commands that need no
//! libtorch (what editors, pre-commit hooks and scripts pay on every call), against the same
//! commands run by `qatc-train`, which links libtorch — measured in the same run,
//! interleaved. `cargo bench --bench startup` takes the median of 20 runs of each; without
//! `--bench` (as `make test` runs it) 3 runs each.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// An editor's shortest session: initialize, initialized, shutdown, exit.
fn lsp_session() -> String {
    [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"capabilities":{}}}"#,
        r#"{"jsonrpc":"2.0","method":"initialized","params":{}}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"shutdown"}"#,
        r#"{"jsonrpc":"2.0","method":"exit"}"#,
    ]
    .iter()
    .map(|m| format!("Content-Length: {}\r\n\r\n{m}", m.len()))
    .collect()
}

/// One whole process: start, work, exit.
fn once(binary: &Path, args: &[&str], stdin: Option<&str>) -> Duration {
    let start = Instant::now();
    let mut child = Command::new(binary)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    if let Some(text) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(text.as_bytes())
            .expect("the server reads stdin");
    }
    let status = child.wait().expect("the process ends");
    let took = start.elapsed();
    assert!(status.success(), "{} {args:?}: {status}", binary.display());
    took
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runs = if full { 20 } else { 3 };
    let qatc = common::qatc_bin();
    let train: PathBuf = env!("CARGO_BIN_EXE_qatc-train").into();
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/fashion/cnn.qat");
    let session = lsp_session();
    let commands: [(&str, Vec<&str>, Option<&str>); 6] = [
        ("--version", vec!["--version"], None),
        ("check", vec!["check", model], None),
        ("fmt --check", vec!["fmt", "--check", model], None),
        (
            "graph --stage quantized",
            vec!["graph", model, "--stage", "quantized"],
            None,
        ),
        ("explain E0015", vec!["explain", "E0015"], None),
        ("lsp (initialize, shutdown)", vec!["lsp"], Some(&session)),
    ];
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "whole-process time, median of {runs} (min-max), interleaved; load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "{:<28} {:>18} {:>22} {:>8}",
        "command", "qatc ms", "qatc-train ms", "ratio"
    );
    for (name, args, stdin) in &commands {
        let (mut light, mut heavy) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            light.push(once(&qatc, args, *stdin));
            heavy.push(once(&train, args, *stdin));
        }
        let spread = |xs: &[Duration]| {
            format!(
                "{}-{}",
                ms(*xs.iter().min().expect("runs")),
                ms(*xs.iter().max().expect("runs"))
            )
        };
        let (l, h) = (median(light.clone()), median(heavy.clone()));
        println!(
            "{:<28} {:>6} ({:>11}) {:>6} ({:>13}) {:>7.0}x",
            name,
            ms(l),
            spread(&light),
            ms(h),
            spread(&heavy),
            h.as_secs_f64() / l.as_secs_f64()
        );
    }
}
