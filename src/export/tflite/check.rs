//! Which models a `.tflite` export can take, decided on the checked graph.

use crate::diagnostics::Span;
use crate::ir::{Graph, Op};

/// Ops a `.tflite` export can take, and why the others cannot: checked on the
/// quantized graph before any training, so `--emit tflite` fails in seconds.
pub fn check(graph: &Graph) -> Vec<crate::diagnostics::Diagnostic> {
    use crate::diagnostics::Diagnostic;
    let code = crate::codes::NO_TFLITE_FORM;
    // What has no int8 form at all, then what TFLite's int8 builtins add to that.
    let mut out = crate::lower::check(graph, code);
    let mut refuse = |span: Span, message: String, label: &str, help: &str| {
        out.push(Diagnostic::error(code, message, span, label).with_help(help.to_string()));
    };
    for node in &graph.nodes {
        if crate::lower::int8_form(node).is_err() {
            continue;
        }
        #[deny(clippy::wildcard_enum_match_arm)]
        match &node.op {
            Op::Conv2d {
                groups,
                in_channels,
                ..
            } => {
                if *groups != 1 && groups != in_channels {
                    refuse(
                        node.span,
                        format!(
                            "`{}`: conv2d with {groups} groups of {} channels has no TFLite builtin (only groups = 1 and depthwise)",
                            node.name,
                            in_channels / groups
                        ),
                        "grouped convolution",
                        "use groups = 1, or groups = the input channels (depthwise)",
                    );
                }
            }
            Op::FakeQuant { spec, .. } => {
                let (lo, hi) = spec.range();
                if (lo, hi) != (-128, 127) {
                    let at = graph.node(node.inputs[0]);
                    refuse(
                        at.span,
                        format!(
                            "`{}` is quantized to [{lo}, {hi}] ({spec}); TFLite int8 tensors hold the full [-128, 127]",
                            at.name
                        ),
                        "narrow activation range",
                        "export models with int8(asymmetric, per_tensor) activations (e.g. --quant w4a8); weights may be narrower",
                    );
                }
            }
            Op::Input
            | Op::Dense { .. }
            | Op::BatchNorm { .. }
            | Op::Relu
            | Op::Relu6
            | Op::Hardswish
            | Op::Hardsigmoid
            | Op::Sigmoid
            | Op::MaxPool2d { .. }
            | Op::AvgPool2d { .. }
            | Op::GlobalAvgPool
            | Op::Flatten
            | Op::Reshape { .. }
            | Op::Add { .. }
            | Op::Mul
            | Op::Concat { .. }
            | Op::Dropout { .. }
            | Op::Softmax { .. }
            | Op::Pad { .. } => {}
        }
    }
    out
}
