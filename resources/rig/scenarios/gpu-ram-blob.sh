#!/bin/sh
# gpu-ram-blob ("guest RAM blob"): `vmm --device gpu=blob --display capture=/tmp/cap`, L2 runs
# rig.l2=kms-blob (stock virtio-gpu module + /bin/gpu-kms-blob: a blob in guest RAM painted with
# pattern variant 0, shown with KMS). The vmm (RUST_LOG=info) must export it through udmabuf and log
# the dma-buf's fdinfo (`exp_name: udmabuf`). The captured PNGs go to L0 over the
# console (rig_send_frames); tests/tests/rig_gpu_ram_blob.rs compares every pixel with the pattern.
# PASS iff kms-blob passed, the vmm exited 0 without a KVM error, >= 1 frame was captured and sent, and
# a dma-buf with exp_name udmabuf was logged.
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
rig_l2_check "$out"
rig_dmabuf_exports "$out"
rig_send_frames "$cap"
if [ -z "$RIG_REASON" ]; then
    if [ "$RIG_FRAMES" = 0 ]; then
        RIG_REASON=no-frames
    elif [ "$RIG_FRAMES_SENT" = 0 ]; then
        RIG_REASON=frames-not-sent
    elif [ "$RIG_EXPORTS_UDMABUF" = 0 ]; then
        RIG_REASON=no-udmabuf-fdinfo
    fi
fi
set -- frames="$RIG_FRAMES" exports_udmabuf="$RIG_EXPORTS_UDMABUF" exports="$RIG_EXPORTS"
# shellcheck disable=SC2086 # RIG_FIELDS is a list of k=v words
if [ -z "$RIG_REASON" ]; then
    rig_result PASS "$@" $RIG_FIELDS
else
    rig_result FAIL reason="$RIG_REASON" "$@" $RIG_FIELDS
fi
