//! Words users already know: the Keras and PyTorch names of ops and arguments, mapped to
//! qatc's. A ported line gets one precise hint per foreign word (and no follow-on
//! "missing argument"), instead of a typo guess or a list of every op.

/// Where a foreign word comes from, for the note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framework {
    PyTorch,
    Keras,
    Both,
}

impl Framework {
    fn name(self) -> &'static str {
        match self {
            Framework::PyTorch => "PyTorch",
            Framework::Keras => "Keras",
            Framework::Both => "PyTorch and Keras",
        }
    }
}

/// Foreign op (layer or function) names and the qatc op each one is.
const OPS: &[(&str, Framework, &str)] = &[
    ("Linear", Framework::PyTorch, "dense"),
    ("Dense", Framework::Keras, "dense"),
    ("Conv2d", Framework::PyTorch, "conv2d"),
    ("Conv2D", Framework::Keras, "conv2d"),
    ("ReLU", Framework::Both, "relu"),
    ("ReLU6", Framework::PyTorch, "relu6"),
    ("Hardswish", Framework::PyTorch, "hardswish"),
    ("hard_swish", Framework::Keras, "hardswish"),
    ("Hardsigmoid", Framework::PyTorch, "hardsigmoid"),
    ("hard_sigmoid", Framework::Keras, "hardsigmoid"),
    ("Sigmoid", Framework::PyTorch, "sigmoid"),
    ("BatchNorm2d", Framework::PyTorch, "batch_norm"),
    ("BatchNormalization", Framework::Keras, "batch_norm"),
    ("MaxPool2d", Framework::PyTorch, "max_pool2d"),
    ("MaxPooling2D", Framework::Keras, "max_pool2d"),
    ("AvgPool2d", Framework::PyTorch, "avg_pool2d"),
    ("AveragePooling2D", Framework::Keras, "avg_pool2d"),
    ("AdaptiveAvgPool2d", Framework::PyTorch, "global_avg_pool"),
    (
        "GlobalAveragePooling2D",
        Framework::Keras,
        "global_avg_pool",
    ),
    ("Flatten", Framework::Both, "flatten"),
    ("Reshape", Framework::Keras, "reshape"),
    ("view", Framework::PyTorch, "reshape"),
    ("Add", Framework::Keras, "add"),
    ("Multiply", Framework::Keras, "mul"),
    ("Concatenate", Framework::Keras, "concat"),
    ("cat", Framework::PyTorch, "concat"),
    ("Dropout", Framework::Both, "dropout"),
    ("Softmax", Framework::Both, "softmax"),
    ("ZeroPad2d", Framework::PyTorch, "pad"),
    ("ZeroPadding2D", Framework::Keras, "pad"),
];

/// Foreign argument names and the qatc arguments they may be, first match wins: the
/// one the op at hand has (`kernel_size` is `kernel` on conv2d, `size` on a pool).
const ARGS: &[(&str, Framework, &[&str])] = &[
    ("kernel_size", Framework::Both, &["kernel", "size"]),
    ("pool_size", Framework::Keras, &["size"]),
    ("strides", Framework::Keras, &["stride"]),
    ("out_channels", Framework::PyTorch, &["filters"]),
    ("out_features", Framework::PyTorch, &["units"]),
    ("use_bias", Framework::Keras, &["bias"]),
    ("dilation_rate", Framework::Keras, &["dilation"]),
    ("epsilon", Framework::Keras, &["eps"]),
    ("dim", Framework::PyTorch, &["axis"]),
    ("p", Framework::PyTorch, &["rate"]),
];

/// Foreign arguments that qatc has no use for, and why.
const NEEDLESS_ARGS: &[(&str, &str)] = &[
    ("in_channels", "qatc infers the input channels from the input's shape"),
    ("in_features", "qatc infers the input features from the input's shape"),
    ("num_features", "qatc infers the channels from the input's shape"),
    ("input_shape", "the model's `input` declares the shape"),
    (
        "activation",
        "an activation is its own op in qatc: `let y = relu(x)` (fused into the conv2d or dense before it)",
    ),
    ("inplace", "qatc values are never changed in place"),
];

