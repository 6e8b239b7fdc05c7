#!/bin/sh
# boot: vmm boots the L2 kernel to its init (L2-MARKER), which reboots.
# Facts only (tests/tests/rig_boot.rs judges them: exit 0, marker seen, no KVM error): the vmm's
# exit, KVM errors, L2 marker and boot time (rig_vmm_facts) and the number of output lines.
# FAIL only when the facts are incomplete: no /dev/kvm, or the vmm killed by a signal.
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
out=/tmp/vmm-boot.out
rig_run_vmm 150 "$out" --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
    --cmdline "console=ttyS0 noxsave reboot=k panic=-1 quiet" --memory 512M
rig_vmm_facts "$out"
rig_report lines="$(grep -c . "$out")"
