#!/bin/bash
# Prepares what gpu_check.sh needs on the GPU machine, here, from the repository root:
#   bash firmware/infer/bench/prepare_gpu_check.sh
# - .devcheck/: the stripped release lookupd and the shared Lite0 fixture (about 51 MB);
# - .gl/: the Vulkan loader and GL dispatch .debs for a machine that lacks them (amd64).
# Both folders are ignored through .git/info/exclude; name them in the device run's carry:
#   run(command="bash firmware/infer/bench/gpu_check.sh", carry=[".devcheck", ".gl"],
#       timeout_s=420)
# then commit the files it writes under firmware/infer/bench/results/<date>/.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
for d in /.gl/ /.devcheck/; do
  grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude
done
cargo build --release -p lookupd
mkdir -p .devcheck .gl
strip -o .devcheck/lookupd target/release/lookupd
fixtures=../shared/fixtures
cp "$fixtures"/efficientnet_lite0_imagenet.{onnx,input.npy,output.npy} .devcheck/
if ! ls .gl/*.deb >/dev/null 2>&1; then
  mkdir -p /tmp/amd64/partial
  o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
  apt-get "${o[@]}" update -qq
  (cd .gl && apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 \
    libgles2)
fi
du -sh .devcheck .gl
