#!/usr/bin/env python3
"""Writes, into the folder given as argument, an nn.Sequential-style CNN's state_dict
(features.0.weight, classifier.2.bias, ...) twice, as `torch.save` writes it
(weights.pt) and as safetensors (weights.safetensors), plus an input batch and the
logits PyTorch computes for it in eval mode (io.safetensors). Random weights, no
download. Used by tests/torch_weights.rs with the cache venv's Python (torch, safetensors).
"""
import os
import sys

import torch
import torch.nn as nn
from safetensors.torch import save_file


def main(out):
    torch.manual_seed(7)
    net = nn.Module()
    net.features = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
    )
    net.classifier = nn.Sequential(nn.Linear(8 * 7 * 7, 16), nn.ReLU(), nn.Linear(16, 10))
    for bn in (net.features[1], net.features[5]):
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.3, 0.3)
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    net.eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        logits = net.classifier(torch.flatten(net.features(x), 1))
    os.makedirs(out, exist_ok=True)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    torch.save(state, os.path.join(out, "weights.pt"))
    save_file(state, os.path.join(out, "weights.safetensors"))
    save_file({"input": x.contiguous(), "logits": logits.contiguous()}, os.path.join(out, "io.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
