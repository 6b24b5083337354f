//! What training hands lowering: the quantized parameters of a trained model, typed.
//!
//! Per conv2d or dense, the weights and bias with batch norm folded in and the weight
//! scale of each output channel; per fake-quant node, the activation range. Training
//! makes them from its network ([`train::Network::quantized_params`](crate::train::Network::quantized_params));
//! [`QuantizedParams::from_tensors`] makes them from the trained state saved as
//! safetensors (`ptq.safetensors`, `qat.safetensors`), and is the only reader of that
//! file's naming conventions (`<node>.weight`, `<bn>.running_var`, `<node>.weight_scale`,
//! `<fake_quant>.min`). Batch-norm folding and the symmetric weight-scale rule are each
//! defined once ([`ops::fold_factor`], [`symmetric_scale`]) and used here and by training.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::Path;

use crate::ir::ops::{self, RangeSource};
use crate::ir::quant::symmetric_scale;
use crate::ir::{Granularity, Graph, Node, Op, QuantSpec};

/// A float tensor read from the trained weights (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct F32Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Float tensors by name, as `train` saves them.
pub type TensorMap = HashMap<String, F32Tensor>;

/// A conv2d's or dense's weights as the int8 model gets them.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearParams {
    /// Row-major, in the op's [`Op::weight_shape`], batch norm folded in.
    pub weight: Vec<f32>,
    /// One per output channel, batch norm folded in (zeros without a bias).
    pub bias: Vec<f32>,
    /// One symmetric scale per output channel (all equal for per-tensor weights).
    pub weight_scales: Vec<f32>,
}

/// The quantized parameters of a trained model, by node name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuantizedParams {
    /// Per quantized conv2d and dense.
    pub linear: BTreeMap<String, LinearParams>,
    /// Per fake-quant node with an observed (or shared) range: the real `[min, max]`.
    pub ranges: BTreeMap<String, (f32, f32)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    #[error("the weights lack tensor `{name}`\n  hint: were they written by `qatc build` for this model (after calibration or QAT)?")]
    MissingTensor { name: String },
    #[error("tensor `{name}` has shape {got:?}, the model needs {expected:?}")]
    TensorShape {
        name: String,
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("tensor `{name}` holds a non-finite value")]
    NonFinite { name: String },
    #[error("cannot read weights {path}: {why}")]
    Read { path: String, why: String },
}

/// Reads every f32 tensor of a safetensors file (other dtypes are an error).
pub fn read_f32_safetensors(path: &Path) -> Result<TensorMap, ParamsError> {
    let read = |why: String| ParamsError::Read {
        path: path.display().to_string(),
        why,
    };
    let bytes = std::fs::read(path).map_err(|e| read(e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| read(e.to_string()))?;
    let mut out = TensorMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(read(format!(
                "tensor `{name}` is {:?}, expected F32",
                view.dtype()
            )));
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(
            name,
            F32Tensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(out)
}

/// The weight scale of each of `out` channels from the scales the fake-quant forward
/// used (`used`: one per channel, or one): a per-tensor spec takes their mean, as training does.
pub fn channel_scales(spec: QuantSpec, used: &[f32], out: usize) -> Vec<f32> {
    match spec.granularity {
        Granularity::PerTensor => vec![used.iter().sum::<f32>() / used.len() as f32; out],
        Granularity::PerChannel if used.len() == out => used.to_vec(),
        Granularity::PerChannel => vec![used[0]; out],
    }
}

/// The min-max weight scales of folded weights `w` (`out` rows), by the symmetric rule.
pub fn min_max_weight_scales(spec: QuantSpec, w: &[f32], out: usize) -> Vec<f32> {
    let (_, qmax) = spec.range();
    let scale = |row: &[f32]| {
        let lo = row.iter().copied().fold(f32::INFINITY, f32::min).min(0.0);
        let hi = row
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max)
            .max(0.0);
        symmetric_scale(&lo, &hi, qmax)
    };
    match spec.granularity {
        Granularity::PerChannel => {
            let per = w.len() / out.max(1);
            (0..out)
                .map(|o| scale(&w[o * per..(o + 1) * per]))
                .collect()
        }
        Granularity::PerTensor => vec![scale(w); out],
    }
}

impl QuantizedParams {
    /// The quantized parameters of `graph` (the quantized stage) from its trained state
    /// as saved: weights, biases and batch-norm statistics are folded here, and weight
    /// scales not saved (`<node>.weight_scale`) follow the min-max rule.
    pub fn from_tensors(graph: &Graph, tensors: &TensorMap) -> Result<Self, ParamsError> {
        let reader = Reader { tensors };
        let mut params = QuantizedParams::default();
        for node in &graph.nodes {
            if node.quant.float {
                continue;
            }
            if let Some(weights) = node.op.weights() {
                let linear = reader.linear(node, &weights)?;
                params.linear.insert(node.name.clone(), linear);
            } else if let Op::FakeQuant {
                range: RangeSource::Observed | RangeSource::SharedWith(_),
                ..
            } = &node.op
            {
                // Shared ranges are saved under each node's own name too.
                let min = reader.tensor(&format!("{}.min", node.name), &[1])?[0];
                let max = reader.tensor(&format!("{}.max", node.name), &[1])?[0];
                params.ranges.insert(node.name.clone(), (min, max));
            }
        }
        Ok(params)
    }
}

struct Reader<'a> {
    tensors: &'a TensorMap,
}

