"""Writes random (or clustered) binary codes as uint8 .npy files for gallery benchmarks and tests.

Usage: python3 make_codes.py OUT_DIR --items N --bits B --queries Q [--clustered] [--seed S]
Writes OUT_DIR/codes.npy (N x B/8) and OUT_DIR/queries.npy (Q x B/8).
"""
import argparse
import os

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--items", type=int, required=True)
    ap.add_argument("--bits", type=int, required=True)
    ap.add_argument("--queries", type=int, required=True)
    ap.add_argument("--clustered", action="store_true",
                    help="codes near a few centres (many near-ties), queries near the same centres")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    nb = a.bits // 8
    os.makedirs(a.out, exist_ok=True)

    def draw(n):
        if not a.clustered:
            return rng.integers(0, 256, size=(n, nb), dtype=np.uint8)
        centres = np.random.default_rng(a.seed + 1).integers(0, 256, size=(16, nb), dtype=np.uint8)
        c = centres[rng.integers(0, len(centres), size=n)]
        # Flip about 3% of the bits: many items share small distances, so ties are common.
        flips = np.packbits(rng.random((n, a.bits)) < 0.03, axis=1, bitorder="little")
        return c ^ flips

    np.save(os.path.join(a.out, "codes.npy"), draw(a.items))
    np.save(os.path.join(a.out, "queries.npy"), draw(a.queries))


if __name__ == "__main__":
    main()
