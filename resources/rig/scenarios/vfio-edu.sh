#!/bin/sh
# vfio-edu (DMA; run.sh --edu): QEMU's edu device (1234:11e8) and ivshmem (1af4:1110), each in
# its own IOMMU group, bound to vfio-pci in L1 and both passed to L2 (`--device vfio=<edu>
# --device vfio=<ivshmem>`). L2 runs /bin/edu-dma (rig.l2=edu-dma): 4000 bytes RAM -> edu -> RAM through
# the emulated VT-d, compared (never 4096 bytes: QEMU 7.2's edu aborts L0). L2's result lines are
# forwarded as RIG-DATA l2_* lines.
# Facts only (tests/tests/rig_vfio_edu.rs judges them): both devices' IOMMU groups, the vmm's exit,
# KVM errors and L2 marker (rig_vmm_facts) and edu-dma's status.
# FAIL only when the facts are incomplete: setup (no /dev/kvm, no edu, not bound to vfio-pci, no
# IOMMU group), the vmm killed by a signal, or no result line from edu-dma.
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
rig_find_pci 1234 11e8 >/dev/null || rig_fail no-edu-device hint=run.sh_--edu
edu=$(rig_bind_vfio 1234 11e8) || rig_fail vfio-bind-failed device=edu
ivs=$(rig_bind_vfio 1af4 1110) || rig_fail vfio-bind-failed device=ivshmem
edu_group=$(rig_vfio_group "$edu") || rig_fail no-iommu-group bdf="$edu"
ivs_group=$(rig_vfio_group "$ivs") || rig_fail no-iommu-group bdf="$ivs"
rig_data edu_bdf="$edu" edu_group="$edu_group" ivshmem_bdf="$ivs" ivshmem_group="$ivs_group"

out=/tmp/vmm-vfio-edu.out
rig_run_vmm 200 "$out" --device "vfio=$edu" --device "vfio=$ivs" \
    --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
    --cmdline "$(rig_l2_cmdline edu-dma)" --memory 512M
rig_l2_forward "$out"
rig_vmm_facts "$out" l2
rig_report edu_bdf="$edu" ivshmem_bdf="$ivs" edu_group="$edu_group" ivshmem_group="$ivs_group"
