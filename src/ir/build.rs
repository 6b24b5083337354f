//! Semantic analysis: resolves names, checks op calls and annotations, infers
//! shapes, and builds one [`Graph`] per model. Reports every independent problem,
//! not just the first; a binding whose call failed is "poisoned" so that later
//! uses of it do not cascade into more errors.

use std::collections::HashMap;

use super::ops::{self, ArgType, ArgValue, Args, OpDef};
use super::{Granularity, Graph, Node, NodeId, NodeQuant, Op, QuantSpec, Scheme};
use crate::codes;
use crate::diagnostics::{did_you_mean, Diagnostic, Span};
use crate::syntax::ast;

/// The file-wide quantization defaults (`quant default { ... }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantDefaults {
    pub weights: QuantSpec,
    pub activations: QuantSpec,
}

impl Default for QuantDefaults {
    fn default() -> Self {
        QuantDefaults {
            weights: QuantSpec::WEIGHTS,
            activations: QuantSpec::ACTIVATIONS,
        }
    }
}

/// The result of checking a file: graphs for the models that checked clean, and all diagnostics.
#[derive(Debug, Default)]
pub struct CheckedFile {
    pub graphs: Vec<Graph>,
    pub diagnostics: Vec<Diagnostic>,
    /// Names of all models in the file, including ones with errors.
    pub model_names: Vec<String>,
    /// The file's `quant default` settings (built-in defaults where it has none).
    pub defaults: QuantDefaults,
}

