//! Building an op from its checked arguments: argument access, shape errors and the
//! shape helpers the op files share.

use super::*;

/// An argument value after type checking.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgValue {
    Int(usize),
    /// A possibly negative integer (axes).
    Signed(i64),
    Float(f64),
    Bool(bool),
    Choice(&'static str),
    List(Vec<usize>),
}

/// Type-checked arguments of one call, defaults filled in.
pub struct Args(pub Vec<(&'static str, ArgValue)>);

impl Args {
    pub(super) fn get(&self, name: &str) -> Option<&ArgValue> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
    pub(super) fn int(&self, name: &str) -> usize {
        match self.get(name) {
            Some(ArgValue::Int(i)) => *i,
            other => unreachable!("checker guarantees {name} is an int, got {other:?}"),
        }
    }
    pub(super) fn float(&self, name: &str) -> f64 {
        match self.get(name) {
            Some(ArgValue::Float(x)) => *x,
            other => unreachable!("checker guarantees {name} is a float, got {other:?}"),
        }
    }
    pub(super) fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some(ArgValue::Bool(true)))
    }
    pub(super) fn signed(&self, name: &str) -> i64 {
        match self.get(name) {
            Some(ArgValue::Signed(i)) => *i,
            Some(ArgValue::Int(i)) => *i as i64,
            other => unreachable!("checker guarantees {name} is an integer, got {other:?}"),
        }
    }
}

/// Why an op does not fit its input shapes: a message, and per input a note on its shape.
#[derive(Debug)]
pub struct ShapeError {
    pub message: String,
    /// Which input to blame (index into the call's tensor inputs), if one is at fault.
    pub blame: Option<usize>,
    pub help: Option<String>,
}

pub(super) fn shape_err(message: String, blame: Option<usize>, help: Option<&str>) -> ShapeError {
    ShapeError {
        message,
        blame,
        help: help.map(str::to_string),
    }
}

pub fn format_shape(shape: &[usize]) -> String {
    format!(
        "[{}]",
        shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// An axis of a `rank`-dimensional value, negative counting from the end.
pub(super) fn axis(axis: i64, rank: usize, op: &str) -> Result<usize, ShapeError> {
    let resolved = if axis < 0 { rank as i64 + axis } else { axis };
    if (0..rank as i64).contains(&resolved) {
        Ok(resolved as usize)
    } else {
        Err(shape_err(
            format!("`{op}` axis {axis} is out of range for a {rank}-D value"),
            Some(0),
            Some("axes count from 0 without the batch dimension; -1 is the last"),
        ))
    }
}

/// Builds the op from checked arguments and infers its output shape.
pub fn instantiate(def: &OpDef, args: &Args, inputs: &[&Shape]) -> Result<(Op, Shape), ShapeError> {
    (def.build)(args, inputs)
}

/// The `[C, H, W]` of an op's first input, or why it is not an image.
pub(super) fn image(inputs: &[&Shape], what: &str) -> Result<(usize, usize, usize), ShapeError> {
    match inputs[0].as_slice() {
        &[c, h, w] => Ok((c, h, w)),
        other => Err(shape_err(
            format!(
                "`{what}` needs a [C, H, W] input, got {}",
                format_shape(other)
            ),
            Some(0),
            None,
        )),
    }
}

/// The output H and W of a `size` window moved by `stride` over an `h` x `w` input.
pub(super) fn window(
    size: usize,
    stride: usize,
    h: usize,
    w: usize,
    what: &str,
) -> Result<(usize, usize), ShapeError> {
    if size > h || size > w {
        return Err(shape_err(
            format!("{what} window {size}x{size} is larger than its {h}x{w} input"),
            Some(0),
            Some("use a smaller window, or `padding = same` on the conv2d before it"),
        ));
    }
    Ok(((h - size) / stride + 1, (w - size) / stride + 1))
}

/// A pooling op's channels, output H and W, window size and stride (which defaults to the size).
pub(super) fn pool_window(
    args: &Args,
    inputs: &[&Shape],
    what: &str,
) -> Result<(usize, usize, usize, usize, usize), ShapeError> {
    let (c, h, w) = image(inputs, what)?;
    let size = args.int("size");
    let stride = match args.get("stride") {
        Some(ArgValue::Int(s)) => *s,
        _ => size,
    };
    let (oh, ow) = window(size, stride, h, w, what)?;
    Ok((c, oh, ow, size, stride))
}
