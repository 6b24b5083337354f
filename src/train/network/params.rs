//! What a trained network hands on: the folded weights and scales lowering consumes
//! ([`QuantizedParams`]), and the named tensors a checkpoint saves and restores.

use super::*;

impl Network {
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
}