impl CheckedFile {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

pub fn check_file(file: &ast::File) -> CheckedFile {
    let mut out = CheckedFile::default();
    let defaults = quant_defaults(file, &mut out.diagnostics);
    out.defaults = defaults;
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for item in &file.items {
        let ast::Item::Model(model) = item else {
            continue;
        };
        if let Some(first) = seen.insert(&model.name.name, model.name.span) {
            out.diagnostics.push(
                Diagnostic::error(
                    codes::DUPLICATE_DEFINITION,
                    format!("model `{}` is defined twice", model.name.name),
                    model.name.span,
                    "redefined here",
                )
                .with_label(first, "first defined here"),
            );
            continue;
        }
        out.model_names.push(model.name.name.clone());
        let mut checker = ModelChecker {
            defaults,
            diagnostics: Vec::new(),
            nodes: Vec::new(),
            scope: HashMap::new(),
            inputs: Vec::new(),
        };
        let graph = checker.check(model);
        let clean = !checker.diagnostics.iter().any(Diagnostic::is_error);
        out.diagnostics.extend(checker.diagnostics);
        if let (true, Some(graph)) = (clean, graph) {
            out.graphs.push(graph);
        }
    }
    if out.model_names.is_empty() && !out.has_errors() {
        out.diagnostics.push(
            Diagnostic::error(
                codes::NO_MODEL,
                "this file defines no model",
                Span::new(0, 0),
                "expected `model Name { ... }`",
            )
            .with_help("add a model: `model Net { input x: f32[1, 28, 28] ... output y }`"),
        );
    }
    out
}

fn quant_defaults(file: &ast::File, diagnostics: &mut Vec<Diagnostic>) -> QuantDefaults {
    let mut defaults = QuantDefaults::default();
    let mut block_seen: Option<Span> = None;
    for item in &file.items {
        let ast::Item::QuantDefault(block) = item else {
            continue;
        };
        if let Some(first) = block_seen.replace(block.span) {
            diagnostics.push(
                Diagnostic::error(
                    codes::DUPLICATE_DEFINITION,
                    "`quant default` is given twice",
                    Span::new(block.span.start, block.span.start + 13),
                    "second block here",
                )
                .with_label(Span::new(first.start, first.start + 13), "first block here")
                .with_help("merge the settings into one block"),
            );
            continue;
        }
        let mut set: HashMap<&str, Span> = HashMap::new();
        for setting in &block.settings {
            let name = setting.name.name.as_str();
            let Some(role) = Role::from_name(name) else {
                let mut d = Diagnostic::error(
                    codes::UNKNOWN_ARGUMENT,
                    format!("unknown quant setting `{name}`"),
                    setting.name.span,
                    "not a quant setting",
                )
                .with_note("`quant default` accepts `weights` and `activations`");
                if let Some(s) = did_you_mean(name, ["weights", "activations"]) {
                    d = d.with_help(format!("did you mean `{s}`?"));
                }
                diagnostics.push(d);
                continue;
            };
            if let Some(first) = set.insert(name, setting.name.span) {
                diagnostics.push(
                    Diagnostic::error(
                        codes::DUPLICATE_DEFINITION,
                        format!("`{name}` is set twice"),
                        setting.name.span,
                        "set again here",
                    )
                    .with_label(first, "first set here"),
                );
                continue;
            }
            match quant_spec(&setting.value, role) {
                Ok(spec) => match role {
                    Role::Weights => defaults.weights = spec,
                    Role::Activations => defaults.activations = spec,
                },
                Err(d) => diagnostics.push(d),
            }
        }
    }
    defaults
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Weights,
    Activations,
}

impl Role {
    fn from_name(name: &str) -> Option<Role> {
        match name {
            "weights" => Some(Role::Weights),
            "activations" => Some(Role::Activations),
            _ => None,
        }
    }
}

const QUANT_WORDS: &[&str] = &["symmetric", "asymmetric", "per_tensor", "per_channel"];

/// Parses `intN(scheme, granularity)`; either argument may be left out.
fn quant_spec(expr: &ast::Expr, role: Role) -> Result<QuantSpec, Diagnostic> {
    let invalid = |span: Span, label: String| {
        Diagnostic::error(codes::INVALID_QUANT_SPEC, "invalid quantization spec", span, label)
            .with_help("write e.g. `int8(symmetric, per_channel)` or `int4(asymmetric, per_tensor)`; bit widths go from 2 to 8")
    };
    let ast::Expr::Call(call) = expr else {
        return Err(invalid(
            expr.span(),
            "expected `intN(scheme, granularity)`".into(),
        ));
    };
    let callee = call.callee.name.as_str();
    let bits = callee
        .strip_prefix("int")
        .and_then(|b| b.parse::<u8>().ok());
    let bits = match bits {
        Some(b) if (QuantSpec::MIN_BITS..=QuantSpec::MAX_BITS).contains(&b) => b,
        Some(b) => {
            return Err(invalid(
                call.callee.span,
                format!("{b}-bit integers are not supported"),
            )
            .with_note("qatc quantizes to 2 to 8 bits (int2 ... int8)"))
        }
        None => {
            return Err(invalid(
                call.callee.span,
                format!("`{callee}` is not an integer type"),
            ))
        }
    };
    let mut spec = match role {
        Role::Weights => QuantSpec {
            bits,
            ..QuantSpec::WEIGHTS
        },
        Role::Activations => QuantSpec {
            bits,
            ..QuantSpec::ACTIVATIONS
        },
    };
    for arg in &call.args {
        let word = match (&arg.name, &arg.value) {
            (None, ast::Expr::Ident(i)) => i,
            _ => {
                return Err(invalid(
                    arg.span,
                    "expected `symmetric`, `asymmetric`, `per_tensor` or `per_channel`".into(),
                ))
            }
        };
        match word.name.as_str() {
            "symmetric" => spec.scheme = Scheme::Symmetric,
            "asymmetric" => spec.scheme = Scheme::Asymmetric,
            "per_tensor" => spec.granularity = Granularity::PerTensor,
            "per_channel" if role == Role::Activations => {
                return Err(
                    invalid(word.span, "activations are quantized per tensor".into()).with_note(
                        "per-channel activation scales cannot be fused into integer kernels",
                    ),
                )
            }
            "per_channel" => spec.granularity = Granularity::PerChannel,
            other => {
                let mut d = invalid(word.span, format!("unknown quantization option `{other}`"));
                if let Some(s) = did_you_mean(other, QUANT_WORDS.iter().copied()) {
                    d = d.with_help(format!("did you mean `{s}`?"));
                }
                return Err(d);
            }
        }
    }
    Ok(spec)
}

struct Binding {
    /// `None` when the binding's own call had an error.
    value: Option<NodeId>,
    span: Span,
    used: bool,
}

struct ModelChecker {
    defaults: QuantDefaults,
    diagnostics: Vec<Diagnostic>,
    nodes: Vec<Node>,
    scope: HashMap<String, Binding>,
    inputs: Vec<NodeId>,
}

impl ModelChecker {
    fn check(&mut self, model: &ast::Model) -> Option<Graph> {
        let mut output: Option<(NodeId, Span)> = None;
        let mut output_seen: Option<Span> = None;
        let mut poisoned_output = false;
        for statement in &model.statements {
            match statement {
                ast::Statement::Input(input) => self.input(input),
                ast::Statement::Let(binding) => self.let_binding(binding),
                ast::Statement::Output(decl) => {
                    if let Some(first) = output_seen.replace(decl.span) {
                        self.diagnostics.push(
                            Diagnostic::error(
                                codes::INVALID_OUTPUT,
                                "a model has one `output` statement",
                                decl.span,
                                "second output statement",
                            )
                            .with_label(first, "first one here"),
                        );
                        continue;
                    }
                    if decl.names.len() > 1 {
                        self.diagnostics.push(
                            Diagnostic::error(
                                codes::INVALID_OUTPUT,
                                "models with several outputs are not supported yet",
                                decl.names[1].span,
                                "second output",
                            )
                            .with_help(
                                "name the one value the model predicts, e.g. `output logits`",
                            ),
                        );
                    }
                    match self.resolve(&decl.names[0]) {
                        Some(Some(id)) => output = Some((id, decl.names[0].span)),
                        _ => poisoned_output = true,
                    }
                }
            }
        }
        if output_seen.is_none() {
            self.diagnostics.push(
                Diagnostic::error(
                    codes::INVALID_OUTPUT,
                    format!("model `{}` has no output", model.name.name),
                    model.name.span,
                    "no `output` statement in this model",
                )
                .with_help("end the model with `output <name>`, naming the value it predicts"),
            );
        }
        if self.inputs.is_empty() {
            self.diagnostics.push(
                Diagnostic::error(
                    codes::INVALID_INPUT_TYPE,
                    format!("model `{}` has no input", model.name.name),
                    model.name.span,
                    "no `input` statement in this model",
                )
                .with_help("declare the input first: `input image: f32[1, 28, 28]`"),
            );
        }
        // A binding whose call failed was reported already; "unused" would only add noise.
        let mut unused: Vec<(&String, &Binding)> = self
            .scope
            .iter()
            .filter(|(_, b)| !b.used && b.value.is_some())
            .collect();
        unused.sort_by_key(|(_, b)| b.span.start);
        let warnings: Vec<Diagnostic> = unused
            .into_iter()
            .map(|(name, b)| unused_warning(name, b.span))
            .collect();
        self.diagnostics.extend(warnings);
        let _ = poisoned_output;
        let (output, _) = output?;
        Some(Graph {
            name: model.name.name.clone(),
            nodes: std::mem::take(&mut self.nodes),
            inputs: self.inputs.clone(),
            output,
        })
    }

