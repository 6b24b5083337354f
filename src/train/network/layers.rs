//! Creating a network's parameters, statistics and observers, one layer per node.

use super::*;

impl Network {
    /// Creates parameters for every node, named `<node>.weight`, `<bn node>.running_mean`, ...
    #[deny(clippy::wildcard_enum_match_arm)]
    pub fn new(graph: &Graph, device: tch::Device) -> Network {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let layers = graph
            .nodes
            .iter()
            .map(|node| match &node.op {
                Op::Conv2d {
                    filters,
                    kernel,
                    in_channels,
                    bias,
                    groups,
                    ..
                } => {
                    // The weight is [filters, in_channels / groups, k, k]; stride, padding and
                    // dilation are applied in forward.
                    let config = nn::ConvConfig {
                        bias: *bias,
                        groups: *groups as i64,
                        ..Default::default()
                    };
                    let conv = nn::conv2d(
                        path(&root, &node.name),
                        *in_channels as i64,
                        *filters as i64,
                        *kernel as i64,
                        config,
                    );
                    linear_layer(&root, &node.op, conv.ws, conv.bs)
                }
                Op::Dense {
                    units,
                    in_features,
                    bias,
                    ..
                } => {
                    let config = nn::LinearConfig {
                        bias: *bias,
                        ..Default::default()
                    };
                    let linear = nn::linear(
                        path(&root, &node.name),
                        *in_features as i64,
                        *units as i64,
                        config,
                    );
                    linear_layer(&root, &node.op, linear.ws, linear.bs)
                }
                Op::BatchNorm {
                    channels,
                    eps,
                    momentum,
                } => Layer::Norm(Norm::new(
                    path(&root, &node.name),
                    *channels as i64,
                    *eps,
                    *momentum,
                    node.shape.len() == 3,
                )),
                Op::FakeQuant { spec, range } => Layer::FakeQuant {
                    observer: match range {
                        RangeSource::Fixed { scale, zero_point } => {
                            Observer::fixed(*spec, *scale, *zero_point)
                        }
                        RangeSource::Observed | RangeSource::SharedWith(_) => Observer::new(*spec),
                    },
                    learned: None,
                },
                // No parameters and no observer.
                Op::Input
                | Op::Relu
                | Op::Relu6
                | Op::Hardswish
                | Op::Hardsigmoid
                | Op::Sigmoid
                | Op::MaxPool2d { .. }
                | Op::AvgPool2d { .. }
                | Op::GlobalAvgPool
                | Op::Flatten
                | Op::Reshape { .. }
                | Op::Add { .. }
                | Op::Mul
                | Op::Concat { .. }
                | Op::Dropout { .. }
                | Op::Softmax { .. }
                | Op::Pad { .. } => Layer::None,
            })
            .collect();
        let enabled = vec![true; graph.nodes.len()];
        Network {
            graph: graph.clone(),
            vs,
            layers,
            quant: QuantState::default(),
            frozen: Vec::new(),
            enabled,
            range_source: crate::passes::range_sources(graph),
            range_reduce: None,
        }
    }
}

/// The layer of a conv2d or dense whose libtorch weight and bias are made: with the
/// batch norm fused into it, as [`Op::weights`] says.
fn linear_layer(root: &nn::Path, op: &Op, weight: Tensor, bias: Option<Tensor>) -> Layer {
    let weights = op.weights().expect("conv2d and dense have weights");
    let norm = weights.batch_norm.map(|bn| {
        Norm::new(
            path(root, &bn.name),
            weights.out_channels() as i64,
            bn.eps,
            bn.momentum,
            // Per channel of an image ([N, C, H, W]) for conv2d, of a vector for dense.
            weights.shape.len() == 4,
        )
    });
    Layer::Linear {
        weight,
        bias,
        norm,
        learned_scale: None,
        clip_cache: Default::default(),
    }
}
