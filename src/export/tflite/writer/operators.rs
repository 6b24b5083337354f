//! Each integer-graph op as TFLite operators: the one exhaustive match over [`IntOp`],
//! with the fused activations, paddings, pools and reshapes it needs.

use super::*;

/// TFLite's clamp for a fused activation on an int8 output (its
/// `CalculateActivationRangeQuantized`), matched against the integer graph's clamp.
fn fused_activation(
    what: &str,
    lo: i32,
    hi: i32,
    q: QParams,
) -> Result<fb::ActivationFunctionType, ExportError> {
    let relu_lo = q.zero_point.max(q.qmin);
    let relu6_hi = crate::lower::relu6_max(q);
    match (lo, hi) {
        (-128, 127) => Ok(fb::ActivationFunctionType::None),
        (l, 127) if l == relu_lo => Ok(fb::ActivationFunctionType::Relu),
        (l, h) if l == relu_lo && h == relu6_hi => Ok(fb::ActivationFunctionType::Relu6),
        _ => Err(unsupported(format!(
            "`{what}` clamps its output to [{lo}, {hi}], which no TFLite activation gives (scale {:e}, zero point {})",
            q.scale, q.zero_point
        ))),
    }
}

/// Whether `(in, kernel, stride, pad)` is TFLite's SAME or VALID padding along one axis.
fn tf_padding(size: usize, kernel: usize, stride: usize, pad: usize) -> Option<fb::Padding> {
    let out = (size + 2 * pad).checked_sub(kernel)? / stride + 1;
    if pad == 0 {
        return Some(fb::Padding::Valid);
    }
    let same_out = size.div_ceil(stride);
    let total = ((same_out - 1) * stride + kernel).saturating_sub(size);
    (same_out == out && total / 2 == pad).then_some(fb::Padding::Same)
}

