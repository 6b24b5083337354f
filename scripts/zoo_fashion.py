#!/usr/bin/env python3
"""Trains torchvision's resnet18 (num_classes=10, no pretrained download) on
Fashion-MNIST at 28x28 in PyTorch, the grey channel repeated three times and pixels
scaled to [0, 1] (what qatc's data loader gives examples/zoo/resnet18_fashion.qat), and
writes into the folder given as first argument:

  resnet18_fashion.pt / .safetensors   its state_dict (torch.save and safetensors)
  resnet18_fashion.json                its own test accuracy on the first --test images,
                                       with the numbers of images, epochs and seconds

Usage: zoo_fashion.py OUT [--train N] [--test N] [--epochs E] [--data DIR]
Run it with a Python that has torch, torchvision and safetensors (tests/common's
cache venv, ~/.cache/qatc/venv/bin/python). Used by tests/zoo.rs (tiny) and README.
"""
import argparse
import gzip
import json
import os
import time

import numpy as np
import torch
import torchvision
from safetensors.torch import save_file


def idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def split(data, name, limit):
    images = idx(os.path.join(data, f"{name}-images-idx3-ubyte.gz"))[:limit]
    labels = idx(os.path.join(data, f"{name}-labels-idx1-ubyte.gz"))[:limit]
    # [N, 28, 28] bytes -> [N, 3, 28, 28] in [0, 1]: qatc's loader repeats grey as RGB.
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1).repeat(1, 3, 1, 1)
    return x, torch.from_numpy(labels.astype(np.int64))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--train", type=int, default=10000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--data", default=os.environ.get(
        "QATC_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    x_train, y_train = split(args.data, "train", args.train)
    x_test, y_test = split(args.data, "t10k", args.test)
    net = torchvision.models.resnet18(weights=None, num_classes=10)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    start = time.time()
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(x_train))
        for i in range(0, len(order), args.batch):
            b = order[i:i + args.batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x_train[b]), y_train[b])
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, {time.time() - start:.0f} s", flush=True)
    seconds = time.time() - start
    net.eval()
    with torch.no_grad():
        predicted = torch.cat([net(x_test[i:i + 256]).argmax(1) for i in range(0, len(x_test), 256)])
    correct = int((predicted == y_test).sum())
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    torch.save(state, os.path.join(args.out, "resnet18_fashion.pt"))
    save_file(state, os.path.join(args.out, "resnet18_fashion.safetensors"))
    result = {
        "model": "torchvision resnet18, num_classes=10",
        "train_images": len(x_train),
        "test_images": len(x_test),
        "epochs": args.epochs,
        "train_seconds": round(seconds, 1),
        "correct": correct,
        "accuracy": correct / len(x_test),
    }
    with open(os.path.join(args.out, "resnet18_fashion.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
