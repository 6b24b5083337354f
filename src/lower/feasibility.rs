//! Which nodes have an integer form: decided in one place ([`int8_form`]), reported
//! before training ([`check`]) and refused by the lowering.

use crate::diagnostics::Diagnostic;
use crate::ir::{Graph, Op};

/// Why a node has no int8 form: what is refused, a short label for its source span,
/// and how to fix it.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub what: String,
    pub label: &'static str,
    pub hint: String,
}

/// Whether `node` has an integer form: the one place that says which ops (and which of
/// their arguments) lower to int8. The lowering refuses exactly these nodes, and
/// [`check`] reports them before any training.
#[deny(clippy::wildcard_enum_match_arm)]
pub fn int8_form(node: &crate::ir::Node) -> Result<(), Refusal> {
    let no_kernel = |what: String| {
        Refusal {
        what: format!("{what} has no integer kernel yet"),
        label: "no int8 form",
        hint: "keep this model in float (the build still reports float, PTQ and QAT accuracy), or use an op with an int8 kernel (`qatc explain ops`)".into(),
    }
    };
    if node.quant.float && !node.op.role().float_is_harmless() {
        return Err(Refusal {
            what: "it is @float, but the int8 model is integer-only".into(),
            label: "@float here",
            hint: "remove the @float annotation to deploy this model as int8".into(),
        });
    }
    match &node.op {
        Op::Conv2d { dilation, .. } if *dilation != 1 => {
            Err(no_kernel(format!("conv2d with dilation = {dilation}")))
        }
        Op::Conv2d { .. }
        | Op::Input
        | Op::FakeQuant { .. }
        | Op::Dense { .. }
        | Op::Relu
        | Op::Relu6
        | Op::MaxPool2d { .. }
        | Op::AvgPool2d { .. }
        | Op::GlobalAvgPool
        | Op::Flatten
        | Op::Reshape { .. }
        | Op::Add { .. }
        | Op::Concat { .. }
        | Op::Hardswish
        | Op::Hardsigmoid
        | Op::Sigmoid
        | Op::Mul
        | Op::Pad { .. }
        | Op::Dropout { .. } => Ok(()),
        Op::BatchNorm { .. } => Err(Refusal {
            what: "a batch_norm that is not folded into a conv2d or dense has no integer kernel"
                .into(),
            label: "not folded",
            hint: "put the batch_norm right after a conv2d or dense whose value nothing else reads"
                .into(),
        }),
        op @ Op::Softmax { .. } => Err(no_kernel(format!("`{}`", op.name()))),
    }
}

/// Every node of a quantized-stage graph without an int8 form, as diagnostics at its
/// source: run before training so that nobody trains for an int8 model that cannot exist.
/// They are errors with `code`; a caller that can go on without an int8 model makes
/// them warnings.
pub fn check(graph: &Graph, code: &'static str) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if graph.inputs.len() != 1 {
        out.push(
            Diagnostic::error(
                code,
                format!(
                    "model `{}` has {} inputs; the int8 model takes one",
                    graph.name,
                    graph.inputs.len()
                ),
                graph.node(graph.output).span,
                "this model",
            )
            .with_help("give the model a single input".to_string()),
        );
    }
    for node in &graph.nodes {
        if let Err(r) = int8_form(node) {
            let message = format!("`{}` has no int8 form: {}", node.name, r.what);
            out.push(Diagnostic::error(code, message, node.span, r.label).with_help(r.hint));
        }
    }
    out
}
