//! Executes a quantized-stage graph with libtorch: the same network runs in float,
//! calibrates observers, or runs with fake quantization (PTQ evaluation and QAT).

use tch::{nn, Kind, Tensor};

use super::observer::{
    clipped_weight_params, fake_quant_weights, fake_quant_weights_with, mse_clip_ratios,
    weight_params, Observer, WeightRange,
};
use crate::ir::ops::{Activation, RangeSource};
use crate::ir::{Graph, NodeId, Op, QuantSpec, Scheme};
use crate::quantized::{channel_scales, LinearParams, QuantizedParams};
use crate::recipe::RangeMethod;

mod forward;
mod layers;
mod params;
mod quant;
#[cfg(test)]
mod tests;

use quant::{fold, folded_bias, learned_fake_quant, learned_min_max, learned_weight_fake_quant};

/// How fake-quant points and weights behave in a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain float network; fake-quant nodes are the identity.
    Float,
    /// Float network whose fake-quant nodes record the ranges they see.
    Calibrate,
    /// Fake quantization everywhere; batch norms folded into the weights.
    Quantized,
}

/// Quantization settings of a network, changed between and during stages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantState {
    pub weight_range: WeightRange,
    /// While false (early QAT), BN uses batch statistics, corrected around the folded weights.
    pub bn_frozen: bool,
    /// While false, moving-average observers follow the activations during QAT.
    pub observers_frozen: bool,
    /// How calibration narrows ranges; anything but min-max keeps samples while calibrating.
    pub calibration: RangeMethod,
}

impl Default for QuantState {
    fn default() -> Self {
        QuantState {
            weight_range: WeightRange::MinMax,
            bn_frozen: true,
            observers_frozen: false,
            calibration: RangeMethod::MinMax,
        }
    }
}

/// Training steps between two searches for the MSE-best weight clipping.
const MSE_REFRESH_STEPS: u32 = 16;

/// Variable group of learned quantization ranges (their own learning rate).
pub const RANGE_GROUP: usize = 1;

/// The variable-store path of a node name; names of nested values contain dots.
fn path<'a>(root: &nn::Path<'a>, name: &str) -> nn::Path<'a> {
    name.split('.').fold(root.clone(), |p, part| p.sub(part))
}

/// A batch norm's parameters and running statistics.
struct Norm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    eps: f64,
    momentum: f64,
    /// Frozen (transfer learning): always normalizes with its running statistics.
    frozen: bool,
}

impl Norm {
    fn new(path: nn::Path, channels: i64, eps: f64, momentum: f64, two_d: bool) -> Norm {
        let config = nn::BatchNormConfig {
            eps,
            momentum,
            ..Default::default()
        };
        let bn = if two_d {
            nn::batch_norm2d(path, channels, config)
        } else {
            nn::batch_norm1d(path, channels, config)
        };
        Norm {
            weight: bn.ws.expect("affine batch norm"),
            bias: bn.bs.expect("affine batch norm"),
            running_mean: bn.running_mean,
            running_var: bn.running_var,
            eps,
            momentum,
            frozen: false,
        }
    }

    fn apply(&self, xs: &Tensor, training: bool) -> Tensor {
        xs.batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            training && !self.frozen,
            self.momentum,
            self.eps,
            false,
        )
    }

    fn freeze(&mut self) {
        self.frozen = true;
        freeze_tensor(&mut self.weight);
        freeze_tensor(&mut self.bias);
    }

    fn unfreeze(&mut self) {
        self.frozen = false;
        let _ = self.weight.requires_grad_(true);
        let _ = self.bias.requires_grad_(true);
    }

    /// Per-channel factor gamma / sigma from running statistics.
    fn factor(&self) -> Tensor {
        crate::ir::ops::fold_factor(&self.weight, &self.running_var, self.eps)
    }
}

/// Parameters of one node.
enum Layer {
    None,
    Linear {
        weight: Tensor,
        bias: Option<Tensor>,
        norm: Option<Norm>,
        learned_scale: Option<Tensor>,
        /// While training with MSE ranges: the clipping ratio per channel and the steps
        /// since it was searched (the search is refreshed every [`MSE_REFRESH_STEPS`]).
        clip_cache: std::cell::RefCell<Option<(Tensor, u32)>>,
    },
    Norm(Norm),
    FakeQuant {
        observer: Observer,
        learned: Option<LearnedRange>,
    },
}

