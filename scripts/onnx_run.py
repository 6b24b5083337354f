"""Runs an ONNX model with ONNX Runtime on raw little-endian f32 inputs.

Usage: python3 scripts/onnx_run.py MODEL.onnx INPUT.f32|INPUT.u8 C H W OUTPUT.f32
(INPUT.u8: raw uint8 pixels, for a model built from images, whose input is uint8;
f32 inputs are pixel / 255 and are turned back into pixels for such a model.)
Writes the model's first output (float32) to OUTPUT.f32. Used by qatc's tests and
benchmarks to compare the int8 runtime with ONNX Runtime.
"""
import sys

import numpy as np
import onnxruntime as ort


def main():
    model, inp, *dims, out = sys.argv[1:]
    dims = [int(d) for d in dims]
    opts = ort.SessionOptions()
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    if inp.endswith(".u8"):
        x = np.fromfile(inp, dtype=np.uint8).reshape([-1] + dims)
    else:
        x = np.fromfile(inp, dtype="<f4").reshape([-1] + dims)
    if sess.get_inputs()[0].type == "tensor(uint8)" and x.dtype != np.uint8:
        # A model built from images takes raw pixels: the floats here are pixel / 255.
        x = np.rint(x * 255).astype(np.uint8)
    y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.asarray(y, dtype="<f4").tofile(out)


if __name__ == "__main__":
    main()
