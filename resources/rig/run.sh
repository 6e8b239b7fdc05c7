#!/usr/bin/env bash
# Boot L1 in QEMU/TCG (q35, emulated VT-d, ivshmem; see resources/rig/README.md) and run one scenario
# inside it.
#
# Usage: resources/rig/run.sh SCENARIO [--timeout SECS] [--shm FILE] [--edu] [--e1000e] [--xhci] [--l1-kernel K] [--bench]
#                               [--l0-root] [--l2-kernel K] [--l1-cpu C] [--silent SECS]
#   SCENARIO        name of resources/rig/scenarios/SCENARIO.sh (passed as rig.scenario=SCENARIO)
#   --timeout SECS  kill QEMU after SECS seconds (default 300)
#   --silent SECS   L1 writes its uptime to its second serial port every 5 s (l1/init); after SECS
#                   seconds without one (3 x SECS before the first) run.sh saves QEMU's view of L1's
#                   CPU (`info registers`, `info lapic`, `info pic`) to
#                   target/rig/logs/SCENARIO.silent.log and sends L1 an NMI; if L1 is still silent
#                   SECS/2 seconds later, QEMU is told to quit (exit 4). Default 60
#   --shm FILE      ivshmem backing file in /dev/shm (created with 16 MiB if missing, kept afterwards);
#                   default: a fresh /dev/shm/rig-SCENARIO-PID, removed afterwards
#   --edu           add QEMU's `edu` device
#   --e1000e        add QEMU's `e1000e` NIC (8086:10d3; MSI-X, MSI and INTx), with no network behind it
#   --xhci          add a `nec-usb-xhci` USB controller (1033:0194) with MSI only (msix=off) and a `usb-kbd` on it
#   --l1-kernel K   L1's kernel: `debian` (default, target/rig/vmlinuz, modules from the initramfs) or
#                   `iommufd` (target/rig/kernel-iommufd/bzImage from build-kernel.sh: IOMMUFD, VFIO cdev, built in;
#                   L1 boots it with tsc=unstable, see below)
#   --bench         L1's initramfs with QEMU under /opt/qemu (target/rig/l1-bench-initramfs.cpio.gz from bench-image.sh)
#   --l0-root       this machine's root directory, read-only, as a virtio-9p device (mount tag l0root)
#                   that L1's init mounts at /l0 (lib.sh's rig_l0 runs L0 programs in a chroot of it);
#                   the kernel command line gets rig.l0repo=<this checkout> (paths of its target/ in L0)
#   --l2-kernel K   the kernel L2 boots: `debian` (default, /rig/l2/vmlinuz) or `rig` (build-kernel.sh's
#                   bzImage, appended to L1's initramfs as /rig/l2/vmlinuz-rig; L1 gets rig.l2kernel=rig)
#   --l1-cpu C      L1's CPU: `zen` (default, -cpu EPYC,+svm,+npt: AMD family 0x17) or `nonzen`
#                   (-cpu EPYC,family=22,+svm,+npt: AMD family 0x16); the log is SCENARIO-nonzen.log
# Env: RIG_L1_APPEND=<words> appends them to L1's kernel command line (e.g. loglevel=6 to see L1's
#      kernel messages).
# Console is streamed to stdout and saved to target/rig/logs/SCENARIO.log.
# Exit: 0 iff the RIG-RESULT line says status=PASS; 1 on FAIL; 3 if no result line and QEMU ended by
#       itself (L1 crashed or powered off early); 4 if no result line and QEMU was killed at the
#       timeout or stopped for a silent L1 (L1 hung or too slow); 2 on bad usage or missing images
#       (run resources/rig/build.sh first).
# Runs are serialised machine-wide with a lock on target/rig/run.lock (one QEMU at a time).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RIG=$ROOT/target/rig

usage() { sed -n '4,37p' "$0" >&2; exit 2; }
die() { echo "rig-run: ERROR: $*" >&2; exit 2; }