/// An activation range learned by gradient descent (LSQ-style): log-scale and zero point.
struct LearnedRange {
    log_scale: Tensor,
    zero_point: Tensor,
}

pub struct Network {
    pub graph: Graph,
    pub vs: nn::VarStore,
    layers: Vec<Layer>,
    pub quant: QuantState,
    /// Layers frozen by [`Network::freeze`], kept so that copies stay frozen.
    frozen: Vec<String>,
    /// Per node: whether its weights / output are quantized in `Mode::Quantized`
    /// (all by default; sensitivity analysis quantizes a few at a time).
    pub enabled: Vec<bool>,
    /// Per node: the fake-quant node whose range it uses (the fake-quant pass's [`RangeSource`](crate::ir::ops::RangeSource)).
    range_source: Vec<NodeId>,
    /// While training data-parallel: widens a batch's activation range to the whole
    /// batch's over every rank, so that moving-average observers agree.
    pub range_reduce: Option<std::rc::Rc<RangeReduce>>,
}

/// How a data-parallel run combines one batch's activation range over the ranks.
pub type RangeReduce = dyn Fn(f32, f32) -> (f32, f32);

impl Network {
    /// A copy with the same parameters, statistics, ranges and settings.
    pub fn duplicate(&self) -> Network {
        let mut copy = Network::new(&self.graph, self.vs.device());
        if self.has_learned_ranges() {
            copy.learn_ranges();
        }
        copy.vs.copy(&self.vs).expect("same graph, same variables");
        for (mine, theirs) in copy.layers.iter_mut().zip(&self.layers) {
            if let (Layer::FakeQuant { observer, .. }, Layer::FakeQuant { observer: o, .. }) =
                (mine, theirs)
            {
                *observer = o.clone();
            }
        }
        copy.quant = self.quant;
        copy.enabled = self.enabled.clone();
        copy.freeze(&self.frozen)
            .expect("names were checked when first frozen");
        copy
    }

    pub fn has_learned_ranges(&self) -> bool {
        self.layers.iter().any(|l| {
            matches!(
                l,
                Layer::FakeQuant {
                    learned: Some(_),
                    ..
                } | Layer::Linear {
                    learned_scale: Some(_),
                    ..
                }
            )
        })
    }

    /// The observers of fake-quant nodes, by node.
    pub fn observer(&self, id: NodeId) -> Option<&Observer> {
        match &self.layers[id.index()] {
            Layer::FakeQuant { observer, .. } => Some(observer),
            _ => None,
        }
    }

    /// The current range of every fake-quant node that has one (observed or learned).
    pub fn activation_ranges(&self) -> Vec<(f32, f32)> {
        self.layers
            .iter()
            .filter_map(|layer| match layer {
                Layer::FakeQuant {
                    learned: Some(r),
                    observer,
                } => Some(learned_min_max(r, observer.spec)),
                Layer::FakeQuant {
                    learned: None,
                    observer,
                } => observer
                    .is_initialized()
                    .then_some((observer.min, observer.max)),
                _ => None,
            })
            .collect()
    }

    /// Turns the current ranges into trainable parameters (variable group [`RANGE_GROUP`]):
    /// per-channel weight scales and per-tensor activation scales and zero points.
    pub fn learn_ranges(&mut self) {
        if self.has_learned_ranges() {
            return;
        }
        let root = self.vs.root().set_group(RANGE_GROUP);
        let weight_range = self.quant.weight_range;
        for (node, layer) in self.graph.nodes.iter().zip(self.layers.iter_mut()) {
            match layer {
                Layer::Linear {
                    weight,
                    norm,
                    learned_scale,
                    ..
                } if !node.quant.float => {
                    let folded = tch::no_grad(|| fold(weight, norm.as_ref()));
                    let (scale, _) = weight_params(&folded, node.quant.weights, weight_range);
                    *learned_scale =
                        Some(path(&root, &node.name).var_copy("weight_log_scale", &scale.log()));
                }
                // A fixed range is not learned: the int8 kernel requires it as it is.
                Layer::FakeQuant { observer, learned } if !observer.is_fixed() => {
                    let (scale, zp) = observer.params();
                    let p = path(&root, &node.name);
                    let log_scale = p.var_copy("log_scale", &Tensor::from_slice(&[scale.ln()]));
                    let zp_init = Tensor::from_slice(&[zp as f32]).to_device(self.vs.device());
                    // Symmetric ranges keep zero point 0; asymmetric ones learn it too.
                    let zero_point = if observer.spec.scheme == Scheme::Asymmetric {
                        p.var_copy("zero_point", &zp_init)
                    } else {
                        let mut z = p.zeros_no_train("zero_point", &[1]);
                        tch::no_grad(|| z.copy_(&zp_init));
                        z
                    };
                    learned.replace(LearnedRange {
                        log_scale,
                        zero_point,
                    });
                }
                _ => {}
            }
        }
    }

