#!/usr/bin/env bash
# Sets up burn's LibTorch backend (cargo feature `libtorch`) and runs a command with it:
#   trainer/scripts/libtorch-env.sh cargo test -p trainer --features libtorch   (tests on LibTorch)
#   trainer/scripts/libtorch-env.sh cargo build --profile libtorch -p trainer --features libtorch
#   trainer/scripts/libtorch-env.sh target/libtorch/trainer train --backend libtorch ...
# burn-tch 0.22.1 builds against tch 0.22, which expects PyTorch 2.9.0: the PyPI wheel of that
# exact version is installed into a virtual environment (about 6.8 GB with its CUDA libraries,
# which also serve CUDA GPUs) on first use, and the build and the run are pointed at it.
# The same environment holds the trainer tests' peers (torchvision for the ResNet-50 checkpoint
# test, scikit-learn for the metrics test), which run with the `python3` of this PATH.
set -euo pipefail
TORCH_VERSION=2.9.0
TORCHVISION_VERSION=0.24.0
VENV="${LIBTORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/lookup/torch-venv}"
if ! "$VENV/bin/python" -c "import torch, torchvision, sklearn, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
    echo "installing torch==$TORCH_VERSION and the test peers into $VENV" >&2
    [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" numpy scikit-learn
fi
TORCH_LIB="$("$VENV/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LIBTORCH_USE_PYTORCH=1
# The tests pick their backend from TRAINER_BACKEND: under this script, LibTorch's CPU kernels
# unless told otherwise (TRAINER_BACKEND=libtorch-cuda, or flex).
export TRAINER_BACKEND="${TRAINER_BACKEND:-libtorch}"
export TORCH_PYTHON="${TORCH_PYTHON:-$VENV/bin/python}"
export PATH="$VENV/bin:$PATH"
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$@"
