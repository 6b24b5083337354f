//! The integer-only graph: what lowering produces, the runtime executes, the
//! artifact stores (as versioned JSON beside a safetensors file) and the exporters read.
//!
//! Values are int8 tensors with one scale and zero point each. Layout is the
//! model's: `[C, H, W]` images and `[F]` vectors per sample (the runtime may keep
//! images channels-last internally; that is its business).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `format` field of every integer graph file.
pub const FORMAT: &str = "qatc-int8";
/// Bumped whenever a field's meaning changes; loading rejects other versions.
pub const VERSION: u32 = 1;

/// Affine quantization of one tensor: `real = (q - zero_point) * scale`, `q` in `[qmin, qmax]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QParams {
    pub scale: f32,
    pub zero_point: i32,
    pub qmin: i32,
    pub qmax: i32,
}

impl QParams {
    /// Real value of an integer.
    pub fn dequantize(&self, q: i8) -> f32 {
        (q as i32 - self.zero_point) as f32 * self.scale
    }

    /// Quantizes a real value exactly as PyTorch's fake quantization does:
    /// `zp + round_half_even(x * (1 / scale))`, clamped.
    #[inline]
    pub fn quantize(&self, x: f32) -> i8 {
        let inv = 1.0f32 / self.scale;
        let q = round_half_even(x * inv) + self.zero_point as f32;
        q.clamp(self.qmin as f32, self.qmax as f32) as i8
    }
}

/// `x.round_ties_even()` wherever the result is clamped to an int8 range after: without
/// SSE4.1, `round_ties_even` is a call to libm's `rintf`, which the runtime's input
/// quantization spent 5% of its time in. Adding and removing 1.5·2²³ rounds exactly,
/// half to even, any |x| <= 2²²; larger values are first clamped to ±2²², which clamps to
/// the same int8 bound; NaN stays NaN.
#[inline]
fn round_half_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    const LIMIT: f32 = 4_194_304.0;
    (x.clamp(-LIMIT, LIMIT) + MAGIC) - MAGIC
}

/// A fixed-point multiplier: `apply(v) = round_half_up(v * multiplier / 2^shift)`,
/// `multiplier` in `[2^30, 2^31)` (or 0), `shift` in `[1, 62]`. Integer-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requant {
    pub multiplier: i32,
    pub shift: u32,
}

impl Requant {
    /// The real factor this multiplier approximates.
    pub fn real(&self) -> f64 {
        self.multiplier as f64 / (self.shift as f64).exp2()
    }

    /// `(v * multiplier + 2^(shift-1)) >> shift`: one rounding, half toward +infinity.
    #[inline]
    pub fn apply(&self, v: i32) -> i64 {
        let prod = v as i64 * self.multiplier as i64;
        (prod + (1i64 << (self.shift - 1))) >> self.shift
    }
}

/// One int8 tensor of the graph (per sample; the batch dimension is implicit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Value {
    pub name: String,
    pub shape: Vec<usize>,
    pub quant: QParams,
}

/// The model's float input, quantized by the graph's first op.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Input {
    pub name: String,
    /// Per sample, e.g. `[1, 28, 28]`; values are expected in [0, 1] (pixel / 255).
    pub shape: Vec<usize>,
    /// Set when the model was built from images: it takes raw `uint8` pixels, normalized
    /// as here before the quantize op (so the exports take raw pixels too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<crate::preprocess::Normalize>,
}

/// Index into [`IntGraph::values`].
pub type ValueId = usize;

