#![cfg(feature = "train")]
//! The model zoo (examples/zoo): torchvision's resnet18 and mobilenet_v2 written in
//! .qat load torchvision's own state_dict names (random weights, saved by
//! `torch.save` and as safetensors by scripts/torchvision_zoo.py in the cache venv)
//! with at most five mapping rules and give torchvision's logits at 64x64.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use qatc::diagnostics::SourceFile;
use qatc::passes::{self, Stage};
use qatc::train::{pretrained, Mode, Network};
use tch::Tensor;

#[test]
fn zoo_models_load_torchvision_state_dicts_and_match_their_logits() {
    let Some(python) = common::torch_python() else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let status = Command::new(python)
        .arg(root.join("scripts/torchvision_zoo.py"))
        .arg(out)
        .args(["resnet18", "mobilenet_v2"])
        .status()
        .unwrap();
    assert!(status.success(), "scripts/torchvision_zoo.py failed");
    // (name, tensors in the state_dict without num_batches_tracked)
    for (name, tensors) in [("resnet18", 102), ("mobilenet_v2", 262)] {
        let qat = root.join(format!("examples/zoo/{name}.qat"));
        let text = std::fs::read_to_string(&qat).unwrap();
        let checked = qatc::check_source(&SourceFile::new(qat.display().to_string(), text));
        assert!(!checked.has_errors(), "{name}: {:?}", checked.diagnostics);
        let graph = passes::run(checked.graphs.into_iter().next().unwrap(), Stage::Quantized);
        let recipe = qatc::recipe::Recipe::load(&root.join(format!("examples/zoo/{name}.yaml")))
            .unwrap_or_else(|e| panic!("{}", e.rendered));
        let map = recipe.transfer.unwrap().map;
        assert!(map.len() <= 5, "{name}: {} mapping rules", map.len());
        let io: HashMap<String, Tensor> =
            Tensor::read_safetensors(out.join(format!("{name}.io.safetensors")))
                .unwrap()
                .into_iter()
                .collect();
        for file in [format!("{name}.pt"), format!("{name}.safetensors")] {
            let mut net = Network::new(&graph, tch::Device::Cpu);
            let loaded = pretrained::load(&mut net, &out.join(&file), &map, &[])
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(loaded.len(), tensors, "{file}");
            let logits = tch::no_grad(|| net.forward(&io["input"], Mode::Float, false));
            let size = io["logits"].abs().max().double_value(&[]);
            assert!(
                size > 1e-3,
                "{file}: torchvision's logits are all near 0 ({size})"
            );
            let diff = (&logits - &io["logits"]).abs().max().double_value(&[]);
            eprintln!(
                "{file}: {} rules, max |logit difference| from torchvision {diff:.2e}",
                map.len()
            );
            assert!(
                diff < 1e-4,
                "{file}: max difference from torchvision {diff}"
            );
        }
    }
}
