//! Semantic analysis: resolves names, checks op and block calls and annotations,
//! infers shapes, and builds one [`Graph`] per model with every block call inlined
//! (node names scoped by the binding: `stage1.conv`). Reports every independent
//! problem, not just the first; a binding whose call failed is "poisoned" so that
//! later uses of it do not cascade into more errors.
//!
//! Blocks are checked twice over: once on their own, with parameters of unknown
//! shape (names, ops, arguments: errors that do not depend on the call), and again
//! at each call, inlined with the caller's shapes, where only shape errors can arise.

mod annotations;
mod blocks;
mod bodies;
mod calls;
mod imports;
mod indexing;
mod ints;
mod lints;
mod vocabulary;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::index::{Index, Reference, Target};
use super::modules::{FsLoader, Loader, Modules};
use super::{BlockCall, BlockCallId, Graph, Node, NodeId, NodeQuant, Op, QuantSpec};
use crate::codes;
use crate::diagnostics::{Diagnostic, Span};
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
    /// Names and what they refer to, for editors.
    pub index: Index,
    /// The file's `quant default` settings (built-in defaults where it has none).
    pub defaults: QuantDefaults,
}

impl CheckedFile {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Checks a file that imports nothing from disk (a `use` resolves relative to the working directory).
pub fn check_file(file: &ast::File) -> CheckedFile {
    check_file_at(file, Path::new("input.qat"), &mut FsLoader)
}

/// Checks a file located at `origin`, loading its imports with `loader`.
pub fn check_file_at(file: &ast::File, origin: &Path, loader: &mut dyn Loader) -> CheckedFile {
    let mut out = CheckedFile::default();
    let (modules, uses) = Modules::load(file, origin, loader);
    let file_span = Span::new(
        0,
        file.items.iter().map(|i| i.span().end).max().unwrap_or(0),
    );

    let (namespaces, broken_imports) =
        imports::namespaces(file, &modules, &uses, &mut out.diagnostics);

    let defaults = annotations::quant_defaults(file, &mut out.diagnostics);
    let mut checker = Checker {
        modules: &modules,
        namespaces: &namespaces,
        broken: file.broken.iter().map(String::as_str).collect(),
        broken_imports,
        defaults,
        diagnostics: Vec::new(),
        index: Index::default(),
        file_span,
        let_start: 0,
        statement_end: 0,
        statements: 0,
    };
    checker.recursion(file);
    for item in &file.items {
        let ast::Item::Block(b) = item else { continue };
        checker.check_block(b, 0);
    }
    out.defaults = defaults;
    let mut seen: HashMap<&str, Span> = HashMap::new();
    // Models with no error of their own whose graph could not be made.
    let mut dropped = Vec::new();
    for item in &file.items {
        let ast::Item::Model(model) = item else {
            continue;
        };
        if let Some(first) = seen.insert(&model.name.name, model.name.span) {
            checker.diagnostics.push(
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
        let before = checker.diagnostics.len();
        let graph = checker.check_model(model);
        let clean = !checker.diagnostics[before..]
            .iter()
            .any(Diagnostic::is_error);
        match (clean, graph) {
            (true, Some(graph)) => {
                checker.diagnostics.extend(lints::float_sandwiches(&graph));
                out.graphs.push(graph);
            }
            (true, None) => dropped.push(model),
            (false, _) => {}
        }
    }
    // A model is never dropped silently: if nothing else explains it, say so.
    // A block or model that did not parse explains itself (its syntax error).
    if !checker.diagnostics.iter().any(Diagnostic::is_error)
        && !out.has_errors()
        && file.broken.is_empty()
    {
        for model in dropped {
            checker.diagnostics.push(
                Diagnostic::error(
                    codes::MODEL_NOT_BUILT,
                    format!("model `{}` could not be built", model.name.name),
                    model.name.span,
                    "no graph was made for this model",
                )
                .with_note("this is a bug in qatc: every reason should have its own diagnostic"),
            );
        }
    }
    out.diagnostics.extend(checker.diagnostics);
    out.index = checker.index;
    out.index
        .references
        .extend(uses.iter().filter_map(|(span, r)| {
            r.as_ref().ok().map(|i| Reference {
                span: *span,
                target: Target::File(modules.list[*i].path.clone()),
            })
        }));
    if out.model_names.is_empty()
        && !out.has_errors()
        && !file.items.iter().any(|i| matches!(i, ast::Item::Block(_)))
    {
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

/// A block visible under some name, and the module whose namespace its body uses.
#[derive(Debug, Clone, Copy)]
struct BlockRef<'a> {
    module: usize,
    def: &'a ast::BlockDef,
}

impl BlockRef<'_> {
    /// The names of the block's results (from its `output` statement).
    fn results(&self) -> Vec<&str> {
        self.def
            .statements
            .iter()
            .find_map(|s| match s {
                ast::Statement::Output(o) => {
                    Some(o.names.iter().map(|n| n.name.as_str()).collect())
                }
                _ => None,
            })
            .unwrap_or_default()
    }

    fn signature(&self) -> String {
        let params: Vec<String> = self
            .def
            .params
            .iter()
            .map(|p| match &p.default {
                Some(d) => format!("{}: {} = {d}", p.name.name, p.ty.name),
                None => format!("{}: {}", p.name.name, p.ty.name),
            })
            .collect();
        let results = self.results();
        format!(
            "block {}({}) -> {}",
            self.def.name.name,
            params.join(", "),
            if results.len() == 1 {
                results[0].to_string()
            } else {
                format!("({})", results.join(", "))
            }
        )
    }
}

/// A value a name is bound to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    /// `None`: poisoned (its call failed) or of unknown shape (a block parameter).
    Tensor(Option<NodeId>),
    /// `None`: a block's `int` parameter while the block is checked on its own.
    Int(Option<usize>),
    /// An op passed to a block's `op` parameter (`act = relu6`), by name; `None`:
    /// a parameter without a default while the block is checked on its own.
    Op(Option<&'static str>),
}

#[derive(Clone)]
struct Binding {
    value: Value,
    span: Span,
    used: bool,
    /// Its call failed and was reported: "unused" would only add noise.
    poisoned: bool,
}

/// Where a body is being checked: on its own, or inlined into a model's graph.
#[derive(Clone)]
struct Ctx<'a> {
    /// Namespace (module) the body's names resolve in.
    module: usize,
    /// Prefix of node names: `stage1.` inside `let stage1 = block(...)`.
    prefix: String,
    quant: NodeQuant,
    /// Calls being inlined, outermost first: block name and the call's span in this file.
    inlining: Vec<(&'a str, Span)>,
}

impl Ctx<'_> {
    fn inlined(&self) -> bool {
        !self.inlining.is_empty()
    }
}

/// The graph under construction, shared by every inlined body of one model.
#[derive(Default)]
struct GraphBuilder {
    nodes: Vec<Node>,
    names: HashSet<String>,
    /// Paths given with `@name`, with the prefixes of the block calls around them.
    module_paths: HashSet<String>,
    next_suffix: HashMap<String, usize>,
    /// A resource limit was reported: inline nothing more, report no more limits.
    limit_hit: bool,
    /// Every block call inlined so far, and the one whose body is being inlined now.
    blocks: Vec<BlockCall>,
    current_block: Option<BlockCallId>,
}

impl GraphBuilder {
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
        // Shadowed names (`let x = ...` again) get `_1`, `_2`, ...; a counter per base keeps this linear.
        let name = if self.names.contains(name) {
            let k = self.next_suffix.entry(name.to_string()).or_insert(1);
            loop {
                let candidate = format!("{name}_{k}");
                *k += 1;
                if !self.names.contains(&candidate) {
                    break candidate;
                }
            }
        } else {
            name.to_string()
        };
        self.names.insert(name.clone());
        self.nodes.push(Node {
            name,
            op,
            inputs,
            shape,
            span,
            quant,
            block: self.current_block,
        });
        id
    }

    /// Starts inlining a call of `block` bound to `binding` inside the current call;
    /// returns the call to go back to when its body is done.
    fn enter_block(&mut self, binding: &str, block: &str) -> Option<BlockCallId> {
        let id = BlockCallId(self.blocks.len() as u32);
        self.blocks.push(BlockCall {
            binding: binding.to_string(),
            block: block.to_string(),
            parent: self.current_block,
        });
        std::mem::replace(&mut self.current_block, Some(id))
    }
}

struct Checker<'a> {
    modules: &'a Modules,
    namespaces: &'a [HashMap<&'a str, BlockRef<'a>>],
    /// Blocks and models whose text did not parse: calls to them are not reported again.
    broken: HashSet<&'a str>,
    /// An import failed: unknown names may come from it, so they are not reported.
    broken_imports: bool,
    defaults: QuantDefaults,
    diagnostics: Vec<Diagnostic>,
    index: Index,
    file_span: Span,
    /// Number of diagnostics before the current `let`, to tell whether it reported any.
    let_start: usize,
    /// End of the statement being checked: the names it binds are visible after it.
    statement_end: usize,
    /// Statements checked in all models of the file, inlined ones included: what inlining costs.
    statements: usize,
}

