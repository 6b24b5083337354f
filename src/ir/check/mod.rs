//! Semantic analysis: resolves names, checks op and block calls and annotations,
//! infers shapes, and builds one [`Graph`] per model with every block call inlined
//! (node names scoped by the binding: `stage1.conv`). Reports every independent
//! problem, not just the first; a binding whose call failed is "poisoned" so that
//! later uses of it do not cascade into more errors.
//!
//! Blocks are checked twice over: once on their own, with parameters of unknown
//! shape (names, ops, arguments: errors that do not depend on the call), and again
//! at each call, inlined with the caller's shapes, where only shape errors can arise.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::index::{Definition, Index, Reference, Target};
use super::modules::{FsLoader, Loader, Modules};
use super::ops::{self, format_shape, ArgType, ArgValue, Args, OpDef};
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

    // Namespaces: module 0 is this file, module i + 1 is modules.list[i].
    let mut namespaces: Vec<HashMap<&str, BlockRef>> = vec![HashMap::new(); modules.list.len() + 1];
    for (i, m) in modules.list.iter().enumerate() {
        for item in &m.ast.items {
            if let ast::Item::Block(b) = item {
                namespaces[i + 1]
                    .entry(b.name.name.as_str())
                    .or_insert(BlockRef {
                        module: i + 1,
                        def: b,
                    });
            }
        }
    }
    for (i, m) in modules.list.iter().enumerate() {
        for &j in &m.imports {
            let imported: Vec<(&str, BlockRef)> = namespaces[j + 1]
                .iter()
                .filter(|(_, b)| b.module == j + 1)
                .map(|(k, v)| (*k, *v))
                .collect();
            for (k, v) in imported {
                namespaces[i + 1].entry(k).or_insert(v);
            }
        }
    }
    // Imported blocks are checked on their own too: an error inside one must not pass silently.
    // `modules.list` is in dependency order, so a module's imports are settled before it.
    let mut module_errors: Vec<Vec<Diagnostic>> = Vec::new();
    for (i, m) in modules.list.iter().enumerate() {
        let mut sub = Checker {
            modules: &modules,
            namespaces: &namespaces,
            broken: m.ast.broken.iter().map(String::as_str).collect(),
            broken_imports: false,
            defaults: QuantDefaults::default(),
            diagnostics: Vec::new(),
            index: Index::default(),
            file_span: Span::new(0, 0),
            let_start: 0,
        };
        sub.recursion(&m.ast);
        for item in &m.ast.items {
            if let ast::Item::Block(b) = item {
                sub.check_block(b, i + 1);
            }
        }
        let mut errors: Vec<Diagnostic> = m
            .errors
            .iter()
            .cloned()
            .chain(sub.diagnostics.into_iter().filter(Diagnostic::is_error))
            .collect();
        for &j in &m.imports {
            if errors.is_empty() {
                errors.extend(module_errors[j].iter().take(1).cloned());
            }
        }
        module_errors.push(errors);
    }
    let mut broken_imports = false;
    for (span, resolved) in &uses {
        match resolved {
            Ok(i) => {
                let m = &modules.list[*i];
                let errors = &module_errors[*i];
                if let Some(cycle) = errors.iter().find(|e| e.code == codes::IMPORT_CYCLE) {
                    // The cycle passes through this `use`: report it here, where it can be cut.
                    broken_imports = true;
                    out.diagnostics.push(
                        Diagnostic::error(
                            codes::IMPORT_CYCLE,
                            cycle.message.clone(),
                            *span,
                            "this import leads back here",
                        )
                        .with_help("move the shared blocks into a third file that both import"),
                    );
                } else if let Some(first) = errors.first() {
                    broken_imports = true;
                    out.diagnostics.push(
                        Diagnostic::error(
                            codes::IMPORT_FAILED,
                            format!("imported file `{}` has errors", m.path.display()),
                            *span,
                            format!(
                                "{} error{} in this file",
                                errors.len(),
                                if errors.len() == 1 { "" } else { "s" }
                            ),
                        )
                        .with_note(format!("first: {}", first.message))
                        .with_help(format!("run `qatc check {}` to see them", m.path.display())),
                    );
                }
                let imported: Vec<(&str, BlockRef)> = namespaces[i + 1]
                    .iter()
                    .filter(|(_, b)| b.module == i + 1)
                    .map(|(k, v)| (*k, *v))
                    .collect();
                for (k, v) in imported {
                    namespaces[0].entry(k).or_insert(v);
                }
            }
            Err(d) => {
                broken_imports = true;
                out.diagnostics.push(d.clone());
            }
        }
    }
    // Local blocks shadow imported ones; a name defined twice locally is an error.
    let mut local_seen: HashMap<&str, Span> = HashMap::new();
    for item in &file.items {
        let ast::Item::Block(b) = item else { continue };
        let name = b.name.name.as_str();
        if let Some(first) = local_seen.insert(name, b.name.span) {
            out.diagnostics.push(
                Diagnostic::error(
                    codes::DUPLICATE_DEFINITION,
                    format!("block `{name}` is defined twice"),
                    b.name.span,
                    "redefined here",
                )
                .with_label(first, "first defined here"),
            );
            continue;
        }
        if ops::lookup(name).is_some() {
            out.diagnostics.push(
                Diagnostic::error(
                    codes::DUPLICATE_DEFINITION,
                    format!("block `{name}` has the name of a built-in op"),
                    b.name.span,
                    "this name is taken by an op",
                )
                .with_help(format!("rename the block, e.g. `{name}_block`")),
            );
            continue;
        }
        namespaces[0].insert(name, BlockRef { module: 0, def: b });
    }

    let defaults = quant_defaults(file, &mut out.diagnostics);
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
    };
    checker.recursion(file);
    for item in &file.items {
        let ast::Item::Block(b) = item else { continue };
        checker.check_block(b, 0);
    }
    out.defaults = defaults;
    let mut seen: HashMap<&str, Span> = HashMap::new();
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
        if let (true, Some(graph)) = (clean, graph) {
            checker.diagnostics.extend(float_sandwiches(&graph));
            out.graphs.push(graph);
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

/// W0003: a `@float` op between quantized ones costs a dequantize before it and a
/// quantize after it in the deployed int8 model.
fn float_sandwiches(graph: &Graph) -> Vec<Diagnostic> {
    let consumers = graph.consumers();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for id in graph.ids() {
        let node = graph.node(id);
        if !node.quant.float || node.op.shares_input_quant() || matches!(node.op, Op::Input) {
            continue;
        }
        let producer = node
            .inputs
            .iter()
            .map(|&i| graph.node(i))
            .find(|n| !n.quant.float || matches!(n.op, Op::Input));
        let consumer = consumers[id.index()]
            .iter()
            .map(|&c| graph.node(c))
            .find(|n| !n.quant.float);
        if let (Some(p), Some(c)) = (producer, consumer) {
            if !seen.insert(node.span) {
                continue;
            }
            out.push(
                Diagnostic::warning(
                    codes::FLOAT_SANDWICH,
                    format!("float op `{}` sits between quantized ops", node.name),
                    node.span,
                    "runs in float",
                )
                .with_label(p.span, "quantized value comes from here")
                .with_label(c.span, "and goes back to a quantized op here")
                .with_note(
                    "the int8 model will dequantize before this op and quantize again after it",
                )
                .with_help(
                    "keep the neighbours in float too, or drop `@float` if the op tolerates int8",
                ),
            );
        }
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
            .map(|p| format!("{}: {}", p.name.name, p.ty.name))
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
}

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
    next_suffix: HashMap<String, usize>,
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
        });
        id
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
}

