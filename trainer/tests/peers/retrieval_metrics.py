#!/usr/bin/env python3
"""Independent peer of trainer::metrics: brute-force retrieval metrics with numpy, NMI with sklearn.

Usage: retrieval_metrics.py DIR K [K ...]

DIR holds embeddings.npy (float32, n x d), labels.npy (int64, n), clusters.npy (int64, n:
cluster ids assigned elsewhere) and, for the query/gallery protocol, queries.npy and gallery.npy
(int64 row indices); without them every row is a query against all the others, itself excluded.

Prints JSON:
  {"float": M, "binary": M, "nmi_of_given_clusters": x}
  M = {"recall_at_k": {"K": r}, "r_precision": r, "map_at_r": r, "kmeans_nmi": x}

Orders: float by (cosine similarity descending, row), binary by (Hamming distance between the
sign bits, value > 0, ascending, row). R-precision and MAP@R per pytorch-metric-learning
(queries with R = 0 left out). kmeans_nmi runs sklearn's KMeans (k = distinct query labels) on the
queries' L2-normalised embeddings or sign vectors in {-1, +1}.
"""
import json
import os
import sys

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score


def scores(order_keys, q_rows, db_rows, labels, ks, same_set):
    """order_keys(q) -> (primary key array over db_rows, ascending = nearer)."""
    recall_hits = {k: 0 for k in ks}
    r_precisions, average_precisions = [], []
    for qi, q in enumerate(q_rows):
        primary = order_keys(qi)
        # lexsort sorts by the last key first: primary, then row index.
        order = np.lexsort((db_rows, primary))
        rows = db_rows[order]
        if same_set:
            rows = rows[rows != q]
        rel = labels[rows] == labels[q]
        for k in ks:
            if rel[:k].any():
                recall_hits[k] += 1
        r = int(rel.sum())
        if r == 0:
            continue
        top = rel[:r].astype(np.float64)
        precision_at_i = np.cumsum(top) / np.arange(1, r + 1)
        r_precisions.append(top.sum() / r)
        average_precisions.append((precision_at_i * top).sum() / r)
    nq = len(q_rows)
    mean = lambda xs: float(np.mean(xs)) if xs else 0.0
    return {
        "recall_at_k": {str(k): recall_hits[k] / nq for k in ks},
        "r_precision": mean(r_precisions),
        "map_at_r": mean(average_precisions),
    }


def kmeans_nmi(points, labels):
    k = len(np.unique(labels))
    if k == 1:
        return 1.0
    clusters = KMeans(n_clusters=k, n_init=1, random_state=0).fit_predict(points)
    return float(normalized_mutual_info_score(labels, clusters))


def main():
    folder, ks = sys.argv[1], [int(k) for k in sys.argv[2:]]
    emb = np.load(os.path.join(folder, "embeddings.npy")).astype(np.float64)
    labels = np.load(os.path.join(folder, "labels.npy"))
    clusters = np.load(os.path.join(folder, "clusters.npy"))
    n = emb.shape[0]
    qpath = os.path.join(folder, "queries.npy")
    if os.path.exists(qpath):
        q_rows = np.load(qpath).astype(np.int64)
        db_rows = np.load(os.path.join(folder, "gallery.npy")).astype(np.int64)
        same_set = False
    else:
        q_rows = db_rows = np.arange(n, dtype=np.int64)
        same_set = True

    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    unit = np.where(norms > 0, emb / np.where(norms > 0, norms, 1), 0.0)
    sims = unit[q_rows] @ unit[db_rows].T
    bits = emb > 0
    hamming = (bits[q_rows][:, None, :] != bits[db_rows][None, :, :]).sum(axis=2)
    signs = np.where(bits, 1.0, -1.0)

    q_labels = labels[q_rows]
    out = {
        "float": scores(lambda qi: -sims[qi], q_rows, db_rows, labels, ks, same_set),
        "binary": scores(lambda qi: hamming[qi], q_rows, db_rows, labels, ks, same_set),
        "nmi_of_given_clusters": float(normalized_mutual_info_score(labels, clusters)),
    }
    out["float"]["kmeans_nmi"] = kmeans_nmi(unit[q_rows], q_labels)
    out["binary"]["kmeans_nmi"] = kmeans_nmi(signs[q_rows], q_labels)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
