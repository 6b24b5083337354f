//! `conv2d`: 2-D convolution, grouped and depthwise included.

use super::*;

pub const DEF: OpDef = OpDef {
    name: "conv2d",
    inputs: 1,
    variadic: false,
    args: &[
        arg("filters", ArgType::PositiveInt, None, "number of output channels"),
        arg("kernel", ArgType::PositiveInt, None, "square kernel size"),
        arg("stride", ArgType::PositiveInt, Some("1"), "step between windows"),
        arg("padding", ArgType::Choice(&["valid", "same"]), Some("valid"), "`valid`: no padding; `same`: pad dilation * (kernel - 1) / 2 on each side, so odd kernels keep H and W at ceil(H / stride)"),
        arg("dilation", ArgType::PositiveInt, Some("1"), "spacing between kernel taps (atrous convolution)"),
        arg("groups", ArgType::PositiveInt, Some("1"), "channel groups; equal to the input channels (and filters) for a depthwise convolution"),
        arg("bias", ArgType::Bool, Some("true"), "add a learned bias per output channel"),
    ],
    doc: "2-D convolution over a [C, H, W] tensor. Input channels and filters must both be divisible by `groups`.",
    shape_rule: "[C, H, W] -> [filters, H', W'], H' = (H + 2 * pad - dilation * (kernel - 1) - 1) / stride + 1",
    role: QuantRole::Computes,
    params: Params::Weights,
    build,
};

fn build(args: &Args, inputs: &[&Shape]) -> Result<(Op, Shape), ShapeError> {
    let (c, h, w) = image(inputs, "conv2d")?;
    let (filters, kernel, stride) = (args.int("filters"), args.int("kernel"), args.int("stride"));
    let (dilation, groups) = (args.int("dilation"), args.int("groups"));
    if c % groups != 0 || filters % groups != 0 {
        return Err(shape_err(
            format!("`conv2d` with groups = {groups} needs input channels and filters divisible by {groups}, got {c} channels and {filters} filters"),
            Some(0),
            Some("for a depthwise convolution set both `groups` and `filters` to the input channels"),
        ));
    }
    let padding = match args.get("padding") {
        Some(ArgValue::Choice("same")) => Padding::Same,
        _ => Padding::Valid,
    };
    if padding == Padding::Same && kernel % 2 == 0 {
        // Even kernels would need asymmetric padding, which the int8 kernels do not do.
        return Err(shape_err(
            format!("`padding = same` needs an odd kernel, got {kernel}"),
            None,
            Some("use an odd kernel size (1, 3, 5, ...) or `padding = valid`"),
        ));
    }
    // The extent one output value sees; equal to the kernel when dilation is 1.
    let extent = dilation.saturating_mul(kernel - 1).saturating_add(1);
    let pad = padding.pixels(extent);
    let (oh, ow) = window(extent, stride, h + 2 * pad, w + 2 * pad, "conv2d kernel")?;
    let op = Op::Conv2d {
        filters,
        kernel,
        stride,
        padding,
        pad,
        dilation,
        groups,
        in_channels: c,
        bias: args.flag("bias"),
        epilogue: Epilogue::default(),
    };
    Ok((op, vec![filters, oh, ow]))
}

/// The weight tensor's shape: `[filters, in_channels / groups, kernel, kernel]`.
pub fn weight_shape(filters: usize, in_channels: usize, groups: usize, kernel: usize) -> Shape {
    // groups is at least 1 once checked; max(1) keeps a limit check before that safe.
    vec![filters, in_channels / groups.max(1), kernel, kernel]
}

/// Multiply-accumulates per image: one weight tap per output value.
pub fn macs(weight: &Shape, output: &Shape) -> u64 {
    let taps: usize = weight[1..].iter().product();
    (output.iter().product::<usize>() * taps) as u64
}
