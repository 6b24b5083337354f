"""Times ONNX Runtime on a model: batch-1 latency and batch-N throughput.

Usage: python3 scripts/onnx_bench.py MODEL.onnx INPUT C H W THREADS [BATCH [SECONDS]]
INPUT holds at least BATCH (default 256) samples in the model's input type (raw f32
little-endian, or uint8 pixels when the model takes them). SECONDS (default 1) is the
time spent on each measurement. Prints one line:
`latency_us=<median batch-1 microseconds> throughput=<images per second at batch BATCH>`
and the same per CPU second of all threads (cpu_latency_us=.. cpu_throughput=..).
"""
import sys
import time

import numpy as np
import onnxruntime as ort


def median_seconds(f, budget=1.0, min_runs=3):
    """Median wall-clock seconds per call, and CPU seconds (all threads) per call."""
    times = []
    start, cpu = time.perf_counter(), time.process_time()
    while len(times) < min_runs or time.perf_counter() - start < budget:
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), (time.process_time() - cpu) / len(times)


def main():
    model, inp, c, h, w, threads = sys.argv[1:7]
    batch = int(sys.argv[7]) if len(sys.argv) > 7 else 256
    seconds = float(sys.argv[8]) if len(sys.argv) > 8 else 1.0
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    dtype = np.uint8 if sess.get_inputs()[0].type == "tensor(uint8)" else "<f4"
    x = np.fromfile(inp, dtype=dtype).reshape(-1, int(c), int(h), int(w))
    one, many = x[:1], x[:batch]
    sess.run(None, {name: many})
    latency, cpu_latency = median_seconds(lambda: sess.run(None, {name: one}), seconds)
    per_batch, cpu_batch = median_seconds(lambda: sess.run(None, {name: many}), seconds)
    print(
        f"latency_us={latency * 1e6:.1f} throughput={len(many) / per_batch:.1f}"
        f" cpu_latency_us={cpu_latency * 1e6:.1f} cpu_throughput={len(many) / cpu_batch:.1f}"
    )


if __name__ == "__main__":
    main()