SCENARIO=""
TIMEOUT=300
SILENT=60
SHM=""
EDU=0
E1000E=0
XHCI=0
L1_KERNEL=debian
INITRD=l1-initramfs.cpio.gz
L0_ROOT=0
L2_KERNEL=debian
L1_CPU=zen
while [ $# -gt 0 ]; do
    case "$1" in
        --timeout) [ $# -ge 2 ] || usage; TIMEOUT=$2; shift 2 ;;
        --silent) [ $# -ge 2 ] || usage; SILENT=$2; shift 2 ;;
        --shm) [ $# -ge 2 ] || usage; SHM=$2; shift 2 ;;
        --edu) EDU=1; shift ;;
        --e1000e) E1000E=1; shift ;;
        --xhci) XHCI=1; shift ;;
        --l1-kernel) [ $# -ge 2 ] || usage; L1_KERNEL=$2; shift 2 ;;
        --bench) INITRD=l1-bench-initramfs.cpio.gz; shift ;;
        --l0-root) L0_ROOT=1; shift ;;
        --l2-kernel) [ $# -ge 2 ] || usage; L2_KERNEL=$2; shift 2 ;;
        --l1-cpu) [ $# -ge 2 ] || usage; L1_CPU=$2; shift 2 ;;
        -h | --help) usage ;;
        -*) echo "rig-run: unknown option $1" >&2; usage ;;
        *) [ -z "$SCENARIO" ] || usage; SCENARIO=$1; shift ;;
    esac
done
[ -n "$SCENARIO" ] || usage
case "$SCENARIO" in *[!A-Za-z0-9_.-]*) die "bad scenario name '$SCENARIO'" ;; esac
case "$TIMEOUT" in '' | *[!0-9]*) die "--timeout wants whole seconds, got '$TIMEOUT'" ;; esac
case "$SILENT" in '' | *[!0-9]* | 0 | 1 | [0-9]) die "--silent wants whole seconds (10 or more), got '$SILENT'" ;; esac
command -v python3 >/dev/null || die "python3 not found (run.sh's watch on L1 needs it); run resources/rig/setup.sh"
[ -f "$HERE/scenarios/$SCENARIO.sh" ] || die "no scenario resources/rig/scenarios/$SCENARIO.sh"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found; run resources/rig/setup.sh"
KERNEL_APPEND=""
case "$L1_KERNEL" in
    debian) KERNEL=$RIG/vmlinuz ;;
    iommufd)
        KERNEL=$RIG/kernel-iommufd/bzImage
        [ -e "$KERNEL" ] || die "$KERNEL missing; run resources/rig/build-kernel.sh first"
        # tsc=unstable: L1's TCG CPU has no invariant TSC, so KVM takes its guests' TSC rate from
        # L1's tsc_khz when KVM initialises. Built in, that is at boot, before L1 refines its TSC
        # calibration (a second later); in about half of the boots the refined rate came out
        # higher, KVM then could not give L2 the old, lower rate ("kvm: user requested TSC rate
        # below hardware speed", no TSC scaling under TCG) and converted L2's TSC deadlines with it:
        # L2's timers fired late and an idle L2 stalled (its reboot took 16 s instead of 0.16 s).
        # An unstable TSC is never refined. Debian's kernel loads KVM as a module, after the
        # refinement, and is not affected.
        KERNEL_APPEND=" tsc=unstable"
        ;;
    *) die "--l1-kernel wants debian or iommufd, got '$L1_KERNEL'" ;;
esac
case "$L2_KERNEL" in
    debian) ;;
    rig) [ -e "$RIG/kernel-iommufd/bzImage" ] || die "$RIG/kernel-iommufd/bzImage missing; run resources/rig/build-kernel.sh first" ;;
    *) die "--l2-kernel wants debian or rig, got '$L2_KERNEL'" ;;
esac
# shellcheck disable=SC2054 # commas belong to QEMU's option values
case "$L1_CPU" in
    zen) CPU=EPYC,+svm,+npt; LOG_SUFFIX="" ;;
    nonzen) CPU=EPYC,family=22,+svm,+npt; LOG_SUFFIX=-nonzen ;;
    *) die "--l1-cpu wants zen or nonzen, got '$L1_CPU'" ;;
esac
for f in "$KERNEL" "$RIG/$INITRD"; do
    [ -e "$f" ] || die "$f missing; run resources/rig/build.sh (and bench-image.sh for --bench) first"
done
if ! cmp -s "$HERE/scenarios/$SCENARIO.sh" "$RIG/l1-root/rig/scenarios/$SCENARIO.sh"; then
    echo "rig-run: WARNING: scenarios/$SCENARIO.sh changed since the last build.sh (the image has the old one)" >&2
