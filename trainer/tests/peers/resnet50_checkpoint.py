"""Writes a torchvision ResNet-50 state dict in PyTorch's zip format (random weights, BatchNorm
statistics away from the identity) and its output on a random input, for the import test.
    python resnet50_checkpoint.py OUT_DIR
Needs torch and torchvision; only a test peer, never a dependency of the product.
"""
import sys

import numpy as np
import torch
import torchvision

out = sys.argv[1]
torch.manual_seed(0)
model = torchvision.models.resnet50()
for module in model.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
        module.running_mean.uniform_(-0.1, 0.1)
        module.running_var.uniform_(0.5, 1.5)
        module.weight.data.uniform_(0.5, 1.5)
        module.bias.data.uniform_(-0.1, 0.1)
model.eval()
torch.save(model.state_dict(), f"{out}/resnet50.pth")
x = torch.randn(1, 3, 64, 64)
np.save(f"{out}/input.npy", x.numpy())
with torch.no_grad():
    np.save(f"{out}/logits.npy", model(x).numpy())