    fn define(&mut self, name: &ast::Ident, value: Option<NodeId>) {
        let previous = self.scope.insert(
            name.name.clone(),
            Binding {
                value,
                span: name.span,
                used: false,
            },
        );
        if let Some(previous) = previous {
            if !previous.used && previous.value.is_some() {
                self.diagnostics
                    .push(unused_warning(&name.name, previous.span).with_note(format!(
                        "it is shadowed by a later `{}` before any use",
                        name.name
                    )));
            }
        }
    }

    /// `None`: undefined (reported); `Some(None)`: defined but poisoned.
    fn resolve(&mut self, name: &ast::Ident) -> Option<Option<NodeId>> {
        if let Some(b) = self.scope.get_mut(&name.name) {
            b.used = true;
            return Some(b.value);
        }
        let mut d = Diagnostic::error(
            codes::UNDEFINED_NAME,
            format!("cannot find value `{}` in this model", name.name),
            name.span,
            "not defined before this use",
        );
        if let Some(s) = did_you_mean(&name.name, self.scope.keys().map(String::as_str)) {
            d = d.with_help(format!("did you mean `{s}`?"));
        }
        self.diagnostics.push(d);
        None
    }

    fn unique_name(&self, name: &str) -> String {
        let taken = |n: &str| self.nodes.iter().any(|node| node.name == n);
        if !taken(name) {
            return name.to_string();
        }
        (1..)
            .map(|k| format!("{name}_{k}"))
            .find(|n| !taken(n))
            .expect("some suffix is free")
    }

