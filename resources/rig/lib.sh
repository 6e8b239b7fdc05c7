# shellcheck shell=dash
# Rig helpers for scenarios, sourced from /rig/scenarios/*.sh inside L1 (busybox ash).
# The result-line grammar and the helpers are described in resources/rig/README.md. Result lines go
# to stdout (the serial console).
#
# Scenarios gather facts and report them; the rig test (tests/tests/rig_<name>.rs) decides whether
# the facts are right. A scenario reports status=FAIL (rig_fail, or rig_report with RIG_REASON set)
# only when it could not gather its facts: the setup failed (no /dev/kvm, a device did not bind to
# vfio-pci, ...), the vmm was killed by a signal, the L2 program printed no result line, a file did
# not reach L0. status=PASS means "the facts are complete", not "the vmm behaved".

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
# Sets RIG_VMM_RC (exit code; 137 = killed at the timeout), RIG_VMM_T0 (uptime at start),
# RIG_VMM_SECS (SECS). RIG_VMM=<path> runs another binary instead of /bin/vmm.
rig_run_vmm() {
    local secs=$1 out=$2 line
    shift 2
    RIG_VMM_SECS=$secs
    : >"$out"
    RIG_VMM_T0=$(rig_uptime)
    rig_log "vmm $* (timeout ${secs}s) at ${RIG_VMM_T0}s"
    {
        timeout -s KILL "$secs" "${RIG_VMM:-/bin/vmm}" "$@" </dev/null 2>&1
        # Leading newline: the guest's last line may lack one (rig_timestamp drops empty lines).
        printf '\nRIG-VMM-EXIT %s\n' "$?"
    } | rig_timestamp "$out" | while IFS= read -r line; do echo "L2| $line"; done
    rig_vmm_rc "$out"
}

# rig_wait_for OUTFILE NAME PATTERN SECS -> 0 once a line of OUTFILE (a background rig_run_vmm's)
# matches PATTERN (grep); 1 after SECS, or as soon as the vmm has ended or an L2 program reported
# FAIL. Appends NAME_at=<L1 uptime, or none> to the scenario's `fields` variable.
rig_wait_for() {
    local out=$1 name=$2 pattern=$3 secs=$4 i=0
    while ! grep -q "$pattern" "$out"; do
        i=$((i + 1))
        if grep -q 'RIG-VMM-EXIT\|RIG-RESULT scenario=[^ ]* status=FAIL' "$out" ||
            [ "$i" -gt $((secs * 10)) ]; then
            fields="$fields ${name}_at=none"
            return 1
        fi
        sleep 0.1
    done
    fields="$fields ${name}_at=$(rig_uptime)"
}

# rig_vmm_rc OUTFILE -> sets RIG_VMM_RC from rig_run_vmm's OUTFILE (its RIG-VMM-EXIT line; 255 if
# there is none), e.g. after `wait` for an rig_run_vmm started in the background.
rig_vmm_rc() {
    RIG_VMM_RC=$(sed -n 's/^[0-9.]* RIG-VMM-EXIT \([0-9]*\)$/\1/p' "$1" | tail -n1)
    RIG_VMM_RC=${RIG_VMM_RC:-255}
}

# rig_sample_proc NAME FILE STOP [INTERVAL] -> run in the background: waits for a process named NAME
# (pidof; the first if several), then every INTERVAL seconds (default 0.5) appends "<uptime> <lines of /proc/PID/maps>
# <entries of /proc/PID/fd>" to FILE, until that process is gone or the file STOP exists.
rig_sample_proc() {
    local name=$1 file=$2 stop=$3 iv=${4:-0.5} pid="" maps fds up _rest
    : >"$file"
    while [ ! -e "$stop" ]; do
        if [ -z "$pid" ]; then
            pid=$(pidof "$name")
            pid=${pid%% *}
        fi
        if [ -n "$pid" ]; then
            [ -d "/proc/$pid" ] || break
            maps=$(wc -l <"/proc/$pid/maps" 2>/dev/null)
            fds=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)
            read -r up _rest </proc/uptime
            case "$maps" in
                '' | 0 | *[!0-9]*) ;; # the process exited while it was read
                *) [ "$fds" = 0 ] || echo "$up $maps $fds" >>"$file" ;;
            esac
        fi
        sleep "$iv"
    done
}