/// One integer op. Clamps (`act_min`, `act_max`) include the fused ReLU: a ReLU
/// clamps at the output zero point, which is real 0 exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum IntOp {
    /// Float input → int8: `zp + round_half_even(x * (1 / scale))`, clamped (PyTorch's rule).
    Quantize { output: ValueId },
    /// `acc = bias[o] + Σ (x - zp_x) * w[o]` in int32, then `zp_y + requant[o](acc)`, clamped.
    /// Weights `[out, in / groups, k, k]` int8 (symmetric, zero point 0); bias int32 at
    /// scale `s_x * s_w[o]`. Padding reads the input zero point (real 0).
    Conv2d {
        name: String,
        input: ValueId,
        output: ValueId,
        weight: String,
        bias: String,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
        groups: usize,
        /// Per output channel: the weight scales `s_w` (for export and inspection).
        weight_scales: Vec<f32>,
        requant: Vec<Requant>,
        act_min: i32,
        act_max: i32,
    },
    /// Like `conv2d` on vectors: weights `[out, in]` int8, bias int32.
    Dense {
        name: String,
        input: ValueId,
        output: ValueId,
        weight: String,
        bias: String,
        in_features: usize,
        out_features: usize,
        weight_scales: Vec<f32>,
        requant: Vec<Requant>,
        act_min: i32,
        act_max: i32,
    },
    /// Maximum over windows, no padding; the output keeps the input's parameters.
    MaxPool2d {
        input: ValueId,
        output: ValueId,
        size: usize,
        stride: usize,
    },
    /// Same bytes in `[C, H, W]` order, new shape; parameters kept.
    Reshape { input: ValueId, output: ValueId },
    /// `size` new rows and columns on each side of H and W, holding the input's zero
    /// point (real 0); the output keeps the input's parameters.
    Pad {
        input: ValueId,
        output: ValueId,
        size: usize,
    },
    /// `zp_y + round_half_up(((a - zp_a) * m_a + (b - zp_b) * m_b) / 2^shift)`, clamped.
    Add {
        name: String,
        inputs: [ValueId; 2],
        output: ValueId,
        multipliers: [i32; 2],
        shift: u32,
        act_min: i32,
        act_max: i32,
    },
    /// `zp_y + requant(x - zp_x)`, clamped: a lone ReLU or ReLU6, or a change of parameters.
    Requantize {
        name: String,
        input: ValueId,
        output: ValueId,
        requant: Requant,
        act_min: i32,
        act_max: i32,
    },
    /// Mean over `size`×`size` windows, no padding; the output keeps the input's parameters
    /// (as TFLite's AVERAGE_POOL_2D requires). `round_half_away_from_zero(Σ q / count)` on the raw int8 values.
    AvgPool2d {
        input: ValueId,
        output: ValueId,
        size: usize,
        stride: usize,
    },
    /// `[C, H, W]` → `[C]`: `zp_y + requant(Σ_hw (x - zp_x))`, `requant` ≈ `s_x / (H·W·s_y)`, clamped to [act_min, act_max]
    /// (TFLite MEAN over H and W).
    GlobalAvgPool {
        name: String,
        input: ValueId,
        output: ValueId,
        requant: Requant,
        act_min: i32,
        act_max: i32,
    },
    /// Joins inputs along `axis` (per-sample axis of the model's `[C, H, W]` / `[F]` layout). Each input is first
    /// brought to the output's parameters: `zp_y + requant[i](x - zp_i)` clamped to [qmin, qmax] of the output; an
    /// input whose parameters equal the output's is copied unchanged.
    Concat {
        name: String,
        inputs: Vec<ValueId>,
        output: ValueId,
        axis: usize,
        requant: Vec<Requant>,
    },
    /// `zp_y + requant((a - zp_a) * (b - zp_b))`, `requant` ≈ `s_a * s_b / s_y`, clamped to
    /// the output's range. Both inputs have the output's rank; a dimension of 1 stretches
    /// (NumPy broadcasting: `[C, H, W] * [C, 1, 1]` scales each channel).
    Mul {
        name: String,
        inputs: [ValueId; 2],
        output: ValueId,
        requant: Requant,
    },
    /// `y = table[x + 128]`: an elementwise function of one int8 value, tabulated at
    /// lowering from the float `function` and the input and output parameters, so that
    /// it is exactly the fake-quant model's `quantize(function(dequantize(x)))`.
    Lookup {
        name: String,
        input: ValueId,
        output: ValueId,
        function: LookupFunction,
        /// 256 entries, for inputs -128 to 127.
        table: Vec<i8>,
    },
}

