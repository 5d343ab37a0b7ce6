#!/usr/bin/env bash
# Training speed of the full EfficientNet-Lite0 + NormSoftmax step, `trainer bench` on each
# backend of this build beside PyTorch eager, alternating rounds on the same machine.
#   trainer/bench/vs_pytorch.sh [--image-size 128] [--batch 32] [--steps 10] [--rounds 2] [--device cpu|cuda]
# Needs: a release build (`cargo build --release -p trainer`; the LibTorch build, made with
# `trainer/scripts/libtorch-env.sh cargo build --profile libtorch -p trainer --features libtorch`,
# is picked up when present) and PyTorch in $TORCH_PYTHON
# (default: the venv that libtorch-env.sh installs).
set -euo pipefail
ROOT="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
SIZE=128 BATCH=32 STEPS=10 ROUNDS=2 DEVICE=cpu
while [ $# -gt 0 ]; do
    case "$1" in
        --image-size) SIZE=$2; shift 2 ;;
        --batch) BATCH=$2; shift 2 ;;
        --steps) STEPS=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --device) DEVICE=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
VENV="${LIBTORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/lookup/torch-venv}"
TORCH_PYTHON="${TORCH_PYTHON:-$VENV/bin/python}"
FLEX="$ROOT/target/release/trainer"
LIBTORCH="$ROOT/target/libtorch/trainer"
OUT="$(mktemp)"
args=(--image-size "$SIZE" --batch "$BATCH" --steps "$STEPS")
for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS" >&2
    if [ "$DEVICE" = cpu ]; then
        [ -x "$FLEX" ] && "$FLEX" bench --backend flex "${args[@]}" | tee -a "$OUT"
    fi
    if [ -x "$LIBTORCH" ]; then
        backend=libtorch; [ "$DEVICE" = cuda ] && backend=libtorch-cuda
        TORCH_LIB="$("$TORCH_PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
        LD_LIBRARY_PATH="$TORCH_LIB" "$LIBTORCH" bench --backend "$backend" "${args[@]}" | tee -a "$OUT"
    fi
    "$TORCH_PYTHON" "$ROOT/trainer/bench/pytorch_train.py" "${args[@]}" --device "$DEVICE" | tee -a "$OUT"
done
python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
best = {}
for row in rows:
    name = row.get("peer") or row["backend"]
    best[name] = max(best.get(name, 0), row["images_per_second"])
torch = best.get("pytorch")
print("| backend | images/s (best round) | vs PyTorch |")
print("|---|---|---|")
for name, ips in best.items():
    ratio = f"{ips / torch:.2f}x" if torch else "-"
    print(f"| {name} | {ips:.1f} | {ratio} |")
PY
rm -f "$OUT"
