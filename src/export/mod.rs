//! Export of the integer graph to other formats.

pub mod onnx;

pub use onnx::ExportError;