    fn push(
        &mut self,
        name: &str,
        op: Op,
        inputs: Vec<NodeId>,
        shape: super::Shape,
        span: Span,
        quant: NodeQuant,
    ) -> NodeId {
        let id = NodeId(self.nodes.len() as u32);
        let name = self.unique_name(name);
        self.nodes.push(Node {
            name,
            op,
            inputs,
            shape,
            span,
            quant,
        });
        id
    }

    fn default_quant(&self) -> NodeQuant {
        NodeQuant {
            float: false,
            weights: self.defaults.weights,
            activations: self.defaults.activations,
        }
    }

    fn input(&mut self, input: &ast::InputDecl) {
        if let Some(b) = self.scope.get(&input.name.name) {
            let first = b.span;
            self.diagnostics.push(
                Diagnostic::error(
                    codes::DUPLICATE_DEFINITION,
                    format!("`{}` is already defined", input.name.name),
                    input.name.span,
                    "defined again here",
                )
                .with_label(first, "first defined here"),
            );
            return;
        }
        let mut ok = true;
        if input.ty.dtype.name != "f32" {
            ok = false;
            self.diagnostics.push(
                Diagnostic::error(
                    codes::INVALID_INPUT_TYPE,
                    format!("inputs must be `f32`, not `{}`", input.ty.dtype.name),
                    input.ty.dtype.span,
                    "unsupported element type",
                )
                .with_help(
                    "quantization happens inside the model; declare the input as `f32[...]`",
                ),
            );
        }
        if !matches!(input.ty.dims.len(), 1 | 3) {
            ok = false;
            self.diagnostics.push(
                Diagnostic::error(
                    codes::INVALID_INPUT_TYPE,
                    format!(
                        "inputs are 1-D or 3-D, this one is {}-D",
                        input.ty.dims.len()
                    ),
                    input.ty.span,
                    "expected `f32[C, H, W]` or `f32[N]`",
                )
                .with_note("shapes are written without the batch dimension"),
            );
        }
        for &(d, span) in &input.ty.dims {
            if d == 0 || d > 1 << 20 {
                ok = false;
                self.diagnostics.push(Diagnostic::error(
                    codes::INVALID_INPUT_TYPE,
                    format!(
                        "dimension {} is out of range",
                        if d == u64::MAX {
                            "too large".to_string()
                        } else {
                            d.to_string()
                        }
                    ),
                    span,
                    "dimensions go from 1 to 1048576",
                ));
            }
        }
        let value = ok.then(|| {
            let shape = input.ty.dims.iter().map(|&(d, _)| d as usize).collect();
            let quant = self.default_quant();
            self.push(
                &input.name.name,
                Op::Input,
                Vec::new(),
                shape,
                input.span,
                quant,
            )
        });
        if let Some(id) = value {
            self.inputs.push(id);
        }
        // An input is "used" by definition: the caller supplies it.
        self.scope.insert(
            input.name.name.clone(),
            Binding {
                value,
                span: input.name.span,
                used: true,
            },
        );
    }

