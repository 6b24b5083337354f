//! TensorFlow Lite export of the integer graph: a fully integer `.tflite` FlatBuffer
//! (schema version 3) with int8 input and output tensors, builtin operators only.
//!
//! Every scale and zero point comes from the integer graph, so the file needs no
//! representative dataset. The layout changes from the model's `[C, H, W]` to TFLite's
//! NHWC: activations are `[1, H, W, C]` (vectors `[1, F]`), convolution weights OHWI,
//! depthwise weights `[1, KH, KW, C·M]`, and a dense layer after a flatten gets its
//! weight columns reordered to read the HWC-ordered vector.
//!
//! TFLite recomputes each requantization multiplier from the float scales in the file
//! and rounds in two steps (gemmlowp's doubling high multiply, then a rounding shift);
//! qatc rounds once. An output can therefore differ from qatc's runtime by one unit
//! where the exact value is (nearly) a tie.

mod builtin;
mod check;
mod read;
mod writer;

use tflite_schema::tflite as fb;

pub use check::check;
pub use read::{
    is_tflite, read, read_file, text, OperatorInfo, ReadError, TensorInfo, TfliteModel,
};
pub use writer::{to_bytes, write, ExportError};

/// The FlatBuffers file identifier of TFLite models.
const IDENTIFIER: [u8; 4] = *b"TFL3";
/// The TFLite schema version.
const SCHEMA_VERSION: u32 = 3;