/// NumPy broadcasting of two shapes of one rank, if they are compatible.
pub fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    if a.len() != b.len() {
        return None;
    }
    a.iter()
        .zip(b)
        .map(|(&x, &y)| match (x, y) {
            _ if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// The float function an [`IntOp::Lookup`] tabulates (exporters map it to their own op).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LookupFunction {
    /// `x * relu6(x + 3) / 6`.
    Hardswish,
    /// `relu6(x + 3) / 6`.
    Hardsigmoid,
    /// `1 / (1 + exp(-x))`, into the fixed output range [0, 1).
    Sigmoid,
}

impl LookupFunction {
    pub fn name(self) -> &'static str {
        match self {
            LookupFunction::Hardswish => "hardswish",
            LookupFunction::Hardsigmoid => "hardsigmoid",
            LookupFunction::Sigmoid => "sigmoid",
        }
    }

    /// The function in f32, in libtorch's order of operations (what training computes).
    pub fn apply(self, x: f32) -> f32 {
        match self {
            LookupFunction::Hardswish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
            LookupFunction::Hardsigmoid => (x + 3.0).clamp(0.0, 6.0) / 6.0,
            LookupFunction::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        }
    }

    /// The table of `input` → `output` integers: `quantize(apply(dequantize(q)))`.
    pub fn table(self, input: QParams, output: QParams) -> Vec<i8> {
        (-128..=127i32)
            .map(|q| output.quantize(self.apply(input.dequantize(q as i8))))
            .collect()
    }
}

impl IntOp {
    pub fn kind(&self) -> &'static str {
        match self {
            IntOp::Quantize { .. } => "quantize",
            IntOp::Conv2d { .. } => "conv2d",
            IntOp::Dense { .. } => "dense",
            IntOp::MaxPool2d { .. } => "max_pool2d",
            IntOp::Reshape { .. } => "reshape",
            IntOp::Pad { .. } => "pad",
            IntOp::Add { .. } => "add",
            IntOp::Requantize { .. } => "requantize",
            IntOp::AvgPool2d { .. } => "avg_pool2d",
            IntOp::GlobalAvgPool { .. } => "global_avg_pool",
            IntOp::Concat { .. } => "concat",
            IntOp::Lookup { .. } => "lookup",
            IntOp::Mul { .. } => "mul",
        }
    }

    /// The op's node name, for the ops that have one.
    pub fn name(&self) -> Option<&str> {
        match self {
            IntOp::Conv2d { name, .. }
            | IntOp::Dense { name, .. }
            | IntOp::Add { name, .. }
            | IntOp::Requantize { name, .. }
            | IntOp::GlobalAvgPool { name, .. }
            | IntOp::Concat { name, .. }
            | IntOp::Lookup { name, .. }
            | IntOp::Mul { name, .. } => Some(name),
            IntOp::Quantize { .. }
            | IntOp::MaxPool2d { .. }
            | IntOp::Reshape { .. }
            | IntOp::Pad { .. }
            | IntOp::AvgPool2d { .. } => None,
        }
    }

    pub fn output(&self) -> ValueId {
        match self {
            IntOp::Quantize { output }
            | IntOp::Conv2d { output, .. }
            | IntOp::Dense { output, .. }
            | IntOp::MaxPool2d { output, .. }
            | IntOp::Reshape { output, .. }
            | IntOp::Pad { output, .. }
            | IntOp::Add { output, .. }
            | IntOp::Requantize { output, .. }
            | IntOp::AvgPool2d { output, .. }
            | IntOp::GlobalAvgPool { output, .. }
            | IntOp::Concat { output, .. }
            | IntOp::Lookup { output, .. }
            | IntOp::Mul { output, .. } => *output,
        }
    }

    pub fn inputs(&self) -> Vec<ValueId> {
        match self {
            IntOp::Quantize { .. } => vec![],
            IntOp::Conv2d { input, .. }
            | IntOp::Dense { input, .. }
            | IntOp::MaxPool2d { input, .. }
            | IntOp::Reshape { input, .. }
            | IntOp::Pad { input, .. }
            | IntOp::Requantize { input, .. }
            | IntOp::AvgPool2d { input, .. }
            | IntOp::GlobalAvgPool { input, .. }
            | IntOp::Lookup { input, .. } => vec![*input],
            IntOp::Add { inputs, .. } | IntOp::Mul { inputs, .. } => inputs.to_vec(),
            IntOp::Concat { inputs, .. } => inputs.clone(),
        }
    }
}