    fn annotations(&mut self, binding: &ast::LetBinding, def: Option<&OpDef>) -> NodeQuant {
        let mut quant = self.default_quant();
        for ann in &binding.annotations {
            match ann.name.name.as_str() {
                "float" => {
                    if let Some(arg) = ann.args.first() {
                        self.diagnostics.push(Diagnostic::error(
                            codes::UNKNOWN_ANNOTATION,
                            "`@float` takes no arguments",
                            arg.span,
                            "unexpected argument",
                        ));
                    }
                    quant.float = true;
                    if matches!(def.map(|d| d.name), Some("max_pool2d" | "flatten")) {
                        self.diagnostics.push(
                            Diagnostic::warning(
                                codes::INEFFECTIVE_ANNOTATION,
                                "`@float` has no effect here",
                                ann.span,
                                "this op only moves values",
                            )
                            .with_note(
                                "max_pool2d and flatten keep the quantization of their input",
                            ),
                        );
                    }
                }
                "quant" => {
                    if ann.args.is_empty() {
                        self.diagnostics.push(
                            Diagnostic::error(
                                codes::UNKNOWN_ANNOTATION,
                                "`@quant` needs settings",
                                ann.span,
                                "nothing to override",
                            )
                            .with_help("e.g. `@quant(weights = int4(symmetric, per_channel))`"),
                        );
                    }
                    for arg in &ann.args {
                        let Some(name) = &arg.name else {
                            self.diagnostics.push(Diagnostic::error(
                                codes::UNKNOWN_ANNOTATION,
                                "`@quant` settings are named",
                                arg.span,
                                "expected `weights = ...` or `activations = ...`",
                            ));
                            continue;
                        };
                        let Some(role) = Role::from_name(&name.name) else {
                            let mut d = Diagnostic::error(
                                codes::UNKNOWN_ARGUMENT,
                                format!("unknown quant setting `{}`", name.name),
                                name.span,
                                "not a quant setting",
                            )
                            .with_note("`@quant` accepts `weights` and `activations`");
                            if let Some(s) = did_you_mean(&name.name, ["weights", "activations"]) {
                                d = d.with_help(format!("did you mean `{s}`?"));
                            }
                            self.diagnostics.push(d);
                            continue;
                        };
                        match quant_spec(&arg.value, role) {
                            Ok(spec) if role == Role::Weights => {
                                quant.weights = spec;
                                if let Some(def) =
                                    def.filter(|d| !matches!(d.name, "conv2d" | "dense"))
                                {
                                    self.diagnostics.push(
                                        Diagnostic::warning(
                                            codes::INEFFECTIVE_ANNOTATION,
                                            "weight quantization has no effect here",
                                            arg.span,
                                            format!("`{}` has no weights", def.name),
                                        )
                                        .with_note("only conv2d and dense have weights"),
                                    );
                                }
                            }
                            Ok(spec) => quant.activations = spec,
                            Err(d) => self.diagnostics.push(d),
                        }
                    }
                }
                other => {
                    let mut d = Diagnostic::error(
                        codes::UNKNOWN_ANNOTATION,
                        format!("unknown annotation `@{other}`"),
                        ann.name.span,
                        "not an annotation qatc knows",
                    )
                    .with_note("bindings accept `@float` and `@quant(...)`");
                    if let Some(s) = did_you_mean(other, ["float", "quant"]) {
                        d = d.with_help(format!("did you mean `@{s}`?"));
                    }
                    self.diagnostics.push(d);
                }
            }
        }
        quant
    }

    fn let_binding(&mut self, binding: &ast::LetBinding) {
        let call = &binding.call;
        let def = ops::lookup(&call.callee.name);
        let quant = self.annotations(binding, def);
        let value = self.call(call, def, quant, &binding.name.name);
        self.define(&binding.name, value);
    }

