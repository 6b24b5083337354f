//! Quantization settings: the file's `quant default`, and `@quant(...)`, `@float` and
//! `@frozen` on bindings; `@name("features.3")`, the path a binding's nodes are named by.

use std::collections::HashMap;

use super::{Checker, Ctx, GraphBuilder, QuantDefaults};
use crate::codes;
use crate::diagnostics::{did_you_mean, Diagnostic, Span};
use crate::ir::ops::{self, OpDef};
use crate::ir::{Granularity, NodeQuant, QuantSpec, Scheme};
use crate::syntax::ast;

impl Checker<'_> {
    pub(super) fn annotations(
        &mut self,
        ctx: &Ctx,
        binding: &ast::LetBinding,
        def: Option<&OpDef>,
    ) -> NodeQuant {
        let mut quant = ctx.quant;
        for ann in &binding.annotations {
            match ann.name.name.as_str() {
                "float" => {
                    if let Some(arg) = ann.args.first() {
                        self.report(
                            ctx,
                            Diagnostic::error(
                                codes::UNKNOWN_ANNOTATION,
                                "`@float` takes no arguments",
                                arg.span,
                                "unexpected argument",
                            ),
                        );
                    }
                    quant.float = true;
                    if def.is_some_and(only_moves_values) {
                        self.report(
                            ctx,
                            Diagnostic::warning(
                                codes::INEFFECTIVE_ANNOTATION,
                                "`@float` has no effect here",
                                ann.span,
                                "this op only moves values",
                            )
                            .with_note(
                                "ops that only move values keep the quantization of their input",
                            ),
                        );
                    }
                }
                "frozen" => {
                    if let Some(arg) = ann.args.first() {
                        self.report(
                            ctx,
                            Diagnostic::error(
                                codes::UNKNOWN_ANNOTATION,
                                "`@frozen` takes no arguments",
                                arg.span,
                                "unexpected argument",
                            ),
                        );
                    }
                    quant.frozen = true;
                    if let Some(def) = def.filter(|d| !d.params.any()) {
                        self.report(
                            ctx,
                            Diagnostic::warning(
                                codes::INEFFECTIVE_ANNOTATION,
                                "`@frozen` has no effect here",
                                ann.span,
                                format!("`{}` has no parameters", def.name),
                            )
                            .with_note(format!(
                                "only {} have parameters to freeze",
                                ops::names_where(|d| d.params.any())
                            )),
                        );
                    }
                }
                "name" => {
                    if module_path(ann).is_none() {
                        self.report(
                            ctx,
                            Diagnostic::error(
                                codes::UNKNOWN_ANNOTATION,
                                "`@name` needs one module path",
                                ann.span,
                                "expected `@name(\"features.3\")`",
                            )
                            .with_note("a path is names or numbers joined by dots, as PyTorch names modules (`features.3.conv.0`)"),
                        );
                    }
                }
                "quant" => {
                    if ann.args.is_empty() {
                        self.report(
                            ctx,
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
                            self.report(
                                ctx,
                                Diagnostic::error(
                                    codes::UNKNOWN_ANNOTATION,
                                    "`@quant` settings are named",
                                    arg.span,
                                    "expected `weights = ...` or `activations = ...`",
                                ),
                            );
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
                                d = d.with_suggestion(name.span, s);
                            }
                            self.report(ctx, d);
                            continue;
                        };
                        match quant_spec(&arg.value, role) {
                            Ok(spec) if role == Role::Weights => {
                                quant.weights = spec;
                                if let Some(def) = def.filter(|d| !d.params.has_weights()) {
                                    self.report(
                                        ctx,
                                        Diagnostic::warning(
                                            codes::INEFFECTIVE_ANNOTATION,
                                            "weight quantization has no effect here",
                                            arg.span,
                                            format!("`{}` has no weights", def.name),
                                        )
                                        .with_note(
                                            format!(
                                                "only {} have weights",
                                                ops::names_where(|d| d.params.has_weights())
                                            ),
                                        ),
                                    );
                                }
                            }
                            Ok(spec) => quant.activations = spec,
                            Err(d) => self.report(ctx, d),
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
                    .with_note(
                        "bindings accept `@float`, `@frozen`, `@name(\"path\")` and `@quant(...)`",
                    );
                    if let Some(s) = did_you_mean(other, ["float", "frozen", "name", "quant"]) {
                        d = d.with_help(format!("did you mean `@{s}`?")).with_fix(
                            format!("replace with `@{s}`"),
                            ann.name.span,
                            s,
                        );
                    }
                    self.report(ctx, d);
                }
            }
        }
        quant
    }
}

impl<'a> Checker<'a> {
    /// What a binding's nodes are named by: the module path of `@name("features.3")` (so
    /// weights saved by PyTorch load under their own names), else the binding's name.
    /// Two parts of a model given the same path would load the same weights: an error.
    pub(super) fn node_name(
        &mut self,
        graph: &mut GraphBuilder,
        ctx: &Ctx,
        binding: &'a ast::LetBinding,
    ) -> &'a str {
        let named = binding
            .annotations
            .iter()
            .rev()
            .find_map(|a| Some((a, module_path(a)?)));
        let Some((ann, path)) = named else {
            return &binding.names[0].name;
        };
        let full = format!("{}{path}", ctx.prefix);
        if graph.names.contains(&full) || !graph.module_paths.insert(full.clone()) {
            self.report(
                ctx,
                Diagnostic::error(
                    codes::DUPLICATE_DEFINITION,
                    format!("`{full}` names two parts of the model"),
                    ann.span,
                    "this path is already taken",
                )
                .with_note("each `@name` path (with the block calls around it) names one part; its weights load under it"),
            );
        }
        path
    }
}

/// The path of a well-formed `@name("a.b.0")`: names or numbers joined by dots.
fn module_path(ann: &ast::Annotation) -> Option<&str> {
    let [ast::Arg {
        name: None,
        value: ast::Expr::Str { value, .. },
        ..
    }] = ann.args.as_slice()
    else {
        return None;
    };
    let segment =
        |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    (ann.name.name == "name" && value.split('.').all(segment)).then_some(value.as_str())
}

pub(super) fn quant_defaults(file: &ast::File, diagnostics: &mut Vec<Diagnostic>) -> QuantDefaults {
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
                    d = d.with_suggestion(setting.name.span, s);
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

/// Ops that only move values keep their input's quantization, so `@float` on them
/// changes nothing (W0002).
fn only_moves_values(def: &OpDef) -> bool {
    def.role.keeps_input_quant()
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
                    d = d.with_suggestion(word.span, s);
                }
                return Err(d);
            }
        }
    }
    Ok(spec)
}
