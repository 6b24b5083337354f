//! The int8 model: the integer-only graph that lowering produces ([`graph`]), the one
//! validation every consumer relies on ([`validate`]), and its on-disk format ([`artifact`]).
//!
//! The runtime and both exporters take a [`Model`], which only [`Model::validate`] (and
//! reading an artifact, which calls it) can make: nothing downstream sees an unchecked graph.

pub mod artifact;
pub mod graph;
pub mod validate;

pub use artifact::ArtifactError;
pub use graph::{
    text, Input, IntGraph, IntOp, IntTensor, IntTensors, LookupFunction, QParams, Requant, Value,
    ValueId, FORMAT, VERSION,
};
pub use validate::{Model, OpRef, ValidationError};
