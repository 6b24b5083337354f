//! Export of the integer graph to other formats.

pub mod inspect;
pub mod onnx;
pub mod tflite;

pub use onnx::ExportError;
