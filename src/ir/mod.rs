//! The typed graph every later stage works on: nodes in an arena, referred to by
//! [`NodeId`], always in topological order (a node's inputs come before it).

mod check;
pub mod dump;
pub mod index;
pub mod memory;
pub mod modules;
pub mod ops;
pub mod quant;
pub mod svg;

pub use check::{check_file, check_file_at, CheckedFile, QuantDefaults};
pub use ops::Op;
pub use quant::{Granularity, QuantSpec, Scheme};

use crate::diagnostics::Span;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct NodeId(pub u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A tensor shape without the batch dimension: `[C, H, W]` or `[features]`.
pub type Shape = Vec<usize>;

/// What the defaults and a node's annotations decide for it: its quantization, and
/// whether training leaves its parameters alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NodeQuant {
    /// `@float`: this op runs in float; no weight or output quantization.
    pub float: bool,
    pub weights: QuantSpec,
    pub activations: QuantSpec,
    /// `@frozen`: its parameters (weights, bias, batch-norm statistics) do not train.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub frozen: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// Unique within the graph; parameters are stored as `<name>.weight` etc.
    pub name: String,
    pub op: Op,
    pub inputs: Vec<NodeId>,
    pub shape: Shape,
    #[serde(skip)]
    pub span: Span,
    pub quant: NodeQuant,
    /// The innermost block call this node was inlined from; `None` at the model's
    /// top level. A fake quantization belongs to the call of the value it quantizes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block: Option<BlockCallId>,
}

/// One inlined block call, e.g. `let stage1 = res_block(x, 16)`: what `qatc graph
/// --emit dot|svg` and report.html frame. Node names alone cannot say it: a binding
/// used again (`let x = f(x)` twice) reuses its name prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockCall {
    /// The binding the call's result goes to (`stage1`).
    pub binding: String,
    /// The block called (`res_block`).
    pub block: String,
    /// The call whose body makes this call; `None` when the model makes it.
    pub parent: Option<BlockCallId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct BlockCallId(pub u32);

impl BlockCallId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Graph {
    pub name: String,
    pub nodes: Vec<Node>,
    pub inputs: Vec<NodeId>,
    pub output: NodeId,
    /// Every block call inlined into the graph, callers before the calls they make.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<BlockCall>,
}

impl Graph {
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    pub fn ids(&self) -> impl Iterator<Item = NodeId> {
        (0..self.nodes.len() as u32).map(NodeId)
    }

    /// For every node, the nodes that read its value (the output counts as a reader too).
    pub fn consumers(&self) -> Vec<Vec<NodeId>> {
        let mut users = vec![Vec::new(); self.nodes.len()];
        for id in self.ids() {
            for &input in &self.node(id).inputs {
                users[input.index()].push(id);
            }
        }
        users
    }

    /// Layers whose parameters `@frozen` keeps from training, by parameter name prefix
    /// (fused batch norms keep their own name), in graph order.
    pub fn frozen_layers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for node in &self.nodes {
            match &node.op {
                Op::Conv2d { epilogue, .. } | Op::Dense { epilogue, .. } => {
                    if node.quant.frozen {
                        out.push(node.name.clone());
                    }
                    if let Some(bn) = epilogue.batch_norm.as_ref().filter(|bn| bn.frozen) {
                        out.push(bn.name.clone());
                    }
                }
                Op::BatchNorm { .. } if node.quant.frozen => out.push(node.name.clone()),
                _ => {}
            }
        }
        out
    }

    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.ids().find(|&id| self.node(id).name == name)
    }

    /// Keeps the nodes for which `keep` holds, in order, rewiring readers of a dropped
    /// node to `replacement[dropped]`. Used by passes that remove or merge nodes.
    pub fn retain(
        &mut self,
        keep: impl Fn(NodeId) -> bool,
        replacement: impl Fn(NodeId) -> NodeId,
    ) {
        let mut remap = vec![None; self.nodes.len()];
        let mut next = 0u32;
        for id in self.ids() {
            if keep(id) {
                remap[id.index()] = Some(NodeId(next));
                next += 1;
            }
        }
        let resolve = |mut id: NodeId| loop {
            if let Some(new) = remap[id.index()] {
                return new;
            }
            id = replacement(id);
        };
        let old = std::mem::take(&mut self.nodes);
        for (i, mut node) in old.into_iter().enumerate() {
            if remap[i].is_some() {
                node.inputs = node.inputs.iter().map(|&x| resolve(x)).collect();
                self.nodes.push(node);
            }
        }
        self.inputs = self.inputs.iter().map(|&x| resolve(x)).collect();
        self.output = resolve(self.output);
    }

    /// Inserts `node` right after `after`, making every former reader of `after`
    /// (and the output, if it was `after`) read the new node instead.
    pub fn insert_after(&mut self, after: NodeId, mut node: Node) -> NodeId {
        let at = after.index() + 1;
        let shift = |id: NodeId| {
            if id.index() >= at {
                NodeId(id.0 + 1)
            } else {
                id
            }
        };
        for n in &mut self.nodes {
            for input in &mut n.inputs {
                *input = if *input == after {
                    NodeId(at as u32)
                } else {
                    shift(*input)
                };
            }
        }
        self.inputs = self.inputs.iter().map(|&x| shift(x)).collect();
        self.output = if self.output == after {
            NodeId(at as u32)
        } else {
            shift(self.output)
        };
        node.inputs = vec![after];
        self.nodes.insert(at, node);
        NodeId(at as u32)
    }
}
