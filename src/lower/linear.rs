//! Conv2d and dense weights (batch norm folded by training): weights quantized per output channel,
//! int32 biases and the requantization multipliers, as the fake-quant forward computes them.

use super::*;
use crate::quantized::LinearParams;

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

    /// Quantizes the folded weights per output channel and the bias, and computes the
    /// requantization multipliers, exactly as the fake-quant forward does.
    pub(super) fn linear(
        &self,
        id: NodeId,
        w_shape: &[usize],
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
        let LinearParams {
            weight: w,
            bias: b,
            weight_scales: scales,
        } = self
            .params
            .linear
            .get(&node.name)
            .ok_or_else(|| LowerError::MissingParams {
                node: node.name.clone(),
                what: "the weights",
            })?;
        if w.len() != out * per || b.len() != out || scales.len() != out {
            return Err(self.err(
                id,
                format!(
                    "its quantized parameters hold {} weights, {} biases and {} scales; the op needs {}, {out} and {out}",
                    w.len(),
                    b.len(),
                    scales.len(),
                    out * per
                ),
            ));
        }
        let (_, qmax) = spec.range();
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
        Ok((wq, bq, requant, scales.clone()))
    }
}
