#!/usr/bin/env bash
# The demo: the "BAR blob" case (rig scenario gpu-bar-blob) in the nested rig (QEMU/TCG -> Linux L1
# with KVM and VFIO -> our vmm -> Linux L2). L1 passes the ivshmem device through to L2 with
# `vmm --device vfio=<BDF>,gpu=blob --display capture=...`; L2's user-space virtio-gpu driver paints a
# blob into six out-of-order ranges of the passed-through BAR and shows it (exported zero-copy as one
# VFIO dma-buf), then a blob spanning guest RAM and the BAR (CPU path). Shows the console, then saves
# the captured PNGs under target/rig/demo/. Installs what it needs first; downloads are cached under
# target/. (Pixel-by-pixel and ivshmem-file checks:
# cargo test -p rig-tests --features rig --test rig_gpu_bar_blob.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash resources/rig/setup.sh
bash resources/rig/build.sh
status=0
bash resources/rig/run.sh gpu-bar-blob || status=$?
echo
rm -f target/rig/demo/gpu-bar-blob-frame-*.png
bash resources/rig/extract-files.sh target/rig/logs/gpu-bar-blob.log target/rig/demo gpu-bar-blob- || status=1
echo "console log: target/rig/logs/gpu-bar-blob.log"
echo "frames (blob 1 = BAR blob via VFIO dma-buf, blob 2 = RAM+BAR blob via the CPU path): target/rig/demo/"
exit "$status"
