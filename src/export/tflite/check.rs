//! Which models a `.tflite` export can take, decided on the checked graph.

use crate::diagnostics::Span;
use crate::ir::{Graph, Op};

/// Ops a `.tflite` export can take, and why the others cannot: checked on the
/// quantized graph before any training, so `--emit tflite` fails in seconds.
pub fn check(graph: &Graph) -> Vec<crate::diagnostics::Diagnostic> {
    use crate::diagnostics::Diagnostic;
    let code = crate::codes::NO_TFLITE_FORM;
    let mut out = Vec::new();
    let mut refuse = |span: Span, message: String, label: &str, help: &str| {
        out.push(Diagnostic::error(code, message, span, label).with_help(help.to_string()));
    };
    if graph.inputs.len() != 1 {
        let span = graph.node(graph.output).span;
        refuse(
            span,
            format!(
                "model `{}` has {} inputs; the TFLite export takes one",
                graph.name,
                graph.inputs.len()
            ),
            "this model",
            "export a model with a single image input",
        );
    }
    for node in &graph.nodes {
        let name = node.op.name();
        if node.quant.float && !crate::lower::passes_through(&node.op) {
            refuse(
                node.span,
                format!(
                    "`{}` ({name}) is kept in float, but a TFLite int8 model is integer-only",
                    node.name
                ),
                "@float here",
                "remove @float from this op to export the model as int8 TFLite",
            );
            continue;
        }
        match &node.op {
            Op::Conv2d {
                dilation, groups, in_channels, ..
            } => {
                if *dilation != 1 {
                    refuse(
                        node.span,
                        format!("`{}`: dilated conv2d has no int8 kernel in qatc yet", node.name),
                        "dilation > 1",
                        "use dilation = 1 to export to TFLite",
                    );
                }
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
            Op::FakeQuant { spec } => {
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
            | Op::Relu
            | Op::Relu6
            | Op::MaxPool2d { .. }
            | Op::AvgPool2d { .. }
            | Op::GlobalAvgPool
            | Op::Flatten
            | Op::Dropout { .. }
            | Op::Add
            | Op::Concat { .. } => {}
            other => refuse(
                node.span,
                format!("`{}`: qatc cannot lower `{}` to an int8 TFLite operator", node.name, other.name()),
                "no int8 TFLite form",
                "the TFLite export takes conv2d (incl. depthwise), dense, batch_norm folded into a conv2d or dense, relu, relu6, max_pool2d, avg_pool2d, global_avg_pool, flatten, dropout, add and concat",
            ),
        }
    }
    out
}
