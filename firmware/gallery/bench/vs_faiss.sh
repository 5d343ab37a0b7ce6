#!/usr/bin/env bash
# Gallery search against its peer, faiss IndexBinaryFlat, on the same codes, in the same run.
#
#   bash firmware/gallery/bench/vs_faiss.sh [ITEMS] [BITS] [ROUNDS]     (default 1000000 2048 3)
#
# Times one query at a time and batches of 64, on 1 and 2 threads, alternating lookupd and faiss
# so both see the same machine state. Prints one JSON line per measurement, then a table.
set -euo pipefail
cd "$(dirname "$0")/../../.."
items=${1:-1000000}
bits=${2:-2048}
rounds=${3:-3}
k=10
data=target/bench-data/gallery-${items}x${bits}
here=firmware/gallery/bench

python3 -c "import numpy, faiss" 2>/dev/null || python3 -m pip install -q numpy faiss-cpu
cargo build --release -q -p lookupd
lookupd=target/release/lookupd
if [ ! -f "$data/g.gal" ]; then
  python3 $here/make_codes.py "$data" --items "$items" --bits "$bits" --queries 256
  LOOKUPD_LOG=warn $lookupd gallery import --codes "$data/codes.npy" --out "$data/g.gal" >/dev/null
fi

results=$(mktemp)
for threads in 1 2; do
  for batch in 1 64; do
    for _ in 1 2; do  # two alternations each: the machine's memory bandwidth drifts
      LOOKUPD_LOG=warn $lookupd gallery bench "$data/g.gal" --queries "$data/queries.npy" --k $k \
        --threads $threads --batch $batch --rounds "$rounds" | sed 's/^{/{"who":"lookupd",/' | tee -a "$results"
      python3 $here/faiss_bench.py "$data" --k $k --threads $threads --batch $batch --rounds "$rounds" \
        | sed 's/^{/{"who":"faiss",/' | tee -a "$results"
    done
  done
done
python3 - "$results" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
print("\n| threads | batch | lookupd ms/query | faiss ms/query | speed-up |")
print("|---|---|---|---|---|")
for t in (1, 2):
    for b in (1, 64):
        ours = statistics.median(r["ms_per_query"] for r in rows if r["who"] == "lookupd" and r["threads"] == t and r["batch"] == b)
        peer = statistics.median(r["ms_per_query"] for r in rows if r["who"] == "faiss" and r["threads"] == t and r["batch"] == b)
        print(f"| {t} | {b} | {ours:.2f} | {peer:.2f} | {peer / ours:.2f}x |")
PY
rm -f "$results"
