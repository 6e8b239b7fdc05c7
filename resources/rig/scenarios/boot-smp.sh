#!/bin/sh
# boot-smp: as boot.sh, with `--vcpus 2`. vmm boots the L2 kernel to its init (L2-MARKER), which
# reboots. Also reports l2_cpus, the CPUs L2's init saw (from its marker line).
# Facts only (tests/tests/rig_boot_smp.rs judges them: exit 0, marker seen, no KVM error, 2 CPUs):
# the vmm's exit, KVM errors, L2 marker and boot time (rig_vmm_facts), l2_cpus and the number of
# output lines.
# FAIL only when the facts are incomplete: no /dev/kvm, or the vmm killed by a signal.
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
out=/tmp/vmm-boot-smp.out
rig_run_vmm 150 "$out" --vcpus 2 --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
    --cmdline "console=ttyS0 noxsave reboot=k panic=-1 quiet" --memory 512M
rig_vmm_facts "$out"
l2_cpus=$(sed -n 's/.*L2-MARKER: init reached cpus=\([0-9]*\).*/\1/p' "$out" | head -n1)
rig_report l2_cpus="${l2_cpus:-none}" lines="$(grep -c . "$out")"