# rig_samples_summary FILE -> "samples maps_base maps_max fds_base fds_max" of a rig_sample_proc FILE
# (base: the first sample); "0 0 0 0 0" without samples.
rig_samples_summary() {
    awk 'NR == 1 { bm = $2; bf = $3 } { if ($2 > mm) mm = $2; if ($3 > mf) mf = $3; n++ }
        END { print n + 0, bm + 0, mm + 0, bf + 0, mf + 0 }' "$1"
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

# rig_word TEXT... -> TEXT as one result-line value: whitespace runs become '_', '=' is kept,
# cut to 200 characters ("-" if empty).
rig_word() {
    local w
    w=$(echo "$*" | tr -s '[:space:]' '_' | cut -c1-200)
    w=${w%_}
    echo "${w:--}"
}

# rig_vmm_error OUTFILE -> the vmm's own error message from a rig_run_vmm OUTFILE, as one word
# (rig_word): its first `vmm: error: ...` line, else clap's `error: ...` usage line; non-zero if none.
rig_vmm_error() {
    local l
    l=$(sed -n 's/^[0-9.]* vmm: error: //p' "$1" | head -n1)
    [ -n "$l" ] || l=$(sed -n 's/^[0-9.]* error: //p' "$1" | head -n1)
    [ -n "$l" ] || return 1
    rig_word "$l"
}

# rig_l2_forward OUTFILE -> re-emits the L2 guest's RIG-RESULT/RIG-DATA lines found in a rig_run_vmm
# OUTFILE as RIG-DATA lines of this scenario: `RIG-DATA scenario=<L1 name> l2_line=result|data
# l2_scenario=... l2_<key>=<value> ...` (every L2 key prefixed with l2_).
# Sets RIG_L2_STATUS (PASS, FAIL or none: no L2 result line), RIG_L2_REASON (or none) and
# RIG_L2_SCENARIO from L2's last RIG-RESULT line.
rig_l2_forward() {
    local line rest kind w fields
    RIG_L2_STATUS=none
    RIG_L2_REASON=none
    RIG_L2_SCENARIO=none
    set -f # values are words: no globbing of e.g. '*'
    while IFS= read -r line; do
        rest=${line#* } # drop rig_timestamp's uptime
        case "$rest" in
            "RIG-RESULT "*) kind=result ;;
            "RIG-DATA "*) kind=data ;;
            *) continue ;;
        esac
        rest=${rest#* }
        fields=""
        [ "$kind" = data ] || RIG_L2_REASON=none
        for w in $rest; do
            case "$w" in
                *=*) ;;
                *) continue ;; # not key=value: dropped (the L2| console line still has it)
            esac
            fields="$fields l2_$w"
            if [ "$kind" = result ]; then
                case "$w" in
                    status=*) RIG_L2_STATUS=${w#status=} ;;
                    reason=*) RIG_L2_REASON=${w#reason=} ;;
                    scenario=*) RIG_L2_SCENARIO=${w#scenario=} ;;
                esac
            fi
        done
        echo "RIG-DATA scenario=$RIG_SCENARIO l2_line=$kind$fields"
    done <"$1"
    set +f
}

# rig_kvm_error OUTFILE -> 1 if the vmm output shows a KVM error (the vmm's report format), else 0.
rig_kvm_error() {
    if grep -Eqi 'kvm error|KVM_EXIT_(INTERNAL_ERROR|FAIL_ENTRY)|emulation failure|internal error' "$1"; then
        echo 1
    else
        echo 0
    fi
}

# rig_send_file PATH NAME -> sends a file to L0 over the console, base64 between marker lines:
#   RIG-FILE-BEGIN scenario=<s> name=NAME size=<bytes> sha256=<hex>
#   <base64 lines>
#   RIG-FILE-END scenario=<s> name=NAME
# rig-tests decodes it into target/rig/logs/<scenario>/NAME and checks size and sha256.
# Files over RIG_SEND_MAX bytes (default 8 MiB) are not sent (a rig: line says so); non-zero then.
rig_send_file() {
    local f=$1 name=$2 size sum
    size=$(wc -c <"$f") || return 1
    if [ "$size" -gt "${RIG_SEND_MAX:-8388608}" ]; then
        rig_log "not sending $f: $size bytes > ${RIG_SEND_MAX:-8388608}"
        return 1
    fi
    sum=$(sha256sum "$f") || return 1
    echo "RIG-FILE-BEGIN scenario=$RIG_SCENARIO name=$name size=$size sha256=${sum%% *}"
    base64 "$f"
    echo "RIG-FILE-END scenario=$RIG_SCENARIO name=$name"
}

