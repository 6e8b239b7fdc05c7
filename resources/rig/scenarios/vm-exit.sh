#!/bin/sh
# vm-exit: three vmm runs in one L1 boot, one per way a guest ends, to check the vmm's exit status:
#   panic:  rig.l2=vm-exit rig.vmexit=panic with panic=-1 and reboot=k: L2 loads the stock pvpanic-pci
#           driver and panics (sysrq c); only the pvpanic device can tell this from a reset;
#   triple: reboot=t, L2's init reboots (a triple fault);
#   reset:  reboot=k, L2's init reboots (the i8042 reset).
# Facts only (tests/tests/rig_vm_exit.rs judges them): per run <case>_exit (the vmm's status),
# <case>_marker, <case>_kvm_error, <case>_line (1 if the vmm's exit summary names the outcome:
# "guest kernel panic (pvpanic event PVPANIC_PANICKED)", "guest triple fault", "guest reset"), and
# for panic the L2 driver state panic_loaded and panic_bound. RIG-DATA case=<case> lines carry each
# run's rig_vmm_facts.
# FAIL only when the facts are incomplete: no /dev/kvm, or a vmm killed by a signal or timeout.
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
base="console=ttyS0 noxsave panic=-1 quiet"
fields=""
reason=""
for case in panic triple reset; do
    case "$case" in
        panic)
            cmdline="$base reboot=k rig.l2=vm-exit rig.vmexit=panic"
            line="vmm: guest kernel panic (pvpanic event PVPANIC_PANICKED)"
            ;;
        triple)
            cmdline="$base reboot=t"
            line="vmm: guest triple fault"
            ;;
        reset)
            cmdline="$base reboot=k"
            line="vmm: guest reset"
            ;;
    esac
    out=/tmp/vmm-vm-exit-$case.out
    rig_run_vmm 150 "$out" --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
        --cmdline "$cmdline" --memory 512M
    rig_vmm_facts "$out"
    # shellcheck disable=SC2086 # RIG_FIELDS is a list of k=v words
    rig_data case="$case" $RIG_FIELDS
    [ -n "$reason" ] || reason=$RIG_REASON
    has_line=0
    grep -qF "$line" "$out" && has_line=1
    marker=$(grep -c 'L2-MARKER' "$out")
    fields="$fields ${case}_exit=$RIG_VMM_RC ${case}_marker=$marker ${case}_kvm_error=$(rig_kvm_error "$out") ${case}_line=$has_line"
    if [ "$case" = panic ]; then
        loaded=$(sed -n 's/.*L2-PVPANIC: loaded=\([01]\) .*/\1/p' "$out" | head -n1)
        bound=$(sed -n 's/.*L2-PVPANIC: loaded=[01] bound=\([01]\).*/\1/p' "$out" | head -n1)
        fields="$fields panic_loaded=${loaded:-none} panic_bound=${bound:-none}"
    fi
done
RIG_REASON=$reason
RIG_FIELDS=$fields
rig_report
