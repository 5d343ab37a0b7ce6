#!/bin/bash
# GPU check of the shared Lite0 fixture through the wgpu plan on a machine with an NVIDIA
# Vulkan driver (used for the H200 numbers in ../README.md). Prepare with prepare_gpu_check.sh
# (the stripped lookupd and the fixture in .devcheck/, the Vulkan loader .debs in .gl/; carry
# both). Writes to $OUT: commit its files under bench/results/<date>/ so that later sessions
# can read the per-kernel times. At most 8 files come back: it writes 6 (4 with `quick`), the
# `--profile` reports as lines of profiles.jsonl.
set -u
for f in .gl/*.deb; do [ -f "$f" ] && dpkg -x "$f" /; done; ldconfig
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
B=.devcheck/lookupd; M=.devcheck/efficientnet_lite0_imagenet.onnx
timeout 120 $B embed --model $M --input .devcheck/efficientnet_lite0_imagenet.input.npy \
  --out $OUT/gpu_out.npy --backend gpu --profile 2> $OUT/embed_profile.txt
echo "embed rc $?"; tail -1 $OUT/embed_profile.txt
python3 -c "import numpy as n; a=n.load('$OUT/gpu_out.npy'); r=n.load('.devcheck/efficientnet_lite0_imagenet.output.npy'); print('largest difference from the reference', abs(a-r).max(), 'largest value', abs(r).max())"
# --stream 8: also streams of 8 batches (two in flight: one copied in or out while the other
# runs), the throughput of a long input.
for b in 1 8 32; do
  timeout 120 $B bench-model --model $M --batch $b --size 224x224 --iters 30 --backend gpu \
    --stream 8 2>/dev/null | tee -a $OUT/bench.jsonl
done
P=$OUT/profiles.jsonl
timeout 120 $B bench-model --model $M --batch 1 --size 224x224 --iters 30 --backend gpu \
  --profile >> $P 2>/dev/null
timeout 120 $B bench-model --model $M --batch 32 --size 224x224 --iters 10 --backend gpu \
  --profile >> $P 2>/dev/null
# Split layers adding their sums within a workgroup (reduce.wgsl), then also each depthwise
# conv fused into the 1x1 conv after it (separable.wgsl), against the defaults above: batches
# 1, 8 and 32, and the kernels at batch 1.
for opts in "--split-sums workgroup" "--split-sums workgroup --fuse-depthwise" \
    "--fuse-depthwise"; do
  for b in 1 8 32; do
    timeout 120 $B bench-model --model $M --batch $b --size 224x224 --iters 30 --backend gpu \
      --stream 8 $opts 2>/dev/null | tee -a $OUT/bench.jsonl
  done
  timeout 120 $B bench-model --model $M --batch 1 --size 224x224 --iters 30 --backend gpu \
    $opts --profile >> $P 2>/dev/null
done
# `gpu_check.sh quick`: only the above (a kernel change checked in a minute of device time).
[ "${1:-}" = quick ] && exit 0
# The 1x1 tiles compared (auto above): narrow 32-channel and wide 64-channel everywhere.
for t in narrow wide; do
  for b in 1 32; do
    timeout 120 $B bench-model --model $M --batch $b --size 224x224 --iters 20 --backend gpu \
      --pointwise-tiles $t 2>/dev/null | tee -a $OUT/bench.jsonl
  done
done
# The split target at batch 1 (default 256 workgroups): fewer splits, fewer dispatches.
for w in 0 128 512 1024; do
  timeout 120 $B bench-model --model $M --batch 1 --size 224x224 --iters 30 --backend gpu \
    --split-workgroups $w 2>/dev/null | tee -a $OUT/bench.jsonl
done
# What a dispatch costs beside its work: 70 dispatches of almost nothing (make_chain.py).
C=firmware/infer/bench/dispatch_chain.onnx
timeout 120 $B bench-model --model $C --batch 1 --size 8x8 --iters 200 --backend gpu \
  2>/dev/null | tee -a $OUT/bench.jsonl
timeout 120 $B bench-model --model $C --batch 1 --size 8x8 --iters 50 --backend gpu --profile \
  >> $P 2>/dev/null
timeout 120 $B bench-model --model $M --batch 1 --size 224x224 --iters 20 --backend cpu \
  2>/dev/null | tee -a $OUT/bench.jsonl
# The peer on the same machine: PyTorch eager (timm's Lite0) at batches 1, 8 and 32.
timeout 150 python3 firmware/infer/bench/torch_peer.py --iters 50 2>&1 | tee $OUT/torch_peer.jsonl