# rig_vmm_facts OUTFILE [l2] -> the facts of a rig_run_vmm run, judged by the test, not here.
# With `l2` (the run's L2 program reports through rig.l2), call rig_l2_forward OUTFILE first.
# Sets RIG_FIELDS (k=v words for the RIG-RESULT line: vmm_exit vmm_signal kvm_error marker
# l2_boot_s vmm_wall_s [vmm_error], with `l2` also l2_scenario l2_status [l2_reason]) and RIG_REASON,
# empty unless the facts are incomplete: vmm-timeout (killed at rig_run_vmm's timeout), vmm-signal
# (killed by another signal) or, with `l2`, l2-no-result (L2 printed no RIG-RESULT line).
# shellcheck disable=SC2034 # RIG_REASON and RIG_FIELDS are read by the scenarios
rig_vmm_facts() {
    local out=$1 marker=0 boot_s=none t err signal=0 wall
    if t=$(rig_line_time 'L2-MARKER' "$out"); then
        marker=1
        boot_s=$(rig_sub "$t" "$RIG_VMM_T0")
    fi
    err=$(rig_vmm_error "$out") || err=""
    wall=$(rig_sub "$(rig_uptime)" "$RIG_VMM_T0")
    RIG_REASON=""
    if [ "$RIG_VMM_RC" -gt 128 ]; then
        signal=$((RIG_VMM_RC - 128))
        # 137 at the timeout: the vmm outlived `timeout -s KILL`.
        if [ "$RIG_VMM_RC" = 137 ] && [ "${wall%.*}" -ge $((${RIG_VMM_SECS:-0} - 2)) ]; then
            RIG_REASON=vmm-timeout
        else
            RIG_REASON=vmm-signal
        fi
    fi
    RIG_FIELDS="vmm_exit=$RIG_VMM_RC vmm_signal=$signal kvm_error=$(rig_kvm_error "$out") marker=$marker"
    RIG_FIELDS="$RIG_FIELDS l2_boot_s=$boot_s vmm_wall_s=$wall"
    [ -z "$err" ] || RIG_FIELDS="$RIG_FIELDS vmm_error=$err"
    if [ "$2" = l2 ]; then
        RIG_FIELDS="$RIG_FIELDS l2_scenario=$RIG_L2_SCENARIO l2_status=$RIG_L2_STATUS"
        [ "$RIG_L2_REASON" = none ] || RIG_FIELDS="$RIG_FIELDS l2_reason=$RIG_L2_REASON"
        [ -n "$RIG_REASON" ] || [ "$RIG_L2_STATUS" != none ] || RIG_REASON=l2-no-result
    fi
}

# rig_report [key=value...] -> the scenario's RIG-RESULT line with the given fields and RIG_FIELDS:
# status=PASS if RIG_REASON is empty (the facts are complete), else status=FAIL reason=RIG_REASON.
rig_report() {
    set -f # values are words: no globbing of e.g. '*'
    # shellcheck disable=SC2086 # RIG_FIELDS is a list of k=v words
    if [ -z "$RIG_REASON" ]; then
        rig_result PASS "$@" $RIG_FIELDS
    else
        rig_result FAIL reason="$RIG_REASON" "$@" $RIG_FIELDS
    fi
    set +f
}

# rig_l2_cmdline PROGRAM -> the L2 kernel command line of the rig with rig.l2=PROGRAM.
rig_l2_cmdline() {
    echo "console=ttyS0 noxsave reboot=k panic=-1 quiet rig.l2=$1"
}

# rig_l2_kernel -> the L2 kernel to boot: /rig/l2/vmlinuz-rig (build-kernel.sh's, everything built
# in) when run.sh --l2-kernel rig put rig.l2kernel=rig on L1's command line, else Debian's
# /rig/l2/vmlinuz.
rig_l2_kernel() {
    local a
    for a in $(cat /proc/cmdline); do
        if [ "$a" = rig.l2kernel=rig ] && [ -f /rig/l2/vmlinuz-rig ]; then
            echo /rig/l2/vmlinuz-rig
            return 0
        fi
    done
    echo /rig/l2/vmlinuz
}

