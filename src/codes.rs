//! Stable diagnostic codes and their long explanations (`qatc explain CODE`).

pub const SYNTAX: &str = "E0001";
pub const UNDEFINED_NAME: &str = "E0002";
pub const UNKNOWN_OP: &str = "E0003";
pub const UNKNOWN_ARGUMENT: &str = "E0004";
pub const MISSING_ARGUMENT: &str = "E0005";
pub const INVALID_ARGUMENT: &str = "E0006";
pub const SHAPE_MISMATCH: &str = "E0007";
pub const INVALID_QUANT_SPEC: &str = "E0008";
pub const DUPLICATE_DEFINITION: &str = "E0009";
pub const WRONG_INPUT_COUNT: &str = "E0010";
pub const INVALID_INPUT_TYPE: &str = "E0011";
pub const INVALID_OUTPUT: &str = "E0012";
pub const UNKNOWN_ANNOTATION: &str = "E0013";
pub const NO_MODEL: &str = "E0014";
pub const INVALID_RECIPE: &str = "E0015";
pub const RECURSIVE_BLOCK: &str = "E0016";
pub const IMPORT_FAILED: &str = "E0017";
pub const IMPORT_CYCLE: &str = "E0018";
pub const WRONG_RESULT_COUNT: &str = "E0019";
pub const BLOCK_ARGUMENT_TYPE: &str = "E0020";
pub const NO_TFLITE_FORM: &str = "E0021";
pub const NO_INT8_FORM: &str = "E0022";
pub const TOO_DEEP: &str = "E0023";
pub const GRAPH_TOO_LARGE: &str = "E0024";
pub const TENSOR_TOO_LARGE: &str = "E0025";
pub const TOO_MANY_PARAMETERS: &str = "E0026";
pub const TRAINING_MEMORY: &str = "E0027";
pub const FILE_TOO_LARGE: &str = "E0028";
pub const MODEL_NOT_BUILT: &str = "E0029";
pub const UNREADABLE_FILE: &str = "E0030";
pub const INVALID_INTEGER: &str = "E0031";
pub const INVALID_BLOCK_PARAMETER: &str = "E0032";
pub const UNUSED_BINDING: &str = "W0001";
pub const INEFFECTIVE_ANNOTATION: &str = "W0002";
pub const FLOAT_SANDWICH: &str = "W0003";
pub const NO_INT8_MODEL: &str = "W0004";

