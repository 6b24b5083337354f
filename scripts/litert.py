#!/usr/bin/env python3
"""Runs a .tflite model in the LiteRT interpreter (ai-edge-litert from PyPI).

  litert.py run MODEL INPUTS OUTPUTS   int8 inputs, or uint8 pixels when the model takes them
                                       (raw, N x input size, NHWC) -> int8 outputs (raw)
  litert.py accuracy MODEL IMAGES LABELS   IDX files (gzipped or not): prints the accuracy
  litert.py bench MODEL THREADS [BATCH [SECONDS]]
                                       prints latency_us=.. (batch 1) throughput=.. (images/s,
                                       batch BATCH, default 256), SECONDS (default 2) on each,
                                       and the same per CPU second (cpu_latency_us=.. cpu_throughput=..)

`run` feeds the same int8 tensors qatc's runtime gets, so the outputs compare unit by unit.
"""
import gzip
import os
import sys
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType


def interpreter(model, batch, threads=1):
    # QATC_LITERT_RESOLVER=builtin|ref: LiteRT's own kernels instead of XNNPACK (the default).
    resolver = {
        "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        "ref": OpResolverType.BUILTIN_REF,
    }.get(os.environ.get("QATC_LITERT_RESOLVER", ""), OpResolverType.AUTO)
    it = Interpreter(
        model_path=model, num_threads=threads, experimental_op_resolver_type=resolver
    )
    inp = it.get_input_details()[0]
    shape = list(inp["shape"])
    shape[0] = batch
    it.resize_tensor_input(inp["index"], shape)
    it.allocate_tensors()
    return it, it.get_input_details()[0], it.get_output_details()[0]


def run(model, inputs, outputs):
    probe, inp, _ = interpreter(model, 1)
    per = int(np.prod(inp["shape"][1:]))
    # int8 inputs (already quantized), or raw uint8 pixels for a model built from images.
    data = np.fromfile(inputs, dtype=inp["dtype"])
    n = data.size // per
    it, inp, out = interpreter(model, n)
    assert inp["dtype"] in (np.int8, np.uint8), inp["dtype"]
    it.set_tensor(inp["index"], data.reshape([n] + list(inp["shape"][1:])))
    it.invoke()
    it.get_tensor(out["index"]).astype(np.int8).tofile(outputs)


def idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data[4 + 4 * dims :], dtype=np.uint8).reshape(shape)


def accuracy(model, images, labels):
    """Quantizes pixel / 255 with the input's parameters as qatc does (x * (1/s),
    rounded half to even, in float32), so no calibration data is involved."""
    x = idx(images).astype(np.float32) / np.float32(255)
    y = idx(labels)
    it, inp, out = interpreter(model, len(x))
    if inp["dtype"] == np.uint8:
        # A model built from images takes the raw pixels.
        it.set_tensor(inp["index"], idx(images).reshape([len(x)] + list(inp["shape"][1:])))
        it.invoke()
        predicted = it.get_tensor(out["index"]).argmax(axis=1)
        correct = int((predicted == y).sum())
        print(f"accuracy={correct / len(y):.6f} ({correct}/{len(y)})")
        return
    scale, zp = inp["quantization"]
    inv = np.float32(1) / np.float32(scale)
    q = np.clip(np.rint(x * inv) + zp, -128, 127).astype(np.int8)
    it.set_tensor(inp["index"], q.reshape([len(x)] + list(inp["shape"][1:])))
    it.invoke()
    predicted = it.get_tensor(out["index"]).argmax(axis=1)
    correct = int((predicted == y).sum())
    print(f"accuracy={correct / len(y):.6f} ({correct}/{len(y)})")


def bench(model, threads, batch=256, seconds=2.0):
    result = {}
    for name, size in (("latency_us", 1), ("throughput", batch)):
        it, inp, _ = interpreter(model, size, threads)
        x = np.random.default_rng(0).integers(-128, 128, size=inp["shape"], dtype=np.int8)
        it.set_tensor(inp["index"], x)
        for _ in range(3):
            it.invoke()
        times, start, cpu = [], time.perf_counter(), time.process_time()
        while len(times) < 3 or time.perf_counter() - start < seconds:
            t = time.perf_counter()
            it.invoke()
            times.append(time.perf_counter() - t)
        cpu = (time.process_time() - cpu) / len(times)
        wall = float(np.median(times))
        # Median per call, as qatc's and ONNX Runtime's; CPU time of all threads too.
        result[name] = wall * 1e6 if size == 1 else size / wall
        result["cpu_" + name] = cpu * 1e6 if size == 1 else size / cpu
    print(" ".join(f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(*sys.argv[2:5])
    elif sys.argv[1] == "accuracy":
        accuracy(*sys.argv[2:5])
    elif sys.argv[1] == "bench":
        batch = int(sys.argv[4]) if len(sys.argv) > 4 else 256
        seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 2.0
        bench(sys.argv[2], int(sys.argv[3]), batch, seconds)
    else:
        sys.exit(__doc__)
