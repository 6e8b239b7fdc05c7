#!/bin/sh
# vm-power: five vmm runs in one L1 boot, one per way the VM's life ends through ACPI and signals:
#   poweroff: L2 runs `poweroff -f` (rig.power=poweroff): ACPI S5 through the FADT's sleep control
#             register;
#   reboot:   reboot=a, L2's init reboots through the FADT's reset register;
#   acpid:    L2 loads the ACPI button driver and evdev and runs busybox's acpid, whose power button
#             action powers off; once L2 says it is ready, SIGTERM to the vmm;
#   ignore:   L2 has no driver for the power button; SIGTERM, with --shutdown-timeout 3;
#   twice:    as ignore with the default timeout; SIGINT (stdin is not a terminal), and SIGINT again
#             1 s later.
# Facts only (tests/tests/rig_vm_power.rs judges them): per run <case>_exit, <case>_marker,
# <case>_kvm_error, <case>_line (1 if the vmm's exit summary or log names the outcome); acpid_ready
# (L2's module/button state), acpid_pressed (1 if L2 logged acpid's action), and for the signalled
# runs <case>_stop_s (L1 seconds from the first signal to the vmm's exit). RIG-DATA case=<case>
# lines carry each run's rig_vmm_facts.
# FAIL only when the facts are incomplete: no /dev/kvm, or a vmm killed by a signal or timeout.
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
base="console=ttyS0 noxsave panic=-1 quiet"
fields=""
reason=""

# signal_when_ready OUT SIGNAL [SECOND] -> waits (up to 120 s) for "L2-POWER: ready" in OUT, sends
# SIGNAL to the vmm and, with SECOND, SIGNAL again 1 s later; prints the uptime of the first signal.
signal_when_ready() {
    local out=$1 sig=$2 i=0 pid t
    while ! grep -q 'L2-POWER: ready' "$out" 2>/dev/null; do
        i=$((i + 1))
        [ "$i" -le 1200 ] || return 1
        sleep 0.1
    done
    pid=$(pidof vmm) || return 1
    t=$(rig_uptime)
    kill "-$sig" "$pid"
    if [ -n "$3" ]; then
        sleep 1
        kill "-$sig" "$pid" 2>/dev/null
    fi
    echo "$t"
}

for case in poweroff reboot acpid ignore twice; do
    extra=""
    sig=""
    second=""
    case "$case" in
        poweroff)
            cmdline="$base reboot=k rig.l2=power rig.power=poweroff"
            line="vmm: guest powered off"
            ;;
        reboot)
            cmdline="$base reboot=a"
            line="vmm: the guest wrote the ACPI reset register"
            ;;
        acpid)
            cmdline="$base reboot=k rig.l2=power rig.power=acpid"
            line="vmm: guest powered off"
            sig=TERM
            ;;
        ignore)
            cmdline="$base reboot=k rig.l2=power rig.power=ignore"
            extra="--shutdown-timeout 3"
            line="vmm: stopped: the guest did not power off within 3 s of SIGTERM"
            sig=TERM
            ;;
        twice)
            cmdline="$base reboot=k rig.l2=power rig.power=ignore"
            line="vmm: stopped on a second SIGINT"
            sig=INT
            second=1
            ;;
    esac
    out=/tmp/vmm-vm-power-$case.out
    t_sig=""
    if [ -z "$sig" ]; then
        # shellcheck disable=SC2086 # extra is a list of words
        rig_run_vmm 150 "$out" --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
            --cmdline "$cmdline" --memory 512M $extra
    else
        # The vmm runs in the background while this shell signals it; its exit code comes from
        # the RIG-VMM-EXIT line rig_run_vmm writes to OUT.
        : >"$out"
        RIG_VMM_T0=$(rig_uptime)
        RIG_VMM_SECS=150
        # shellcheck disable=SC2086 # extra is a list of words
        rig_run_vmm 150 "$out" --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
            --cmdline "$cmdline" --memory 512M $extra &
        t_sig=$(signal_when_ready "$out" "$sig" "$second") || t_sig=""
        wait
        rig_vmm_rc "$out"
    fi
    rig_vmm_facts "$out"
    # shellcheck disable=SC2086 # RIG_FIELDS is a list of k=v words
    rig_data case="$case" $RIG_FIELDS
    [ -n "$reason" ] || reason=$RIG_REASON
    has_line=0
    grep -qF "$line" "$out" && has_line=1
    fields="$fields ${case}_exit=$RIG_VMM_RC ${case}_marker=$(grep -c 'L2-MARKER' "$out")"
    fields="$fields ${case}_kvm_error=$(rig_kvm_error "$out") ${case}_line=$has_line"
    if [ -n "$sig" ]; then
        stop_s=none
        if [ -n "$t_sig" ] && t_end=$(rig_line_time 'RIG-VMM-EXIT' "$out"); then
            stop_s=$(rig_sub "$t_end" "$t_sig")
        fi
        fields="$fields ${case}_stop_s=$stop_s"
    fi
    if [ "$case" = acpid ]; then
        ready=$(sed -n 's/.*L2-POWER: ready mode=acpid \(loaded=[01] button=[01]\).*/\1/p' "$out" | head -n1)
        pressed=0
        grep -q 'L2-POWER: acpid: power button pressed' "$out" && pressed=1
        fields="$fields acpid_ready=$(rig_word "${ready:-none}") acpid_pressed=$pressed"
    fi
done
RIG_REASON=$reason
RIG_FIELDS=$fields
rig_report
