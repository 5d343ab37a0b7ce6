"""The PyTorch peer of `trainer bench`: the same EfficientNet-Lite0 + NormSoftmax training step
(SGD momentum 0.9, weight decay 1e-4) on random images, in eager mode. Prints one JSON line.

Only a benchmark peer: PyTorch is never a dependency of the product.
"""
import argparse
import json
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

STAGES = [(3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
          (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1)]


def conv_bn(cin, cout, k, s, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout))


class MBConv(nn.Module):
    def __init__(self, cin, cout, k, s, e):
        super().__init__()
        hidden = cin * e
        self.expand = conv_bn(cin, hidden, 1, 1) if e != 1 else None
        self.depthwise = conv_bn(hidden, hidden, k, s, groups=hidden)
        self.project = conv_bn(hidden, cout, 1, 1)
        self.skip = s == 1 and cin == cout

    def forward(self, x):
        y = x
        if self.expand is not None:
            y = F.relu6(self.expand(y))
        y = F.relu6(self.depthwise(y))
        y = self.project(y)
        return y + x if self.skip else y


class Lite0Embedding(nn.Module):
    def __init__(self, dim):
        super().__init__()
        layers = [conv_bn(3, 32, 3, 2), nn.ReLU6()]
        cin = 32
        for k, s, e, cout, n in STAGES:
            for i in range(n):
                layers.append(MBConv(cin, cout, k, s if i == 0 else 1, e))
                cin = cout
        layers += [conv_bn(cin, 1280, 1, 1), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.embedding = nn.Linear(1280, dim, bias=False) if dim != 1280 else None

    def forward(self, x):
        x = self.features(x).mean(dim=(2, 3))
        x = F.layer_norm(x, x.shape[1:])
        if self.embedding is not None:
            x = self.embedding(x)
        return F.normalize(x, dim=1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = Lite0Embedding(1280).to(device).train()
    proxies = nn.Parameter(torch.empty(args.classes, 1280, device=device).uniform_(-1 / 1280 ** 0.5, 1 / 1280 ** 0.5))
    optimizer = torch.optim.SGD(list(model.parameters()) + [proxies], lr=0.01, momentum=0.9, weight_decay=1e-4)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    labels = torch.randint(0, args.classes, (args.batch,), device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = model(images) @ F.normalize(proxies, dim=1).t() / 0.05
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    print(json.dumps({
        "peer": "pytorch", "torch": torch.__version__, "device": args.device,
        "threads": torch.get_num_threads(), "image_size": args.image_size, "batch": args.batch,
        "steps": args.steps, "images_per_second": args.batch * args.steps / elapsed,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))


if __name__ == "__main__":
    main()
