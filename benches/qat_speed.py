#!/usr/bin/env python3
"""PyTorch eager-mode training speed, float and QAT, 2 threads, on Fashion-MNIST, of
  seed:  the seed model (conv 3x3x32 -> BN -> ReLU -> max-pool -> dense 10), 28x28;
  mnv2:  examples/fashion/mobilenet.qat (a small MobileNetV2: inverted residual blocks,
         depthwise convolutions, relu6) on images resized to SIZExSIZE.
Usage: qat_speed.py DATA_DIR IMAGES [seed|mnv2] [BATCH] [SIZE]
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
import torch.nn.functional as F

warnings.filterwarnings("ignore")  # torch.ao's deprecation notices
torch.set_num_threads(2)
torch.manual_seed(0)
data_dir, n_images = sys.argv[1], int(sys.argv[2])
model_name = sys.argv[3] if len(sys.argv) > 3 else "seed"
batch = int(sys.argv[4]) if len(sys.argv) > 4 else 128
size = int(sys.argv[5]) if len(sys.argv) > 5 else 28


def images(path, n):
    with gzip.open(path) as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16)
    x = torch.from_numpy(raw[: n * 784].reshape(n, 1, 28, 28).astype(np.float32) / 255.0)
    if size != 28:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.contiguous()


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

    def fusions(self):
        return [["conv", "bn", "relu"]]


def conv_bn(cin, cout, k, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([nn.ReLU6()] if act else []))


class Inverted(nn.Module):
    def __init__(self, cin, expanded, cout, stride):
        super().__init__()
        self.expand = conv_bn(cin, expanded, 1)
        self.depthwise = conv_bn(expanded, expanded, 3, stride, expanded)
        self.project = conv_bn(expanded, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout
        self.add = nn.quantized.FloatFunctional()

    def forward(self, t):
        out = self.project(self.depthwise(self.expand(t)))
        return self.add.add(t, out) if self.residual else out


class MobileNet(nn.Module):
    """examples/fashion/mobilenet.qat, layer for layer."""

    def __init__(self):
        super().__init__()
        self.quant = tq.QuantStub()
        self.stem = conv_bn(1, 16, 3, 2)
        self.blocks = nn.Sequential(
            Inverted(16, 32, 16, 1),
            Inverted(16, 64, 24, 2),
            Inverted(24, 96, 24, 1),
            Inverted(24, 96, 32, 2),
            Inverted(32, 128, 32, 1),
        )
        self.head = conv_bn(32, 128, 1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(128, 10)
        self.dequant = tq.DeQuantStub()

    def forward(self, t):
        t = self.head(self.blocks(self.stem(self.quant(t))))
        return self.dequant(self.fc(self.drop(t.mean((2, 3)))))

    def fusions(self):
        fused = []
        for name, m in self.named_modules():
            if isinstance(m, nn.Sequential) and len(m) in (2, 3) and isinstance(m[0], nn.Conv2d):
                # torch.ao fuses conv+bn(+relu), not relu6: that stays a module of its own.
                fused.append([f"{name}.0", f"{name}.1"])
        return fused


def epoch_speed(model, lr):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    perm = torch.randperm(len(x))
    start = time.perf_counter()
    for i in range(0, len(x), batch):
        idx = perm[i : i + batch]
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
    return len(x) / (time.perf_counter() - start)


model = {"seed": Seed, "mnv2": MobileNet}[model_name]()
float_speed = epoch_speed(model, 1e-3)
model.eval()
model = tq.fuse_modules_qat(model.train(), model.fusions())
model.qconfig = tq.get_default_qat_qconfig("fbgemm")
tq.prepare_qat(model, inplace=True)
qat_speed = epoch_speed(model, 1e-4)
print(json.dumps({"float": float_speed, "qat": qat_speed, "torch": torch.__version__}))