/// The whole integer model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntGraph {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`] of the writer.
    pub version: u32,
    pub model: String,
    /// The dataset label of each output index when the recipe selected classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<u8>>,
    /// The name of each output index (folder names, CIFAR's names, or the numbers), so
    /// `qatc run` and the exports can say "sneaker" instead of 7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_names: Option<Vec<String>>,
    pub input: Input,
    pub values: Vec<Value>,
    /// In execution order; every op writes a value no earlier op wrote.
    pub ops: Vec<IntOp>,
    pub output: ValueId,
}

/// How many classes the graph's output scores (its element count).
pub fn output_count(graph: &IntGraph) -> usize {
    graph
        .values
        .get(graph.output)
        .map_or(0, |v| v.shape.iter().product())
}

/// A tensor of the integer model, as stored in safetensors.
#[derive(Debug, Clone, PartialEq)]
pub enum IntTensor {
    I8 { shape: Vec<usize>, data: Vec<i8> },
    I32 { shape: Vec<usize>, data: Vec<i32> },
}

impl IntTensor {
    pub fn shape(&self) -> &[usize] {
        match self {
            IntTensor::I8 { shape, .. } | IntTensor::I32 { shape, .. } => shape,
        }
    }

    pub fn dtype(&self) -> &'static str {
        match self {
            IntTensor::I8 { .. } => "int8",
            IntTensor::I32 { .. } => "int32",
        }
    }
}

/// Tensors by name (`<node>.weight`, `<node>.bias`).
pub type IntTensors = BTreeMap<String, IntTensor>;