impl Reader<'_> {
    fn tensor(&self, name: &str, expected: &[usize]) -> Result<&[f32], ParamsError> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| ParamsError::MissingTensor { name: name.into() })?;
        let numel: usize = expected.iter().product();
        // Observer ranges may be saved as [1] or as scalars.
        let same = t.shape == expected
            || (expected.len() <= 1 && t.shape.iter().product::<usize>() == numel);
        if !same || t.data.len() != numel {
            return Err(ParamsError::TensorShape {
                name: name.into(),
                got: t.shape.clone(),
                expected: expected.to_vec(),
            });
        }
        if t.data.iter().any(|x| !x.is_finite()) {
            return Err(ParamsError::NonFinite { name: name.into() });
        }
        Ok(&t.data)
    }

    fn linear(&self, node: &Node, weights: &ops::Weights) -> Result<LinearParams, ParamsError> {
        let (w_shape, has_bias) = (&weights.shape, weights.bias);
        let out = weights.out_channels();
        let per: usize = w_shape[1..].iter().product();
        let mut weight = self
            .tensor(&format!("{}.weight", node.name), w_shape)?
            .to_vec();
        let mut bias = if has_bias {
            self.tensor(&format!("{}.bias", node.name), &[out])?
                .to_vec()
        } else {
            vec![0.0f32; out]
        };
        if let Some(bn) = weights.batch_norm {
            let get = |what: &str| self.tensor(&format!("{}.{what}", bn.name), &[out]);
            let (gamma, beta, mean, var) = (
                get("weight")?,
                get("bias")?,
                get("running_mean")?,
                get("running_var")?,
            );
            for o in 0..out {
                let factor = ops::fold_factor(&gamma[o], &var[o], bn.eps);
                for x in &mut weight[o * per..(o + 1) * per] {
                    *x *= factor;
                }
                let folded =
                    ops::folded_bias(has_bias.then_some(&bias[o]), &beta[o], &mean[o], &factor);
                bias[o] = folded;
            }
        }
        let spec = node.quant.weights;
        // The scales the fake-quant forward used, when training saved them (MSE ranges,
        // learned scales); else the min-max rule, computed from the folded weights.
        let saved = format!("{}.weight_scale", node.name);
        let weight_scales = match self.tensors.get(&saved) {
            Some(t) => {
                let n = t.data.len();
                if n != out && n != 1 {
                    return Err(ParamsError::TensorShape {
                        name: saved,
                        got: t.shape.clone(),
                        expected: vec![out],
                    });
                }
                if t.data.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                    return Err(ParamsError::NonFinite { name: saved });
                }
                channel_scales(spec, &t.data, out)
            }
            None => min_max_weight_scales(spec, &weight, out),
        };
        Ok(LinearParams {
            weight,
            bias,
            weight_scales,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_max_weight_scales_follow_the_symmetric_rule() {
        let spec = QuantSpec::WEIGHTS;
        assert_eq!(
            min_max_weight_scales(spec, &[-0.5, 0.25, 0.1, 0.3, 0.0, 0.0], 3),
            vec![0.5 / 127.0, 0.3 / 127.0, f32::EPSILON]
        );
        let per_tensor = QuantSpec {
            granularity: Granularity::PerTensor,
            ..spec
        };
        assert_eq!(
            min_max_weight_scales(per_tensor, &[-0.5, 0.25, 0.1, 0.3], 2),
            vec![0.5 / 127.0; 2]
        );
    }

    #[test]
    fn per_tensor_scales_are_the_mean_of_the_used_ones() {
        let per_tensor = QuantSpec {
            granularity: Granularity::PerTensor,
            ..QuantSpec::WEIGHTS
        };
        assert_eq!(channel_scales(per_tensor, &[1.0, 3.0], 2), vec![2.0, 2.0]);
        assert_eq!(channel_scales(QuantSpec::WEIGHTS, &[0.5], 3), vec![0.5; 3]);
    }
}
