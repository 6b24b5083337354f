#![cfg(feature = "train")]
//! PyTorch weights by structure: an nn.Sequential network's state_dict (numeric
//! paths like `features.4.weight`), saved by `torch.save` (.pt) and as safetensors,
//! loads into a .qat model with two `*` mapping rules and gives PyTorch's logits;
//! `qatc weights diff` shows what lines up and proposes the rules.
//! The network: scripts/torch_sequential.py, run with the cache venv's Python.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use qatc::diagnostics::SourceFile;
use qatc::passes::{self, Stage};
use qatc::train::{pretrained, Mode, Network};
use tch::Tensor;

/// The Sequential network's layers, named by their index in `features` / `classifier`.
const MODEL: &str = "model Sequential {
    input image: f32[1, 28, 28]
    let f0 = conv2d(image, filters = 4, kernel = 3, padding = same)
    let f1 = batch_norm(f0)
    let x = relu(f1)
    let x = max_pool2d(x, size = 2)
    let f4 = conv2d(x, filters = 8, kernel = 3, stride = 2, padding = same)
    let f5 = batch_norm(f4)
    let x = relu(f5)
    let x = flatten(x)
    let c0 = dense(x, units = 16)
    let x = relu(c0)
    let c2 = dense(x, units = 10)
    output c2
}
";

/// Runs the script into a temporary folder; `None` when no torch peer can be had.
fn pytorch_files() -> Option<(tempfile::TempDir, PathBuf)> {
    let python = common::torch_python()?;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("torch");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/torch_sequential.py");
    let status = Command::new(python).arg(script).arg(&out).status().unwrap();
    assert!(status.success(), "scripts/torch_sequential.py failed");
    Some((tmp, out))
}

/// The quantized graph of `text`, and the script's input batch and PyTorch's logits.
fn graph_and_io(text: &str, dir: &Path) -> (qatc::ir::Graph, HashMap<String, Tensor>) {
    let checked = qatc::check_source(&SourceFile::new("m.qat", text.to_string()));
    assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
    let graph = passes::run(checked.graphs.into_iter().next().unwrap(), Stage::Quantized);
    let io = Tensor::read_safetensors(dir.join("io.safetensors"))
        .unwrap()
        .into_iter()
        .collect();
    (graph, io)
}

fn rules() -> BTreeMap<String, String> {
    [("f*.*", "features.*.*"), ("c*.*", "classifier.*.*")]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn torch_save_and_safetensors_state_dicts_load_by_pattern_and_give_pytorch_logits() {
    let Some((_tmp, dir)) = pytorch_files() else {
        return;
    };
    let (graph, io) = graph_and_io(MODEL, &dir);
    for file in ["weights.pt", "weights.safetensors"] {
        let mut net = Network::new(&graph, tch::Device::Cpu);
        let loaded = pretrained::load(&mut net, &dir.join(file), &rules(), &[])
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        // conv and dense: weight, bias; batch norm: weight, bias, running mean and variance.
        assert_eq!(loaded.len(), 16, "{file}: {loaded:?}");
        let logits = tch::no_grad(|| net.forward(&io["input"], Mode::Float, false));
        let diff = (&logits - &io["logits"]).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "{file}: max difference from PyTorch {diff}");
    }
    // Without the rules, nothing lines up, and the error says where rules go.
    let mut net = Network::new(&graph, tch::Device::Cpu);
    let err =
        pretrained::load(&mut net, &dir.join("weights.pt"), &BTreeMap::new(), &[]).unwrap_err();
    assert!(
        err.contains("f0.weight") && err.contains("features.0.weight"),
        "{err}"
    );
    assert!(err.contains("qatc weights diff"), "{err}");
}

/// The same network with each layer named by its PyTorch module path (`@name`): the
/// state_dict loads without a single rule.
const NAMED: &str = "model Sequential {
    input image: f32[1, 28, 28]
    @name(\"features.0\")
    let c = conv2d(image, filters = 4, kernel = 3, padding = same)
    @name(\"features.1\")
    let x = batch_norm(c)
    let x = relu(x)
    let x = max_pool2d(x, size = 2)
    @name(\"features.4\")
    let x = conv2d(x, filters = 8, kernel = 3, stride = 2, padding = same)
    @name(\"features.5\")
    let x = batch_norm(x)
    let x = relu(x)
    let x = flatten(x)
    @name(\"classifier.0\")
    let x = dense(x, units = 16)
    let x = relu(x)
    @name(\"classifier.2\")
    let logits = dense(x, units = 10)
    output logits
}
";

#[test]
fn module_paths_given_with_name_load_pytorch_weights_without_rules() {
    let Some((_tmp, dir)) = pytorch_files() else {
        return;
    };
    let (graph, io) = graph_and_io(NAMED, &dir);
    let mut net = Network::new(&graph, tch::Device::Cpu);
    let loaded = pretrained::load(&mut net, &dir.join("weights.pt"), &BTreeMap::new(), &[])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.len(), 16, "{loaded:?}");
    let logits = tch::no_grad(|| net.forward(&io["input"], Mode::Float, false));
    let diff = (&logits - &io["logits"]).abs().max().double_value(&[]);
    assert!(diff < 1e-4, "max difference from PyTorch {diff}");
}

#[test]
fn weights_diff_lists_both_sides_and_proposes_rules() {
    let Some((tmp, dir)) = pytorch_files() else {
        return;
    };
    let model = common::write(tmp.path(), "m.qat", MODEL);
    let run = common::qatc(&[
        "weights",
        "diff",
        model.to_str().unwrap(),
        dir.join("weights.pt").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(
        run.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("0 matched, 16 missing, 0 with other shapes, 16 extra"),
        "{stdout}"
    );
    // Shapes side by side; the PyTorch names in module order (features.4 before classifier).
    assert!(
        stdout.contains("f4.weight") && stdout.contains("[8, 4, 3, 3]"),
        "{stdout}"
    );
    let f4 = stdout.find("  features.4.weight").unwrap();
    assert!(f4 < stdout.find("  features.5.bias").unwrap(), "{stdout}");
    // The 16 renames fold into the two patterns a person would write (the ones below).
    let proposed = &stdout[stdout.find("proposed rules").expect("rules proposed")..];
    let rules: Vec<&str> = proposed.lines().filter(|l| l.starts_with("    ")).collect();
    assert_eq!(
        rules,
        [
            "    \"f*.*\": \"features.*.*\"",
            "    \"c*.*\": \"classifier.*.*\""
        ],
        "{stdout}"
    );

    // With the recipe's two rules, everything matches.
    common::write(
        tmp.path(),
        "m.yaml",
        &format!(
            "transfer:\n  weights: {}\n  map:\n    \"f*.*\": \"features.*.*\"\n    \"c*.*\": \"classifier.*.*\"\n",
            dir.join("weights.pt").display()
        ),
    );
    let run = common::qatc(&[
        "weights",
        "diff",
        model.to_str().unwrap(),
        dir.join("weights.pt").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("16 matched, 0 missing, 0 with other shapes, 0 extra"),
        "{stdout}"
    );
    assert!(
        stdout.contains("f5.running_mean") && stdout.contains("features.5.running_mean"),
        "{stdout}"
    );
}
