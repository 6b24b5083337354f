//! Export of the integer graph to other formats.

pub mod onnx;
pub mod tflite;

pub use onnx::ExportError;
