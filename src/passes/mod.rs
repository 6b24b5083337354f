//! Graph-to-graph rewrites, each in its own file, run in a fixed order by [`run`].

mod bit_widths;
mod fake_quant;
mod fuse;

pub use bit_widths::{override_default_bits, BitWidths};
pub use fake_quant::{insert_fake_quant, range_sources};
pub use fuse::fuse_linear_epilogues;

use crate::ir::Graph;

/// The stages `qatc graph --stage` can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// As written, after name resolution and shape inference.
    Parsed,
    /// conv2d/dense with their batch_norm and relu merged in.
    Fused,
    /// With fake-quant nodes where the int8 model quantizes.
    Quantized,
}

/// Runs the passes up to and including `stage`.
pub fn run(mut graph: Graph, stage: Stage) -> Graph {
    if stage == Stage::Parsed {
        return graph;
    }
    fuse_linear_epilogues(&mut graph);
    if stage == Stage::Fused {
        return graph;
    }
    insert_fake_quant(&mut graph);
    graph
}
