#!/usr/bin/env python3
"""Writes, into the folder given as first argument, torchvision networks (named by the
other arguments, e.g. resnet18 mobilenet_v2 mobilenet_v3_small) with random weights (no
download): each state_dict as `torch.save` writes it (<name>.pt) and as safetensors
(<name>.safetensors), and an input batch at 64x64 with the logits torchvision computes
in eval mode (<name>.io.safetensors). Used by tests/zoo.rs with the cache venv's Python.
"""
import os
import sys

import torch
import torchvision
from safetensors.torch import save_file


def main(out, names):
    os.makedirs(out, exist_ok=True)
    for name in names:
        torch.manual_seed(11)
        net = getattr(torchvision.models, name)(weights=None)
        # Batch norm as after training (fresh ones are the identity).
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        net.eval()
        x = torch.rand(2, 3, 64, 64)
        with torch.no_grad():
            logits = net(x)
        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        torch.save(state, os.path.join(out, name + ".pt"))
        save_file(state, os.path.join(out, name + ".safetensors"))
        save_file({"input": x.contiguous(), "logits": logits.contiguous()},
                  os.path.join(out, name + ".io.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