    /// Freezes layers by binding name (a fused batch norm by its own name): their
    /// parameters get no gradient and batch norms keep their running statistics.
    pub fn freeze(&mut self, names: &[String]) -> Result<(), String> {
        check_layers(&self.graph, "transfer.freeze", names)?;
        self.frozen = names.to_vec();
        let frozen = |name: &str| names.iter().any(|n| n == name);
        for (node, layer) in self.graph.nodes.iter().zip(self.layers.iter_mut()) {
            match layer {
                Layer::Linear {
                    weight, bias, norm, ..
                } => {
                    if frozen(&node.name) {
                        freeze_tensor(weight);
                        if let Some(b) = bias {
                            freeze_tensor(b);
                        }
                    }
                    let bn_name = match &node.op {
                        Op::Conv2d { epilogue, .. } | Op::Dense { epilogue, .. } => {
                            epilogue.batch_norm.as_ref().map(|b| b.name.as_str())
                        }
                        _ => None,
                    };
                    if let (Some(norm), Some(name)) = (norm, bn_name) {
                        if frozen(name) {
                            norm.freeze();
                        }
                    }
                }
                Layer::Norm(norm) if frozen(&node.name) => norm.freeze(),
                _ => {}
            }
        }
        Ok(())
    }

    /// Forgets every observed range, before calibrating again.
    pub fn reset_observers(&mut self) {
        for layer in &mut self.layers {
            if let Layer::FakeQuant { observer, .. } = layer {
                *observer = observer.reset();
            }
        }
    }

    /// Undoes [`Network::freeze`]: every layer trains again.
    pub fn unfreeze(&mut self) {
        for layer in &mut self.layers {
            match layer {
                Layer::Linear {
                    weight, bias, norm, ..
                } => {
                    let _ = weight.requires_grad_(true);
                    if let Some(b) = bias {
                        let _ = b.requires_grad_(true);
                    }
                    if let Some(norm) = norm {
                        norm.unfreeze();
                    }
                }
                Layer::Norm(norm) => norm.unfreeze(),
                _ => {}
            }
        }
        self.frozen.clear();
    }

    /// Finishes calibration: narrows every observer's range as `method` says.
    pub fn finish_calibration(&mut self, method: RangeMethod) {
        for layer in &mut self.layers {
            if let Layer::FakeQuant { observer, .. } = layer {
                observer.finish_calibration(method);
            }
        }
    }

    /// Keeps learned scales positive and zero points in range after an optimizer step.
    pub fn clamp_learned_ranges(&self) {
        tch::no_grad(|| {
            for layer in &self.layers {
                if let Layer::FakeQuant {
                    learned: Some(r),
                    observer,
                } = layer
                {
                    let (qmin, qmax) = observer.spec.range();
                    let _ = r.zero_point.shallow_clone().clamp_(qmin, qmax);
                }
            }
        });
    }

    /// Every batch norm's running mean and variance, in node order (the same on every
    /// rank of a data-parallel run).
    pub fn running_statistics(&self) -> Vec<Tensor> {
        self.layers
            .iter()
            .filter_map(|layer| match layer {
                Layer::Linear { norm, .. } => norm.as_ref(),
                Layer::Norm(norm) => Some(norm),
                Layer::None | Layer::FakeQuant { .. } => None,
            })
            .flat_map(|n| {
                [
                    n.running_mean.shallow_clone(),
                    n.running_var.shallow_clone(),
                ]
            })
            .collect()
    }

