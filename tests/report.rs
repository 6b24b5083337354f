#![cfg(feature = "train")]
//! report.html: written beside report.json by every build, self-contained, and
//! rendered by a real headless browser (Debian's `chromium`) when one is installed;
//! `qatc report` combines several builds into one comparison page.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{data_dir, qatc_ok};

fn tiny_build(dir: &Path) -> PathBuf {
    let recipe = dir.join("recipe.yaml");
    std::fs::write(
        &recipe,
        format!(
            "data:\n  dir: {}\n  train_limit: 300\n  test_limit: 100\ntrain:\n  epochs: 2\n  learning_rate: 0.002\n  seed: 5\nqat:\n  epochs: 1\n  learning_rate: 0.0002\nptq:\n  calibration_samples: 100\n",
            data_dir().display()
        ),
    )
    .unwrap();
    let out = dir.join("w8a8");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fashion/cnn.qat");
    qatc_ok(&[
        "build",
        model.to_str().unwrap(),
        "--recipe",
        recipe.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "-q",
    ]);
    out
}

/// The node names of a model file's quantized graph, as `qatc graph` lists them.
fn quantized_node_names(model: &str) -> Vec<String> {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join(model);
    let json: serde_json::Value =
        serde_json::from_str(&qatc_ok(&["graph", model.to_str().unwrap(), "--emit", "json"]).0)
            .unwrap();
    let names: Vec<String> = json["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.len() > 5);
    names
}

/// Nothing on the page is fetched: no scripts, stylesheets, images or frames by URL.
fn assert_self_contained(html: &str) {
    for forbidden in ["<script", "<link", "<img", "<iframe", "src=", "@import"] {
        assert!(
            !html.contains(forbidden),
            "report.html contains {forbidden:?}"
        );
    }
    // References stay inside the page (the graph's arrow heads and edge paths).
    for reference in ["href=\"", "url("] {
        for (at, _) in html.match_indices(reference) {
            let target = &html[at + reference.len()..];
            assert!(
                target.starts_with('#'),
                "report.html refers outside itself: {}",
                &target[..target.len().min(60)]
            );
        }
    }
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
}

/// The headless browser, if this machine has one.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// The DOM after the browser loaded the page, and the size of its screenshot in bytes.
fn render(browser: &str, page: &Path, dir: &Path) -> (String, u64) {
    let url = format!("file://{}", page.display());
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
    ];
    let dom = Command::new(browser)
        .args(args)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("the browser runs");
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let shot = dir.join("shot.png");
    let run = Command::new(browser)
        .args(args)
        .arg("--window-size=1000,1400")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .expect("the browser runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let size = std::fs::metadata(&shot).map_or(0, |m| m.len());
    (String::from_utf8_lossy(&dom.stdout).into_owned(), size)
}

#[test]
fn build_writes_a_self_contained_report_html_that_a_browser_renders() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tiny_build(tmp.path());
    let report: qatc::report::Report =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(
        report.artifacts.html.as_deref(),
        Some(out.join("report.html").to_str().unwrap())
    );
    assert_self_contained(&html);
    // The accuracy bars, the loss and the per-epoch accuracy curves, the graph.
    assert_eq!(html.matches("<svg").count(), 4, "{html}");
    for id in [
        "accuracies",
        "accuracy",
        "loss",
        "val-accuracy",
        "confusion",
        "history",
        "graph",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "no #{id}");
    }
    // Every stage's accuracy, as the table and the bars (SVG text) show it.
    let one_line = html.replace('\n', "");
    for (_, stage) in report.stages() {
        assert!(html.contains(&format!("{:.2}%", stage.accuracy * 100.0)));
        assert!(one_line.contains(&format!(">{:.2}</text>", stage.accuracy * 100.0)));
    }
    // The confusion matrix counts every test image once.
    let confusion = report.confusion.as_ref().unwrap();
    assert_eq!(confusion.iter().flatten().sum::<u64>(), 100);

    let Some(browser) = chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no chromium: `make test` installs it (scripts/setup-chromium.sh); under CI=true it is required"
        );
        eprintln!("no chromium on this machine: checked report.html's structure only");
        return;
    };
    let (dom, screenshot) = render(browser, &out.join("report.html"), tmp.path());
    assert!(dom.contains("<svg"), "{dom}");
    // The picture of the quantized graph has a shape for every node.
    for name in quantized_node_names("examples/fashion/cnn.qat") {
        assert!(dom.contains(&format!("data-node=\"{name}\"")), "{name}");
    }
    for (_, stage) in report.stages() {
        assert!(
            dom.contains(&format!("{:.2}%", stage.accuracy * 100.0)),
            "{dom}"
        );
    }
    // A white page compresses to a few kilobytes; charts and tables do not.
    assert!(
        screenshot > 20_000,
        "screenshot of {screenshot} bytes looks blank"
    );
}

#[test]
fn report_command_compares_builds_on_one_page() {
    let tmp = tempfile::tempdir().unwrap();
    let base: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/report/report.json")).unwrap();
    let mut paths = Vec::new();
    for (i, quant) in ["w8a8", "w4a4", "w3a3", "w2a8"].iter().enumerate() {
        let mut r = base.clone();
        r["quant"] = (*quant).into();
        r["qat"]["accuracy"] = (0.85 - 0.03 * i as f64).into();
        let dir = tmp.path().join(quant);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("report.json");
        std::fs::write(&path, r.to_string()).unwrap();
        paths.push(path.display().to_string());
    }
    let page = tmp.path().join("compare.html");
    let mut args = vec!["report", "--out", page.to_str().unwrap()];
    args.extend(paths.iter().map(String::as_str));
    qatc_ok(&args);
    let html = std::fs::read_to_string(&page).unwrap();
    assert_self_contained(&html);
    assert_eq!(html.matches("<svg").count(), 1);
    for (i, quant) in ["w8a8", "w4a4", "w3a3", "w2a8"].iter().enumerate() {
        assert!(html.contains(&format!("<td>{quant}</td>")), "{quant}");
        assert!(html.contains(&format!("{:.2}%", (0.85 - 0.03 * i as f64) * 100.0)));
    }

    // A file that is not a report is named in the error.
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, "{}").unwrap();
    let run = common::qatc(&["report", bad.to_str().unwrap()]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("bad.json is not a qatc report.json"));
}
