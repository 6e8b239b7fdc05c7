#!/bin/sh
# boot-smp: as boot.sh, with `--vcpus 2`. vmm boots the L2 kernel to its init
# (L2-MARKER), which reboots; vmm must exit 0 without a KVM error. Also reports l2_cpus, the CPUs L2's
# init saw (from its marker line); PASS also needs l2_cpus=2.
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
out=/tmp/vmm-boot-smp.out
rig_run_vmm 150 "$out" --vcpus 2 --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
    --cmdline "console=ttyS0 noxsave reboot=k panic=-1 quiet" --memory 512M

marker=0
boot_s=none
if t=$(rig_line_time 'L2-MARKER' "$out"); then
    marker=1
    boot_s=$(rig_sub "$t" "$RIG_VMM_T0")
fi
l2_cpus=$(sed -n 's/.*L2-MARKER: init reached cpus=\([0-9]*\).*/\1/p' "$out" | head -n1)
l2_cpus=${l2_cpus:-none}
kvm_error=0
# vmm reports KVM failures as "KVM error: ..." with the exit reason (KVM_EXIT_INTERNAL_ERROR, ...).
grep -Eqi 'kvm error|KVM_EXIT_(INTERNAL_ERROR|FAIL_ENTRY)|emulation failure|internal error' "$out" && kvm_error=1
lines=$(grep -c . "$out")
end=$(rig_uptime)
vmm_s=$(rig_sub "$end" "$RIG_VMM_T0")

set -- marker="$marker" l2_cpus="$l2_cpus" vmm_exit="$RIG_VMM_RC" kvm_error="$kvm_error" l2_boot_s="$boot_s" vmm_wall_s="$vmm_s" \
    lines="$lines"
if [ "$marker" = 1 ] && [ "$RIG_VMM_RC" = 0 ] && [ "$kvm_error" = 0 ] && [ "$l2_cpus" = 2 ]; then
    rig_result PASS "$@"
elif [ "$RIG_VMM_RC" = 137 ]; then
    rig_result FAIL reason=vmm-timeout "$@"
elif [ "$marker" = 0 ]; then
    rig_result FAIL reason=no-marker "$@"
elif [ "$kvm_error" = 1 ]; then
    rig_result FAIL reason=kvm-error "$@"
elif [ "$RIG_VMM_RC" != 0 ]; then
    rig_result FAIL reason=vmm-exit-nonzero "$@"
else
    rig_result FAIL reason=cpus-missing "$@"
fi
