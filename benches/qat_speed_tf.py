#!/usr/bin/env python3
"""TensorFlow/Keras training speed with tfmot QAT (quantize_model), float and QAT,
2 intra-op threads, of the same models as qat_speed.py (seed, or mnv2 at SIZExSIZE).
Usage: qat_speed_tf.py DATA_DIR IMAGES [seed|mnv2] [BATCH] [SIZE]
Each epoch is timed after a warm-up fit on two batches (tf.function tracing).
Prints one JSON line: {"float": img/s, "qat": img/s}. Called by benches/qat_speed.sh."""
import gzip
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tfmot needs Keras 2 (tf_keras)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(1)
tf.random.set_seed(0)
data_dir, n_images = sys.argv[1], int(sys.argv[2])
model_name = sys.argv[3] if len(sys.argv) > 3 else "seed"
batch = int(sys.argv[4]) if len(sys.argv) > 4 else 128
size = int(sys.argv[5]) if len(sys.argv) > 5 else 28

with gzip.open(f"{data_dir}/train-images-idx3-ubyte.gz") as f:
    raw = np.frombuffer(f.read(), np.uint8, offset=16)
x = raw[: n_images * 784].reshape(n_images, 28, 28, 1).astype(np.float32) / 255.0
if size != 28:
    x = tf.image.resize(x, (size, size)).numpy()
with gzip.open(f"{data_dir}/train-labels-idx1-ubyte.gz") as f:
    y = np.frombuffer(f.read(), np.uint8, offset=8)[:n_images].astype(np.int64)

L = keras.layers


def seed():
    inp = keras.Input((size, size, 1))
    t = L.Conv2D(32, 3)(inp)
    t = L.BatchNormalization()(t)
    t = L.ReLU()(t)
    t = L.MaxPooling2D(2)(t)
    return keras.Model(inp, L.Dense(10)(L.Flatten()(t)))


def conv_bn(t, filters, k, stride=1, act=True):
    t = L.Conv2D(filters, k, stride, padding="same", use_bias=False)(t)
    t = L.BatchNormalization()(t)
    return L.ReLU(6.0)(t) if act else t


def inverted(t, expanded, filters, stride):
    cin = t.shape[-1]
    e = conv_bn(t, expanded, 1)
    d = L.DepthwiseConv2D(3, stride, padding="same", use_bias=False)(e)
    d = L.ReLU(6.0)(L.BatchNormalization()(d))
    p = conv_bn(d, filters, 1, act=False)
    return L.Add()([t, p]) if stride == 1 and cin == filters else p


def mnv2():
    """examples/fashion/mobilenet.qat, layer for layer."""
    inp = keras.Input((size, size, 1))
    t = conv_bn(inp, 16, 3, 2)
    for expanded, filters, stride in [(32, 16, 1), (64, 24, 2), (96, 24, 1), (96, 32, 2), (128, 32, 1)]:
        t = inverted(t, expanded, filters, stride)
    t = conv_bn(t, 128, 1)
    t = L.Dropout(0.2)(L.GlobalAveragePooling2D()(t))
    return keras.Model(inp, L.Dense(10)(t))


def epoch_speed(model, lr):
    model.compile(
        keras.optimizers.Adam(lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x[: 2 * batch], y[: 2 * batch], batch_size=batch, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, shuffle=True, verbose=0)
    return len(x) / (time.perf_counter() - start)


model = {"seed": seed, "mnv2": mnv2}[model_name]()
float_speed = epoch_speed(model, 1e-3)
model = tfmot.quantization.keras.quantize_model(model)
qat_speed = epoch_speed(model, 1e-4)
print(json.dumps({"float": float_speed, "qat": qat_speed, "tensorflow": tf.__version__}))
