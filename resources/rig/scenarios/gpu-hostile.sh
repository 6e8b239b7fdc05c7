#!/bin/sh
# gpu-hostile: a hostile guest against the vmm's virtio-gpu. ivshmem bound to vfio-pci in L1,
# `vmm --device vfio=<BDF>,gpu=blob --display capture=/tmp/cap,keep=4` (RUST_LOG=info); L2 runs
# rig.l2=gpu-hostile (user-space driver: vma-bomb, fd-bomb, log-flood, capture-flood and decode-off
# phases, then a fresh image in BAR2; see resources/guest-tools/src/bin/gpu-hostile.rs).
# While the vmm runs, rig_sample_proc counts its mappings (/proc/PID/maps lines) and open fds every
# 0.5 s. Facts only (tests/tests/rig_gpu_hostile.rs judges them): the vmm's exit, KVM errors, L2
# marker and L2's result (rig_vmm_facts), the first and the largest sample of each count, the vmm's
# log lines (all, `guest error`, per level), the PNG files in the capture dir; the newest frame
# (name order) goes to L0.
# FAIL only when the facts are incomplete: setup (no /dev/kvm, bind), the vmm killed by a signal or
# at the timeout, no result line from L2's gpu-hostile, no sample of the vmm, or a captured frame
# that could not be sent.
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
bdf=$(rig_bind_vfio 1af4 1110) || rig_fail vfio-bind-failed
group=$(rig_vfio_group "$bdf") || rig_fail no-iommu-group bdf="$bdf"
[ -c "$group" ] || rig_fail no-vfio-group-node bdf="$bdf" vfio_group="$group"
rig_data bdf="$bdf" vfio_group="$group" nofile="$(ulimit -n)" max_map_count="$(cat /proc/sys/vm/max_map_count)"
cap=/tmp/cap
rm -rf "$cap"
mkdir -p "$cap"
export RUST_LOG="${RIG_RUST_LOG:-info}"

samples=/tmp/gpu-hostile.samples
stop=/tmp/gpu-hostile.stop
rm -f "$stop"
vmm_name=$(basename "${RIG_VMM:-/bin/vmm}")
rig_sample_proc "$vmm_name" "$samples" "$stop" 0.5 &
sampler=$!

out=/tmp/vmm-gpu-hostile.out
# Generous: a vmm that logs each of log-flood's 10000 refused unrefs spends ~3 minutes relaying them
# to the console (~60 lines/s), and should still reach the later phases.
secs=330
rig_run_vmm "$secs" "$out" --device "vfio=$bdf,gpu=blob" --display "capture=$cap,keep=4" \
    --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
    --cmdline "$(rig_l2_cmdline gpu-hostile)" --memory 512M
: >"$stop"
wait "$sampler"
rig_l2_forward "$out"
rig_vmm_facts "$out" l2

# shellcheck disable=SC2046 # five numbers
set -- $(rig_samples_summary "$samples")
nsamples=$1 maps_base=$2 maps_max=$3 fds_base=$4 fds_max=$5
rig_data samples="$nsamples" maps_base="$maps_base" maps_max="$maps_max" fds_base="$fds_base" fds_max="$fds_max"

# The vmm's log lines: env_logger's "[<time> LEVEL target] message" and its own "vmm: ..." lines.
log_re='^[0-9.]+ (\[[^]]* (ERROR|WARN|INFO|DEBUG|TRACE) |vmm: )'
log_lines=$(grep -cE "$log_re" "$out")
log_error=$(grep -cE '^[0-9.]+ \[[^]]* ERROR ' "$out")
log_warn=$(grep -cE '^[0-9.]+ \[[^]]* WARN ' "$out")
guest_error=$(grep -c 'guest error' "$out")
rig_data vmm_log_lines="$log_lines" vmm_log_error="$log_error" vmm_log_warn="$log_warn" \
    guest_error_lines="$guest_error" exported_as_lines="$(grep -c 'exported as' "$out")"

pngs=$(ls "$cap" | grep -c '\.png$')
newest=""
for f in "$cap"/frame-*.png; do
    [ -e "$f" ] && newest=$f
done
newest_name=${newest##*/}
sent=0
if [ -n "$newest" ] && rig_send_file "$newest" "$newest_name"; then
    sent=1
fi
rig_data pngs="$pngs" cap_kib="$(du -sk "$cap" | cut -f1)" newest_frame="${newest_name:-none}" newest_sent="$sent"

if [ -z "$RIG_REASON" ]; then
    if [ "$nsamples" = 0 ]; then
        RIG_REASON=no-samples
    elif [ -n "$newest" ] && [ "$sent" = 0 ]; then
        RIG_REASON=frame-not-sent
    fi
fi
rig_report bdf="$bdf" samples="$nsamples" \
    maps_base="$maps_base" maps_max="$maps_max" fds_base="$fds_base" fds_max="$fds_max" \
    vmm_log_lines="$log_lines" guest_error_lines="$guest_error" pngs="$pngs" newest_frame="${newest_name:-none}"