/// The scope of one body (a model, or one instance of a block).
#[derive(Default)]
struct Scope {
    bindings: HashMap<String, Binding>,
}

impl<'a> Checker<'a> {
    fn default_quant(&self) -> NodeQuant {
        NodeQuant {
            float: false,
            weights: self.defaults.weights,
            activations: self.defaults.activations,
            frozen: false,
        }
    }

    fn report(&mut self, ctx: &Ctx, d: Diagnostic) {
        // Inlined bodies were already checked on their own; only shape errors are new.
        if ctx.inlined() {
            if d.code != codes::SHAPE_MISMATCH {
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
            return;
        }
        self.diagnostics.push(d);
    }

    fn define_index(&mut self, ctx: &Ctx, span: Span, name: &str, detail: String, scope: Span) {
        if !ctx.inlined() && ctx.module == 0 {
            self.index.definitions.push(Definition {
                span,
                name: name.to_string(),
                detail,
                scope,
                global: false,
            });
        }
    }

    fn reference(&mut self, ctx: &Ctx, span: Span, target: Target) {
        if !ctx.inlined() && ctx.module == 0 {
            self.index.references.push(Reference { span, target });
        }
    }

    /// E0016: reports each cycle of block calls in this file once, at the call that closes it.
    fn recursion(&mut self, file: &'a ast::File) {
        let blocks: Vec<&ast::BlockDef> = file
            .items
            .iter()
            .filter_map(|i| {
                if let ast::Item::Block(b) = i {
                    Some(b)
                } else {
                    None
                }
            })
            .collect();
        let calls = |b: &'a ast::BlockDef| -> Vec<&'a ast::Call> {
            b.statements
                .iter()
                .filter_map(|s| {
                    if let ast::Statement::Let(l) = s {
                        Some(&l.call)
                    } else {
                        None
                    }
                })
                .collect()
        };
        // Depth-first search; `state`: 0 unvisited, 1 on the stack, 2 done.
        let index: HashMap<&str, usize> = blocks
            .iter()
            .enumerate()
            .map(|(i, b)| (b.name.name.as_str(), i))
            .collect();
        let mut state = vec![0u8; blocks.len()];
        for root in 0..blocks.len() {
            if state[root] != 0 {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
            state[root] = 1;
            while let Some(&mut (b, ref mut next)) = stack.last_mut() {
                let cs = calls(blocks[b]);
                if *next >= cs.len() {
                    state[b] = 2;
                    stack.pop();
                    continue;
                }
                let call = cs[*next];
                *next += 1;
                let Some(&callee) = index.get(call.callee.name.as_str()) else {
                    continue;
                };
                match state[callee] {
                    0 => {
                        state[callee] = 1;
                        stack.push((callee, 0));
                    }
                    1 => {
                        let at = stack.iter().position(|&(x, _)| x == callee).unwrap_or(0);
                        let path: Vec<&str> = stack[at..]
                            .iter()
                            .map(|&(x, _)| blocks[x].name.name.as_str())
                            .collect();
                        let message = if path.len() == 1 {
                            format!("block `{}` calls itself", path[0])
                        } else {
                            format!(
                                "blocks call each other in a cycle: {} -> {}",
                                path.join(" -> "),
                                path[0]
                            )
                        };
                        self.diagnostics.push(
                            Diagnostic::error(codes::RECURSIVE_BLOCK, message, call.callee.span, "this call closes the cycle")
                                .with_label(blocks[callee].name.span, format!("`{}` is defined here", blocks[callee].name.name))
                                .with_note("blocks are inlined into the model, so a block cannot reach itself")
                                .with_help("unroll the repetition: call the block several times from the model"),
                        );
                    }
                    _ => {}
                }
            }
        }
    }

    /// Checks a block on its own, in the namespace of `module` (0: this file).
    fn check_block(&mut self, b: &'a ast::BlockDef, module: usize) {
        let mut ctx = Ctx {
            module,
            prefix: format!("{}.", b.name.name),
            quant: self.default_quant(),
            inlining: Vec::new(),
        };
        let mut scope = Scope::default();
        let block = BlockRef { module, def: b };
        self.index.definitions.push(Definition {
            span: b.name.span,
            name: b.name.name.clone(),
            detail: format!("```qat\n{}\n```", block.signature()),
            scope: self.file_span,
            global: true,
        });
        for p in &b.params {
            let value = match p.ty.name.as_str() {
                "tensor" => Value::Tensor(None),
                "int" => Value::Int(None),
                other => {
                    let mut d = Diagnostic::error(
                        codes::INVALID_INPUT_TYPE,
                        format!("unknown parameter type `{other}`"),
                        p.ty.span,
                        "expected `tensor` or `int`",
                    );
                    if let Some(s) = did_you_mean(other, ["tensor", "int"]) {
                        d = d.with_help(format!("did you mean `{s}`?"));
                    }
                    self.diagnostics.push(d);
                    Value::Tensor(None)
                }
            };
            if let Some(first) = scope.bindings.get(&p.name.name) {
                let first = first.span;
                self.diagnostics.push(
                    Diagnostic::error(
                        codes::DUPLICATE_DEFINITION,
                        format!("parameter `{}` is declared twice", p.name.name),
                        p.name.span,
                        "declared again here",
                    )
                    .with_label(first, "first declared here"),
                );
                continue;
            }
            self.define_index(
                &ctx,
                p.name.span,
                &p.name.name,
                format!(
                    "`{}: {}` (parameter of block `{}`)",
                    p.name.name, p.ty.name, b.name.name
                ),
                b.span,
            );
            scope.bindings.insert(
                p.name.name.clone(),
                Binding {
                    value,
                    span: p.name.span,
                    used: false,
                    poisoned: false,
                },
            );
        }
        let mut graph = GraphBuilder::default();
        self.body(
            &mut graph,
            &mut ctx,
            &mut scope,
            &b.statements,
            Some(b),
            b.span,
        );
        self.unused(&scope);
    }

    fn check_model(&mut self, model: &'a ast::Model) -> Option<Graph> {
        let mut ctx = Ctx {
            module: 0,
            prefix: String::new(),
            quant: self.default_quant(),
            inlining: Vec::new(),
        };
        let mut scope = Scope::default();
        let mut graph = GraphBuilder::default();
        self.index.definitions.push(Definition {
            span: model.name.span,
            name: model.name.name.clone(),
            detail: format!("model `{}`", model.name.name),
            scope: self.file_span,
            global: true,
        });
        let (inputs, outputs) = self.body(
            &mut graph,
            &mut ctx,
            &mut scope,
            &model.statements,
            None,
            model.span,
        );
        if inputs.is_empty() {
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
        if outputs.is_some() {
            self.unused(&scope);
        }
        let output = match outputs {
            None => {
                self.diagnostics.push(
                    Diagnostic::error(
                        codes::INVALID_OUTPUT,
                        format!("model `{}` has no output", model.name.name),
                        model.name.span,
                        "no `output` statement in this model",
                    )
                    .with_help("end the model with `output <name>`, naming the value it predicts"),
                );
                self.unused(&scope);
                return None;
            }
            Some(values) => match values.first() {
                Some(Value::Tensor(Some(id))) => *id,
                _ => return None,
            },
        };
        Some(Graph {
            name: model.name.name.clone(),
            nodes: graph.nodes,
            inputs,
            output,
        })
    }

    /// Checks the statements of a model (`block` is `None`) or block; returns the model's
    /// inputs and the values its `output` names (`None` when there is no output statement).
    fn body(
        &mut self,
        graph: &mut GraphBuilder,
        ctx: &mut Ctx<'a>,
        scope: &mut Scope,
        statements: &'a [ast::Statement],
        block: Option<&'a ast::BlockDef>,
        item_span: Span,
    ) -> (Vec<NodeId>, Option<Vec<Value>>) {
        let mut inputs = Vec::new();
        let mut output: Option<Vec<Value>> = None;
        let mut output_seen: Option<Span> = None;
        for statement in statements {
            match statement {
                ast::Statement::Input(input) => {
                    if let Some(b) = block {
                        let d = Diagnostic::error(
                            codes::INVALID_INPUT_TYPE,
                            "blocks take their inputs as parameters",
                            input.span,
                            "`input` is only allowed in a model",
                        )
                        .with_help(format!(
                            "add a parameter instead: `block {}({}: tensor, ...)`",
                            b.name.name, input.name.name
                        ));
                        self.report(ctx, d);
                        continue;
                    }
                    if let Some(id) = self.input(graph, ctx, scope, input, item_span) {
                        inputs.push(id);
                    }
                }
                ast::Statement::Let(binding) => {
                    self.let_binding(graph, ctx, scope, binding, item_span)
                }
                ast::Statement::Output(decl) => {
                    if let Some(first) = output_seen.replace(decl.span) {
                        let what = if block.is_some() {
                            "a block"
                        } else {
                            "a model"
                        };
                        let d = Diagnostic::error(
                            codes::INVALID_OUTPUT,
                            format!("{what} has one `output` statement"),
                            decl.span,
                            "second output statement",
                        )
                        .with_label(first, "first one here");
                        self.report(ctx, d);
                        continue;
                    }
                    if block.is_none() && decl.names.len() > 1 {
                        self.report(
                            ctx,
                            Diagnostic::error(codes::INVALID_OUTPUT, "models with several outputs are not supported yet", decl.names[1].span, "second output")
                                .with_help("name the one value the model predicts, e.g. `output logits`; blocks may have several results"),
                        );
                    }
                    let mut values = Vec::new();
                    for name in &decl.names {
                        let v = self
                            .resolve(ctx, scope, name)
                            .unwrap_or(Value::Tensor(None));
                        if let Value::Int(_) = v {
                            self.report(
                                ctx,
                                Diagnostic::error(
                                    codes::INVALID_OUTPUT,
                                    format!("`{}` is an integer, not a tensor", name.name),
                                    name.span,
                                    "outputs are tensors",
                                ),
                            );
                        }
                        values.push(v);
                    }
                    output = Some(values);
                }
            }
        }
        if let (Some(b), None) = (block, &output_seen) {
            self.report(
                ctx,
                Diagnostic::error(
                    codes::INVALID_OUTPUT,
                    format!("block `{}` has no output", b.name.name),
                    b.name.span,
                    "no `output` statement in this block",
                )
                .with_help("end the block with `output <name>`, naming its result(s)"),
            );
        }
        (inputs, output)
    }

    /// W0001 for every binding of a body that nothing read (after the body's own errors).
    fn unused(&mut self, scope: &Scope) {
        let mut unused: Vec<(&String, &Binding)> = scope
            .bindings
            .iter()
            .filter(|(_, b)| !b.used && !b.poisoned)
            .collect();
        unused.sort_by_key(|(_, b)| b.span.start);
        let warnings: Vec<Diagnostic> = unused
            .into_iter()
            .map(|(name, b)| unused_warning(name, b.span))
            .collect();
        self.diagnostics.extend(warnings);
    }

    fn define(&mut self, ctx: &Ctx, scope: &mut Scope, name: &ast::Ident, value: Value) {
        // In a model an unknown value means its call failed; in a block checked on its own,
        // values have unknown shapes anyway, and only an error reported by this `let` counts.
        let failed = self.diagnostics[self.let_start..]
            .iter()
            .any(Diagnostic::is_error);
        let poisoned = failed || (value == Value::Tensor(None) && ctx.prefix.is_empty());
        let previous = scope.bindings.insert(
            name.name.clone(),
            Binding {
                value,
                span: name.span,
                used: false,
                poisoned,
            },
        );
        if let Some(previous) = previous {
            if !previous.used && !previous.poisoned && !ctx.inlined() {
                self.diagnostics
                    .push(unused_warning(&name.name, previous.span).with_note(format!(
                        "it is shadowed by a later `{}` before any use",
                        name.name
                    )));
            }
        }
    }

    /// `None`: undefined (reported).
    fn resolve(&mut self, ctx: &Ctx, scope: &mut Scope, name: &ast::Ident) -> Option<Value> {
        if let Some(b) = scope.bindings.get_mut(&name.name) {
            b.used = true;
            let (value, def) = (b.value, b.span);
            self.reference(ctx, name.span, Target::Local(def));
            return Some(value);
        }
        let mut d = Diagnostic::error(
            codes::UNDEFINED_NAME,
            format!(
                "cannot find value `{}` in this {}",
                name.name,
                if ctx.prefix.is_empty() {
                    "model"
                } else {
                    "block"
                }
            ),
            name.span,
            "not defined before this use",
        );
        if let Some(s) = did_you_mean(&name.name, scope.bindings.keys().map(String::as_str)) {
            d = d.with_help(format!("did you mean `{s}`?"));
        }
        self.report(ctx, d);
        None
    }

    fn input(
        &mut self,
        graph: &mut GraphBuilder,
        ctx: &Ctx,
        scope: &mut Scope,
        input: &ast::InputDecl,
        item_span: Span,
    ) -> Option<NodeId> {
        if let Some(b) = scope.bindings.get(&input.name.name) {
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
            return None;
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
            let shape: Vec<usize> = input.ty.dims.iter().map(|&(d, _)| d as usize).collect();
            self.define_index(
                ctx,
                input.name.span,
                &input.name.name,
                format!(
                    "`{}: f32{}` (model input)\n\nactivations: {}",
                    input.name.name,
                    format_shape(&shape),
                    self.defaults.activations
                ),
                item_span,
            );
            graph.push(
                &input.name.name,
                Op::Input,
                Vec::new(),
                shape,
                input.span,
                ctx.quant,
            )
        });
        // An input is "used" by definition: the caller supplies it.
        scope.bindings.insert(
            input.name.name.clone(),
            Binding {
                value: Value::Tensor(value),
                span: input.name.span,
                used: true,
                poisoned: false,
            },
        );
        value
    }

    fn let_binding(
        &mut self,
        graph: &mut GraphBuilder,
        ctx: &mut Ctx<'a>,
        scope: &mut Scope,
        binding: &'a ast::LetBinding,
        item_span: Span,
    ) {
        self.let_start = self.diagnostics.len();
        let call = &binding.call;
        let name = &binding.names[0];
        let block = if ops::lookup(&call.callee.name).is_some() {
            None
        } else {
            self.namespaces[ctx.module]
                .get(call.callee.name.as_str())
                .copied()
        };
        if let Some(block) = block {
            let quant = self.annotations(ctx, binding, None);
            let values = self.block_call(graph, ctx, scope, binding, block, quant);
            for (n, v) in binding.names.iter().zip(values) {
                let detail = self.value_detail(graph, &n.name, v);
                self.define_index(ctx, n.span, &n.name, detail, item_span);
                self.define(ctx, scope, n, v);
            }
            return;
        }
        let def = ops::lookup(&call.callee.name);
        if def.is_some() {
            self.reference(
                ctx,
                call.callee.span,
                Target::Op(def.map_or("", |d| d.name)),
            );
        }
        let quant = self.annotations(ctx, binding, def);
        let value = self.call(graph, ctx, scope, call, def, quant, &name.name);
        if def.is_some() && binding.names.len() > 1 {
            self.report(
                ctx,
                Diagnostic::error(
                    codes::WRONG_RESULT_COUNT,
                    format!(
                        "`{}` has one result, but {} names are bound",
                        call.callee.name,
                        binding.names.len()
                    ),
                    binding.names[1].span,
                    "no result for this name",
                )
                .with_note("only blocks can have several results"),
            );
        }
        let detail = self.value_detail(graph, &name.name, Value::Tensor(value));
        self.define_index(ctx, name.span, &name.name, detail, item_span);
        self.define(ctx, scope, name, Value::Tensor(value));
        for extra in &binding.names[1..] {
            self.define(ctx, scope, extra, Value::Tensor(None));
        }
    }

    /// Hover text for a bound value: its shape, dtype and quantization when known.
    fn value_detail(&self, graph: &GraphBuilder, name: &str, value: Value) -> String {
        match value {
            Value::Tensor(Some(id)) => {
                let node = &graph.nodes[id.index()];
                let mut s = format!(
                    "`{name}: f32{}` = `{}`\n\n",
                    format_shape(&node.shape),
                    node.op
                );
                if node.quant.float {
                    s.push_str("runs in float (`@float`)");
                } else {
                    if node.op.has_weights() {
                        s.push_str(&format!("weights: {}  \n", node.quant.weights));
                    }
                    s.push_str(&format!("activations: {}", node.quant.activations));
                }
                s
            }
            Value::Tensor(None) => format!(
                "`{name}: tensor` (shape depends on the block's inputs, or its call has an error)"
            ),
            Value::Int(Some(v)) => format!("`{name}: int = {v}`"),
            Value::Int(None) => format!("`{name}: int`"),
        }
    }

    /// Checks a call of a block and inlines its body; returns one value per bound name.
    fn block_call(
        &mut self,
        graph: &mut GraphBuilder,
        ctx: &mut Ctx<'a>,
        scope: &mut Scope,
        binding: &'a ast::LetBinding,
        block: BlockRef<'a>,
        quant: NodeQuant,
    ) -> Vec<Value> {
        let call = &binding.call;
        let poisoned = vec![Value::Tensor(None); binding.names.len()];
        let target = if block.module == 0 {
            Target::Local(block.def.name.span)
        } else {
            Target::External {
                path: self.modules.list[block.module - 1].path.clone(),
                span: block.def.name.span,
            }
        };
        self.reference(ctx, call.callee.span, target);
        let params = &block.def.params;
        // Bind arguments to parameters: positional in order, then by name.
        let mut bound: Vec<Option<(Value, Span)>> = vec![None; params.len()];
        let mut ok = true;
        let mut position = 0;
        for arg in &call.args {
            let slot = match &arg.name {
                None => {
                    let p = position;
                    position += 1;
                    if p >= params.len() {
                        ok = false;
                        self.report(
                            ctx,
                            Diagnostic::error(
                                codes::WRONG_INPUT_COUNT,
                                format!(
                                    "block `{}` takes {} argument{}, got more",
                                    block.def.name.name,
                                    params.len(),
                                    if params.len() == 1 { "" } else { "s" }
                                ),
                                arg.span,
                                "extra argument",
                            )
                            .with_note(block.signature()),
                        );
                        continue;
                    }
                    p
                }
                Some(name) => match params.iter().position(|p| p.name.name == name.name) {
                    Some(p) => p,
                    None => {
                        ok = false;
                        let mut d = Diagnostic::error(
                            codes::UNKNOWN_ARGUMENT,
                            format!(
                                "block `{}` has no parameter `{}`",
                                block.def.name.name, name.name
                            ),
                            name.span,
                            "unknown argument",
                        );
                        if let Some(s) =
                            did_you_mean(&name.name, params.iter().map(|p| p.name.name.as_str()))
                        {
                            d = d.with_help(format!("did you mean `{s}`?"));
                        } else {
                            d = d.with_note(block.signature());
                        }
                        self.report(ctx, d);
                        continue;
                    }
                },
            };
            if let Some((_, first)) = bound[slot] {
                ok = false;
                self.report(
                    ctx,
                    Diagnostic::error(
                        codes::DUPLICATE_DEFINITION,
                        format!("parameter `{}` is given twice", params[slot].name.name),
                        arg.span,
                        "given again here",
                    )
                    .with_label(first, "first given here"),
                );
                continue;
            }
            let param = &params[slot];
            let value = match (param.ty.name.as_str(), &arg.value) {
                ("int", ast::Expr::Number { text, .. }) => match text.parse::<usize>() {
                    Ok(v) => Some(Value::Int(Some(v))),
                    Err(_) => None,
                },
                (_, ast::Expr::Ident(ident)) => match self.resolve(ctx, scope, ident) {
                    Some(v) => Some(v),
                    None => {
                        ok = false;
                        continue;
                    }
                },
                _ => None,
            };
            let expected_int = param.ty.name == "int";
            let fits = match value {
                Some(Value::Int(_)) => expected_int,
                Some(Value::Tensor(_)) => !expected_int,
                None => false,
            };
            if !fits {
                ok = false;
                let (expected, got) = if expected_int {
                    ("an integer", "this is not an integer")
                } else {
                    ("a tensor", "this is not a tensor")
                };
                let mut d = Diagnostic::error(
                    codes::BLOCK_ARGUMENT_TYPE,
                    format!(
                        "block `{}` expects {expected} for `{}`",
                        block.def.name.name, param.name.name
                    ),
                    arg.value.span(),
                    got,
                );
                if block.module == 0 {
                    d = d.with_label(
                        param.span,
                        format!("`{}` is declared `{}` here", param.name.name, param.ty.name),
                    );
                } else {
                    d = d.with_note(format!(
                        "declared as `{}: {}` in {}",
                        param.name.name,
                        param.ty.name,
                        self.modules.list[block.module - 1].path.display()
                    ));
                }
                if expected_int {
                    d = d.with_help("pass a whole number, e.g. `filters = 32`, or an `int` parameter of the enclosing block");
                } else {
                    d = d.with_help("pass the name of a tensor value bound by `input` or `let`");
                }
                self.report(ctx, d);
                continue;
            }
            bound[slot] = Some((value.unwrap_or(Value::Tensor(None)), arg.span));
        }
        for (p, b) in params.iter().zip(&bound) {
            if b.is_none() && ok {
                ok = false;
                let mut d = Diagnostic::error(
                    codes::MISSING_ARGUMENT,
                    format!(
                        "block `{}` needs the argument `{}`",
                        block.def.name.name, p.name.name
                    ),
                    call.span,
                    format!("`{}` is missing", p.name.name),
                )
                .with_note(block.signature());
                if block.module == 0 {
                    d = d.with_label(p.span, "declared here");
                }
                self.report(ctx, d);
            }
        }
        let results = block.results();
        if results.len() != binding.names.len() && !results.is_empty() {
            let d = Diagnostic::error(
                codes::WRONG_RESULT_COUNT,
                format!(
                    "block `{}` has {} result{}, but {} name{} bound",
                    block.def.name.name,
                    results.len(),
                    if results.len() == 1 { "" } else { "s" },
                    binding.names.len(),
                    if binding.names.len() == 1 {
                        " is"
                    } else {
                        "s are"
                    }
                ),
                Span::new(
                    binding.names[0].span.start,
                    binding.names[binding.names.len() - 1].span.end,
                ),
                format!(
                    "expected {} name{}",
                    results.len(),
                    if results.len() == 1 { "" } else { "s" }
                ),
            )
            .with_note(block.signature())
            .with_help(format!(
                "bind them all: `let {} = {}(...)`",
                results.join(", "),
                block.def.name.name
            ));
            self.report(ctx, d);
            return poisoned;
        }
        // Inline only when every tensor argument is known and no call in the chain repeats.
        let known = bound
            .iter()
            .all(|b| matches!(b, Some((Value::Tensor(Some(_)) | Value::Int(Some(_)), _))));
        let recursive = ctx.inlining.iter().any(|(n, _)| *n == block.def.name.name);
        if !ok
            || !known
            || recursive
            || self.broken_imports && block.module != 0
            || ctx.inlining.len() > 64
        {
            return poisoned;
        }
        let mut inner_scope = Scope::default();
        for (p, b) in params.iter().zip(&bound) {
            if let Some((v, _)) = b {
                inner_scope.bindings.insert(
                    p.name.name.clone(),
                    Binding {
                        value: *v,
                        span: p.name.span,
                        used: true,
                        poisoned: false,
                    },
                );
            }
        }
        let site = if ctx.module == 0 {
            call.span
        } else {
            ctx.inlining.last().map_or(call.span, |s| s.1)
        };
        let mut inner = Ctx {
            module: block.module,
            prefix: format!("{}{}.", ctx.prefix, binding.names[0].name),
            quant,
            inlining: ctx.inlining.clone(),
        };
        inner.inlining.push((block.def.name.name.as_str(), site));
        let (_, output) = self.body(
            graph,
            &mut inner,
            &mut inner_scope,
            &block.def.statements,
            Some(block.def),
            block.def.span,
        );
        match output {
            Some(values) if values.len() == binding.names.len() => values,
            _ => poisoned,
        }
    }

    fn annotations(
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
                    if def.is_some_and(|d| {
                        matches!(
                            d.name,
                            "max_pool2d" | "flatten" | "reshape" | "dropout" | "pad"
                        )
                    }) {
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
                    if let Some(def) =
                        def.filter(|d| !matches!(d.name, "conv2d" | "dense" | "batch_norm"))
                    {
                        self.report(
                            ctx,
                            Diagnostic::warning(
                                codes::INEFFECTIVE_ANNOTATION,
                                "`@frozen` has no effect here",
                                ann.span,
                                format!("`{}` has no parameters", def.name),
                            )
                            .with_note(
                                "only conv2d, dense and batch_norm have parameters to freeze",
                            ),
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
                                d = d.with_help(format!("did you mean `{s}`?"));
                            }
                            self.report(ctx, d);
                            continue;
                        };
                        match quant_spec(&arg.value, role) {
                            Ok(spec) if role == Role::Weights => {
                                quant.weights = spec;
                                if let Some(def) =
                                    def.filter(|d| !matches!(d.name, "conv2d" | "dense"))
                                {
                                    self.report(
                                        ctx,
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
                    .with_note("bindings accept `@float`, `@frozen` and `@quant(...)`");
                    if let Some(s) = did_you_mean(other, ["float", "frozen", "quant"]) {
                        d = d.with_help(format!("did you mean `@{s}`?"));
                    }
                    self.report(ctx, d);
                }
            }
        }
        quant
    }

    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        graph: &mut GraphBuilder,
        ctx: &Ctx,
        scope: &mut Scope,
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
                ast::Expr::Ident(ident) => match self.resolve(ctx, scope, ident) {
                    Some(Value::Tensor(v)) => inputs.push((v, ident.span)),
                    Some(Value::Int(_)) => {
                        bad = true;
                        let def_span = scope.bindings.get(&ident.name).map(|b| b.span);
                        let mut d = Diagnostic::error(codes::INVALID_ARGUMENT, format!("`{}` is an integer, not a tensor", ident.name), ident.span, "expected a tensor")
                            .with_help("positional arguments are tensors; pass integers by name: `filters = n`");
                        if let Some(s) = def_span {
                            d = d.with_label(s, format!("`{}` is declared `int` here", ident.name));
                        }
                        self.report(ctx, d);
                    }
                    None => bad = true,
                },
                other => {
                    bad = true;
                    self.report(
                        ctx,
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
            if self.broken.contains(call.callee.name.as_str()) || self.broken_imports {
                return None;
            }
            let mut d = Diagnostic::error(
                codes::UNKNOWN_OP,
                format!("unknown op or block `{}`", call.callee.name),
                call.callee.span,
                "not an op or block qatc knows",
            );
            let blocks: Vec<&str> = self.namespaces[ctx.module].keys().copied().collect();
            if let Some(s) = did_you_mean(
                &call.callee.name,
                ops::OPS
                    .iter()
                    .map(|o| o.name)
                    .chain(blocks.iter().copied()),
            ) {
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
            self.report(ctx, d);
            return None;
        };
        let count_ok = if def.variadic {
            inputs.len() >= def.inputs
        } else {
            inputs.len() == def.inputs
        };
        if !count_ok && !bad {
            let plural = if def.inputs == 1 { "" } else { "s" };
            let expected = if def.variadic {
                format!("{} or more", def.inputs)
            } else {
                def.inputs.to_string()
            };
            self.report(
                ctx,
                Diagnostic::error(
                    codes::WRONG_INPUT_COUNT,
                    format!(
                        "`{}` takes {expected} tensor input{plural}, got {}",
                        def.name,
                        inputs.len()
                    ),
                    call.span,
                    format!("expected {expected} positional argument{plural}"),
                )
                .with_note(
                    "named arguments (`name = value`) set options; positional ones are tensors",
                ),
            );
            bad = true;
        }
        let args = self.args(ctx, scope, call, def);
        let args = args?;
        if bad {
            return None;
        }
        let ids: Option<Vec<NodeId>> = inputs.iter().map(|(v, _)| *v).collect();
        let ids = ids?; // a poisoned input was already reported, or the shape is not known yet
        let shapes: Vec<&super::Shape> = ids
            .iter()
            .map(|&id| &graph.nodes[id.index()].shape)
            .collect();
        match ops::instantiate(def, &args, &shapes) {
            Ok((op, shape)) => {
                let span = if ctx.module == 0 {
                    call.span
                } else {
                    ctx.inlining.first().map_or(call.span, |s| s.1)
                };
                Some(graph.push(
                    &format!("{}{name}", ctx.prefix),
                    op,
                    ids,
                    shape,
                    span,
                    quant,
                ))
            }
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
                                format_shape(&graph.nodes[id.index()].shape)
                            ),
                        );
                    }
                }
                if let Some(h) = e.help {
                    d = d.with_help(h);
                }
                self.report(ctx, d);
                None
            }
        }
    }

