//! Running a float, PTQ or QAT checkpoint on images with libtorch (`qatc run model.qat
//! --weights FILE`), so a user porting a model can compare qatc's logits with PyTorch's.

use super::TrainError;
use std::collections::HashMap;
use std::path::Path;

use tch::{Device, Kind, Tensor};

use super::{normalized_images_to_tensor, Mode, Network};
use crate::ir::Graph;
use crate::preprocess::Normalize;

/// A quantized-stage network with a checkpoint's weights, and how to run it: with fake
/// quantization when the file holds activation ranges (`<node>.min` / `.max`, written
/// by PTQ and QAT), in float otherwise.
pub struct Checkpoint {
    net: Network,
    mode: Mode,
    normalize: Normalize,
}

impl Checkpoint {
    /// Loads `weights` (a safetensors file `qatc build` wrote) into the network of `graph`,
    /// whose inputs are normalized as `normalize` says (the recipe's, as in training).
    pub fn load(
        graph: &Graph,
        weights: &Path,
        normalize: Normalize,
    ) -> Result<Checkpoint, TrainError> {
        let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(weights)
            .map_err(|source| TrainError::UnreadableWeights {
                path: weights.to_path_buf(),
                source,
            })?
            .into_iter()
            .collect();
        let mut net = Network::new(graph, Device::Cpu);
        net.restore(&tensors)
            .map_err(|why| TrainError::MismatchedWeights {
                path: weights.to_path_buf(),
                model: graph.name.clone(),
                why,
            })?;
        let quantized = tensors.keys().any(|k| k.ends_with(".min"));
        let mode = if quantized {
            Mode::Quantized
        } else {
            Mode::Float
        };
        Ok(Checkpoint {
            net,
            mode,
            normalize,
        })
    }

    /// `"float"` or `"fake-quant"`: how [`Checkpoint::logits`] runs.
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            Mode::Quantized => "fake-quant",
            Mode::Float | Mode::Calibrate => "float",
        }
    }

    /// The model's outputs for `pixels` (`[N, ...input]` bytes), `[N, outputs]` row-major.
    pub fn logits(&mut self, pixels: &[u8]) -> Vec<f32> {
        let shape = self.net.graph.node(self.net.graph.inputs[0]).shape.clone();
        let per = shape.iter().product::<usize>();
        let mut out = Vec::new();
        for chunk in pixels.chunks(256 * per) {
            let xs = normalized_images_to_tensor(chunk, &shape, &self.normalize, Device::Cpu);
            let ys = tch::no_grad(|| self.net.forward(&xs, self.mode, false));
            let ys = ys.to_kind(Kind::Float).flatten(0, -1);
            out.extend(Vec::<f32>::try_from(&ys).expect("float outputs"));
        }
        out
    }
}