    fn call(
        &mut self,
        call: &ast::Call,
        def: Option<&'static OpDef>,
        quant: NodeQuant,
        name: &str,
    ) -> Option<NodeId> {
        // Resolve tensor inputs first, even for an unknown op, so their uses count.
        let mut inputs: Vec<(Option<NodeId>, Span)> = Vec::new();
        let mut bad = false;
        for arg in call.args.iter().filter(|a| a.name.is_none()) {
            match &arg.value {
                ast::Expr::Ident(ident) => match self.resolve(ident) {
                    Some(v) => inputs.push((v, ident.span)),
                    None => bad = true,
                },
                other => {
                    bad = true;
                    self.diagnostics.push(
                        Diagnostic::error(
                            codes::INVALID_ARGUMENT,
                            "tensor arguments must be names",
                            other.span(),
                            "expected the name of a value",
                        )
                        .with_help("bind the inner call first: `let y = relu(x)`, then pass `y`"),
                    );
                }
            }
        }
        let Some(def) = def else {
            let mut d = Diagnostic::error(
                codes::UNKNOWN_OP,
                format!("unknown op `{}`", call.callee.name),
                call.callee.span,
                "not an op qatc knows",
            );
            if let Some(s) = did_you_mean(&call.callee.name, ops::OPS.iter().map(|o| o.name)) {
                d = d.with_help(format!("did you mean `{s}`?"));
            } else {
                d = d.with_note(format!(
                    "ops: {}",
                    ops::OPS
                        .iter()
                        .map(|o| o.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            self.diagnostics.push(d);
            return None;
        };
        if inputs.len() != def.inputs && !bad {
            let plural = if def.inputs == 1 { "" } else { "s" };
            self.diagnostics.push(
                Diagnostic::error(
                    codes::WRONG_INPUT_COUNT,
                    format!(
                        "`{}` takes {} tensor input{plural}, got {}",
                        def.name,
                        def.inputs,
                        inputs.len()
                    ),
                    call.span,
                    format!("expected {} positional argument{plural}", def.inputs),
                )
                .with_note(
                    "named arguments (`name = value`) set options; positional ones are tensors",
                ),
            );
            bad = true;
        }
        let args = self.args(call, def);
        let args = args?;
        if bad {
            return None;
        }
        let ids: Option<Vec<NodeId>> = inputs.iter().map(|(v, _)| *v).collect();
        let ids = ids?; // a poisoned input was already reported
        let shapes: Vec<&super::Shape> = ids
            .iter()
            .map(|&id| &self.nodes[id.index()].shape)
            .collect();
        match ops::instantiate(def, &args, &shapes) {
            Ok((op, shape)) => Some(self.push(name, op, ids, shape, call.span, quant)),
            Err(e) => {
                let primary = match e.blame {
                    Some(i) => inputs[i].1,
                    None => call.callee.span,
                };
                let mut d =
                    Diagnostic::error(codes::SHAPE_MISMATCH, "shape mismatch", primary, e.message);
                for (i, (&id, &(_, span))) in ids.iter().zip(&inputs).enumerate() {
                    if Some(i) != e.blame || e.blame.is_none() {
                        d = d.with_label(
                            span,
                            format!(
                                "this has shape {}",
                                ops::format_shape(&self.nodes[id.index()].shape)
                            ),
                        );
                    }
                }
                if let Some(h) = e.help {
                    d = d.with_help(h);
                }
                self.diagnostics.push(d);
                None
            }
        }
    }

    /// Type-checks named arguments and fills in defaults; `None` if any was wrong (reported).
    fn args(&mut self, call: &ast::Call, def: &OpDef) -> Option<Args> {
        let mut values: Vec<(&'static str, ArgValue)> = Vec::new();
        let mut spans: HashMap<&str, Span> = HashMap::new();
        let mut ok = true;
        // Misspelled arguments suggest a name; that name is then not also "missing".
        let mut suggested: Vec<&str> = Vec::new();
        for arg in &call.args {
            let Some(name) = &arg.name else { continue };
            let Some(arg_def) = def.args.iter().find(|a| a.name == name.name) else {
                ok = false;
                let mut d = Diagnostic::error(
                    codes::UNKNOWN_ARGUMENT,
                    format!("`{}` has no argument `{}`", def.name, name.name),
                    name.span,
                    "unknown argument",
                );
                if let Some(s) = did_you_mean(&name.name, def.args.iter().map(|a| a.name)) {
                    suggested.push(s);
                    d = d.with_help(format!("did you mean `{s}`?"));
                } else if def.args.is_empty() {
                    d = d.with_note(format!("`{}` takes no named arguments", def.name));
                } else {
                    d = d.with_note(format!(
                        "`{}` takes {}",
                        def.name,
                        def.args
                            .iter()
                            .map(|a| format!("`{}`", a.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                self.diagnostics.push(d);
                continue;
            };
            if let Some(first) = spans.insert(arg_def.name, name.span) {
                ok = false;
                self.diagnostics.push(
                    Diagnostic::error(
                        codes::DUPLICATE_DEFINITION,
                        format!("argument `{}` is given twice", name.name),
                        name.span,
                        "given again here",
                    )
                    .with_label(first, "first given here"),
                );
                continue;
            }
            match arg_value(&arg.value, arg_def.ty) {
                Some(v) => values.push((arg_def.name, v)),
                None => {
                    ok = false;
                    self.diagnostics.push(Diagnostic::error(
                        codes::INVALID_ARGUMENT,
                        format!("invalid value for `{}`", arg_def.name),
                        arg.value.span(),
                        format!("expected {}", arg_def.ty),
                    ));
                }
            }
        }
        for arg_def in def.args {
            if spans.contains_key(arg_def.name) {
                continue;
            }
            match arg_def.default {
                None if suggested.contains(&arg_def.name) => ok = false,
                None => {
                    ok = false;
                    self.diagnostics.push(
                        Diagnostic::error(
                            codes::MISSING_ARGUMENT,
                            format!("`{}` needs the argument `{}`", def.name, arg_def.name),
                            call.span,
                            format!("`{}` is missing", arg_def.name),
                        )
                        .with_help(format!(
                            "add `{} = ...`: {} ({})",
                            arg_def.name, arg_def.doc, arg_def.ty
                        )),
                    );
                }
                // A default that names another argument (stride = size) is resolved by the op.
                Some(text) => {
                    if let Some(v) = default_value(text, arg_def.ty) {
                        values.push((arg_def.name, v));
                    }
                }
            }
        }
        ok.then_some(Args(values))
    }
}

fn unused_warning(name: &str, span: Span) -> Diagnostic {
    Diagnostic::warning(
        codes::UNUSED_BINDING,
        format!("unused binding `{name}`"),
        span,
        "computed but never used",
    )
    .with_help("remove it, or use it in a later op or the output")
}

fn default_value(text: &'static str, ty: ArgType) -> Option<ArgValue> {
    match ty {
        ArgType::PositiveInt => text.parse().ok().map(ArgValue::Int),
        ArgType::PositiveFloat | ArgType::Fraction => text.parse().ok().map(ArgValue::Float),
        ArgType::Bool => Some(ArgValue::Bool(text == "true")),
        ArgType::Choice(_) => Some(ArgValue::Choice(text)),
    }
}

fn arg_value(expr: &ast::Expr, ty: ArgType) -> Option<ArgValue> {
    match (ty, expr) {
        (ArgType::PositiveInt, ast::Expr::Number { text, .. }) => text
            .parse::<usize>()
            .ok()
            .filter(|&v| v > 0 && v <= 1 << 20)
            .map(ArgValue::Int),
        (ArgType::PositiveFloat, ast::Expr::Number { text, .. }) => text
            .parse::<f64>()
            .ok()
            .filter(|v| *v > 0.0 && v.is_finite())
            .map(ArgValue::Float),
        (ArgType::Fraction, ast::Expr::Number { text, .. }) => text
            .parse::<f64>()
            .ok()
            .filter(|v| *v > 0.0 && *v < 1.0)
            .map(ArgValue::Float),
        (ArgType::Bool, ast::Expr::Ident(i)) => match i.name.as_str() {
            "true" => Some(ArgValue::Bool(true)),
            "false" => Some(ArgValue::Bool(false)),
            _ => None,
        },
        (ArgType::Choice(choices), ast::Expr::Ident(i)) => choices
            .iter()
            .find(|c| **c == i.name)
            .map(|c| ArgValue::Choice(c)),
        _ => None,
    }
}
