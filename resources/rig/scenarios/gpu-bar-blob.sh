#!/bin/sh
# gpu-bar-blob ("BAR blob"): ivshmem bound to vfio-pci in L1, `vmm --device vfio=<BDF>,gpu=blob
# --display capture=/tmp/cap`; L2 runs rig.l2=gpu-user-blob (no virtio-gpu module: a user-space driver
# unbinds the device from virtio-pci), which paints blob 1 (6 out-of-order ranges of ivshmem BAR2,
# pattern variant 1) and blob 2 (guest RAM + BAR2, variant 2) and shows each.
# Facts only (tests/tests/rig_gpu_bar_blob.rs judges them): the vmm's exit, KVM errors and L2 marker
# (rig_vmm_facts), the dma-bufs the vmm (RUST_LOG=info) logged (rig_dmabuf_exports: count per
# exporter, the vfio_pci_core sizes), L2's blob_size, whether the vmm logged blob 2's CPU path, and
# the captured PNGs (count; sent to L0 by rig_send_frames).
# FAIL only when the facts are incomplete: setup (no /dev/kvm, bind), the vmm killed by a signal, no
# result line from gpu-user-blob, or captured frames that could not be sent.
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
rig_vmm_facts "$out" l2
rig_dmabuf_exports "$out"
blob_size=$(rig_l2_field "$out" gpu-user-blob blob_size) || blob_size=none
cpu2=0
grep -q 'blob 2 uses the CPU path' "$out" && cpu2=1
rig_send_frames "$cap"
if [ -z "$RIG_REASON" ] && [ "$RIG_FRAMES" != 0 ] && [ "$RIG_FRAMES_SENT" = 0 ]; then
    RIG_REASON=frames-not-sent
fi
rig_report bdf="$bdf" frames="$RIG_FRAMES" frames_sent="$RIG_FRAMES_SENT" exports="$RIG_EXPORTS" \
    exports_vfio="$RIG_EXPORTS_VFIO" vfio_sizes="${RIG_VFIO_SIZES:-none}" blob_size="$blob_size" \
    blob2_cpu_path="$cpu2"