    /// Type-checks named arguments and fills in defaults; `None` if any was wrong (reported).
    fn args(
        &mut self,
        ctx: &Ctx,
        scope: &mut Scope,
        call: &ast::Call,
        def: &OpDef,
    ) -> Option<Args> {
        let mut values: Vec<(&'static str, ArgValue)> = Vec::new();
        let mut spans: HashMap<&str, Span> = HashMap::new();
        let mut suggested: Vec<&str> = Vec::new();
        let mut ok = true;
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
                self.report(ctx, d);
                continue;
            };
            if let Some(first) = spans.insert(arg_def.name, name.span) {
                ok = false;
                self.report(
                    ctx,
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
            // A name may stand for an `int` parameter of the enclosing block.
            if let (true, ast::Expr::Ident(ident)) = (arg_def.ty.accepts_int(), &arg.value) {
                if let Some(b) = scope.bindings.get_mut(&ident.name) {
                    b.used = true;
                    let (value, def_span) = (b.value, b.span);
                    self.reference(ctx, ident.span, Target::Local(def_span));
                    match value {
                        Value::Int(Some(v)) => {
                            let number = ast::Expr::Number {
                                text: v.to_string(),
                                span: ident.span,
                            };
                            match arg_value(&number, arg_def.ty) {
                                Some(v) => values.push((arg_def.name, v)),
                                None => {
                                    ok = false;
                                    self.report(
                                        ctx,
                                        Diagnostic::error(
                                            codes::INVALID_ARGUMENT,
                                            format!("invalid value {v} for `{}`", arg_def.name),
                                            ident.span,
                                            format!("expected {}", arg_def.ty),
                                        ),
                                    );
                                }
                            }
                        }
                        // Checked on its own, the block does not know the value yet; any fits.
                        Value::Int(None) => values.push((arg_def.name, ArgValue::Int(1))),
                        Value::Tensor(_) => {
                            ok = false;
                            self.report(
                                ctx,
                                Diagnostic::error(
                                    codes::INVALID_ARGUMENT,
                                    format!(
                                        "`{}` is a tensor, not a value for `{}`",
                                        ident.name, arg_def.name
                                    ),
                                    ident.span,
                                    format!("expected {}", arg_def.ty),
                                )
                                .with_label(def_span, format!("`{}` is defined here", ident.name)),
                            );
                        }
                    }
                    continue;
                }
            }
            match arg_value(&arg.value, arg_def.ty) {
                Some(v) => values.push((arg_def.name, v)),
                None => {
                    ok = false;
                    let mut d = Diagnostic::error(
                        codes::INVALID_ARGUMENT,
                        format!("invalid value for `{}`", arg_def.name),
                        arg.value.span(),
                        format!("expected {}", arg_def.ty),
                    );
                    // A misspelled choice (`padding = sam`) gets a suggestion.
                    if let (ArgType::Choice(choices), ast::Expr::Ident(i)) =
                        (arg_def.ty, &arg.value)
                    {
                        if let Some(s) = did_you_mean(&i.name, choices.iter().copied()) {
                            d = d.with_help(format!("did you mean `{s}`?"));
                        }
                    }
                    self.report(ctx, d);
                }
            }
        }
        for arg_def in def.args {
            if spans.contains_key(arg_def.name) {
                continue;
            }
            match arg_def.default {
                // Misspelled arguments suggest a name; that name is then not also "missing".
                None if suggested.contains(&arg_def.name) => ok = false,
                None => {
                    ok = false;
                    self.report(
                        ctx,
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
        ArgType::PositiveInt | ArgType::NonNegativeInt => text.parse().ok().map(ArgValue::Int),
        ArgType::Axis => text.parse().ok().map(ArgValue::Signed),
        ArgType::PositiveFloat | ArgType::Fraction | ArgType::Rate => {
            text.parse().ok().map(ArgValue::Float)
        }
        ArgType::Shape => None,
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
        (ArgType::NonNegativeInt, ast::Expr::Number { text, .. }) => text
            .parse::<usize>()
            .ok()
            .filter(|&v| v <= 1 << 20)
            .map(ArgValue::Int),
        (ArgType::Axis, ast::Expr::Number { text, .. }) => text
            .parse::<i64>()
            .ok()
            .filter(|v| v.abs() <= 16)
            .map(ArgValue::Signed),
        (ArgType::Rate, ast::Expr::Number { text, .. }) => text
            .parse::<f64>()
            .ok()
            .filter(|v| (0.0..1.0).contains(v))
            .map(ArgValue::Float),
        (ArgType::Shape, ast::Expr::List { items, .. })
            if !items.is_empty() && items.len() <= 8 =>
        {
            items
                .iter()
                .map(|e| match e {
                    ast::Expr::Number { text, .. } => text
                        .parse::<usize>()
                        .ok()
                        .filter(|&v| v > 0 && v <= 1 << 20),
                    _ => None,
                })
                .collect::<Option<Vec<usize>>>()
                .map(ArgValue::List)
        }
        _ => None,
    }
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
