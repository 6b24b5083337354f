//! Executes a quantized-stage graph with libtorch: the same network runs in float,
//! calibrates observers, or runs with fake quantization (PTQ evaluation and QAT).

use tch::{nn, Kind, Tensor};

use super::observer::{fake_quant_weights, Observer};
use crate::ir::ops::Padding;
use crate::ir::{Graph, NodeId, Op};

/// How fake-quant points and weights behave in a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain float network; fake-quant nodes are the identity.
    Float,
    /// Float network whose fake-quant nodes record the ranges they see.
    Calibrate,
    /// Fake quantization everywhere; batch norms folded into weights with frozen statistics.
    Quantized,
}

/// A batch norm's parameters and running statistics.
struct Norm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    eps: f64,
    momentum: f64,
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
        }
    }

    fn apply(&self, xs: &Tensor, training: bool) -> Tensor {
        xs.batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            training,
            self.momentum,
            self.eps,
            false,
        )
    }

    /// Per-channel factor gamma / sigma and shift beta - mean * factor, from running statistics.
    fn folding(&self) -> (Tensor, Tensor) {
        let factor = &self.weight / (&self.running_var + self.eps).sqrt();
        let shift = &self.bias - &self.running_mean * &factor;
        (factor, shift)
    }
}

/// Parameters of one node.
enum Layer {
    None,
    Linear {
        weight: Tensor,
        bias: Option<Tensor>,
        norm: Option<Norm>,
    },
    Norm(Norm),
}

pub struct Network {
    pub graph: Graph,
    pub vs: nn::VarStore,
    layers: Vec<Layer>,
    pub observers: Vec<Option<Observer>>,
}

impl Network {
    /// Creates parameters for every node, named `<node>.weight`, `<bn node>.running_mean`, ...
    pub fn new(graph: &Graph, device: tch::Device) -> Network {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let mut layers = Vec::with_capacity(graph.nodes.len());
        let mut observers = Vec::with_capacity(graph.nodes.len());
        for node in &graph.nodes {
            let layer = match &node.op {
                Op::Conv2d {
                    filters,
                    kernel,
                    in_channels,
                    bias,
                    epilogue,
                    ..
                } => {
                    let config = nn::ConvConfig {
                        bias: *bias,
                        ..Default::default()
                    };
                    let conv = nn::conv2d(
                        root.sub(&node.name),
                        *in_channels as i64,
                        *filters as i64,
                        *kernel as i64,
                        config,
                    );
                    let norm = epilogue.batch_norm.as_ref().map(|bn| {
                        Norm::new(
                            root.sub(&bn.name),
                            *filters as i64,
                            bn.eps,
                            bn.momentum,
                            true,
                        )
                    });
                    Layer::Linear {
                        weight: conv.ws,
                        bias: conv.bs,
                        norm,
                    }
                }
                Op::Dense {
                    units,
                    in_features,
                    bias,
                    epilogue,
                } => {
                    let config = nn::LinearConfig {
                        bias: *bias,
                        ..Default::default()
                    };
                    let linear = nn::linear(
                        root.sub(&node.name),
                        *in_features as i64,
                        *units as i64,
                        config,
                    );
                    let norm = epilogue.batch_norm.as_ref().map(|bn| {
                        Norm::new(
                            root.sub(&bn.name),
                            *units as i64,
                            bn.eps,
                            bn.momentum,
                            false,
                        )
                    });
                    Layer::Linear {
                        weight: linear.ws,
                        bias: linear.bs,
                        norm,
                    }
                }
                Op::BatchNorm {
                    channels,
                    eps,
                    momentum,
                } => Layer::Norm(Norm::new(
                    root.sub(&node.name),
                    *channels as i64,
                    *eps,
                    *momentum,
                    node.shape.len() == 3,
                )),
                _ => Layer::None,
            };
            layers.push(layer);
            observers.push(match node.op {
                Op::FakeQuant { spec } => Some(Observer::new(spec)),
                _ => None,
            });
        }
        Network {
            graph: graph.clone(),
            vs,
            layers,
            observers,
        }
    }

    /// A copy with the same parameters, statistics and observer ranges.
    pub fn duplicate(&self) -> Network {
        let mut copy = Network::new(&self.graph, self.vs.device());
        copy.vs.copy(&self.vs).expect("same graph, same variables");
        copy.observers = self.observers.clone();
        copy
    }

