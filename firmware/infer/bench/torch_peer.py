#!/usr/bin/env python3
"""The GPU peer of `lookupd bench-model --backend gpu`: PyTorch's EfficientNet-Lite0 (timm, random
weights: speed only) at 224x224, fp32, on the same machine, one JSON line per measurement.
PyTorch and timm are a comparison only, never dependencies of the product.
    python3 torch_peer.py --iters 50
Each line gives the median milliseconds per batch:
- "e2e": the input copied from host memory, the forward pass, the output copied back (what
  `bench-model` times: upload + run + read-back);
- "device": input already on the GPU, synchronised after the forward pass;
- "graph": a CUDA graph replay of the forward pass (input on the GPU), batch 1 only.
"""
import argparse
import json
import statistics
import time

import numpy as np
import timm
import torch

ap = argparse.ArgumentParser()
ap.add_argument("--iters", type=int, default=50)
ap.add_argument("--batches", default="1,8,32")
args = ap.parse_args()
torch.backends.cudnn.benchmark = False
model = timm.create_model("efficientnet_lite0", pretrained=False).cuda().eval()
name = torch.cuda.get_device_name(0)


def median_ms(step, iters):
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def report(batch, mode, ms, tf32):
    print(json.dumps({"peer": f"pytorch {torch.__version__} eager", "device": name,
                      "batch": batch, "mode": mode, "tf32": tf32, "ms_per_batch": ms,
                      "img_per_s": batch * 1e3 / ms}), flush=True)


with torch.inference_mode():
    for tf32 in (True, False):
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for batch in [int(b) for b in args.batches.split(",")]:
            host = np.random.default_rng(0).uniform(-2, 2, (batch, 3, 224, 224)).astype(
                np.float32)
            x = torch.from_numpy(host).cuda()
            report(batch, "e2e", median_ms(
                lambda: model(torch.from_numpy(host).cuda()).cpu(), args.iters), tf32)
            report(batch, "device", median_ms(lambda: model(x), args.iters), tf32)
            if batch == 1:
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(3):
                        model(x)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    y = model(x)
                report(batch, "graph", median_ms(graph.replay, args.iters), tf32)
                del y