/// The scope of one body (a model, or one instance of a block).
#[derive(Default, Clone)]
struct Scope {
    bindings: HashMap<String, Binding>,
    /// Names bound in some branches of an `if` above but not all: not usable after it.
    conditional: HashMap<String, Span>,
}

impl Checker<'_> {
    fn default_quant(&self) -> NodeQuant {
        NodeQuant {
            float: false,
            weights: self.defaults.weights,
            activations: self.defaults.activations,
            frozen: false,
        }
    }

    fn report(&mut self, ctx: &Ctx, d: Diagnostic) {
        // Inlined bodies were already checked on their own; only errors that depend on
        // the call (its shapes, its `int` arguments, the size it inlines to) are new.
        if ctx.inlined() && !depends_on_call(d.code) {
            return;
        }
        self.report_at_call(ctx, d);
    }

    /// Reports an error found in this instance of an inlined body (or in a model),
    /// with the calls that led to it as labels.
    fn report_at_call(&mut self, ctx: &Ctx, d: Diagnostic) {
        if !ctx.inlined() {
            self.diagnostics.push(d);
            return;
        }
        let mut d = d;
        if ctx.module != 0 {
            // The body lives in another file: point at the call here instead.
            let (name, site) = *ctx.inlining.last().expect("inlined");
            let inner = d.primary.message.clone();
            d.primary = crate::diagnostics::Label {
                span: site,
                message: format!("in this call of `{name}`"),
            };
            // Its other labels point into that file too.
            d.secondary.clear();
            d.notes
                .insert(0, format!("inside imported block `{name}`: {inner}"));
        } else {
            for (name, site) in ctx.inlining.iter().rev() {
                d = d.with_label(*site, format!("in this call of `{name}`"));
            }
        }
        self.diagnostics.push(d);
    }
}

/// Errors that a block checked on its own cannot see, so inlining reports them.
fn depends_on_call(code: &str) -> bool {
    [
        codes::SHAPE_MISMATCH,
        codes::TENSOR_TOO_LARGE,
        codes::TOO_MANY_PARAMETERS,
    ]
    .contains(&code)
}
