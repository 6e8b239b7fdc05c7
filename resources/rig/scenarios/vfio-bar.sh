#!/bin/sh
# vfio-bar (BAR both ways): ivshmem (1af4:1110) bound to vfio-pci in L1 and passed to L2 with
# `vmm --device vfio=<BDF>`; L2 runs /bin/bar-pattern (rig.l2=bar-pattern), which prints an lspci-style
# view of the device, checks the words L0 wrote into the ivshmem file (tests/tests/rig_vfio_bar.rs
# fills it) and writes its own for L0 to check. L2's result lines are forwarded as RIG-DATA l2_* lines.
# PASS iff L2's bar-pattern passed, its lspci line was seen, and the vmm exited 0 without a KVM error.
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
rig_l2_check "$out"
lspci=0
grep -q 'bar-pattern: lspci: ' "$out" && lspci=1
[ -n "$RIG_REASON" ] || [ "$lspci" = 1 ] || RIG_REASON=no-lspci-line
# shellcheck disable=SC2086 # RIG_FIELDS is a list of k=v words
if [ -z "$RIG_REASON" ]; then
    rig_result PASS bdf="$bdf" lspci="$lspci" $RIG_FIELDS
else
    rig_result FAIL reason="$RIG_REASON" bdf="$bdf" lspci="$lspci" $RIG_FIELDS
fi