# rig_send_frames DIR -> sends DIR's frame-*.png to L0 (rig_send_file, names kept), in name order; with
# more than 8, the first 4 and the last 4. Prints RIG-DATA frames=<count> frames_sent=<n> frame_names=a,b..
# and sets RIG_FRAMES (count in DIR) and RIG_FRAMES_SENT.
# shellcheck disable=SC2034 # RIG_FRAMES* are read by the scenarios
rig_send_frames() {
    local dir=$1 n i f names=""
    set -- "$dir"/frame-*.png # in name order
    [ -e "$1" ] || set --
    n=$#
    RIG_FRAMES=$n
    RIG_FRAMES_SENT=0
    i=0
    for f in "$@"; do
        i=$((i + 1))
        if [ "$n" -gt 8 ] && [ "$i" -gt 4 ] && [ "$i" -le $((n - 4)) ]; then
            continue
        fi
        rig_send_file "$f" "${f##*/}" || continue
        RIG_FRAMES_SENT=$((RIG_FRAMES_SENT + 1))
        names="$names,${f##*/}"
    done
    names=${names#,}
    rig_data frames="$n" frames_sent="$RIG_FRAMES_SENT" frame_names="${names:-none}"
}

# rig_dmabuf_exports OUTFILE -> one `RIG-DATA export=<n> blob=<id> exp_name=<name> size=<bytes>` line per
# `dma-buf fdinfo` line the vmm logged (virtio-gpu logs one per export, at info level), then a summary
# `RIG-DATA exports=<n> exports_vfio=<n> exports_udmabuf=<n> exported_as_lines=<n>`. Sets RIG_EXPORTS,
# RIG_EXPORTS_VFIO, RIG_EXPORTS_UDMABUF, RIG_VFIO_SIZES (comma list of the vfio_pci_core sizes).
# shellcheck disable=SC2034 # RIG_EXPORTS* and RIG_VFIO_SIZES are read by the scenarios
rig_dmabuf_exports() {
    local out=$1 line blob exp size as_lines
    RIG_EXPORTS=0
    RIG_EXPORTS_VFIO=0
    RIG_EXPORTS_UDMABUF=0
    RIG_VFIO_SIZES=""
    grep 'dma-buf fdinfo' "$out" >/tmp/rig-fdinfo.lines
    while IFS= read -r line; do
        blob=$(echo "$line" | sed -n 's/.*blob \([0-9][0-9]*\).*/\1/p')
        exp=$(echo "$line" | sed -n 's/.*exp_name:[[:space:]]*\([A-Za-z0-9_]*\).*/\1/p')
        size=$(echo "$line" | sed -n 's/.*[^A-Za-z_]size:[[:space:]]*\([0-9][0-9]*\).*/\1/p')
        RIG_EXPORTS=$((RIG_EXPORTS + 1))
        case "$exp" in
            vfio_pci_core)
                RIG_EXPORTS_VFIO=$((RIG_EXPORTS_VFIO + 1))
                RIG_VFIO_SIZES="$RIG_VFIO_SIZES,${size:-none}"
                ;;
            udmabuf) RIG_EXPORTS_UDMABUF=$((RIG_EXPORTS_UDMABUF + 1)) ;;
        esac
        rig_data export="$RIG_EXPORTS" blob="${blob:-none}" exp_name="${exp:-none}" size="${size:-none}"
    done </tmp/rig-fdinfo.lines
    RIG_VFIO_SIZES=${RIG_VFIO_SIZES#,}
    as_lines=$(grep -c 'exported as' "$out")
    rig_data exports="$RIG_EXPORTS" exports_vfio="$RIG_EXPORTS_VFIO" exports_udmabuf="$RIG_EXPORTS_UDMABUF" \
        exported_as_lines="$as_lines"
}

# rig_l2_field OUTFILE PROGRAM KEY -> KEY's value in L2 program PROGRAM's last RIG-RESULT line in a
# rig_run_vmm OUTFILE; non-zero if absent.
rig_l2_field() {
    local l v
    l=$(grep "^[0-9.]* RIG-RESULT scenario=$2 " "$1" | tail -n1)
    v=$(echo " ${l#* } " | sed -n "s/.* $3=\([^ ]*\) .*/\1/p")
    [ -n "$v" ] || return 1
    echo "$v"
}