impl Writer<'_> {
    #[deny(clippy::wildcard_enum_match_arm)]
    pub(super) fn op(&mut self, op: &IntOp) -> Result<(), ExportError> {
        match op {
            // TFLite broadcasts NHWC shapes; both inputs have the model's rank, so a [C, 1, 1]
            // is [1, 1, 1, C] there and stretches over H and W alike.
            IntOp::Mul {
                name,
                inputs,
                output,
                ..
            } => {
                if inputs.iter().any(|v| self.hwc.contains_key(v)) {
                    return Err(unsupported(format!(
                        "`{name}` multiplies a flattened image"
                    )));
                }
                let (a, b) = (self.value(inputs[0])?, self.value(inputs[1])?);
                let y = self.value(*output)?;
                let options = fb::BuiltinOptions::MulOptions(Box::new(fb::MulOptions {}));
                self.emit(Builtin::Mul, vec![a, b], vec![y], Some(options));
            }
            // TFLite computes the function itself (its own fixed-point kernel or table, or
            // for hardsigmoid, which has no builtin, ADD and MUL).
            IntOp::Lookup {
                name,
                input,
                output,
                function,
                ..
            } => {
                if self.hwc.contains_key(input) {
                    return Err(unsupported(format!("`{name}` reads a flattened image")));
                }
                let x = self.value(*input)?;
                let y = self.value(*output)?;
                match function {
                    LookupFunction::Hardswish => {
                        self.emit(Builtin::HardSwish, vec![x], vec![y], None)
                    }
                    LookupFunction::Hardsigmoid => self.hardsigmoid(name, x, y, *output),
                    // int8 LOGISTIC requires output scale 1/256, zero point -128: the fixed
                    // range the fake-quant pass gives sigmoid.
                    LookupFunction::Sigmoid => self.emit(Builtin::Logistic, vec![x], vec![y], None),
                }
            }
            // The model's input: raw pixels for a model built from images, else already quantized.
            IntOp::Quantize { output } => {
                let y = self.value(*output)?;
                if let Some(normalize) = &self.graph.input.normalize {
                    self.pixels = Some(self.normalize_pixels(normalize, y)?);
                }
            }
            IntOp::Conv2d {
                name,
                input,
                output,
                weight,
                bias,
                in_channels,
                out_channels,
                kernel,
                stride,
                pad,
                groups,
                weight_scales,
                act_min,
                act_max,
                ..
            } => {
                let out_q = self.graph.values[*output].quant;
                let act = fused_activation(name, *act_min, *act_max, out_q)?;
                let [_, h, w] = self.graph.values[*input].shape[..] else {
                    return Err(unsupported(format!(
                        "`{name}`: conv2d input is not [C, H, W]"
                    )));
                };
                let mut x = self.value(*input)?;
                let in_q = self.graph.values[*input].quant;
                let padding = match (
                    tf_padding(h, *kernel, *stride, *pad),
                    tf_padding(w, *kernel, *stride, *pad),
                ) {
                    (Some(a), Some(b)) if a == b => a,
                    // PyTorch-style symmetric padding that SAME would place differently:
                    // pad explicitly (TFLite pads int8 with the zero point, real 0).
                    _ => {
                        let p = *pad as i32;
                        let paddings =
                            self.int32_const(format!("{name}/paddings"), &[0, 0, p, p, p, p, 0, 0]);
                        self.fb_tensors[paddings as usize].shape = Some(vec![4, 2]);
                        let shape = vec![
                            1,
                            (h + 2 * pad) as i32,
                            (w + 2 * pad) as i32,
                            *in_channels as i32,
                        ];
                        let padded = self.temp(format!("{name}/padded"), shape, in_q);
                        self.emit(Builtin::Pad, vec![x, paddings], vec![padded], None);
                        x = padded;
                        fb::Padding::Valid
                    }
                };
                let (shape, data) = self.weights(weight)?;
                let [o, i, kh, kw] = shape[..] else {
                    return Err(unsupported(format!("`{weight}` is not 4-D")));
                };
                let depthwise = *groups == *in_channels && *groups > 1 && i == 1;
                if *groups != 1 && !depthwise {
                    return Err(unsupported(format!(
                        "`{name}`: grouped convolution ({groups} groups) has no TFLite builtin"
                    )));
                }
                let at = |oo: usize, ii: usize, y: usize, xx: usize| {
                    data[((oo * i + ii) * kh + y) * kw + xx]
                };
                let mut bytes = Vec::with_capacity(data.len());
                let (wshape, dim) = if depthwise {
                    // [1, KH, KW, O]
                    for y in 0..kh {
                        for xx in 0..kw {
                            for oo in 0..o {
                                bytes.push(at(oo, 0, y, xx) as u8);
                            }
                        }
                    }
                    (vec![1, kh as i32, kw as i32, o as i32], 3)
                } else {
                    // OHWI
                    for oo in 0..o {
                        for y in 0..kh {
                            for xx in 0..kw {
                                for ii in 0..i {
                                    bytes.push(at(oo, ii, y, xx) as u8);
                                }
                            }
                        }
                    }
                    (vec![o as i32, kh as i32, kw as i32, i as i32], 0)
                };
                let wt = self.tensor(
                    weight.clone(),
                    wshape,
                    fb::TensorType::Int8,
                    Some(bytes),
                    Some(per_channel(weight_scales.clone(), dim)),
                );
                let bt = self.bias(bias, in_q.scale, weight_scales)?;
                let y = self.value(*output)?;
                let stride = *stride as i32;
                let (builtin, options) = if depthwise {
                    (
                        Builtin::DepthwiseConv2d,
                        fb::BuiltinOptions::DepthwiseConv2DOptions(Box::new(
                            fb::DepthwiseConv2DOptions {
                                padding,
                                stride_w: stride,
                                stride_h: stride,
                                depth_multiplier: (*out_channels / *in_channels) as i32,
                                fused_activation_function: act,
                                dilation_w_factor: 1,
                                dilation_h_factor: 1,
                            },
                        )),
                    )
                } else {
                    (
                        Builtin::Conv2d,
                        fb::BuiltinOptions::Conv2DOptions(Box::new(fb::Conv2DOptions {
                            padding,
                            stride_w: stride,
                            stride_h: stride,
                            fused_activation_function: act,
                            dilation_w_factor: 1,
                            dilation_h_factor: 1,
                        })),
                    )
                };
                self.emit(builtin, vec![x, wt, bt], vec![y], Some(options));
            }
            IntOp::Dense {
                name,
                input,
                output,
                weight,
                bias,
                in_features,
                out_features,
                weight_scales,
                act_min,
                act_max,
                ..
            } => {
                let out_q = self.graph.values[*output].quant;
                let act = fused_activation(name, *act_min, *act_max, out_q)?;
                let (_, data) = self.weights(weight)?;
                let (o, i) = (*out_features, *in_features);
                // After a flatten the input is in HWC order: reorder the columns to match.
                let column: Vec<usize> = match self.hwc.get(input) {
                    Some(&[c, h, w]) => (0..i)
                        .map(|k| {
                            let (hw, ch) = (k / c, k % c);
                            ch * h * w + hw
                        })
                        .collect(),
                    None => (0..i).collect(),
                };
                let bytes = (0..o)
                    .flat_map(|oo| column.iter().map(move |&k| (oo, k)))
                    .map(|(oo, k)| data[oo * i + k] as u8)
                    .collect();
                let x = self.value(*input)?;
                let in_q = self.graph.values[*input].quant;
                let wt = self.tensor(
                    weight.clone(),
                    vec![o as i32, i as i32],
                    fb::TensorType::Int8,
                    Some(bytes),
                    Some(per_channel(weight_scales.clone(), 0)),
                );
                let bt = self.bias(bias, in_q.scale, weight_scales)?;
                let y = self.value(*output)?;
                let options = fb::BuiltinOptions::FullyConnectedOptions(Box::new(
                    fb::FullyConnectedOptions {
                        fused_activation_function: act,
                        weights_format: 0,
                        keep_num_dims: false,
                    },
                ));
                self.emit(
                    Builtin::FullyConnected,
                    vec![x, wt, bt],
                    vec![y],
                    Some(options),
                );
            }
            IntOp::MaxPool2d {
                input,
                output,
                size,
                stride,
            } => self.pool(Builtin::MaxPool2d, *input, *output, *size, *stride)?,
            IntOp::Reshape { input, output } => self.reshape(*input, *output)?,
            // LiteRT's int8 PAD fills with the output's zero point; validation made it the
            // input's, so the new values are real 0 as in qatc's kernel.
            IntOp::Pad {
                input,
                output,
                size,
            } => {
                let name = self.graph.values[*output].name.clone();
                let p = *size as i32;
                let paddings =
                    self.int32_const(format!("{name}/paddings"), &[0, 0, p, p, p, p, 0, 0]);
                self.fb_tensors[paddings as usize].shape = Some(vec![4, 2]);
                let x = self.value(*input)?;
                let y = self.value(*output)?;
                self.emit(Builtin::Pad, vec![x, paddings], vec![y], None);
            }
            IntOp::Add {
                name,
                inputs,
                output,
                act_min,
                act_max,
                ..
            } => {
                if inputs.iter().any(|v| self.hwc.contains_key(v)) {
                    return Err(unsupported(format!("`{name}` adds a flattened image")));
                }
                let act =
                    fused_activation(name, *act_min, *act_max, self.graph.values[*output].quant)?;
                let (a, b) = (self.value(inputs[0])?, self.value(inputs[1])?);
                let y = self.value(*output)?;
                let options = fb::BuiltinOptions::AddOptions(Box::new(fb::AddOptions {
                    fused_activation_function: act,
                }));
                self.emit(Builtin::Add, vec![a, b], vec![y], Some(options));
            }
            IntOp::Requantize {
                name,
                input,
                output,
                act_min,
                act_max,
                ..
            } => {
                if self.hwc.contains_key(input) {
                    return Err(unsupported(format!("`{name}` reads a flattened image")));
                }
                let act =
                    fused_activation(name, *act_min, *act_max, self.graph.values[*output].quant)?;
                let builtin = match act {
                    fb::ActivationFunctionType::Relu => Builtin::Relu,
                    fb::ActivationFunctionType::Relu6 => Builtin::Relu6,
                    // A change of parameters only: int8 → int8 QUANTIZE requantizes
                    // (`fused_activation` gives no other function).
                    fb::ActivationFunctionType::None
                    | fb::ActivationFunctionType::ReluN1To1
                    | fb::ActivationFunctionType::Tanh
                    | fb::ActivationFunctionType::SignBit => Builtin::Quantize,
                };
                let x = self.value(*input)?;
                let y = self.value(*output)?;
                self.emit(builtin, vec![x], vec![y], None);
            }
            IntOp::AvgPool2d {
                input,
                output,
                size,
                stride,
            } => self.pool(Builtin::AveragePool2d, *input, *output, *size, *stride)?,
            IntOp::GlobalAvgPool {
                name,
                input,
                output,
                act_min,
                act_max,
                ..
            } => {
                // MEAN has no fused activation: only the full range.
                let q = self.graph.values[*output].quant;
                if fused_activation(name, *act_min, *act_max, q)?
                    != fb::ActivationFunctionType::None
                {
                    return Err(unsupported(format!(
                        "`{name}` clamps a mean, which TFLite's MEAN cannot"
                    )));
                }
                let x = self.value(*input)?;
                let axes = self.int32_const(format!("{name}/axes"), &[1, 2]);
                let y = self.value(*output)?;
                let options = fb::BuiltinOptions::ReducerOptions(Box::new(fb::ReducerOptions {
                    keep_dims: false,
                }));
                self.emit(Builtin::Mean, vec![x, axes], vec![y], Some(options));
            }
            IntOp::Concat {
                name,
                inputs,
                output,
                axis,
                ..
            } => {
                let out_q = self.graph.values[*output].quant;
                let rank = self.graph.values[*output].shape.len();
                // The model's per-sample axis in NHWC.
                let axis = match (rank, *axis) {
                    (3, 0) => 3,
                    (3, a) => a as i32,
                    (_, a) => a as i32 + 1,
                };
                // TFLite's int8 CONCATENATION takes inputs with the output's parameters;
                // the others are requantized first, as qatc's kernel does.
                let mut xs = Vec::new();
                for (i, &v) in inputs.iter().enumerate() {
                    if self.hwc.contains_key(&v) {
                        return Err(unsupported(format!("`{name}` joins a flattened image")));
                    }
                    let x = self.value(v)?;
                    if self.graph.values[v].quant == out_q {
                        xs.push(x);
                    } else {
                        let shape = nhwc(&self.graph.values[v].shape);
                        let t = self.temp(format!("{name}/input{i}"), shape, out_q);
                        self.emit(Builtin::Quantize, vec![x], vec![t], None);
                        xs.push(t);
                    }
                }
                let y = self.value(*output)?;
                let options =
                    fb::BuiltinOptions::ConcatenationOptions(Box::new(fb::ConcatenationOptions {
                        axis,
                        fused_activation_function: fb::ActivationFunctionType::None,
                    }));
                self.emit(Builtin::Concatenation, xs, vec![y], Some(options));
            }
        }
        Ok(())
    }

    fn pool(
        &mut self,
        builtin: Builtin,
        input: ValueId,
        output: ValueId,
        size: usize,
        stride: usize,
    ) -> Result<(), ExportError> {
        let x = self.value(input)?;
        let y = self.value(output)?;
        let options = fb::BuiltinOptions::Pool2DOptions(Box::new(fb::Pool2DOptions {
            padding: fb::Padding::Valid,
            stride_w: stride as i32,
            stride_h: stride as i32,
            filter_width: size as i32,
            filter_height: size as i32,
            fused_activation_function: fb::ActivationFunctionType::None,
        }));
        self.emit(builtin, vec![x], vec![y], Some(options));
        Ok(())
    }

    /// hardsigmoid `relu6(x + 3) / 6` into `output`, for which TFLite has no builtin: an
    /// ADD of the constant 3 with a fused RELU6 into scale `6 s_y` and `y`'s zero point,
    /// whose integers are already `y`'s (`round((x + 3) / (6 s_y))`, clamped at real 6,
    /// i.e. 1); then a MUL by 1/6 (integer 1 at scale 1/6) into `y`: multiplier
    /// `6 s_y / 6 / s_y` = 1, a copy that relabels the scale. Only the ADD rounds, in
    /// TFLite's fixed point where qatc's table rounds the float function.
    fn hardsigmoid(&mut self, name: &str, x: i32, y: i32, output: ValueId) {
        let value = &self.graph.values[output];
        let (yq, shape) = (value.quant, nhwc(&value.shape));
        let three = self.int8_one(format!("{name}/three"), 3.0);
        let sixth = self.int8_one(format!("{name}/one_sixth"), 1.0 / 6.0);
        let relu6_q = QParams {
            scale: 6.0 * yq.scale,
            ..yq
        };
        let relu6 = self.temp(format!("{name}/relu6"), shape, relu6_q);
        let options = fb::BuiltinOptions::AddOptions(Box::new(fb::AddOptions {
            fused_activation_function: fb::ActivationFunctionType::Relu6,
        }));
        self.emit(Builtin::Add, vec![x, three], vec![relu6], Some(options));
        let options = fb::BuiltinOptions::MulOptions(Box::new(fb::MulOptions {}));
        self.emit(Builtin::Mul, vec![relu6, sixth], vec![y], Some(options));
    }

    /// A constant int8 `[1]` holding the integer 1 at scale `value`: `value` exactly.
    fn int8_one(&mut self, name: String, value: f32) -> i32 {
        let q = QParams {
            scale: value,
            zero_point: 0,
            qmin: -128,
            qmax: 127,
        };
        self.tensor(
            name,
            vec![1],
            fb::TensorType::Int8,
            Some(vec![1]),
            Some(per_tensor(q)),
        )
    }

    /// A flatten. NHWC flattens in HWC order; when only dense layers read the result,
    /// their weights are reordered instead of the data, else the data is transposed back
    /// to CHW first.
    fn reshape(&mut self, input: ValueId, output: ValueId) -> Result<(), ExportError> {
        let in_shape = self.graph.values[input].shape.clone();
        let out_shape = self.graph.values[output].shape.clone();
        let mut x = self.value(input)?;
        if let [c, h, w] = in_shape[..] {
            if out_shape.len() != 1 {
                return Err(unsupported(format!(
                    "a reshape from {in_shape:?} to {out_shape:?} (only flattening to a vector is exported)"
                )));
            }
            let ordered_alike = c == 1 || h * w == 1;
            let only_dense = output != self.graph.output
                && self
                    .graph
                    .ops
                    .iter()
                    .filter(|op| op.inputs().contains(&output))
                    .all(|op| matches!(op, IntOp::Dense { .. }));
            if !ordered_alike && only_dense {
                self.hwc.insert(output, [c, h, w]);
            } else if !ordered_alike {
                let perm = self.int32_const(
                    format!("{}/perm", self.graph.values[output].name),
                    &[0, 3, 1, 2],
                );
                let q = self.graph.values[input].quant;
                let chw = self.temp(
                    format!("{}/nchw", self.graph.values[output].name),
                    vec![1, c as i32, h as i32, w as i32],
                    q,
                );
                self.emit(Builtin::Transpose, vec![x, perm], vec![chw], None);
                x = chw;
            }
        } else if self.hwc.contains_key(&input) {
            return Err(unsupported("a reshape of a flattened image"));
        } else if let [c, h, w] = out_shape[..] {
            // A vector's order is CHW; NHWC holds the same order only when C or H·W is 1.
            if c != 1 && h * w != 1 {
                return Err(unsupported(format!(
                    "a reshape from {in_shape:?} to {out_shape:?} (only to [C, 1, 1] or [1, H, W])"
                )));
            }
        }
        // -1 for the batch: the interpreter may be resized to run many images at once.
        let mut new_shape = nhwc(&out_shape);
        new_shape[0] = -1;
        let shape = self.int32_const(
            format!("{}/shape", self.graph.values[output].name),
            &new_shape,
        );
        let y = self.value(output)?;
        let options = fb::BuiltinOptions::ReshapeOptions(Box::new(fb::ReshapeOptions {
            new_shape: Some(new_shape),
        }));
        self.emit(Builtin::Reshape, vec![x, shape], vec![y], Some(options));
        Ok(())
    }
}
