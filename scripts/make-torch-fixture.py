#!/usr/bin/env python3
"""Writes tests/fixtures/torch_cnn/: a small torch.nn CNN's state_dict as safetensors,
an input batch and the logits PyTorch computes for it (eval mode), so that a test can
prove the equivalent .qat model (model.qat beside them) loads the weights and gives the
same float logits. Run with a Python that has torch and safetensors:

    python3 -m pip install torch==2.13.0 safetensors
    python3 scripts/make-torch-fixture.py
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc1 = nn.Linear(8 * 7 * 7, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.head(x)


def main():
    torch.manual_seed(2024)
    net = Net()
    # Non-trivial batch-norm parameters and statistics, as after training.
    for bn in (net.bn1, net.bn2):
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.3, 0.3)
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    net.eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        logits = net(x)
    out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "torch_cnn")
    os.makedirs(out, exist_ok=True)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, os.path.join(out, "weights.safetensors"))
    save_file({"input": x.contiguous(), "logits": logits.contiguous()}, os.path.join(out, "io.safetensors"))
    print("wrote", sorted(state), "torch", torch.__version__)


if __name__ == "__main__":
    main()