# L0's root in L1 (run.sh --l0-root): L1's init mounts it read-only at /l0 (virtio-9p; QEMU refuses
# writes too). rig_l0 runs L0's own programs (e.g. VNC clients installed by setup.sh) in a chroot of
# it, in L1's network namespace, so they reach servers in L1 on 127.0.0.1 or a unix socket.
# RIG_L0_SHARED is L1's directory that the chroot sees as /tmp: sockets, captures and logs go there.
RIG_L0_SHARED=/tmp/rig-shared

# rig_l0_repo -> L0's path of the checkout run.sh ran from (rig.l0repo=, an absolute path that is the
# same inside the chroot); non-zero without --l0-root.
rig_l0_repo() {
    local a
    for a in $(cat /proc/cmdline); do
        case "$a" in
            rig.l0repo=*)
                echo "${a#rig.l0repo=}"
                return 0
                ;;
        esac
    done
    return 1
}

# rig_l0_prepare -> makes /l0 a root to chroot into, once: L1's /proc, /sys and /dev (with a tmpfs
# /dev/shm) mounted over L0's, a tmpfs over /run and RIG_L0_SHARED bind-mounted over /tmp. These are
# mounts of L1's namespace on L0's directories; L0 itself is never written. Non-zero (with a rig:
# line on stderr) if /l0 is not mounted (no --l0-root) or a mount fails.
rig_l0_prepare() {
    [ ! -e /tmp/.rig-l0-prepared ] || return 0
    grep -q '^[^ ]* /l0 9p ' /proc/mounts || {
        echo "rig: L0's root is not mounted at /l0 (run.sh --l0-root)" >&2
        return 1
    }
    mkdir -p "$RIG_L0_SHARED" /dev/shm
    chmod 1777 "$RIG_L0_SHARED"
    mount -t proc proc /l0/proc &&
        mount -t sysfs sysfs /l0/sys &&
        mount -o bind /dev /l0/dev &&
        mount -t tmpfs tmpfs /l0/dev/shm &&
        mount -t tmpfs tmpfs /l0/run &&
        mount -o bind "$RIG_L0_SHARED" /l0/tmp || {
        echo "rig: cannot prepare the chroot /l0" >&2
        return 1
    }
    : >/tmp/.rig-l0-prepared
}

# rig_l0 [VAR=VALUE...] CMD [ARGS...] -> runs L0's CMD (looked up in L0's PATH) in the chroot /l0 with
# a clean environment (PATH, HOME=/tmp, TMPDIR=/tmp, LANG=C.UTF-8, PYTHONDONTWRITEBYTECODE=1) plus the
# leading VAR=VALUE words (env(1)'s syntax). Its /tmp is L1's RIG_L0_SHARED. Returns CMD's status,
# 127 if the chroot cannot be prepared.
rig_l0() {
    rig_l0_prepare || return 127
    chroot /l0 /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/tmp TMPDIR=/tmp \
        LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 "$@"
}

# Weston (run.sh --l0-root): weston-root.sh builds a Debian 13 root with weston 14 on L0
# (target/rig/weston-root); L1 sees it read-only at /l0<checkout>/target/rig/weston-root and runs
# weston and its clients in a chroot of it. RIG_WESTON_DIR, L1's directory bind-mounted at the
# root's /tmp, is weston's XDG_RUNTIME_DIR: its socket, log, protocol log and screenshots are there,
# so a program running directly in L1 (the vmm) reaches the compositor at RIG_WESTON_SOCKET.
RIG_WESTON_DIR=/tmp/rig-weston
RIG_WESTON_NAME=wayland-rig
RIG_WESTON_SOCKET=$RIG_WESTON_DIR/$RIG_WESTON_NAME
RIG_WESTON_LOG=$RIG_WESTON_DIR/weston.log
RIG_WESTON_PROTO=$RIG_WESTON_DIR/weston-protocol.log

# rig_weston_root -> L1's path of weston-root.sh's root (/l0<checkout>/target/rig/weston-root);
# non-zero (with a rig: line on stderr) without --l0-root or without the root.
rig_weston_root() {
    local repo r
    repo=$(rig_l0_repo) || {
        echo "rig: no rig.l0repo= (run.sh --l0-root)" >&2
        return 1
    }
    r=/l0$repo/target/rig/weston-root
    [ -x "$r/usr/bin/weston" ] || {
        echo "rig: no weston in $r (resources/rig/weston-root.sh)" >&2
        return 1
    }
    echo "$r"
}