/// Human-readable listing for `qatc inspect`: every value's scale and zero point,
/// every op with its clamps and per-channel fixed-point multipliers.
pub fn text(graph: &IntGraph, tensors: &IntTensors) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "int8 graph {} (format {} v{})\n",
        graph.model, graph.format, graph.version
    );
    match &graph.input.normalize {
        Some(n) => {
            let _ = writeln!(
                out,
                "  input {}: u8{:?} pixels, x = (p / 255 - {:?}) / {:?}",
                graph.input.name, graph.input.shape, n.mean, n.std
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  input {}: f32{:?} in [0, 1]",
                graph.input.name, graph.input.shape
            );
        }
    }
    if let Some(classes) = &graph.classes {
        let _ = writeln!(out, "  output classes: {classes:?}");
    }
    if let Some(names) = &graph.class_names {
        let _ = writeln!(out, "  class names: {}", names.join(", "));
    }
    let val = |v: ValueId| {
        let x = &graph.values[v];
        format!(
            "%{v} {}: i8{:?} scale={:e} zp={}",
            x.name, x.shape, x.quant.scale, x.quant.zero_point
        )
    };
    let params = |name: &str| {
        tensors.get(name).map_or("missing".to_string(), |t| {
            format!("{}{:?}", t.dtype(), t.shape())
        })
    };
    let channels = |out: &mut String, scales: &[f32], rq: &[Requant]| {
        for (o, (s, r)) in scales.iter().zip(rq).enumerate() {
            let _ = writeln!(
                out,
                "      [{o:>3}] s_w={s:e}  M={:.9e} = {} / 2^{}",
                r.real(),
                r.multiplier,
                r.shift
            );
        }
    };
    for op in &graph.ops {
        let _ = write!(out, "  {} = ", val(op.output()));
        match op {
            IntOp::Quantize { .. } => {
                let _ = writeln!(out, "quantize(input)  round half to even");
            }
            IntOp::Conv2d {
                input,
                weight,
                bias,
                kernel,
                stride,
                pad,
                groups,
                weight_scales,
                requant,
                act_min,
                act_max,
                ..
            } => {
                let _ = writeln!(out, "conv2d(%{input}, kernel={kernel}, stride={stride}, pad={pad}, groups={groups})  weight {} bias {}  clamp [{act_min}, {act_max}]", params(weight), params(bias));
                channels(&mut out, weight_scales, requant);
            }
            IntOp::Dense {
                input,
                weight,
                bias,
                weight_scales,
                requant,
                act_min,
                act_max,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "dense(%{input})  weight {} bias {}  clamp [{act_min}, {act_max}]",
                    params(weight),
                    params(bias)
                );
                channels(&mut out, weight_scales, requant);
            }
            IntOp::MaxPool2d {
                input,
                size,
                stride,
                ..
            } => {
                let _ = writeln!(out, "max_pool2d(%{input}, size={size}, stride={stride})");
            }
            IntOp::Reshape { input, .. } => {
                let _ = writeln!(out, "reshape(%{input})");
            }
            IntOp::Pad { input, size, .. } => {
                let _ = writeln!(out, "pad(%{input}, size={size})");
            }
            IntOp::Add {
                inputs,
                multipliers,
                shift,
                act_min,
                act_max,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "add(%{} * {} / 2^{shift}, %{} * {} / 2^{shift})  clamp [{act_min}, {act_max}]",
                    inputs[0], multipliers[0], inputs[1], multipliers[1]
                );
            }
            IntOp::Requantize {
                input,
                requant,
                act_min,
                act_max,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "requantize(%{input}, M={:.9e} = {} / 2^{})  clamp [{act_min}, {act_max}]",
                    requant.real(),
                    requant.multiplier,
                    requant.shift
                );
            }
            IntOp::AvgPool2d {
                input,
                size,
                stride,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "avg_pool2d(%{input}, size={size}, stride={stride})  round half away from zero"
                );
            }
            IntOp::GlobalAvgPool {
                input,
                requant,
                act_min,
                act_max,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "global_avg_pool(%{input}, M={:.9e} = {} / 2^{})  clamp [{act_min}, {act_max}]",
                    requant.real(),
                    requant.multiplier,
                    requant.shift
                );
            }
            IntOp::Concat {
                inputs,
                axis,
                requant,
                ..
            } => {
                let parts: Vec<String> = inputs
                    .iter()
                    .zip(requant)
                    .map(|(i, r)| format!("%{i} * {} / 2^{}", r.multiplier, r.shift))
                    .collect();
                let _ = writeln!(out, "concat({}, axis={axis})", parts.join(", "));
            }
            IntOp::Mul {
                inputs, requant, ..
            } => {
                let _ = writeln!(
                    out,
                    "mul(%{}, %{}, M={:.9e} = {} / 2^{})  broadcast",
                    inputs[0],
                    inputs[1],
                    requant.real(),
                    requant.multiplier,
                    requant.shift
                );
            }
            IntOp::Lookup {
                input, function, ..
            } => {
                let _ = writeln!(
                    out,
                    "lookup(%{input}, {})  256-entry table",
                    function.name()
                );
            }
        }
    }
    let _ = writeln!(out, "  output %{}", graph.output);
    out
}

#[cfg(test)]
mod round_tests {
    use super::round_half_even;

    #[test]
    fn round_half_even_equals_round_ties_even_up_to_the_int8_clamp() {
        let mut xs = vec![
            0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, -0.0, 127.5, -128.5,
        ];
        xs.extend((-4000..4000).map(|i| i as f32 * 0.25 + 0.125));
        xs.extend((-300..300).map(|i| i as f32 + 0.5));
        xs.extend([1e7f32, -1e7, 4194304.5, f32::INFINITY, f32::NEG_INFINITY]);
        for x in xs {
            let clamp = |v: f32| v.clamp(-300.0, 300.0);
            assert_eq!(clamp(round_half_even(x)), clamp(x.round_ties_even()), "{x}");
        }
        assert!(round_half_even(f32::NAN).is_nan());
    }
}
