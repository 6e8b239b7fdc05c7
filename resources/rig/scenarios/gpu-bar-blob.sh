#!/bin/sh
# gpu-bar-blob ("BAR blob"): ivshmem bound to vfio-pci in L1, `vmm --device
# vfio=<BDF>,gpu=blob --display capture=/tmp/cap`; L2 runs rig.l2=gpu-user-blob (no virtio-gpu module:
# a user-space driver unbinds the device from virtio-pci), which paints blob 1 (6 out-of-order ranges of
# ivshmem BAR2, pattern variant 1) and blob 2 (guest RAM + BAR2, variant 2) and shows each.
# The vmm (RUST_LOG=info) must export blob 1 as ONE VFIO dma-buf (fdinfo exp_name vfio_pci_core, size =
# the blob) and show blob 2 through the CPU path. Captured PNGs go to L0 (rig_send_frames);
# tests/tests/rig_gpu_bar_blob.rs compares pixels and the ivshmem file.
# PASS iff gpu-user-blob passed, the vmm exited 0 without a KVM error, exactly one vfio_pci_core dma-buf
# of blob_size bytes was logged, blob 2's CPU path was logged, and >= 1 frame was captured and sent.
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
bdf=$(rig_bind_vfio 1af4 1110) || rig_fail vfio-bind-failed
group=$(rig_vfio_group "$bdf") || rig_fail no-iommu-group bdf="$bdf"
[ -c "$group" ] || rig_fail no-vfio-group-node bdf="$bdf" vfio_group="$group"
rig_data bdf="$bdf" vfio_group="$group"
cap=/tmp/cap
rm -rf "$cap"
mkdir -p "$cap"
export RUST_LOG="${RIG_RUST_LOG:-info}"

out=/tmp/vmm-gpu-bar-blob.out
rig_run_vmm 240 "$out" --device "vfio=$bdf,gpu=blob" --display "capture=$cap" \
    --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
    --cmdline "$(rig_l2_cmdline gpu-user-blob)" --memory 512M
rig_l2_forward "$out"
rig_l2_check "$out"
rig_dmabuf_exports "$out"
blob_size=$(rig_l2_field "$out" gpu-user-blob blob_size) || blob_size=none
cpu2=0
grep -q 'blob 2 uses the CPU path' "$out" && cpu2=1
rig_send_frames "$cap"
if [ -z "$RIG_REASON" ]; then
    if [ "$RIG_EXPORTS_VFIO" != 1 ]; then
        RIG_REASON=vfio-dmabuf-count
    elif [ "$RIG_VFIO_SIZES" != "$blob_size" ]; then
        RIG_REASON=vfio-dmabuf-size
    elif [ "$cpu2" != 1 ]; then
        RIG_REASON=blob2-not-cpu-path
    elif [ "$RIG_FRAMES" = 0 ]; then
        RIG_REASON=no-frames
    elif [ "$RIG_FRAMES_SENT" = 0 ]; then
        RIG_REASON=frames-not-sent
    fi
fi
set -- bdf="$bdf" frames="$RIG_FRAMES" exports_vfio="$RIG_EXPORTS_VFIO" vfio_sizes="${RIG_VFIO_SIZES:-none}" \
    blob_size="$blob_size" blob2_cpu_path="$cpu2" exports="$RIG_EXPORTS"
# shellcheck disable=SC2086 # RIG_FIELDS is a list of k=v words
if [ -z "$RIG_REASON" ]; then
    rig_result PASS "$@" $RIG_FIELDS
else
    rig_result FAIL reason="$RIG_REASON" "$@" $RIG_FIELDS
fi