/// Foreign words compare without case and underscores (`max_pooling2d`, `batchnorm2d`).
fn folded(name: &str) -> String {
    name.chars()
        .filter(|&c| c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// The qatc op a Keras or PyTorch name stands for, with a note saying so.
pub fn op(name: &str) -> Option<(&'static str, String)> {
    let key = folded(name);
    OPS.iter()
        .find(|(foreign, _, _)| folded(foreign) == key)
        .map(|&(foreign, from, to)| {
            (
                to,
                format!(
                    "`{foreign}` is the {} name; in qatc it is `{to}`",
                    from.name()
                ),
            )
        })
}

/// What a foreign argument name means for an op taking `args`: `Ok` the qatc argument
/// (with a note), `Err` why qatc needs no such argument.
pub fn argument<'a>(
    name: &str,
    args: impl Iterator<Item = &'a str> + Clone,
) -> Option<Result<(&'a str, String), &'static str>> {
    if let Some(&(foreign, from, targets)) = ARGS.iter().find(|(f, _, _)| *f == name) {
        let to = targets.iter().find_map(|t| args.clone().find(|a| a == t))?;
        return Some(Ok((
            to,
            format!(
                "`{foreign}` is the {} name; in qatc it is `{to}`",
                from.name()
            ),
        )));
    }
    NEEDLESS_ARGS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, why)| Err(why))
}

/// A numeric `padding = n` (PyTorch's style) as qatc's choice: `valid` for 0, `same`
/// when `n` pads each side by `dilation * (kernel - 1) / 2`; otherwise the help.
pub fn padding(n: u64, kernel: Option<u64>, dilation: u64) -> Result<&'static str, String> {
    if n == 0 {
        return Ok("valid");
    }
    match kernel {
        Some(k) if 2 * n == dilation * k.saturating_sub(1) => Ok("same"),
        _ => Err(format!(
            "qatc pads `same` (dilation * (kernel - 1) / 2 on each side) or `valid` (none); \
             for {n} on each side otherwise, use `pad(x, size = {n})` before the convolution"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_foreign_op_names_a_qatc_op() {
        for (foreign, _, to) in OPS {
            assert!(
                crate::ir::ops::OPS.iter().any(|o| o.name == *to),
                "{foreign} -> {to}"
            );
        }
    }

    #[test]
    fn every_foreign_argument_names_an_argument_of_some_op() {
        for (foreign, _, targets) in ARGS {
            for t in *targets {
                assert!(
                    crate::ir::ops::OPS
                        .iter()
                        .any(|o| o.args.iter().any(|a| a.name == *t)),
                    "{foreign} -> {t}"
                );
            }
        }
    }

    #[test]
    fn names_compare_without_case_or_underscores() {
        assert_eq!(op("max_pooling2d").map(|o| o.0), Some("max_pool2d"));
        assert_eq!(op("Linear").map(|o| o.0), Some("dense"));
        assert_eq!(op("batchnorm2d").map(|o| o.0), Some("batch_norm"));
        assert_eq!(op("hard_sigmoid").map(|o| o.0), Some("hardsigmoid"));
        assert_eq!(op("Hardsigmoid").map(|o| o.0), Some("hardsigmoid"));
        assert_eq!(op("convolution"), None);
    }

    #[test]
    fn kernel_size_is_the_argument_the_op_has() {
        let conv = ["filters", "kernel", "stride"];
        let pool = ["size", "stride"];
        assert_eq!(
            argument("kernel_size", conv.iter().copied()).map(|r| r.map(|o| o.0)),
            Some(Ok("kernel"))
        );
        assert_eq!(
            argument("kernel_size", pool.iter().copied()).map(|r| r.map(|o| o.0)),
            Some(Ok("size"))
        );
        assert!(matches!(
            argument("in_channels", conv.iter().copied()),
            Some(Err(_))
        ));
        assert_eq!(argument("out_features", conv.iter().copied()), None);
    }

    #[test]
    fn numeric_padding_maps_only_when_it_means_same_or_valid() {
        assert_eq!(padding(0, Some(3), 1), Ok("valid"));
        assert_eq!(padding(1, Some(3), 1), Ok("same"));
        assert_eq!(padding(2, Some(5), 1), Ok("same"));
        assert_eq!(padding(2, Some(3), 2), Ok("same"));
        assert!(padding(1, Some(5), 1).is_err());
        assert!(padding(1, None, 1).is_err());
    }
}
