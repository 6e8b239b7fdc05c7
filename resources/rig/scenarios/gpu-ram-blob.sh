#!/bin/sh
# gpu-ram-blob ("guest RAM blob"): `vmm --device gpu=blob --display capture=/tmp/cap`, L2 runs
# rig.l2=kms-blob (stock virtio-gpu module + /bin/gpu-kms-blob: a blob in guest RAM painted with
# pattern variant 0, shown with KMS). The vmm (RUST_LOG=info) exports it through udmabuf and logs the
# dma-buf's fdinfo (`exp_name: udmabuf`).
# Facts only (tests/tests/rig_gpu_ram_blob.rs judges them, and compares every pixel of the frames
# with the pattern): the vmm's exit, KVM errors and L2 marker (rig_vmm_facts), the dma-bufs the vmm
# logged (rig_dmabuf_exports), and the captured PNGs (count; sent to L0 by rig_send_frames).
# FAIL only when the facts are incomplete: setup (no /dev/kvm, no /dev/udmabuf), the vmm killed by a
# signal, no result line from gpu-kms-blob, or captured frames that could not be sent.
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
[ -c /dev/udmabuf ] || rig_fail no-dev-udmabuf
cap=/tmp/cap
rm -rf "$cap"
mkdir -p "$cap"
export RUST_LOG="${RIG_RUST_LOG:-info}"

out=/tmp/vmm-gpu-ram-blob.out
rig_run_vmm 240 "$out" --device gpu=blob --display "capture=$cap" \
    --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
    --cmdline "$(rig_l2_cmdline kms-blob)" --memory 512M
rig_l2_forward "$out"
rig_vmm_facts "$out" l2
rig_dmabuf_exports "$out"
rig_send_frames "$cap"
if [ -z "$RIG_REASON" ] && [ "$RIG_FRAMES" != 0 ] && [ "$RIG_FRAMES_SENT" = 0 ]; then
    RIG_REASON=frames-not-sent
fi
rig_report frames="$RIG_FRAMES" frames_sent="$RIG_FRAMES_SENT" exports="$RIG_EXPORTS" \
    exports_udmabuf="$RIG_EXPORTS_UDMABUF"