/// `(code, one-line title, long explanation)` for every code qatc emits.
pub const EXPLANATIONS: &[(&str, &str, &str)] = &[
    (NO_INT8_FORM, "no int8 form", "`qatc build --emit onnx` checks, before any training, that every op of the\nquantized model has an integer kernel. It refuses ops kept in float (`@float`,\nexcept on ops that only move values), ops without an int8 kernel (`qatc explain ops`\nand the README's int8 table say which have one), and models with several inputs.\n"),
    (NO_INT8_MODEL, "the build will make no int8 model", "`qatc build` found, before training, an op without an integer form. The build still\ntrains and reports float, PTQ, QAT and the control run (with fake quantization),\nbut writes no int8 artifact. Remove `@float` or replace the op to get one.\n"),
    (SYNTAX, "syntax error", "The file does not follow the grammar of the .qat language (grammar/qat.pest).\n\nA file holds `use \"other.qat\"` imports, `quant default { ... }` settings,\n`block name(x: tensor, n: int) { ... }` definitions and `model Name { ... }`s.\nA model holds `input`, `let` and `output` statements:\n\n    model Tiny {\n        input image: f32[1, 28, 28]\n        let x = flatten(image)\n        let logits = dense(x, units = 10)\n        output logits\n    }\n"),
    (UNDEFINED_NAME, "undefined name", "A name was used before any `input` or `let` in the same model defined it.\nNames are looked up in order, so a binding can only use names defined above it.\n"),
    (UNKNOWN_OP, "unknown op", "The op or block called in a `let` is not one qatc knows. `qatc explain ops` lists\nthe ops; blocks must be defined in this file or in a file it imports with `use`.\n"),
    (UNKNOWN_ARGUMENT, "unknown argument", "A named argument is not one the op accepts.\n\n    let x = conv2d(image, filter = 32)   // error: the argument is `filters`\n"),
    (MISSING_ARGUMENT, "missing argument", "The op needs an argument that has no default, e.g. `dense` needs `units`.\n"),
    (INVALID_ARGUMENT, "invalid argument value", "An argument has the wrong type or a value outside its range, e.g. `kernel = 0`\nor `padding = middle` (it must be `valid` or `same`).\n"),
    (SHAPE_MISMATCH, "shape mismatch", "Shape inference found an op whose input shapes do not fit it: `add` of two tensors\nwith different shapes, `dense` on a tensor that is not 1-D (use `flatten` first),\nor a kernel larger than its input. Shapes are written without the batch dimension.\n"),
    (INVALID_QUANT_SPEC, "invalid quantization spec", "A quantization spec has the form `intN(scheme, granularity)`:\n\n    int8(symmetric, per_channel)\n    int4(asymmetric, per_tensor)\n\nN is a bit width from 2 to 8; scheme is `symmetric` or `asymmetric`; granularity is\n`per_tensor` or `per_channel` (per-channel only applies to weights).\n"),
    (DUPLICATE_DEFINITION, "duplicate definition", "Two models, inputs or settings share a name. `let` bindings may shadow each other,\nbut inputs and models must be unique.\n"),
    (WRONG_INPUT_COUNT, "wrong number of tensor inputs", "An op got the wrong number of positional (tensor) arguments: `add` takes two,\nmost other ops take one.\n"),
    (INVALID_INPUT_TYPE, "invalid input type", "Inputs are `f32` tensors written without the batch dimension: `f32[C, H, W]`\nfor images or `f32[N]` for vectors. Every model needs one. Blocks take no `input`:\ntheir parameters are typed `tensor` or `int`.\n"),
    (INVALID_OUTPUT, "invalid output", "A model needs exactly one `output` statement naming the value it produces.\n"),
    (UNKNOWN_ANNOTATION, "unknown or malformed annotation", "Bindings accept `@float` (keep this op in float), `@frozen` (its parameters\ndo not train; on a block call, every layer of the block),\n`@quant(weights = intN(...), activations = intN(...))` (override the defaults) and\n`@name(\"features.3\")`: the PyTorch module path the binding's nodes are named by, so\na state_dict loads under its own names (on a block call, the prefix of its layers).\nTwo parts of one model cannot be given the same path (E0009).\n"),
    (NO_MODEL, "model not found", "The file has no model, or not the one asked for with `--model`.\n"),
    (INVALID_RECIPE, "invalid training recipe", "The YAML recipe beside the model (or given with --recipe) is malformed, has an\nunknown key, or a value out of range. Every key may be left out. A recipe\nwithout a `train:` section trains nothing: it loads (transfer.weights), calibrates\nand evaluates, as `train.epochs: 0`, and runs QAT only when a `qat:` section asks.\nIts keys:\n\n  data.format              idx, folder (dir/<class>/*.png|jpg|bmp|webp), cifar (binary batches)\n                           or numpy (.npz or .npy files x_train, y_train, x_test, y_test) (idx)\n  data.dir                 the data; for idx the default is $QATC_FASHION_MNIST or Debian's Fashion-MNIST\n  data.val_split           share of a folder without train/ and val/ held out for validation (0.2)\n  data.classes             keep only these classes, relabelled 0..n in this order\n  data.train_limit         use at most this many training images\n  data.test_limit          evaluate on at most this many test images\n  data.skip_bad            leave out (and count) images that do not decode instead of failing (false)\n  data.normalize           {mean: [..], std: [..]} per channel: x = (pixel/255 - mean) / std in training\n                           and in every artifact, which take raw uint8 pixels (none)\n  train.epochs             float training epochs (the control run trains as many as qat.epochs more);\n                           0: none (PTQ of pretrained weights)\n  train.batch_size         images per step (64)\n  train.optimizer          adam or sgd (adam)\n  train.learning_rate      float training learning rate\n  train.seed               seed of initialization, shuffling and sampling (0)\n  train.augment            {flip, crop_padding, resized_crop: [lo, hi]}: training images only (none)\n  qat.epochs               quantization-aware fine-tuning epochs (1)\n  qat.learning_rate        its learning rate (0.0001)\n  qat.weight_range         min_max or mse weight ranges each step (mse)\n  qat.learn_ranges         learn scales (LSQ-style) instead of observing them (false)\n  qat.range_learning_rate  learning rate of the learned scales (0.001)\n  qat.freeze_bn_after      QAT epochs before BatchNorm statistics freeze (0)\n  qat.freeze_observers_after  QAT epochs before activation observers stop moving (never)\n  qat.init_observer        calibration QAT starts from: min_max, percentile or mse (mse)\n  ptq.calibration_samples  images used to calibrate activation ranges (1000)\n  ptq.observer             min_max, percentile or mse (min_max)\n  ptq.percentile           for the percentile observer: the share kept (99.99)\n  ptq.weight_range         min_max or mse (min_max)\n  transfer.weights         pretrained weights, relative to the recipe: safetensors, or a PyTorch\n                           state_dict saved by torch.save (.pt, .pth, .bin)\n  transfer.build           a .qat whose build makes transfer.weights when it is missing\n  transfer.map             renames: tensor name here -> name in the weight file; `*` patterns carry\n                           text across (\"f*.*\": \"features.*.*\"); `qatc weights diff` proposes rules\n  transfer.skip            layers not loaded (e.g. a new head); `*` patterns allowed\n  transfer.freeze          layers whose parameters and statistics do not change; `*` patterns allowed\n  transfer.unfreeze_for_qat  train the frozen layers again in the control and QAT stages (false)\n"),
    (RECURSIVE_BLOCK, "recursive block", "A block calls itself, directly or through other blocks. Blocks are inlined into\nthe model graph, so recursion would never end:\n\n    block a(x: tensor) { let y = b(x) output y }\n    block b(x: tensor) { let y = a(x) output y }   // error: a -> b -> a\n\nCall the block several times from the model instead.\n"),
    (IMPORT_FAILED, "import failed", "A `use \"file.qat\"` names a file that cannot be read, or that has errors of its\nown. Paths are relative to the importing file. Run `qatc check` on the imported\nfile to see its errors.\n"),
    (IMPORT_CYCLE, "import cycle", "Files import each other in a cycle (a.qat uses b.qat, which uses a.qat). Move the\nshared blocks into a third file that both import.\n"),
    (WRONG_RESULT_COUNT, "wrong number of results", "A `let` binds a different number of names than the call produces. Ops have one\nresult; a block has as many as its `output` statement names:\n\n    block split(x: tensor) { ... output a, b }\n    let left, right = split(x)\n"),
    (BLOCK_ARGUMENT_TYPE, "block argument of the wrong kind", "A block parameter declared `tensor` got a number, or one declared `int` got a\ntensor:\n\n    block unit(x: tensor, filters: int) { ... }\n    let y = unit(x, filters = x)   // error: `filters` is an int\n"),
    (NO_TFLITE_FORM, "no int8 TFLite form", "`qatc build --emit tflite` checks, before any training, that every op of the\nquantized model becomes an int8 TFLite builtin. It refuses what has no int8\nform at all (see E0022: `@float`, ops without an integer kernel), grouped\n(not depthwise) convolutions, and activations narrower than 8 bits: TFLite's int8\ntensors clamp to the full [-128, 127] range. Weights may be 2 to 8 bits.\n\n    let x = sigmoid(h)      // error[E0021] with --emit tflite\n    let x = relu6(h)        // fine: RELU6\n"),
    (TOO_DEEP, "nested too deeply", "The file nests deeper than qatc allows: more than 64 brackets (`(`, `[`, `{`)\nopen at once, block calls inside block calls more than 64 deep once inlined,\nor a chain of more than 64 `use` imports. Real models nest a few levels; flatten\nthe structure (bind inner calls with `let`, call blocks from the model).\n"),
    (GRAPH_TOO_LARGE, "graph too large", "Block calls are inlined into the model, so a block that calls another block twice,\nwhich calls the next one twice, ... doubles the graph at every level. The models of a\nfile may have at most 100,000 nodes (statements) in all once inlined. The error\npoints at the call where the limit was passed.\n"),
    (TENSOR_TOO_LARGE, "tensor too large", "A value of the model has more than 2^26 (67,108,864) elements per sample (256 MiB\nas f32, before the batch dimension). Training could not allocate it. Use fewer\nfilters, a smaller input, a stride, or pooling before it.\n"),
    (TOO_MANY_PARAMETERS, "too many parameters", "An op has more than 2^27 (134,217,728) parameters, or the whole model more than\n2^28 (268,435,456): training keeps each with its gradient and optimizer state.\nA `dense` on a large flattened image is the usual cause: pool first.\n"),
    (TRAINING_MEMORY, "training needs too much memory", "`qatc build` estimates, before training, the memory of one training step: every\nvalue of one batch (forward, gradient, fake-quantized copy) and every parameter\n(weight, gradient, two Adam moments), all f32. Above 16 GiB it refuses to start.\nLower `train.batch_size` in the recipe or make the model smaller.\n"),
    (FILE_TOO_LARGE, "file too large", "A .qat source file (the one checked, or one imported with `use`) is larger than\n4 MiB, or is not a regular file (e.g. `/dev/zero`). qatc reads at most that much.\n"),
    (MODEL_NOT_BUILT, "model not built", "A model had no error of its own, yet its graph could not be made: a value it\nneeds comes from a block whose errors are reported on the block. Fix those first.\n"),
    (UNREADABLE_FILE, "file cannot be read", "`qatc check` or `qatc fmt` could not read a file it was given: it does not exist,\nis not readable, or is not UTF-8 text. The other files are still checked; the\nexit status is 1 at the end.\n"),
    (INVALID_INTEGER, "invalid integer expression", "Block arguments, op arguments that take integers, `let` integers and `if`\nconditions may be integer expressions: numbers, `int` parameters, `channels(x)`\n(the first dimension of tensor `x`), and `+ - * /` of them with parentheses\n(`/` rounds down; `//` starts a comment). Integers are never negative.\n\n    block inverted(x: tensor, cout: int, expand: int = 6) {\n        let hidden = channels(x) * expand\n        ...\n    }\n\nThis error means an operand is not an integer (a tensor: use `channels(x)`), or,\nat a call, that the result is negative, divides by zero or is too large.\n"),
    (INVALID_BLOCK_PARAMETER, "invalid block parameter", "A block parameter is `name: tensor`, `name: int` or `name: op`, optionally\nwith a default (`stride: int = 1`, `act: op = relu`) that a call may leave out.\nDefaults may use earlier parameters (`hidden: int = cin * 6`); tensors have none.\n\nAn `op` parameter takes the name of an op with one tensor input and no required\nargument (relu, relu6, hardswish, sigmoid, ...) and is called like one:\n\n    block conv_bn(x: tensor, filters: int, act: op = relu) {\n        let y = conv2d(x, filters = filters, kernel = 3, padding = same)\n        let y = act(y)\n        output y\n    }\n"),
    (UNUSED_BINDING, "unused binding", "A value is computed but nothing uses it and it is not an output. Remove it, or\nuse it, or name it as an output.\n"),
    (INEFFECTIVE_ANNOTATION, "annotation has no effect", "An annotation changes nothing here: e.g. `@quant(weights = ...)` on an op without\nweights, `@float` on an op that only moves values (pooling, flatten, reshape, pad, dropout:\nthey keep their input's quantization), or `@frozen` on an op without parameters.\nThe warning's note names the ops the annotation applies to.\n"),
    (FLOAT_SANDWICH, "float op between quantized ops", "An `@float` op reads a quantized value and feeds a quantized op. The deployed int8\nmodel has to dequantize before it and quantize again after it, which costs time\nand adds rounding error. Keep a whole region in float, or let the op be quantized.\n"),
];

/// The long explanation of a code, if it exists.
pub fn explain(code: &str) -> Option<(&'static str, &'static str)> {
    let code = code.to_ascii_uppercase();
    EXPLANATIONS
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|(_, t, e)| (*t, *e))
}

#[cfg(test)]
mod tests {
    /// Every code constant above has an explanation (read from this file's source, so a
    /// new constant without one fails here).
    #[test]
    fn every_code_is_explained() {
        let source = include_str!("codes.rs");
        let codes: Vec<&str> = source
            .lines()
            .filter(|l| l.starts_with("pub const ") && l.contains(": &str = \""))
            .filter_map(|l| l.split('"').nth(1))
            .collect();
        assert!(codes.len() > 20, "{codes:?}");
        for code in codes {
            assert!(super::explain(code).is_some(), "{code} has no explanation");
        }
    }
}
