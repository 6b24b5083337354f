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

mod layers;
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

    /// Runs the graph on a batch `[N, ...input shape]`; returns the output.
    pub fn forward(&mut self, xs: &Tensor, mode: Mode, train: bool) -> Tensor {
        let n = self.graph.nodes.len();
        let mut values: Vec<Option<Tensor>> = (0..n).map(|_| None).collect();
        let mut remaining: Vec<usize> = self.graph.consumers().iter().map(Vec::len).collect();
        let sample = mode == Mode::Calibrate && self.quant.calibration != RangeMethod::MinMax;
        for i in 0..n {
            let node = &self.graph.nodes[i];
            let input = |k: usize| {
                values[node.inputs[k].index()]
                    .as_ref()
                    .expect("inputs come first")
            };
            let quantize = mode == Mode::Quantized && !node.quant.float && self.enabled[i];
            #[deny(clippy::wildcard_enum_match_arm)]
            let out = match &node.op {
                Op::Input => xs.shallow_clone(),
                Op::Conv2d {
                    stride,
                    pad,
                    dilation,
                    groups,
                    epilogue,
                    ..
                } => {
                    let (dilation, groups) = (*dilation as i64, *groups as i64);
                    let pad = *pad as i64;
                    let stride = *stride as i64;
                    let y = self.linear(i, input(0), quantize, mode, train, |x, w, b| {
                        x.conv2d(
                            w,
                            b,
                            [stride, stride],
                            [pad, pad],
                            [dilation, dilation],
                            groups,
                        )
                    });
                    activate(y, epilogue.activation)
                }
                Op::Dense { epilogue, .. } => {
                    let y =
                        self.linear(i, input(0), quantize, mode, train, |x, w, b| x.linear(w, b));
                    activate(y, epilogue.activation)
                }
                Op::BatchNorm { .. } => match &self.layers[i] {
                    Layer::Norm(norm) => norm.apply(
                        input(0),
                        train && (mode == Mode::Float || !self.quant.bn_frozen),
                    ),
                    Layer::None | Layer::Linear { .. } | Layer::FakeQuant { .. } => {
                        unreachable!("batch_norm nodes own a Norm")
                    }
                },
                Op::Relu => activate(input(0).shallow_clone(), Some(Activation::Relu)),
                Op::MaxPool2d { size, stride } => {
                    let (k, s) = (*size as i64, *stride as i64);
                    input(0).max_pool2d([k, k], [s, s], [0, 0], [1, 1], false)
                }
                Op::Flatten => input(0).flatten(1, -1),
                Op::Add { activation } => activate(input(0) + input(1), *activation),
                Op::Relu6 => activate(input(0).shallow_clone(), Some(Activation::Relu6)),
                Op::Hardswish => input(0).hardswish(),
                Op::Sigmoid => input(0).sigmoid(),
                Op::AvgPool2d { size, stride } => {
                    let (k, s) = (*size as i64, *stride as i64);
                    input(0).avg_pool2d([k, k], [s, s], [0, 0], false, true, None::<i64>)
                }
                Op::GlobalAvgPool => input(0).mean_dim([2i64, 3].as_slice(), false, Kind::Float),
                Op::Reshape { shape } => {
                    let dims: Vec<i64> = std::iter::once(-1)
                        .chain(shape.iter().map(|&d| d as i64))
                        .collect();
                    input(0).reshape(dims.as_slice())
                }
                Op::Mul => {
                    // IR shapes broadcast from the right without the batch dimension, so a
                    // lower-rank operand gets its 1s right after the batch, not before it.
                    let (a, b) = (input(0), input(1));
                    let rank = a.dim().max(b.dim());
                    let lift = |t: &Tensor| {
                        let mut dims = t.size();
                        while dims.len() < rank {
                            dims.insert(1, 1);
                        }
                        t.reshape(dims.as_slice())
                    };
                    lift(a) * lift(b)
                }
                // Axes in the IR exclude the batch dimension.
                Op::Concat { axis } => {
                    let parts: Vec<&Tensor> = (0..node.inputs.len()).map(input).collect();
                    Tensor::cat(&parts, *axis as i64 + 1)
                }
                Op::Dropout { rate } => input(0).dropout(*rate, train),
                Op::Softmax { axis } => input(0).softmax(*axis as i64 + 1, Kind::Float),
                Op::Pad { size } => {
                    let p = *size as i64;
                    input(0).constant_pad_nd([p, p, p, p])
                }
                // A concat's input, quantized with the concat's range; its observer sees
                // the joined values, so nothing is observed here.
                Op::FakeQuant { spec, .. } if self.range_source[i].index() != i => {
                    let x = input(0);
                    match (mode, &self.layers[self.range_source[i].index()]) {
                        (Mode::Quantized, Layer::FakeQuant { observer, learned })
                            if self.enabled[i] =>
                        {
                            match learned {
                                Some(range) => learned_fake_quant(x, range, *spec),
                                None => observer.fake_quant(x),
                            }
                        }
                        _ => x.shallow_clone(),
                    }
                }
                Op::FakeQuant { spec, .. } => {
                    let Layer::FakeQuant { observer, learned } = &mut self.layers[i] else {
                        unreachable!("fake-quant nodes own an observer")
                    };
                    let x = input(0);
                    match (mode, learned) {
                        (Mode::Float, _) => x.shallow_clone(),
                        (Mode::Quantized, _) if !self.enabled[i] => x.shallow_clone(),
                        (Mode::Calibrate, _) => {
                            observer.observe(x, None);
                            if sample {
                                observer.sample(x);
                            }
                            x.shallow_clone()
                        }
                        (Mode::Quantized, Some(range)) => learned_fake_quant(x, range, *spec),
                        (Mode::Quantized, None) => {
                            if train && !self.quant.observers_frozen {
                                observer.observe_reduced(
                                    x,
                                    Some(Observer::QAT_AVERAGING),
                                    self.range_reduce.as_deref(),
                                );
                            }
                            observer.fake_quant(x)
                        }
                    }
                }
            };
            // Free intermediate values as soon as their last reader has run.
            for &k in &node.inputs {
                remaining[k.index()] -= 1;
                if remaining[k.index()] == 0 && k != self.graph.output {
                    values[k.index()] = None;
                }
            }
            values[i] = Some(out);
        }
        values[self.graph.output.index()]
            .take()
            .expect("the output is computed")
    }

    /// A conv2d or dense with its fused batch norm. Float: BN after the op, as written.
    /// Quantized: BN folded into the weights before they are quantized, as the int8
    /// kernel will run it; while BN still trains, the batch-statistics correction
    /// (Krishnamoorthi 2018): quantize w·γ/σ_running, then rescale the output and
    /// normalize it with the batch's own statistics.
    fn linear(
        &self,
        i: usize,
        x: &Tensor,
        quantize: bool,
        mode: Mode,
        train: bool,
        op: impl Fn(&Tensor, &Tensor, Option<&Tensor>) -> Tensor,
    ) -> Tensor {
        let Layer::Linear {
            weight,
            bias,
            norm,
            learned_scale,
            clip_cache,
        } = &self.layers[i]
        else {
            unreachable!("linear nodes own weights")
        };
        let spec = self.graph.nodes[i].quant.weights;
        let quantized = |w: &Tensor| -> Tensor {
            match (quantize, learned_scale) {
                (false, _) => w.shallow_clone(),
                (true, Some(log_scale)) => learned_weight_fake_quant(w, log_scale, spec),
                // Searching the best clipping on every step costs more than the rest of a
                // large layer's step, and the best ratio moves slowly: refresh it now and then.
                (true, None) if train && self.quant.weight_range == WeightRange::Mse => {
                    let mut cache = clip_cache.borrow_mut();
                    let stale = cache
                        .as_ref()
                        .is_none_or(|(_, age)| *age >= MSE_REFRESH_STEPS);
                    if stale {
                        *cache = Some((mse_clip_ratios(w, spec), 0));
                    }
                    let (ratio, age) = cache.as_mut().expect("just filled");
                    *age += 1;
                    fake_quant_weights_with(w, spec, clipped_weight_params(w, spec, Some(ratio)))
                }
                (true, None) => fake_quant_weights(w, spec, self.quant.weight_range),
            }
        };
        match (norm, mode) {
            (Some(norm), Mode::Float | Mode::Calibrate) => {
                norm.apply(&op(x, weight, bias.as_ref()), train && mode == Mode::Float)
            }
            (Some(norm), Mode::Quantized) if train && !self.quant.bn_frozen && !norm.frozen => {
                let factor = norm.factor();
                let channel_shape = per_channel_shape(x.dim());
                let y = op(x, &quantized(&fold(weight, Some(norm))), None)
                    / factor.view(channel_shape.as_slice());
                let y = match bias {
                    Some(b) => y + b.view(channel_shape.as_slice()),
                    None => y,
                };
                norm.apply(&y, true)
            }
            (norm, _) => {
                let w = fold(weight, norm.as_ref());
                let b = folded_bias(bias.as_ref(), norm.as_ref());
                op(x, &quantized(&w), b.as_ref())
            }
        }
    }

    /// The weights and bias the int8 model gets: BN folded, and the weight scales used.
    pub fn folded(&self, id: NodeId) -> Option<(Tensor, Option<Tensor>, Tensor)> {
        let Layer::Linear {
            weight,
            bias,
            norm,
            learned_scale,
            ..
        } = &self.layers[id.index()]
        else {
            return None;
        };
        tch::no_grad(|| {
            let w = fold(weight, norm.as_ref());
            let spec = self.graph.node(id).quant.weights;
            let scale = match learned_scale {
                Some(log_scale) => log_scale.exp(),
                None => weight_params(&w, spec, self.quant.weight_range).0,
            };
            Some((w, folded_bias(bias.as_ref(), norm.as_ref()), scale))
        })
    }

    /// What lowering consumes: per quantized conv2d and dense the weights and bias with
    /// batch norm folded as the fake-quant forward folds them, and the weight scales it
    /// used; per fake-quant node the activation range it used.
    pub fn quantized_params(&self) -> QuantizedParams {
        let floats = |t: &Tensor| {
            Vec::<f32>::try_from(
                &t.to_device(tch::Device::Cpu)
                    .to_kind(Kind::Float)
                    .flatten(0, -1),
            )
            .expect("a float tensor converts to f32s")
        };
        let mut params = QuantizedParams::default();
        for (i, node) in self.graph.nodes.iter().enumerate() {
            match &self.layers[self.range_source[i].index()] {
                Layer::FakeQuant { observer, learned } => {
                    let range = match learned {
                        Some(r) => Some(learned_min_max(r, observer.spec)),
                        None => observer
                            .is_initialized()
                            .then_some((observer.min, observer.max)),
                    };
                    // A fixed range is the op's, in the graph.
                    let fixed = matches!(
                        node.op,
                        Op::FakeQuant {
                            range: RangeSource::Fixed { .. },
                            ..
                        }
                    );
                    if let (Some(range), false) = (range, fixed) {
                        params.ranges.insert(node.name.clone(), range);
                    }
                }
                Layer::Linear { .. } if !node.quant.float => {
                    if let Some((w, b, scale)) = self.folded(NodeId(i as u32)) {
                        let out = w.size()[0] as usize;
                        params.linear.insert(
                            node.name.clone(),
                            LinearParams {
                                weight: floats(&w),
                                bias: b.as_ref().map_or_else(|| vec![0.0; out], floats),
                                weight_scales: channel_scales(
                                    node.quant.weights,
                                    &floats(&scale),
                                    out,
                                ),
                            },
                        );
                    }
                }
                _ => {}
            }
        }
        params
    }

    /// Named tensors to save: all parameters and statistics, the ranges of every
    /// fake-quant node (`<node>.min` / `.max`) and the weight scales used
    /// (`<node>.weight_scale`), so that lowering reproduces the quantized model exactly.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        for (i, node) in self.graph.nodes.iter().enumerate() {
            match &self.layers[self.range_source[i].index()] {
                Layer::FakeQuant { observer, learned } => {
                    let range = match learned {
                        Some(r) => Some(learned_min_max(r, observer.spec)),
                        None => observer
                            .is_initialized()
                            .then_some((observer.min, observer.max)),
                    };
                    if let Some((min, max)) = range {
                        out.push((format!("{}.min", node.name), Tensor::from_slice(&[min])));
                        out.push((format!("{}.max", node.name), Tensor::from_slice(&[max])));
                    }
                }
                Layer::Linear { .. } if !node.quant.float => {
                    if let Some((_, _, scale)) = self.folded(NodeId(i as u32)) {
                        out.push((format!("{}.weight_scale", node.name), scale));
                    }
                }
                _ => {}
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Restores the state [`Network::named_tensors`] saved: every variable, and the
    /// ranges of observed fake-quant nodes.
    pub fn restore(
        &mut self,
        tensors: &std::collections::HashMap<String, Tensor>,
    ) -> Result<(), String> {
        let vars = self.vs.variables();
        tch::no_grad(|| {
            for (name, var) in &vars {
                let saved = tensors
                    .get(name)
                    .ok_or_else(|| format!("`{name}` is missing"))?;
                if saved.size() != var.size() {
                    return Err(format!(
                        "`{name}` has shape {:?}, the model {:?}",
                        saved.size(),
                        var.size()
                    ));
                }
                var.shallow_clone().copy_(saved);
            }
            Ok(())
        })?;
        for (node, layer) in self.graph.nodes.iter().zip(self.layers.iter_mut()) {
            if let Layer::FakeQuant {
                observer,
                learned: None,
            } = layer
            {
                let value = |suffix: &str| {
                    tensors
                        .get(&format!("{}.{suffix}", node.name))
                        .map(|t| t.double_value(&[0]) as f32)
                };
                if let (Some(min), Some(max)) = (value("min"), value("max")) {
                    observer.restore(min, max);
                }
            }
        }
        Ok(())
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

/// A fused or standalone activation, exactly as the int8 clamps reproduce it.
fn activate(y: Tensor, activation: Option<Activation>) -> Tensor {
    match activation {
        None => y,
        Some(Activation::Relu) => y.relu(),
        Some(Activation::Relu6) => y.clamp(0.0, 6.0),
    }
}

fn freeze_tensor(t: &mut Tensor) {
    // The variable store keeps a shallow copy; switching gradients off in place reaches it.
    let _ = t.requires_grad_(false);
}

fn per_channel_shape(dims: usize) -> Vec<i64> {
    // [1, C] for dense outputs, [1, C, 1, 1] for conv outputs.
    let mut shape = vec![1, -1];
    shape.resize(dims, 1);
    shape
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
