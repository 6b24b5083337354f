//! Resource limits on what a `.qat` file may ask for. Each is checked before the
//! work it bounds (parsing, inlining, allocation, training) and reported as a
//! located diagnostic with its code; the README lists them.

/// Brackets (`(`, `[`, `{`) open at once, in source text (E0023). Real models nest 4
/// deep; the parser and every AST walk recurse once per level.
pub const MAX_NESTING: usize = 64;

/// Block calls inside block calls while inlining, and `use` chains (E0023).
pub const MAX_BLOCK_DEPTH: usize = 64;

/// Statements of all models of a file once every block call is inlined, about one
/// node each (E0024): bounds the time and memory of `check` whatever blocks do.
pub const MAX_GRAPH_NODES: usize = 100_000;

/// Elements of one value of one sample, batch dimension excluded (E0025): 256 MiB as f32.
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 26;

/// Parameters of one op (E0026): 512 MiB as f32.
pub const MAX_OP_PARAMETERS: u64 = 1 << 27;

/// Parameters of one model (E0026): 1 GiB as f32.
pub const MAX_MODEL_PARAMETERS: u64 = 1 << 28;

/// Estimated memory of one training step at the recipe's batch size (E0027).
pub const MAX_TRAINING_BYTES: u64 = 16 << 30;

/// Size of a `.qat` source file, the checked one or an imported one (E0028).
pub const MAX_SOURCE_BYTES: u64 = 4 << 20;

/// Largest integer argument of an op, and largest input dimension.
pub const MAX_ARG_INT: usize = 1 << 20;

/// Largest axis argument, either sign.
pub const MAX_AXIS: i64 = 16;

/// Most dimensions of a `shape = [...]` argument.
pub const MAX_SHAPE_RANK: usize = 8;

/// `qatc run --threads`: at most this many worker threads per available core.
pub const THREADS_PER_CORE: usize = 4;

/// Bytes of one f32.
const F32: u64 = 4;

/// What one training step holds, per the shapes: each value's forward result, its
/// gradient and its fake-quantized copy per sample, and per parameter its weight,
/// gradient and two Adam moments.
pub fn training_bytes(activation_elements: u64, parameters: u64, batch: u64) -> u64 {
    activation_elements
        .saturating_mul(3 * F32)
        .saturating_mul(batch)
        .saturating_add(parameters.saturating_mul(4 * F32))
}

/// A byte count for messages: `1.5 GiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
