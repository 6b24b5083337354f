//! The TFLite FlatBuffers types qatc writes and `qatc inspect` reads: planus-cli's
//! output for `schema.fbs`, kept in its own crate so that generated code stays apart
//! from hand-written code. Regenerate with `bash scripts/gen-tflite.sh`;
//! `tests/tflite_schema.rs` checks that the checked-in file is current.

#[allow(clippy::all, clippy::pedantic, dead_code, unused_imports, unreachable_pub)]
#[rustfmt::skip]
mod generated;

pub use generated::tflite;
/// The FlatBuffers runtime the generated code was made for, so users build and read
/// with exactly that one.
pub use planus;