fi

mkdir -p "$RIG/logs"
LOG=$RIG/logs/$SCENARIO$LOG_SUFFIX.log

exec 9>"$RIG/run.lock"
if ! flock -n 9; then
    echo "rig-run: another rig run holds $RIG/run.lock; waiting..." >&2
    flock 9
fi

OWN_SHM=0
if [ -z "$SHM" ]; then
    SHM=/dev/shm/rig-$SCENARIO-$$
    OWN_SHM=1
fi
if [ ! -e "$SHM" ]; then
    truncate -s 16M "$SHM"
fi
# L1's heartbeat file, QEMU's QMP socket and the watch's verdict.
WATCH=$(mktemp -d)
HEARTBEAT=$WATCH/heartbeat
QMP=$WATCH/qmp.sock
SILENT_LOG=$RIG/logs/$SCENARIO$LOG_SUFFIX.silent.log
rm -f "$SILENT_LOG"
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if [ -n "${WATCHER:-}" ]; then kill "$WATCHER" 2>/dev/null || true; fi
    if [ "$OWN_SHM" = 1 ]; then rm -f "$SHM"; fi
    if [ -n "${L2K:-}" ]; then rm -rf "$L2K"; fi
    rm -rf "$WATCH"
}
trap cleanup EXIT

# Says $1 on stderr and in the silent log.
watch_note() {
    echo "rig-run: $1" >&2
    echo "== $(date +%T) $1" >>"$SILENT_LOG"
}
# One QMP command; what it prints goes to the silent log.
watch_qmp() {
    python3 "$HERE/qmp.py" "$QMP" "$@" >>"$SILENT_LOG" 2>&1 || true
}
# Runs while QEMU does. L1 under TCG has gone silent for good a few times (QEMU idle, not even
# L1's own timeouts ran) and only QEMU's timeout ended it; a missing heartbeat tells sooner. After
# SILENT s without one (3 x SILENT before the first: L1's boot) it saves QEMU's view of L1's CPU
# and sends an NMI (it reaches a halted CPU even with interrupts disabled); still silent SILENT/2 s
# later, QEMU is told to quit and run.sh exits 4.
watch_l1() {
    local last=0 size quiet=0 limit=$((3 * SILENT)) state=beating
    while sleep 5; do
        size=$(stat -c %s "$HEARTBEAT" 2>/dev/null || echo 0)
        if [ "$size" != "$last" ]; then
            [ "$state" = beating ] || watch_note "L1's heartbeat is back after the NMI"
            last=$size quiet=0 limit=$SILENT state=beating
            continue
        fi
        quiet=$((quiet + 5))
        [ "$quiet" -ge "$limit" ] || continue
        if [ "$state" = beating ]; then
            watch_note "no heartbeat from L1 for ${quiet}s: saving its CPU state to $SILENT_LOG and sending it an NMI"
            for what in registers lapic pic; do
                echo "== info $what" >>"$SILENT_LOG"
                watch_qmp human-monitor-command "{\"command-line\": \"info $what\"}"
            done
            watch_qmp inject-nmi
            state=nmi limit=$((quiet + SILENT / 2))
        else
            watch_note "L1 still silent ${quiet}s after its last heartbeat, NMI or not: telling QEMU to quit"
            touch "$WATCH/silent"
            watch_qmp quit
            return
        fi
    done
}

# shellcheck disable=SC2054 # commas belong to QEMU's option values
QEMU=(qemu-system-x86_64 -M q35,accel=tcg,kernel-irqchip=split -cpu "$CPU" -smp 1 -m 2048
    -nographic -no-reboot -nic none -device intel-iommu,intremap=on,caching-mode=on
    -serial mon:stdio -serial "file:$HEARTBEAT" -qmp "unix:$QMP,server=on,wait=off"
    -object "memory-backend-file,size=16M,share=on,mem-path=$SHM,id=hostmem"
    -device ivshmem-plain,memdev=hostmem)