    pub fn trainable_count(&self) -> i64 {
        self.vs
            .trainable_variables()
            .iter()
            .filter(|t| t.requires_grad())
            .map(|t| t.numel() as i64)
            .sum()
    }
}

fn freeze_tensor(t: &mut Tensor) {
    // The variable store keeps a shallow copy; switching gradients off in place reaches it.
    let _ = t.requires_grad_(false);
}

/// Makes `[N, C, H, W]` float batches from bytes, scaled to [0, 1].
pub fn images_to_tensor(pixels: &[u8], shape: &[usize], device: tch::Device) -> Tensor {
    let per = shape.iter().product::<usize>();
    let n = pixels.len() / per;
    let dims: Vec<i64> = std::iter::once(n as i64)
        .chain(shape.iter().map(|&d| d as i64))
        .collect();
    Tensor::from_slice(pixels)
        .to_kind(Kind::Float)
        .view(dims.as_slice())
        .to_device(device)
        / 255.0
}

/// [`images_to_tensor`], then normalized per channel: `(p / 255 - mean[c]) / std[c]`, the
/// same f32 operations as [`crate::preprocess::Normalize::apply`] (the int8 runtime's).
pub fn normalized_images_to_tensor(
    pixels: &[u8],
    shape: &[usize],
    normalize: &crate::preprocess::Normalize,
    device: tch::Device,
) -> Tensor {
    let x = images_to_tensor(pixels, shape, device);
    if normalize.is_identity() {
        return x;
    }
    // [1, C, 1, 1] against [N, C, H, W]; [1, 1] against a flat [N, F].
    let mut dims = vec![1i64; shape.len() + 1];
    dims[1] = normalize.mean.len() as i64;
    let per = |v: &[f32]| {
        Tensor::from_slice(v)
            .view(dims.as_slice())
            .to_device(device)
    };
    (x - per(&normalize.mean)) / per(&normalize.std)
}

/// Checks that every name a recipe list (`transfer.freeze`, `transfer.skip`) gives is a
/// layer of the model: binding names, and a fused batch norm by its own name.
pub fn check_layers(graph: &Graph, list: &str, names: &[String]) -> Result<(), String> {
    let known = layer_names(graph);
    if let Some(unknown) = names.iter().find(|n| !known.contains(&n.as_str())) {
        let hint = crate::diagnostics::did_you_mean(unknown, known.iter().copied())
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return Err(format!(
            "{list} names `{unknown}`, which is not a layer of `{}`{hint}\n  layers: {}",
            graph.name,
            known.join(", ")
        ));
    }
    Ok(())
}

/// Every layer name of `graph`: its nodes and the batch norms folded into them.
fn layer_names(graph: &Graph) -> Vec<&str> {
    let mut known: Vec<&str> = Vec::new();
    for node in &graph.nodes {
        known.push(&node.name);
        if let Op::Conv2d { epilogue, .. } | Op::Dense { epilogue, .. } = &node.op {
            if let Some(bn) = &epilogue.batch_norm {
                known.push(&bn.name);
            }
        }
    }
    known
}

/// `list`'s entries with each `*` pattern (`features_*`) replaced by the layers it
/// matches; a plain name that is not a layer, or a pattern that matches none, is an error.
pub fn expand_layers(graph: &Graph, list: &str, names: &[String]) -> Result<Vec<String>, String> {
    let known = layer_names(graph);
    let mut out = Vec::new();
    for name in names {
        if super::mapping::is_pattern(name) {
            let matched: Vec<&str> = known
                .iter()
                .copied()
                .filter(|k| super::mapping::glob(name, k).is_some())
                .collect();
            if matched.is_empty() {
                return Err(format!(
                    "{list} pattern `{name}` matches no layer of `{}`\n  layers: {}",
                    graph.name,
                    known.join(", ")
                ));
            }
            out.extend(matched.into_iter().map(str::to_string));
        } else {
            check_layers(graph, list, std::slice::from_ref(name))?;
            out.push(name.clone());
        }
    }
    out.dedup();
    Ok(out)
}
