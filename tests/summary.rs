//! `qatc summary` goldens: the model summary of the examples, compared as text with
//! `tests/summary/<file>.<model>.txt`. After an intended change, regenerate with
//! `QATC_BLESS=1 cargo test --release --locked --test summary` and review the diff.

mod common;

use std::path::PathBuf;

use common::qatc_ok;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn golden(model: &str, extra: &[&str], golden: &str) {
    let path = root().join(model);
    let mut args = vec!["summary", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (stdout, _) = qatc_ok(&args);
    let golden = root().join("tests/summary").join(golden);
    if std::env::var_os("QATC_BLESS").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &stdout).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_else(|_| {
        panic!(
            "{} is missing; create it with QATC_BLESS=1",
            golden.display()
        )
    });
    assert_eq!(stdout, expected, "summary of {model} changed");
}

#[test]
fn seed_model_summary() {
    golden("examples/fashion/cnn.qat", &[], "cnn.FashionCnn.txt");
}

#[test]
fn seed_model_summary_at_w4a4() {
    golden(
        "examples/fashion/cnn.qat",
        &["--quant", "w4a4"],
        "cnn.FashionCnn.w4a4.txt",
    );
}

#[test]
fn resnet_summary() {
    golden(
        "examples/fashion/resnet.qat",
        &[],
        "resnet.FashionResNet.txt",
    );
}

#[test]
fn mobilenet_summary() {
    golden(
        "examples/fashion/mobilenet.qat",
        &[],
        "mobilenet.FashionMobileNet.txt",
    );
}

#[test]
fn summary_json_totals_are_the_sums_of_the_layers() {
    let path = root().join("examples/fashion/resnet.qat");
    let (stdout, _) = qatc_ok(&["summary", path.to_str().unwrap(), "--format", "json"]);
    let s: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let layers = s["layers"].as_array().unwrap();
    for key in ["params", "macs", "float_bytes", "int8_bytes"] {
        let sum: u64 = layers.iter().map(|l| l[key].as_u64().unwrap()).sum();
        assert_eq!(s[key].as_u64().unwrap(), sum, "{key}");
    }
    // int8 storage is about a quarter of float: 1 byte per weight instead of 4.
    let ratio = s["float_bytes"].as_f64().unwrap() / s["int8_bytes"].as_f64().unwrap();
    assert!((3.0..4.0).contains(&ratio), "ratio {ratio}");
}

#[test]
fn summary_of_a_missing_file_is_an_error_naming_it() {
    let out = common::qatc(&["summary", "no/such/model.qat"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no/such/model.qat"), "{stderr}");
}
