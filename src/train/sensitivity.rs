//! `qatc sensitivity`: quantizes one layer at a time (and optionally all but one)
//! after PTQ calibration and measures the accuracy each costs, so that the choice of
//! layers to keep in float or at 8 bits is a measurement, not a guess.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use super::{
    calibrate, prepare, pretrained, Mode, Network, Prepared, Run, TrainError, TrainOptions,
};
use crate::ir::{Graph, NodeId, Op};
use crate::recipe::Recipe;

#[derive(Debug, Clone, Serialize)]
pub struct LayerSensitivity {
    pub layer: String,
    pub op: String,
    pub quant: String,
    /// Accuracy with only this layer quantized.
    pub alone: f64,
    /// Accuracy with every layer but this one quantized (with `--all-but-one`).
    pub all_but: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sensitivity {
    pub model: String,
    pub float: f64,
    pub quantized: f64,
    pub layers: Vec<LayerSensitivity>,
    /// Layers worth keeping in float or at 8 bits.
    pub suggest_keep: Vec<String>,
}

/// Layers as quantization sees them: a value-producing node together with the
/// fake-quant nodes that read it.
fn layers(graph: &Graph) -> Vec<(NodeId, Vec<NodeId>)> {
    let consumers = graph.consumers();
    graph
        .ids()
        .filter_map(|id| {
            let node = graph.node(id);
            if matches!(node.op, Op::FakeQuant { .. })
                || node.quant.float && !matches!(node.op, Op::Input)
            {
                return None;
            }
            let fqs: Vec<NodeId> = consumers[id.index()]
                .iter()
                .copied()
                .filter(|&c| matches!(graph.node(c).op, Op::FakeQuant { .. }))
                .collect();
            (node.op.has_weights() || !fqs.is_empty()).then_some((id, fqs))
        })
        .collect()
}

pub fn analyze(
    graph: &Graph,
    recipe: &Recipe,
    opts: &TrainOptions,
    weights: Option<&Path>,
    all_but_one: bool,
) -> Result<Sensitivity, TrainError> {
    tch::manual_seed(recipe.train.seed as i64);
    let run = Run {
        recipe,
        progress: super::Progress { log: opts.log },
        opts,
        checkpoints: None,
    };
    let Prepared {
        train,
        test,
        calibration,
        ..
    } = prepare(graph, recipe, opts.device, opts.log)?;
    let mut net = match weights {
        Some(path) => {
            let mut net = Network::new(graph, opts.device);
            pretrained::load(&mut net, path, &Default::default(), &[])
                .map_err(TrainError::Transfer)?;
            net
        }
        None => {
            let mut net = run.initial_network(graph)?;
            run.say("no --weights given: training the float model first");
            run.train(
                "float",
                &mut net,
                &train,
                &test,
                Mode::Float,
                recipe.train.epochs,
                recipe.train.learning_rate,
            )?;
            net
        }
    };
    let mut seconds = 0.0;
    let float = run
        .evaluate("float", &mut net, &test, Mode::Float, &mut seconds)
        .0;
    calibrate(&mut net, &calibration, recipe);
    let quantized = run
        .evaluate(
            "all quantized",
            &mut net,
            &test,
            Mode::Quantized,
            &mut seconds,
        )
        .0;

    let groups = layers(graph);
    let mut rows = Vec::new();
    for (id, fqs) in &groups {
        let node = graph.node(*id);
        let members: Vec<NodeId> = std::iter::once(*id).chain(fqs.iter().copied()).collect();
        let mut only = vec![false; graph.nodes.len()];
        for m in &members {
            only[m.index()] = true;
        }
        net.enabled = only.clone();
        let alone = run
            .evaluate(&node.name, &mut net, &test, Mode::Quantized, &mut seconds)
            .0;
        let all_but = all_but_one.then(|| {
            net.enabled = only.iter().map(|on| !on).collect();
            run.evaluate(
                &format!("all but {}", node.name),
                &mut net,
                &test,
                Mode::Quantized,
                &mut seconds,
            )
            .0
        });
        let quant = match (node.op.has_weights(), fqs.first()) {
            (true, Some(fq)) => format!("w{} a{}", node.quant.weights, fq_spec(graph, *fq)),
            (true, None) => format!("w{}", node.quant.weights),
            (false, Some(fq)) => format!("a{}", fq_spec(graph, *fq)),
            (false, None) => String::new(),
        };
        rows.push(LayerSensitivity {
            layer: node.name.clone(),
            op: node
                .op
                .to_string()
                .split('(')
                .next()
                .unwrap_or("")
                .to_string(),
            quant,
            alone,
            all_but,
        });
    }
    net.enabled = vec![true; graph.nodes.len()];
    // A layer is worth keeping at higher precision when quantizing it alone costs a
    // noticeable share of the total loss (and at least half a point).
    let total_drop = (float - quantized).max(0.0);
    let suggest_keep = rows
        .iter()
        .filter(|r| float - r.alone >= 0.005f64.max(0.25 * total_drop))
        .map(|r| r.layer.clone())
        .collect();
    Ok(Sensitivity {
        model: graph.name.clone(),
        float,
        quantized,
        layers: rows,
        suggest_keep,
    })
}

fn fq_spec(graph: &Graph, fq: NodeId) -> String {
    match graph.node(fq).op {
        Op::FakeQuant { spec, .. } => spec.to_string(),
        _ => String::new(),
    }
}

impl Sensitivity {
    pub fn table(&self) -> String {
        let mut out = format!(
            "{}: float {:.2}%, everything quantized {:.2}% ({:+.2})\n\n",
            self.model,
            self.float * 100.0,
            self.quantized * 100.0,
            (self.quantized - self.float) * 100.0
        );
        let all_but = self.layers.iter().any(|r| r.all_but.is_some());
        let _ = write!(
            out,
            "{:<14} {:<24} {:>10} {:>9}",
            "layer", "op", "only this", "drop"
        );
        if all_but {
            let _ = write!(out, " {:>12} {:>9}", "all but this", "recovers");
        }
        out.push('\n');
        let mut rows: Vec<&LayerSensitivity> = self.layers.iter().collect();
        rows.sort_by(|a, b| a.alone.total_cmp(&b.alone));
        for r in rows {
            let _ = write!(
                out,
                "{:<14} {:<24} {:>9.2}% {:>+9.2}",
                r.layer,
                r.op,
                r.alone * 100.0,
                (r.alone - self.float) * 100.0
            );
            if let Some(a) = r.all_but {
                let _ = write!(
                    out,
                    " {:>11.2}% {:>+9.2}",
                    a * 100.0,
                    (a - self.quantized) * 100.0
                );
            }
            let _ = writeln!(out, "   {}", r.quant);
        }
        out.push('\n');
        if self.suggest_keep.is_empty() {
            out.push_str("No single layer stands out: quantize them all, or use QAT if the total drop is too large.\n");
        } else {
            let _ = writeln!(
                out,
                "Suggestion: keep {} in float (`@float`) or at 8 bits (`@quant(weights = int8(symmetric, per_channel), activations = int8(asymmetric, per_tensor))`).",
                self.suggest_keep.join(", ")
            );
        }
        out
    }
}
