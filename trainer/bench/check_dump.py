"""Recomputes `trainer eval --dump DIR` metrics independently: faiss for the float (inner product
on unit vectors) and binary (Hamming on codes.npy) searches, numpy for Recall@K, R-precision and
MAP@R (pytorch-metric-learning's definitions), scikit-learn for k-means and NMI. Same-set
protocol (every image a query, itself excluded). Prints JSON shaped like `trainer eval --json`.
    python3 trainer/bench/check_dump.py DIR [K ...]
"""
import json
import sys

import faiss
import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score

CHUNK = 1000


def metrics(search, labels, ks):
    n = len(labels)
    counts = np.bincount(labels)
    depth = min(n, max(max(ks), int(counts.max())) + 1)
    recall = {k: 0 for k in ks}
    r_precision = average_precision = 0.0
    scored = 0
    for start in range(0, n, CHUNK):
        rows = np.arange(start, min(n, start + CHUNK))
        neighbours = search(rows, depth)
        for q, found in zip(rows, neighbours):
            found = found[found != q][: depth - 1]
            rel = labels[found] == labels[q]
            for k in ks:
                recall[k] += bool(rel[:k].any())
            r = counts[labels[q]] - 1
            if r == 0:
                continue
            top = rel[:r]
            r_precision += top.sum() / r
            precision_at_i = np.cumsum(top) / np.arange(1, r + 1)
            average_precision += (precision_at_i * top).sum() / r
            scored += 1
    return {
        "recall_at_k": {str(k): recall[k] / n for k in ks},
        "r_precision": r_precision / max(scored, 1),
        "map_at_r": average_precision / max(scored, 1),
    }


def main():
    folder, ks = sys.argv[1], [int(k) for k in sys.argv[2:]] or [1, 2, 4, 8]
    emb = np.load(f"{folder}/embeddings.npy").astype(np.float32)
    codes = np.ascontiguousarray(np.load(f"{folder}/codes.npy"))
    labels = np.load(f"{folder}/labels.npy")
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    flat = faiss.IndexFlatIP(unit.shape[1])
    flat.add(unit)
    binary = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    binary.add(codes)
    out = {
        "float": metrics(lambda rows, k: flat.search(unit[rows], k)[1], labels, ks),
        "binary": metrics(lambda rows, k: binary.search(codes[rows], k)[1], labels, ks),
    }
    k = len(np.unique(labels))
    signs = np.where(np.unpackbits(codes, axis=1, bitorder="little") > 0, 1.0, -1.0)
    for name, points in (("float", unit), ("binary", signs)):
        clusters = KMeans(n_clusters=k, n_init=3, random_state=0).fit_predict(points)
        out[name]["nmi"] = float(normalized_mutual_info_score(labels, clusters))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
