#!/usr/bin/env python3
"""PyTorch eager-mode training speed of the seed model (conv 3x3x32 -> BN -> ReLU ->
max-pool -> dense 10) on Fashion-MNIST, float and QAT, batch 128, 2 threads.
Prints one JSON line: {"float": img/s, "qat": img/s}. Called by benches/qat_speed.sh."""
import gzip
import json
import sys
import time
import warnings

import numpy as np
import torch
import torch.ao.quantization as tq
import torch.nn as nn

warnings.filterwarnings("ignore")  # torch.ao's deprecation notices
torch.set_num_threads(2)
torch.manual_seed(0)
data_dir, n_images = sys.argv[1], int(sys.argv[2])


def images(path, n):
    with gzip.open(path) as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16)
    return torch.from_numpy(raw[: n * 784].reshape(n, 1, 28, 28).astype(np.float32) / 255.0)


def labels(path, n):
    with gzip.open(path) as f:
        return torch.from_numpy(np.frombuffer(f.read(), np.uint8, offset=8)[:n].astype(np.int64))


x = images(f"{data_dir}/train-images-idx3-ubyte.gz", n_images)
y = labels(f"{data_dir}/train-labels-idx1-ubyte.gz", n_images)


class Seed(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = tq.QuantStub()
        self.conv = nn.Conv2d(1, 32, 3)
        self.bn = nn.BatchNorm2d(32)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(32 * 13 * 13, 10)
        self.dequant = tq.DeQuantStub()

    def forward(self, t):
        t = self.pool(self.relu(self.bn(self.conv(self.quant(t)))))
        return self.dequant(self.fc(torch.flatten(t, 1)))


def epoch_speed(model, lr):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    perm = torch.randperm(len(x))
    start = time.perf_counter()
    for i in range(0, len(x), 128):
        idx = perm[i : i + 128]
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
    return len(x) / (time.perf_counter() - start)


model = Seed()
float_speed = epoch_speed(model, 1e-3)
model.eval()
model = tq.fuse_modules_qat(model.train(), [["conv", "bn", "relu"]])
model.qconfig = tq.get_default_qat_qconfig("fbgemm")
tq.prepare_qat(model, inplace=True)
qat_speed = epoch_speed(model, 1e-4)
print(json.dumps({"float": float_speed, "qat": qat_speed, "torch": torch.__version__}))
