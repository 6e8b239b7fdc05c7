#!/bin/sh
# vfio-notbound (the error a user sees): `vmm --device vfio=<BDF>` for ivshmem left WITHOUT
# vfio-pci (no driver) must refuse to start with a clear message. The message is reported as
# RIG-DATA vmm_error=<message, spaces as _>.
# PASS iff the vmm exits non-zero (not killed at the timeout) without booting L2, and its error
# message names the BDF and says what is wrong (mentions vfio-pci, driver or bound; not "not implemented").
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
bdf=$(rig_find_pci 1af4 1110) || rig_fail no-ivshmem
drv=none
[ -e "/sys/bus/pci/devices/$bdf/driver" ] && drv=$(basename "$(readlink "/sys/bus/pci/devices/$bdf/driver")")
[ "$drv" != vfio-pci ] || rig_fail already-bound bdf="$bdf"
rig_data bdf="$bdf" driver="$drv"

out=/tmp/vmm-vfio-notbound.out
rig_run_vmm 60 "$out" --device "vfio=$bdf" --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
    --cmdline "console=ttyS0 noxsave reboot=k panic=-1 quiet" --memory 512M
marker=0
grep -q 'L2-MARKER' "$out" && marker=1
err=$(rig_vmm_error "$out") || err=none
rig_data vmm_exit="$RIG_VMM_RC" vmm_error="$err"
set -- bdf="$bdf" driver="$drv" vmm_exit="$RIG_VMM_RC" marker="$marker" vmm_error="$err"
if [ "$RIG_VMM_RC" = 137 ]; then
    rig_result FAIL reason=vmm-timeout "$@"
elif [ "$RIG_VMM_RC" = 0 ] || [ "$marker" = 1 ]; then
    rig_result FAIL reason=vmm-started "$@"
elif [ "$err" = none ]; then
    rig_result FAIL reason=no-error-message "$@"
elif echo "$err" | grep -qi 'not.implemented'; then
    rig_result FAIL reason=vfio-not-implemented "$@"
elif ! echo "$err" | grep -qF "${bdf#0000:}"; then
    rig_result FAIL reason=message-without-bdf "$@"
elif ! echo "$err" | grep -Eqi 'vfio-pci|driver|bound'; then
    rig_result FAIL reason=message-unclear "$@"
else
    rig_result PASS "$@"
fi
