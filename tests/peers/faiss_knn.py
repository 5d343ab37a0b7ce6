"""The peer's answer: exact k-NN by faiss IndexBinaryFlat.

Usage: python3 faiss_knn.py DIR K
Reads DIR/codes.npy and DIR/queries.npy (uint8), writes DIR/faiss_D.npy (int32 distances)
and DIR/faiss_I.npy (int64 row numbers).
"""
import os
import sys

import faiss
import numpy as np

d, k = sys.argv[1], int(sys.argv[2])
codes = np.load(os.path.join(d, "codes.npy"))
queries = np.load(os.path.join(d, "queries.npy"))
index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
index.add(codes)
D, I = index.search(queries, k)
np.save(os.path.join(d, "faiss_D.npy"), D.astype(np.int32))
np.save(os.path.join(d, "faiss_I.npy"), I.astype(np.int64))
