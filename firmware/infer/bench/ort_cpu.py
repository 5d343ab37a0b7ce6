#!/usr/bin/env python3
"""The CPU peer of `lookupd bench-model --backend cpu`: onnxruntime on the same model, batch and
threads, median milliseconds per batch, as one JSON line. onnxruntime is a comparison only,
never a dependency of the product (pip install onnxruntime numpy).
    python3 ort_cpu.py MODEL.onnx --batch 1 --threads 2 --iters 30
"""
import argparse
import json
import statistics
import time

import numpy as np
import onnxruntime as ort

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--batch", type=int, default=1)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--iters", type=int, default=20)
args = ap.parse_args()
opts = ort.SessionOptions()
opts.intra_op_num_threads = args.threads
opts.inter_op_num_threads = 1
sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
inp = sess.get_inputs()[0]
shape = [args.batch] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
x = np.random.default_rng(0).uniform(-2, 2, shape).astype(np.float32)
for _ in range(2):
    sess.run(None, {inp.name: x})
times = []
for _ in range(args.iters):
    t = time.perf_counter()
    sess.run(None, {inp.name: x})
    times.append((time.perf_counter() - t) * 1e3)
ms = statistics.median(times)
print(json.dumps({"peer": f"onnxruntime {ort.__version__}", "batch": args.batch,
                  "threads": args.threads, "ms_per_batch": ms,
                  "img_per_s": args.batch * 1e3 / ms}))
