"""Times faiss IndexBinaryFlat on the same codes and queries as `lookupd gallery bench`.

Usage: python3 faiss_bench.py DIR --k K --threads T --batch B
Prints one JSON object with ms_per_query (median over queries, or batch time / B).
faiss is the peer we compare against; it is never a dependency of the product.
"""
import argparse
import json
import os
import time

import faiss
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    codes = np.load(os.path.join(a.dir, "codes.npy"))
    queries = np.load(os.path.join(a.dir, "queries.npy"))
    faiss.omp_set_num_threads(a.threads)
    index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    index.add(codes)
    batches = [queries[i:i + a.batch] for i in range(0, len(queries) - a.batch + 1, a.batch)]
    for b in batches[:3]:
        index.search(b, a.k)
    ms = []
    for _ in range(a.rounds):
        for b in batches:
            t = time.perf_counter()
            index.search(b, a.k)
            ms.append((time.perf_counter() - t) * 1e3 / a.batch)
    ms.sort()
    print(json.dumps({
        "peer": f"faiss {faiss.__version__} IndexBinaryFlat",
        "ms_per_query": ms[len(ms) // 2],
        "threads": a.threads, "batch": a.batch, "k": a.k,
        "items": int(codes.shape[0]), "bits": int(codes.shape[1] * 8),
    }))


if __name__ == "__main__":
    main()