# rig_weston_prepare -> mounts L1's /proc, /sys, /dev (with a tmpfs /dev/shm) and RIG_WESTON_DIR
# (created, mode 0700) over the weston root's, once; in L1's mount namespace only (L0 is never
# written). Sets RIG_WESTON_ROOT. Non-zero (with a rig: line on stderr) if a mount fails.
rig_weston_prepare() {
    RIG_WESTON_ROOT=$(rig_weston_root) || return 1
    [ ! -e /tmp/.rig-weston-prepared ] || return 0
    mkdir -p "$RIG_WESTON_DIR" /dev/shm
    chmod 700 "$RIG_WESTON_DIR"
    grep -q ' /dev/shm ' /proc/mounts || mount -t tmpfs tmpfs /dev/shm
    mount -t proc proc "$RIG_WESTON_ROOT/proc" &&
        mount -t sysfs sysfs "$RIG_WESTON_ROOT/sys" &&
        mount -o bind /dev "$RIG_WESTON_ROOT/dev" &&
        mount -o bind /dev/shm "$RIG_WESTON_ROOT/dev/shm" &&
        mount -t tmpfs tmpfs "$RIG_WESTON_ROOT/run" &&
        mount -o bind "$RIG_WESTON_DIR" "$RIG_WESTON_ROOT/tmp" || {
        echo "rig: cannot prepare the chroot $RIG_WESTON_ROOT" >&2
        return 1
    }
    : >/tmp/.rig-weston-prepared
}

