//! Conv2d and dense weights: batch norm folded, weights quantized per output channel,
//! int32 biases and the requantization multipliers, as the fake-quant forward computes them.

use super::*;

impl Lowering<'_> {
    pub(super) fn put_weights(
        &mut self,
        name: &str,
        w_shape: Vec<usize>,
        wq: Vec<i8>,
        bq: Vec<i32>,
    ) -> (String, String) {
        let (weight, bias) = (format!("{name}.weight"), format!("{name}.bias"));
        let out = w_shape[0];
        self.out_tensors.insert(
            weight.clone(),
            IntTensor::I8 {
                shape: w_shape,
                data: wq,
            },
        );
        self.out_tensors.insert(
            bias.clone(),
            IntTensor::I32 {
                shape: vec![out],
                data: bq,
            },
        );
        (weight, bias)
    }

    /// Folds batch norm, quantizes weights per output channel and the bias, and
    /// computes the requantization multipliers, exactly as the fake-quant forward does.
    pub(super) fn linear(
        &self,
        id: NodeId,
        w_shape: &[usize],
        has_bias: bool,
        bn: Option<&crate::ir::ops::FusedBatchNorm>,
        input: usize,
        out_quant: QParams,
    ) -> Result<QuantizedLinear, LowerError> {
        let node = self.graph.node(id);
        let spec = node.quant.weights;
        if spec.scheme != Scheme::Symmetric {
            return Err(self.err(id, format!("weights are {spec}; integer kernels need symmetric weights (zero point 0)\n  hint: use int8(symmetric, per_channel) for weights")));
        }
        let out = w_shape[0];
        let per: usize = w_shape[1..].iter().product();
        let mut w = self
            .tensor(&format!("{}.weight", node.name), w_shape)?
            .data
            .clone();
        let mut b = if has_bias {
            self.tensor(&format!("{}.bias", node.name), &[out])?
                .data
                .clone()
        } else {
            vec![0.0f32; out]
        };
        if let Some(bn) = bn {
            let get = |what: &str| {
                self.tensor(&format!("{}.{what}", bn.name), &[out])
                    .map(|t| t.data.clone())
            };
            let (gamma, beta, mean, var) = (
                get("weight")?,
                get("bias")?,
                get("running_mean")?,
                get("running_var")?,
            );
            let eps = bn.eps as f32;
            for o in 0..out {
                let factor = gamma[o] / (var[o] + eps).sqrt();
                let shift = beta[o] - mean[o] * factor;
                for x in &mut w[o * per..(o + 1) * per] {
                    *x *= factor;
                }
                b[o] = if has_bias {
                    b[o] * factor + shift
                } else {
                    shift
                };
            }
        }
        let (_, qmax) = spec.range();
        // The scales the fake-quant forward used, when training saved them (MSE ranges,
        // learned scales); else the min-max rule, computed from the folded weights.
        let saved = format!("{}.weight_scale", node.name);
        let scales: Vec<f32> = match self.tensors.get(&saved) {
            Some(t) => {
                let n = t.data.len();
                if n != out && n != 1 {
                    return Err(LowerError::TensorShape {
                        name: saved,
                        got: t.shape.clone(),
                        expected: vec![out],
                    });
                }
                if t.data.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                    return Err(LowerError::NonFinite { name: saved });
                }
                match spec.granularity {
                    // A per-tensor learned scale is the mean of the saved ones, as in training.
                    crate::ir::Granularity::PerTensor => {
                        vec![t.data.iter().sum::<f32>() / n as f32; out]
                    }
                    crate::ir::Granularity::PerChannel if n == out => t.data.clone(),
                    crate::ir::Granularity::PerChannel => vec![t.data[0]; out],
                }
            }
            None => match spec.granularity {
                crate::ir::Granularity::PerChannel => (0..out)
                    .map(|o| weight_scale(&w[o * per..(o + 1) * per], qmax))
                    .collect(),
                crate::ir::Granularity::PerTensor => vec![weight_scale(&w, qmax); out],
            },
        };
        let mut wq = Vec::with_capacity(w.len());
        for o in 0..out {
            let inv = 1.0f32 / scales[o];
            wq.extend(
                w[o * per..(o + 1) * per]
                    .iter()
                    .map(|&x| (x * inv).round_ties_even().clamp(-qmax as f32, qmax as f32) as i8),
            );
        }
        let s_x = self.out.values[input].quant.scale as f64;
        let mut bq = Vec::with_capacity(out);
        let mut requant = Vec::with_capacity(out);
        for o in 0..out {
            let acc_scale = s_x * scales[o] as f64;
            let q = (b[o] as f64 / acc_scale).round_ties_even();
            bq.push(q.clamp(i32::MIN as f64 / 2.0, i32::MAX as f64 / 2.0) as i32);
            requant.push(self.multiplier(id, acc_scale / out_quant.scale as f64)?);
        }
        Ok((wq, bq, requant, scales))
    }
}

/// The symmetric scale of one weight row, as `train::fake_quant_weights` computes it in f32.
fn weight_scale(row: &[f32], qmax: i64) -> f32 {
    let lo = row.iter().copied().fold(f32::INFINITY, f32::min).min(0.0);
    let hi = row
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
        .max(0.0);
    (lo.abs().max(hi) / qmax as f32).max(f32::EPSILON)
}

#[cfg(test)]
mod tests {
    use super::weight_scale;

    #[test]
    fn weight_scale_matches_the_fake_quant_rule() {
        assert_eq!(weight_scale(&[-0.5, 0.25], 127), 0.5 / 127.0);
        assert_eq!(weight_scale(&[0.0, 0.0], 127), f32::EPSILON);
        assert_eq!(weight_scale(&[0.1, 0.3], 127), 0.3 / 127.0);
    }
}
