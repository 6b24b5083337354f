"""Runs an ONNX model with ONNX Runtime on raw little-endian f32 inputs.

Usage: python3 scripts/onnx_run.py MODEL.onnx INPUT.f32 C H W OUTPUT.f32
Writes the model's first output (float32) to OUTPUT.f32. Used by qatc's tests and
benchmarks to compare the int8 runtime with ONNX Runtime.
"""
import sys

import numpy as np
import onnxruntime as ort


def main():
    model, inp, *dims, out = sys.argv[1:]
    dims = [int(d) for d in dims]
    x = np.fromfile(inp, dtype="<f4").reshape([-1] + dims)
    opts = ort.SessionOptions()
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.asarray(y, dtype="<f4").tofile(out)


if __name__ == "__main__":
    main()