# rig_weston_run [VAR=VALUE...] CMD [ARGS...] -> runs CMD of the weston root in a chroot of it with a
# clean environment: PATH, HOME=/tmp, XDG_RUNTIME_DIR=/tmp (the chroot's /tmp is RIG_WESTON_DIR),
# WAYLAND_DISPLAY=RIG_WESTON_NAME, LANG=C.UTF-8, plus the leading VAR=VALUE words. Returns CMD's
# status, 127 if the chroot cannot be prepared.
rig_weston_run() {
    local n=0 rest a i
    rig_weston_prepare || return 127
    for a in "$@"; do
        case "$a" in
            [A-Za-z_]*=*) n=$((n + 1)) ;;
            *) break ;;
        esac
    done
    rest=$(($# - n))
    # Reorder the words to VAR=VALUE... chroot ROOT CMD ARGS... (POSIX sh has no arrays).
    i=0
    while [ "$i" -lt "$n" ]; do
        set -- "$@" "$1"
        shift
        i=$((i + 1))
    done
    set -- "$@" chroot "$RIG_WESTON_ROOT"
    i=0
    while [ "$i" -lt "$rest" ]; do
        set -- "$@" "$1"
        shift
        i=$((i + 1))
    done
    set -- env -i PATH=/usr/bin:/usr/sbin:/bin:/sbin HOME=/tmp XDG_RUNTIME_DIR=/tmp \
        WAYLAND_DISPLAY="$RIG_WESTON_NAME" LANG=C.UTF-8 "$@"
    [ -z "${RIG_WESTON_TIMEOUT:-}" ] || set -- timeout -s KILL "$RIG_WESTON_TIMEOUT" "$@"
    [ -z "${RIG_WESTON_EXEC:-}" ] || exec "$@"
    "$@"
}

# rig_weston_spawn [VAR=VALUE...] CMD [ARGS...] -> rig_weston_run in the background, as a process
# that becomes CMD (exec through env and chroot): RIG_WESTON_SPAWNED is CMD's own pid (for kill and
# wait). Redirect its output as with any command.
rig_weston_spawn() {
    (RIG_WESTON_EXEC=1 rig_weston_run "$@") &
    RIG_WESTON_SPAWNED=$!
}

# rig_weston_version -> "weston=<v> weston_pkg=<v> mesa_pkg=<v> wayland_server_pkg=<v> pixman_pkg=<v>"
# (weston --version in the chroot and the root's package list), words for a RIG-DATA line.
rig_weston_version() {
    local v pkgs
    rig_weston_prepare || return 1
    v=$(rig_weston_run weston --version 2>&1 | sed -n 's/^weston \([^ ]*\).*/\1/p')
    pkgs=$RIG_WESTON_ROOT/rig-packages.txt
    echo "weston=${v:-none}" \
        "weston_pkg=$(awk '$1 == "weston" { print $2 }' "$pkgs")" \
        "mesa_pkg=$(awk '$1 == "mesa-libgallium" { print $2 }' "$pkgs")" \
        "wayland_server_pkg=$(awk '$1 == "libwayland-server0" { print $2 }' "$pkgs")" \
        "pixman_pkg=$(awk '$1 == "libpixman-1-0" { print $2 }' "$pkgs")"
}

# rig_weston_start WIDTHxHEIGHT [gl|pixman] -> starts weston in the background: headless backend,
# one WIDTHxHEIGHT output, the given renderer (default RIG_WESTON_RENDERER, else gl: Mesa's llvmpipe,
# no GPU; only the gl renderer offers zwp_linux_dmabuf_v1, pixman offers wl_shm only), --debug
# (weston_capture_v1 for rig_weston_screenshot, weston_debug_v1), the desktop shell configured by
# the root's /etc/rig-weston.ini (no panel, black background). WAYLAND_DEBUG=server: every request
# and event goes to RIG_WESTON_PROTO (`[ms] iface#id.request(args)`, events with ` -> `); weston's
# own log goes to RIG_WESTON_LOG. Waits up to RIG_WESTON_WAIT (default 180) s for the desktop shell's
# desktop_ready. Exports WAYLAND_DISPLAY=RIG_WESTON_SOCKET (an absolute path: libwayland clients in
# L1, e.g. the vmm, connect to it; XDG_RUNTIME_DIR=RIG_WESTON_DIR too). Sets RIG_WESTON_PID
# (weston's own pid, a child of this shell), RIG_WESTON_RENDERER and RIG_WESTON_START_S
# (seconds to desktop_ready). Prints `RIG-DATA ... weston=<v> ... renderer=<r> size=WxH
# start_s=<s>`. Non-zero (with a rig: line on stderr) if the root is missing or weston is not ready.
rig_weston_start() {
    local size=$1 w h t0 i=0 wait=${RIG_WESTON_WAIT:-180}
    RIG_WESTON_RENDERER=${2:-${RIG_WESTON_RENDERER:-gl}}
    w=${size%x*}
    h=${size#*x}
    rig_weston_prepare || return 1
    rm -f "$RIG_WESTON_SOCKET" "$RIG_WESTON_SOCKET.lock" "$RIG_WESTON_LOG" "$RIG_WESTON_PROTO"
    t0=$(rig_uptime)
    rig_weston_spawn WAYLAND_DEBUG=server weston --backend=headless --renderer="$RIG_WESTON_RENDERER" \
        --width="$w" --height="$h" --socket="$RIG_WESTON_NAME" --debug --idle-time=0 \
        --config=/etc/rig-weston.ini --log=/tmp/weston.log >"$RIG_WESTON_PROTO" 2>&1
    RIG_WESTON_PID=$RIG_WESTON_SPAWNED
    while ! grep -q 'desktop_ready' "$RIG_WESTON_PROTO" 2>/dev/null; do
        i=$((i + 1))
        if [ "$i" -gt $((wait * 10)) ] || ! kill -0 "$RIG_WESTON_PID" 2>/dev/null; then
            echo "rig: weston not ready after $(rig_sub "$(rig_uptime)" "$t0") s (log: $RIG_WESTON_LOG)" >&2
            tail -n 20 "$RIG_WESTON_LOG" >&2 2>/dev/null
            return 1
        fi
        sleep 0.1
    done
    RIG_WESTON_START_S=$(rig_sub "$(rig_uptime)" "$t0")
    export WAYLAND_DISPLAY="$RIG_WESTON_SOCKET" XDG_RUNTIME_DIR="$RIG_WESTON_DIR"
    # shellcheck disable=SC2046 # k=v words
    rig_data $(rig_weston_version) renderer="$RIG_WESTON_RENDERER" size="$size" \
        start_s="$RIG_WESTON_START_S" socket="$RIG_WESTON_SOCKET"
}

# rig_weston_screenshot OUT.png -> weston-screenshooter (weston_capture_v1) in the chroot, under
# `timeout -s KILL` RIG_WESTON_TIMEOUT (default 120) s; its PNG (all outputs) is moved to OUT (an L1
# path, e.g. in /tmp, for rig_send_file). Sets RIG_WESTON_SHOT_RC (the client's exit status) and
# RIG_WESTON_SHOT_S; non-zero if no PNG came out.
rig_weston_screenshot() {
    local out=$1 d=$RIG_WESTON_DIR/shot t0 f
    rm -rf "$d"
    mkdir -p "$d"
    t0=$(rig_uptime)
    RIG_WESTON_TIMEOUT=${RIG_WESTON_TIMEOUT:-120} rig_weston_run XDG_PICTURES_DIR=/tmp/shot \
        weston-screenshooter >"$RIG_WESTON_DIR/screenshooter.out" 2>&1
    RIG_WESTON_SHOT_RC=$?
    RIG_WESTON_SHOT_S=$(rig_sub "$(rig_uptime)" "$t0")
    for f in "$d"/*.png; do
        [ -f "$f" ] || continue
        mv "$f" "$out"
        return 0
    done
    echo "rig: weston-screenshooter (exit $RIG_WESTON_SHOT_RC) wrote no PNG:" \
        "$(head -c 300 "$RIG_WESTON_DIR/screenshooter.out")" >&2
    return 1
}

# rig_weston_wait SECS -> waits up to SECS for rig_weston_start's weston to exit; sets RIG_WESTON_EXIT
# (its status, 137 if it was killed by SIGKILL) or `running`.
rig_weston_wait() {
    local i=0
    while kill -0 "$RIG_WESTON_PID" 2>/dev/null && [ "$i" -lt $(($1 * 10)) ]; do
        i=$((i + 1))
        sleep 0.1
    done
    if kill -0 "$RIG_WESTON_PID" 2>/dev/null; then
        RIG_WESTON_EXIT=running
        return 1
    fi
    wait "$RIG_WESTON_PID"
    RIG_WESTON_EXIT=$?
}

# rig_weston_stop -> SIGTERM to weston, waits up to 20 s (then SIGKILL); sets RIG_WESTON_EXIT.
rig_weston_stop() {
    [ -n "$RIG_WESTON_PID" ] || return 1
    kill -TERM "$RIG_WESTON_PID" 2>/dev/null
    rig_weston_wait 20 || {
        kill -KILL "$RIG_WESTON_PID" 2>/dev/null
        rig_weston_wait 5
    }
}

# rig_weston_kill -> SIGKILL to weston (a compositor that dies under its clients), then waits for it;
# sets RIG_WESTON_EXIT (137). Its clients (weston-desktop-shell, ...) see the socket close.
rig_weston_kill() {
    [ -n "$RIG_WESTON_PID" ] || return 1
    kill -KILL "$RIG_WESTON_PID" 2>/dev/null
    rig_weston_wait 10
}

# rig_weston_proto_counts [FILE] -> k=v words counted in a RIG_WESTON_PROTO file (default
# RIG_WESTON_PROTO): dmabuf_params (zwp_linux_buffer_params_v1 objects made), dmabuf_create
# (create requests), dmabuf_create_immed, dmabuf_created and dmabuf_failed (events), shm_pools
# (wl_shm.create_pool), shm_buffers (wl_shm_pool.create_buffer), attaches (wl_surface.attach),
# commits (wl_surface.commit), client_errors (wl_display.error events).
rig_weston_proto_counts() {
    local f=${1:-$RIG_WESTON_PROTO}
    awk '
        /zwp_linux_dmabuf_v1#[0-9]+\.create_params\(/ { p++ }
        /zwp_linux_buffer_params_v1#[0-9]+\.create\(/ { c++ }
        /zwp_linux_buffer_params_v1#[0-9]+\.create_immed\(/ { ci++ }
        /-> zwp_linux_buffer_params_v1#[0-9]+\.created\(/ { ok++ }
        /-> zwp_linux_buffer_params_v1#[0-9]+\.failed\(/ { bad++ }
        /wl_shm#[0-9]+\.create_pool\(/ { pools++ }
        /wl_shm_pool#[0-9]+\.create_buffer\(/ { bufs++ }
        /wl_surface#[0-9]+\.attach\(/ { att++ }
        /wl_surface#[0-9]+\.commit\(/ { com++ }
        /-> wl_display#1\.error\(/ { err++ }
        END {
            printf "dmabuf_params=%d dmabuf_create=%d dmabuf_create_immed=%d dmabuf_created=%d", p, c, ci, ok
            printf " dmabuf_failed=%d shm_pools=%d shm_buffers=%d attaches=%d commits=%d client_errors=%d\n",
                bad, pools, bufs, att, com, err
        }' "$f"
}
