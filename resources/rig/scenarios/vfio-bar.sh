#!/bin/sh
# vfio-bar (BAR both ways): ivshmem (1af4:1110) bound to vfio-pci in L1 and passed to L2 with
# `vmm --device vfio=<BDF>`; L2 runs /bin/bar-pattern (rig.l2=bar-pattern), which prints an lspci-style
# view of the device, checks the words L0 wrote into the ivshmem file (tests/tests/rig_vfio_bar.rs
# fills it) and writes its own for L0 to check. L2's result lines are forwarded as RIG-DATA l2_* lines.
# Facts only (tests/tests/rig_vfio_bar.rs judges them): the vmm's exit, KVM errors and L2 marker
# (rig_vmm_facts), bar-pattern's status, and whether its lspci line was seen (lspci=0|1).
# FAIL only when the facts are incomplete: setup (no /dev/kvm, not bound to vfio-pci), the vmm killed
# by a signal, or no result line from bar-pattern.
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
bdf=$(rig_bind_vfio 1af4 1110) || rig_fail vfio-bind-failed
group=$(rig_vfio_group "$bdf") || rig_fail no-iommu-group bdf="$bdf"
[ -c "$group" ] || rig_fail no-vfio-group-node bdf="$bdf" vfio_group="$group"
rig_data bdf="$bdf" vfio_group="$group"

out=/tmp/vmm-vfio-bar.out
rig_run_vmm 200 "$out" --device "vfio=$bdf" --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
    --cmdline "$(rig_l2_cmdline bar-pattern)" --memory 512M
rig_l2_forward "$out"
rig_vmm_facts "$out" l2
lspci=0
grep -q 'bar-pattern: lspci: ' "$out" && lspci=1
rig_report bdf="$bdf" lspci="$lspci"
