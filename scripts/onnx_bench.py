"""Times ONNX Runtime on a model: batch-1 latency and batch-256 throughput.

Usage: python3 scripts/onnx_bench.py MODEL.onnx INPUT.f32 C H W THREADS
INPUT.f32 holds at least 256 samples (raw little-endian f32). Prints one line:
`latency_us=<median batch-1 microseconds> throughput=<images per second at batch 256>`.
"""
import sys
import time

import numpy as np
import onnxruntime as ort


def median_seconds(f, budget=1.0, min_runs=5):
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < budget:
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main():
    model, inp, c, h, w, threads = sys.argv[1:]
    x = np.fromfile(inp, dtype="<f4").reshape(-1, int(c), int(h), int(w))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    one, batch = x[:1], x[:256]
    sess.run(None, {name: batch})
    latency = median_seconds(lambda: sess.run(None, {name: one}))
    per_batch = median_seconds(lambda: sess.run(None, {name: batch}))
    print(f"latency_us={latency * 1e6:.1f} throughput={len(batch) / per_batch:.1f}")


if __name__ == "__main__":
    main()
