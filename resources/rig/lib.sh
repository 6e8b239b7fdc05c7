# shellcheck shell=dash
# Rig helpers for scenarios, sourced from /rig/scenarios/*.sh inside L1 (busybox ash).
# Contract: /work/team/RIG-CONTRACT.md. Result lines go to stdout (the serial console).

RIG_SCENARIO=${RIG_SCENARIO:-unknown}

# rig_log MESSAGE... -> a human-readable progress line (not parsed by the harness).
rig_log() {
    echo "rig: $*"
}

# rig_uptime -> L1 uptime in seconds with 2 decimals.
rig_uptime() {
    local up _rest
    read -r up _rest </proc/uptime
    echo "$up"
}

# rig_result PASS|FAIL [key=value...] -> RIG-RESULT scenario=<name> status=<...> key=value...
rig_result() {
    local st=$1
    shift
    case "$st" in
        PASS | FAIL) ;;
        *) st=FAIL ;;
    esac
    echo "RIG-RESULT scenario=$RIG_SCENARIO status=$st${*:+ $*}"
}

# rig_data key=value... -> RIG-DATA scenario=<name> key=value...
rig_data() {
    echo "RIG-DATA scenario=$RIG_SCENARIO${*:+ $*}"
}

# rig_fail REASON [key=value...] -> prints a FAIL result and exits the scenario.
rig_fail() {
    local reason=$1
    shift
    rig_result FAIL "reason=$reason" "$@"
    exit 1
}

# rig_find_pci VENDOR DEVICE -> BDF of the first PCI device with these ids (hex, with or without 0x).
rig_find_pci() {
    local v d dev
    v=0x$(echo "${1#0x}" | tr 'A-F' 'a-f')
    d=0x$(echo "${2#0x}" | tr 'A-F' 'a-f')
    for dev in /sys/bus/pci/devices/*; do
        [ "$(cat "$dev/vendor")" = "$v" ] && [ "$(cat "$dev/device")" = "$d" ] && {
            echo "${dev##*/}"
            return 0
        }
    done
    return 1
}

# rig_bind_vfio VENDOR DEVICE -> binds the device to vfio-pci (driver_override + drivers_probe),
# echoes its BDF. Non-zero (with a rig: line on stderr) on failure.
rig_bind_vfio() {
    local bdf p drv
    bdf=$(rig_find_pci "$1" "$2") || {
        echo "rig: no PCI device $1:$2" >&2
        return 1
    }
    p=/sys/bus/pci/devices/$bdf
    echo vfio-pci >"$p/driver_override"
    if [ -e "$p/driver" ]; then
        drv=$(basename "$(readlink "$p/driver")")
        if [ "$drv" != vfio-pci ]; then
            echo "$bdf" >"$p/driver/unbind"
        fi
    fi
    if [ ! -e "$p/driver" ]; then
        echo "$bdf" >/sys/bus/pci/drivers_probe
    fi
    drv=$(basename "$(readlink "$p/driver" 2>/dev/null)" 2>/dev/null)
    if [ "$drv" != vfio-pci ]; then
        echo "rig: $bdf did not bind to vfio-pci (driver: ${drv:-none})" >&2
        return 1
    fi
    echo "$bdf"
}

# rig_vfio_group BDF -> /dev/vfio/<group> of that device.
rig_vfio_group() {
    local g
    g=$(readlink "/sys/bus/pci/devices/$1/iommu_group" 2>/dev/null) || {
        echo "rig: $1 has no IOMMU group" >&2
        return 1
    }
    echo "/dev/vfio/${g##*/}"
}

# rig_timestamp [FILE] -> copies stdin to stdout, each line prefixed with L1 uptime ("12.34 line");
# with FILE, also appends the stamped lines to FILE. Empty lines are dropped. Uses only shell
# builtins (no fork per line).
rig_timestamp() {
    local line up _rest
    while IFS= read -r line || [ -n "$line" ]; do
        read -r up _rest </proc/uptime
        line=${line%"$(printf '\r')"}
        [ -n "$line" ] || continue
        echo "$up $line"
        [ -z "$1" ] || echo "$up $line" >>"$1"
    done
}

# rig_run_vmm SECS OUTFILE VMM-ARGS... -> runs /bin/vmm under `timeout -s KILL SECS`, stdin /dev/null,
# echoes its output to the console as "L2| <uptime> <line>" and writes "<uptime> <line>" to OUTFILE.
# Sets RIG_VMM_RC (exit code; 137 = killed at the timeout), RIG_VMM_T0 (uptime at start).
# RIG_VMM=<path> runs another binary instead of /bin/vmm.
rig_run_vmm() {
    local secs=$1 out=$2 line
    shift 2
    : >"$out"
    RIG_VMM_T0=$(rig_uptime)
    rig_log "vmm $* (timeout ${secs}s) at ${RIG_VMM_T0}s"
    {
        timeout -s KILL "$secs" "${RIG_VMM:-/bin/vmm}" "$@" </dev/null 2>&1
        # Leading newline: the guest's last line may lack one (rig_timestamp drops empty lines).
        printf '\nRIG-VMM-EXIT %s\n' "$?"
    } | rig_timestamp "$out" | while IFS= read -r line; do echo "L2| $line"; done
    RIG_VMM_RC=$(sed -n 's/^[0-9.]* RIG-VMM-EXIT \([0-9]*\)$/\1/p' "$out" | tail -n1)
    RIG_VMM_RC=${RIG_VMM_RC:-255}
}

# rig_line_time PATTERN FILE -> uptime of the first line of a rig_timestamp FILE matching PATTERN
# (grep -E); non-zero if none.
rig_line_time() {
    local l
    l=$(grep -E -m1 -- "$1" "$2") || return 1
    echo "${l%% *}"
}

# rig_sub A B -> A - B with 2 decimals (A, B decimal seconds).
rig_sub() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", a - b }'
}