    /// Runs the graph on a batch `[N, ...input shape]`; returns the output.
    pub fn forward(&mut self, xs: &Tensor, mode: Mode, train: bool) -> Tensor {
        let mut values: Vec<Option<Tensor>> = (0..self.graph.nodes.len()).map(|_| None).collect();
        let consumers = self.graph.consumers();
        let mut remaining: Vec<usize> = consumers.iter().map(Vec::len).collect();
        for i in 0..self.graph.nodes.len() {
            let id = NodeId(i as u32);
            let node = &self.graph.nodes[i];
            let input = |k: usize| {
                values[node.inputs[k].index()]
                    .as_ref()
                    .expect("inputs come first")
            };
            let out = match &node.op {
                Op::Input => xs.shallow_clone(),
                Op::Conv2d {
                    stride,
                    padding,
                    kernel,
                    epilogue,
                    ..
                } => {
                    let pad = match padding {
                        Padding::Valid => 0,
                        Padding::Same => (*kernel as i64 - 1) / 2,
                    };
                    let quantize = mode == Mode::Quantized && !node.quant.float;
                    let spec = node.quant.weights;
                    let stride = *stride as i64;
                    let y = self.linear(
                        i,
                        input(0),
                        quantize,
                        mode,
                        train,
                        |x, w, b| x.conv2d(w, b, [stride, stride], [pad, pad], [1, 1], 1),
                        spec,
                    );
                    if epilogue.relu {
                        y.relu()
                    } else {
                        y
                    }
                }
                Op::Dense { epilogue, .. } => {
                    let quantize = mode == Mode::Quantized && !node.quant.float;
                    let y = self.linear(
                        i,
                        input(0),
                        quantize,
                        mode,
                        train,
                        |x, w, b| x.linear(w, b),
                        node.quant.weights,
                    );
                    if epilogue.relu {
                        y.relu()
                    } else {
                        y
                    }
                }
                Op::BatchNorm { .. } => match &self.layers[i] {
                    Layer::Norm(norm) => norm.apply(input(0), train && mode == Mode::Float),
                    _ => unreachable!("batch_norm nodes own a Norm"),
                },
                Op::Relu => input(0).relu(),
                Op::MaxPool2d { size, stride } => {
                    let (k, s) = (*size as i64, *stride as i64);
                    input(0).max_pool2d([k, k], [s, s], [0, 0], [1, 1], false)
                }
                Op::Flatten => input(0).flatten(1, -1),
                Op::Add => input(0) + input(1),
                Op::FakeQuant { .. } => {
                    let observer = self.observers[i]
                        .as_mut()
                        .expect("fake-quant nodes own an observer");
                    match mode {
                        Mode::Float => input(0).shallow_clone(),
                        Mode::Calibrate => {
                            observer.observe(input(0), None);
                            input(0).shallow_clone()
                        }
                        Mode::Quantized => {
                            if train {
                                observer.observe(input(0), Some(Observer::QAT_AVERAGING));
                            }
                            observer.fake_quant(input(0))
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
            values[id.index()] = Some(out);
        }
        values[self.graph.output.index()]
            .take()
            .expect("the output is computed")
    }

    /// A conv2d or dense, with its batch norm folded in when running quantized.
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &self,
        i: usize,
        x: &Tensor,
        quantize: bool,
        mode: Mode,
        train: bool,
        op: impl Fn(&Tensor, &Tensor, Option<&Tensor>) -> Tensor,
        spec: crate::ir::QuantSpec,
    ) -> Tensor {
        let Layer::Linear { weight, bias, norm } = &self.layers[i] else {
            unreachable!("linear nodes own weights")
        };
        match (norm, mode) {
            // Float training and calibration see the network as written: BN after the op.
            (Some(norm), Mode::Float | Mode::Calibrate) => {
                norm.apply(&op(x, weight, bias.as_ref()), train && mode == Mode::Float)
            }
            (None, _) | (Some(_), Mode::Quantized) => {
                let (w, b) = match norm {
                    // Fold with frozen running statistics: exactly the weights the int8 model gets.
                    Some(norm) => {
                        let (factor, shift) = norm.folding();
                        let shape: Vec<i64> = std::iter::once(-1)
                            .chain(std::iter::repeat_n(1, weight.dim() - 1))
                            .collect();
                        let w = weight * factor.view(shape.as_slice());
                        let b = match bias {
                            Some(b) => b * &factor + shift,
                            None => shift,
                        };
                        (w, Some(b))
                    }
                    None => (
                        weight.shallow_clone(),
                        bias.as_ref().map(Tensor::shallow_clone),
                    ),
                };
                let w = if quantize {
                    fake_quant_weights(&w, spec)
                } else {
                    w
                };
                op(x, &w, b.as_ref())
            }
        }
    }

    /// Named tensors to save: all parameters and statistics, plus observed ranges.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        for (node, observer) in self.graph.nodes.iter().zip(&self.observers) {
            if let Some(o) = observer.as_ref().filter(|o| o.is_initialized()) {
                out.push((format!("{}.min", node.name), Tensor::from_slice(&[o.min])));
                out.push((format!("{}.max", node.name), Tensor::from_slice(&[o.max])));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn trainable_count(&self) -> i64 {
        self.vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::{self, Stage};

    fn graph(text: &str) -> Graph {
        let checked = crate::check_source(&crate::diagnostics::SourceFile::new("t.qat", text));
        assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
        passes::run(checked.graphs.into_iter().next().unwrap(), Stage::Quantized)
    }

    const NET: &str = "model M { input x: f32[2, 9, 9]
        let c = conv2d(x, filters = 4, kernel = 3, stride = 2, padding = same)
        let c = batch_norm(c)
        let c = relu(c)
        let p = max_pool2d(c, size = 2)
        let f = flatten(p)
        let o = dense(f, units = 3)
        output o }";

    /// Trains BN statistics a little so that folding has something to fold.
    fn warmed(net: &mut Network, xs: &Tensor) {
        for _ in 0..3 {
            let _ = net.forward(xs, Mode::Float, true);
        }
    }

    #[test]
    fn float_forward_matches_libtorch_modules() {
        tch::manual_seed(0);
        let g = graph(NET);
        let mut net = Network::new(&g, tch::Device::Cpu);
        let xs = Tensor::randn([5, 2, 9, 9], (Kind::Float, tch::Device::Cpu));
        warmed(&mut net, &xs);
        let got = tch::no_grad(|| net.forward(&xs, Mode::Float, false));
        // The same network written directly against libtorch's functional ops.
        let v = net.vs.variables();
        let expected = xs
            .conv2d(
                &v["c.weight"],
                Some(&v["c.bias"]),
                [2, 2],
                [1, 1],
                [1, 1],
                1,
            )
            .batch_norm(
                Some(&v["c_1.weight"]),
                Some(&v["c_1.bias"]),
                Some(&v["c_1.running_mean"]),
                Some(&v["c_1.running_var"]),
                false,
                0.1,
                1e-5,
                false,
            )
            .relu()
            .max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
            .flatten(1, -1)
            .linear(&v["o.weight"], Some(&v["o.bias"]));
        assert!(got.allclose(&expected, 1e-5, 1e-6, false));
    }

    #[test]
    fn folded_batch_norm_equals_float_when_nothing_is_quantized() {
        tch::manual_seed(1);
        // All ops in float: Quantized mode then only folds BN into the conv.
        let g = graph(&NET.replace("let ", "@float\n let "));
        let mut net = Network::new(&g, tch::Device::Cpu);
        let xs = Tensor::randn([5, 2, 9, 9], (Kind::Float, tch::Device::Cpu));
        warmed(&mut net, &xs);
        let float = tch::no_grad(|| net.forward(&xs, Mode::Float, false));
        let folded = tch::no_grad(|| net.forward(&xs, Mode::Quantized, false));
        let diff = (&float - &folded).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "max difference {diff}");
    }

    #[test]
    fn fake_quant_output_lies_on_the_int8_grid() {
        tch::manual_seed(2);
        let g = graph(NET);
        let mut net = Network::new(&g, tch::Device::Cpu);
        let xs = Tensor::rand([8, 2, 9, 9], (Kind::Float, tch::Device::Cpu));
        warmed(&mut net, &xs);
        tch::no_grad(|| {
            let _ = net.forward(&xs, Mode::Calibrate, false);
        });
        let out = tch::no_grad(|| net.forward(&xs, Mode::Quantized, false));
        let (scale, zp) = net.observers[g.output.index()].as_ref().unwrap().params();
        let q = &out / scale as f64 + zp as f64;
        let off_grid = (&q - q.round()).abs().max().double_value(&[]);
        assert!(off_grid < 1e-3, "{off_grid}");
        let float = tch::no_grad(|| net.forward(&xs, Mode::Float, false));
        let err = (&out - &float).abs().max().double_value(&[]);
        assert!(err < 0.1, "fake-quant strays {err} from float");
    }
}
