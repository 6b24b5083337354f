#![cfg(feature = "train")]
//! Weights exported from a PyTorch `torch.nn` module (state_dict → safetensors) load
//! into the equivalent .qat model and give the same float logits as PyTorch.
//! The fixture and the script that made it: tests/fixtures/torch_cnn/,
//! scripts/make-torch-fixture.py.

use std::collections::HashMap;
use std::path::Path;

use qatc::diagnostics::SourceFile;
use qatc::passes::{self, Stage};
use qatc::train::{pretrained, Mode, Network};
use tch::Tensor;

#[test]
fn pytorch_state_dict_gives_pytorch_logits() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_cnn");
    let text = std::fs::read_to_string(dir.join("model.qat")).unwrap();
    let checked = qatc::check_source(&SourceFile::new("model.qat", text));
    assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
    // The quantized-stage graph: BN fused into its conv, fake-quant nodes inert in float mode.
    let graph = passes::run(checked.graphs.into_iter().next().unwrap(), Stage::Quantized);
    let mut net = Network::new(&graph, tch::Device::Cpu);
    let loaded = pretrained::load(
        &mut net,
        &dir.join("weights.safetensors"),
        &Default::default(),
        &[],
    )
    .unwrap();
    assert_eq!(loaded.len(), 16, "{loaded:?}");

    let io: HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("io.safetensors"))
        .unwrap()
        .into_iter()
        .collect();
    let logits = tch::no_grad(|| net.forward(&io["input"], Mode::Float, false));
    let diff = (&logits - &io["logits"]).abs().max().double_value(&[]);
    assert!(diff < 1e-4, "max difference from PyTorch {diff}");
}
