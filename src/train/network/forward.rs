//! The forward pass: the graph run node by node on libtorch tensors, in float, while
//! calibrating, or with fake quantization (BN folded into the weights as lowering folds it).

use super::*;
use crate::train::profile::{self, Phase};

impl Network {
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
                Op::Hardsigmoid => input(0).hardsigmoid(),
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
                            profile::time(Phase::FakeQuant, || match learned {
                                Some(range) => learned_fake_quant(x, range, *spec),
                                None => observer.fake_quant(x),
                            })
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
                        (Mode::Quantized, Some(range)) => {
                            profile::time(Phase::FakeQuant, || learned_fake_quant(x, range, *spec))
                        }
                        (Mode::Quantized, None) => {
                            if train && !self.quant.observers_frozen {
                                profile::time(Phase::Observers, || {
                                    observer.observe_reduced(
                                        x,
                                        Some(Observer::QAT_AVERAGING),
                                        self.range_reduce.as_deref(),
                                    )
                                });
                            }
                            profile::time(Phase::FakeQuant, || observer.fake_quant(x))
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
            if !quantize {
                return w.shallow_clone();
            }
            profile::time(Phase::FakeQuant, || match (quantize, learned_scale) {
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
            })
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
}

/// A fused or standalone activation, exactly as the int8 clamps reproduce it.
fn activate(y: Tensor, activation: Option<Activation>) -> Tensor {
    match activation {
        None => y,
        Some(Activation::Relu) => y.relu(),
        Some(Activation::Relu6) => y.clamp(0.0, 6.0),
    }
}

fn per_channel_shape(dims: usize) -> Vec<i64> {
    // [1, C] for dense outputs, [1, C, 1, 1] for conv outputs.
    let mut shape = vec![1, -1];
    shape.resize(dims, 1);
    shape
}
