//! The model summary of `qatc summary`, the start of `qatc build` and the language
//! server's hover: per layer its output shape, parameters, MACs, bit widths and
//! storage in float and in int8, with totals and what fusion merged. Computed from
//! the quantized graph alone (no weights needed), from the ops' own definitions.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::ir::ops::{format_shape, QuantRole};
use crate::ir::{Granularity, Graph, NodeId, Op, Shape};

/// Bytes of one f32 (float weights, per-channel scales) and of one int32 (int8 biases).
const F32_BYTES: u64 = 4;
const I32_BYTES: u64 = 4;

/// One node of the quantized graph (fake-quant nodes are shown as activation bits).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Layer {
    pub name: String,
    /// The op with what fusion merged into it, e.g. `conv2d+batch_norm+relu`.
    pub op: String,
    pub output: Shape,
    /// Trainable parameters: weights, bias, batch-norm scale and shift.
    pub params: u64,
    /// Multiply-accumulates per image.
    pub macs: u64,
    /// Weight bits; `None` for ops without weights or kept in float.
    pub weight_bits: Option<u8>,
    /// Bits of the output value in the int8 model; `None` when it stays float.
    pub activation_bits: Option<u8>,
    /// Stored parameters in float: weights, bias and batch-norm statistics as f32.
    pub float_bytes: u64,
    /// Stored parameters in the int8 model: one byte per weight, an int32 bias per
    /// output channel (batch norm folds into it) and an f32 scale per channel (or one).
    pub int8_bytes: u64,
    /// Nodes of the model as written that fusion merged into this one (`relu x_2`).
    pub merged: Vec<String>,
}

/// The whole model's summary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub model: String,
    pub layers: Vec<Layer>,
    pub params: u64,
    pub macs: u64,
    pub float_bytes: u64,
    pub int8_bytes: u64,
}

/// Summarizes `quantized` (the graph after every pass); `parsed` (the same model
/// before the passes) tells which nodes fusion merged where.
pub fn summarize(parsed: &Graph, quantized: &Graph) -> Summary {
    let consumers = quantized.consumers();
    let mut out_bits: Vec<Option<u8>> = vec![None; quantized.nodes.len()];
    let mut layers = Vec::new();
    for id in quantized.ids() {
        let node = quantized.node(id);
        let quantized_by =
            consumers[id.index()]
                .iter()
                .find_map(|&c| match &quantized.node(c).op {
                    Op::FakeQuant { spec, .. } => Some(spec.bits),
                    _ => None,
                });
        out_bits[id.index()] = match (&node.op, node.op.role()) {
            (Op::FakeQuant { spec, .. }, _) => Some(spec.bits),
            _ if quantized_by.is_some() => quantized_by,
            (_, QuantRole::MovesValues | QuantRole::Identity) => {
                node.inputs.first().and_then(|i| out_bits[i.index()])
            }
            (
                _,
                QuantRole::Input
                | QuantRole::Computes
                | QuantRole::ComputesFixed(_)
                | QuantRole::Quantizes,
            ) => None,
        };
        if matches!(node.op, Op::FakeQuant { .. }) {
            continue;
        }
        let (params, float_bytes, int8_bytes) =
            storage(&node.op, node.quant.float, node.quant.weights.granularity);
        let weight_bits =
            (node.op.has_weights() && !node.quant.float).then_some(node.quant.weights.bits);
        layers.push(Layer {
            name: node.name.clone(),
            op: op_label(&node.op),
            output: node.shape.clone(),
            params,
            macs: node.op.macs(&node.shape),
            weight_bits,
            activation_bits: out_bits[id.index()],
            float_bytes,
            int8_bytes,
            merged: Vec::new(),
        });
    }
    for (name, into) in merged_nodes(parsed, quantized) {
        if let Some(layer) = layers.iter_mut().find(|l| l.name == into) {
            layer.merged.push(name);
        }
    }
    Summary {
        model: quantized.name.clone(),
        params: layers.iter().map(|l| l.params).sum(),
        macs: layers.iter().map(|l| l.macs).sum(),
        float_bytes: layers.iter().map(|l| l.float_bytes).sum(),
        int8_bytes: layers.iter().map(|l| l.int8_bytes).sum(),
        layers,
    }
}

/// Trainable parameters, float bytes and int8 bytes of one op.
fn storage(op: &Op, float: bool, granularity: Granularity) -> (u64, u64, u64) {
    let (weights, channels, has_bias, fused_bn) = match op {
        Op::Conv2d {
            filters,
            bias,
            epilogue,
            ..
        } => (
            op.weight_shape(),
            *filters,
            *bias,
            epilogue.batch_norm.is_some(),
        ),
        Op::Dense {
            units,
            bias,
            epilogue,
            ..
        } => (
            op.weight_shape(),
            *units,
            *bias,
            epilogue.batch_norm.is_some(),
        ),
        Op::BatchNorm { channels, .. } => {
            // Scale and shift train; running mean and variance are stored too.
            let c = *channels as u64;
            return (2 * c, 4 * c * F32_BYTES, 4 * c * F32_BYTES);
        }
        _ => return (0, 0, 0),
    };
    let weights = weights.map_or(0, |w| w.iter().product::<usize>() as u64);
    let c = channels as u64;
    let bias = if has_bias { c } else { 0 };
    let bn_trained = if fused_bn { 2 * c } else { 0 };
    let bn_stored = if fused_bn { 4 * c } else { 0 };
    let params = weights + bias + bn_trained;
    let float_bytes = (weights + bias + bn_stored) * F32_BYTES;
    if float {
        return (params, float_bytes, float_bytes);
    }
    let scales = match granularity {
        Granularity::PerChannel => c,
        Granularity::PerTensor => 1,
    };
    // The lowering always writes an int32 bias: batch norm folds into it.
    let int8_bytes = weights + c * I32_BYTES + scales * F32_BYTES;
    (params, float_bytes, int8_bytes)
}

