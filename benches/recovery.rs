//! Not a test: how long `qatc check` takes on files of many small items with a few
//! syntax errors, where the parser recovers item by item. Linear recovery keeps the
//! time per item flat as the file grows.
//! Run with `cargo bench --no-default-features --bench recovery`.

use std::time::{Duration, Instant};

use qatc::diagnostics::SourceFile;

/// `items` small models; every 1,000th has an unclosed call.
fn file(items: usize) -> String {
    let mut s = String::new();
    for i in 0..items {
        let call = if i % 1_000 == 500 {
            "relu(x("
        } else {
            "relu(x)"
        };
        s.push_str(&format!(
            "model M{i} {{\n    input x: f32[4]\n    let y = {call}\n    output y\n}}\n"
        ));
    }
    s
}

/// The best of a few runs, which is what a user sees on a quiet machine.
fn time(text: &str, errors: usize) -> Duration {
    let file = SourceFile::new("many.qat", text);
    (0..3)
        .map(|_| {
            let start = Instant::now();
            let checked = qatc::check_source(&file);
            let syntax = checked
                .diagnostics
                .iter()
                .filter(|d| d.code == qatc::codes::SYNTAX)
                .count();
            assert_eq!(syntax, errors);
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    println!("qatc check with syntax errors (parse, recovery, check), best of 3:");
    let mut per_item = Vec::new();
    for items in [1_000, 5_000] {
        let d = time(&file(items), items / 1_000);
        per_item.push(d.as_secs_f64() / items as f64);
        println!(
            "  {items:>6} items, {} errors: {:>8.2} ms",
            items / 1_000,
            d.as_secs_f64() * 1e3
        );
    }
    println!(
        "  growth: {:.2}x time per item from 1,000 to 5,000 items (1.00 = linear)",
        per_item[1] / per_item[0]
    );
}