[ "$EDU" = 0 ] || QEMU+=(-device edu)
# No netdev peer: the NIC works (its link reads up) and nothing leaves the machine.
[ "$E1000E" = 0 ] || QEMU+=(-device e1000e)
# MSI-X off: the controller signals with MSI. The keyboard gives its driver work (enumeration).
# shellcheck disable=SC2054 # commas belong to QEMU's option values
[ "$XHCI" = 0 ] || QEMU+=(-device nec-usb-xhci,id=rigxhci,msix=off -device usb-kbd,bus=rigxhci.0)
EXTRA_APPEND=""
if [ "$L0_ROOT" = 1 ]; then
    # Read-only twice: QEMU refuses writes (readonly=on) and L1 mounts it ro. security_model=none:
    # files keep L0's owners and modes. multidevs=remap: L0's other file systems under / (e.g. /work)
    # get distinct inode numbers in L1 instead of colliding ones.
    case "$ROOT" in *[!A-Za-z0-9_./+-]*) die "--l0-root: the checkout's path '$ROOT' must be one word of [A-Za-z0-9_./+-]" ;; esac
    # shellcheck disable=SC2054 # commas belong to QEMU's option values
    QEMU+=(-virtfs local,path=/,mount_tag=l0root,security_model=none,readonly=on,multidevs=remap)
    EXTRA_APPEND=" rig.l0repo=$ROOT"
fi
INITRD_PATH=$RIG/$INITRD
if [ "$L2_KERNEL" = rig ]; then
    # A second gzip'ed cpio appended to L1's initramfs (the kernel unpacks both): the rig kernel
    # as /rig/l2/vmlinuz-rig, next to Debian's /rig/l2/vmlinuz.
    L2K=$(mktemp -d)
    mkdir -p "$L2K/root/rig/l2"
    cp "$RIG/kernel-iommufd/bzImage" "$L2K/root/rig/l2/vmlinuz-rig"
    (cd "$L2K/root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | gzip -1 >"$L2K/l2k.cpio.gz")
    cat "$RIG/$INITRD" "$L2K/l2k.cpio.gz" >"$L2K/initrd.cpio.gz"
    INITRD_PATH=$L2K/initrd.cpio.gz
    EXTRA_APPEND="$EXTRA_APPEND rig.l2kernel=rig"
fi
# no_timer_check: on a busy host L1's early check of the timer IRQ through the interrupt-remapped
# IO-APIC can miss its window under TCG, and with interrupt remapping that check panics.
QEMU+=(-kernel "$KERNEL" -initrd "$INITRD_PATH"
    -append "console=ttyS0 panic=-1 intel_iommu=on iommu=pt no_timer_check quiet rig.scenario=$SCENARIO$KERNEL_APPEND$EXTRA_APPEND${RIG_L1_APPEND:+ $RIG_L1_APPEND}")

l0_note=""
[ "$L0_ROOT" = 0 ] || l0_note=", L0's / read-only at /l0"
echo "rig-run: scenario $SCENARIO, timeout ${TIMEOUT}s, shm $SHM, L1 kernel $L1_KERNEL, L1 CPU $CPU, L2 kernel $L2_KERNEL$l0_note, log $LOG" >&2
t0=$(date +%s.%N)
watch_l1 &
WATCHER=$!
set +e
timeout --foreground -k 5 "$TIMEOUT" "${QEMU[@]}" 2>&1 | tee "$LOG"
qrc=${PIPESTATUS[0]}
set -e
kill "$WATCHER" 2>/dev/null || true
wait "$WATCHER" 2>/dev/null || true
WATCHER=""
t1=$(date +%s.%N)
wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')

result=$(tr -d '\r' <"$LOG" | grep -E "^RIG-RESULT scenario=$SCENARIO " | tail -n1 || true)
if [ -z "$result" ]; then
    if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
        echo "rig-run: NO RESULT for $SCENARIO (timed out after ${TIMEOUT}s, wall ${wall}s); log: $LOG" >&2
        exit 4
    fi
    if [ -e "$WATCH/silent" ]; then
        echo "rig-run: NO RESULT for $SCENARIO (L1 went silent, wall ${wall}s); log: $LOG, CPU state: $SILENT_LOG" >&2
        exit 4
    fi
    echo "rig-run: NO RESULT for $SCENARIO (qemu exit $qrc, wall ${wall}s); log: $LOG" >&2
    exit 3
fi
echo "rig-run: $result (wall ${wall}s, qemu exit $qrc)" >&2
case "$result" in
    *" status=PASS"*) exit 0 ;;
    *) exit 1 ;;
esac