/// `conv2d+batch_norm+relu`: the op's name with its fused epilogue, no arguments.
fn op_label(op: &Op) -> String {
    let full = op.to_string();
    full.split('(').next().unwrap_or(&full).to_string()
}

/// (merged node, node it was merged into) for every node of `parsed` that fusion
/// removed: it lives on in the nearest producer that survived.
fn merged_nodes(parsed: &Graph, quantized: &Graph) -> Vec<(String, String)> {
    let survives = |id: NodeId| quantized.find(&parsed.node(id).name).is_some();
    let mut out = Vec::new();
    for id in parsed.ids() {
        if survives(id) {
            continue;
        }
        let mut into = id;
        while !survives(into) {
            match parsed.node(into).inputs.first() {
                Some(&input) => into = input,
                None => break,
            }
        }
        if into != id && survives(into) {
            let node = parsed.node(id);
            out.push((
                format!("{} {}", node.op.name(), node.name),
                parsed.node(into).name.clone(),
            ));
        }
    }
    out
}

/// `54,474`
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `213.4 KiB`
fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

impl Summary {
    /// A table for the terminal, like Keras' `model.summary()`.
    pub fn text(&self) -> String {
        let bits = |b: Option<u8>| b.map_or("f".to_string(), |b| b.to_string());
        let name_width = self
            .layers
            .iter()
            .map(|l| l.name.len())
            .max()
            .unwrap_or(0)
            .max(5);
        let op_width = self
            .layers
            .iter()
            .map(|l| l.op.len())
            .max()
            .unwrap_or(0)
            .max(2);
        let mut out = format!("model {}\n", self.model);
        let _ = writeln!(
            out,
            "{:<name_width$}  {:<op_width$}  {:<14} {:>10} {:>12} {:>2} {:>2} {:>11} {:>11}",
            "layer", "op", "output", "params", "MACs", "w", "a", "float bytes", "int8 bytes"
        );
        for l in &self.layers {
            let w = match (l.weight_bits, l.params) {
                (Some(b), _) => b.to_string(),
                (None, 0) => "-".to_string(),
                (None, _) => "f".to_string(),
            };
            let _ = writeln!(
                out,
                "{:<name_width$}  {:<op_width$}  {:<14} {:>10} {:>12} {:>2} {:>2} {:>11} {:>11}",
                l.name,
                l.op,
                format_shape(&l.output),
                grouped(l.params),
                grouped(l.macs),
                w,
                bits(l.activation_bits),
                grouped(l.float_bytes),
                grouped(l.int8_bytes),
            );
        }
        let _ = writeln!(
            out,
            "{:<name_width$}  {:<op_width$}  {:<14} {:>10} {:>12} {:>2} {:>2} {:>11} {:>11}",
            "total",
            "",
            "",
            grouped(self.params),
            grouped(self.macs),
            "",
            "",
            grouped(self.float_bytes),
            grouped(self.int8_bytes),
        );
        let _ = writeln!(
            out,
            "parameters: {} in float, {} in int8 ({:.2}x smaller); {} MACs per image",
            size(self.float_bytes),
            size(self.int8_bytes),
            self.float_bytes as f64 / self.int8_bytes.max(1) as f64,
            grouped(self.macs)
        );
        let merged: Vec<&Layer> = self
            .layers
            .iter()
            .filter(|l| !l.merged.is_empty())
            .collect();
        if merged.is_empty() {
            out.push_str("fused: nothing\n");
        } else {
            out.push_str("fused:\n");
            for l in merged {
                let _ = writeln!(out, "  {} <- {}", l.name, l.merged.join(", "));
            }
        }
        out.push_str("w, a: weight and output bits (f: float, -: none); int8 bytes: int8 weights, int32 biases, f32 scales\n");
        out
    }
}

#[cfg(all(test, feature = "train"))]
mod tests {
    use crate::diagnostics::SourceFile;
    use crate::passes::{self, Stage};

    /// The summary counts from the IR what training allocates with libtorch.
    #[test]
    fn parameters_and_float_bytes_match_the_network_training_builds() {
        for file in ["cnn", "resnet", "mobilenet", "backbone"] {
            let path = format!("{}/examples/fashion/{file}.qat", env!("CARGO_MANIFEST_DIR"));
            let source = SourceFile::new(path.clone(), std::fs::read_to_string(&path).unwrap());
            let checked = crate::check_source(&source);
            assert!(!checked.has_errors(), "{path}");
            for graph in checked.graphs {
                let quantized = passes::run(graph.clone(), Stage::Quantized);
                let summary = super::summarize(&graph, &quantized);
                let net = crate::train::Network::new(&quantized, tch::Device::Cpu);
                assert_eq!(summary.params as i64, net.trainable_count(), "{path}");
                let stored: i64 = net.vs.variables().values().map(|t| t.numel() as i64).sum();
                assert_eq!(summary.float_bytes as i64, stored * 4, "{path}");
            }
        }
    }
}
