#!/bin/sh
# stock-p2p: the stock guest path. Run with `run.sh stock-p2p --l2-kernel rig` (and `--l1-cpu nonzen`
# for the second run): L2 boots build-kernel.sh's kernel (vfio-pci with DMA_BUF and the noiommu
# mode, the virtio-gpu DRM driver, all built in) with vfio.enable_unsafe_noiommu_mode=1. ivshmem is
# bound to vfio-pci in L1 and passed through: `vmm --device vfio=<BDF>,gpu=blob --display
# capture=/tmp/cap,keep=12` (RUST_LOG=info).
# Two vmm runs, each L2 running /bin/stock-p2p (resources/guest-tools/src/bin/stock-p2p.rs): two
# 1280x800 framebuffers in out-of-order BAR2 pages, each exported by L2's vfio-pci as one dma-buf and
# imported by L2's virtio-gpu driver (PRIME), SETCRTC, page flips, a revoke and the front pages shown
# again. Run `close` (300 flips): the revoke closes L2's VFIO device fd, a new dma-buf is imported.
# Run `decode` (2 flips, rig.p2p=--revoke,decode,...; L2 lines as scenario stock-p2p-decode): the
# revoke turns Memory Space off through VFIO, then on again, and the same import is shown again.
# While the vmm runs, a sampler takes every 0.25 s the vmm's mappings and fds and L1's KVM exit
# count (debugfs kvm/exits); samples are placed between L2's phase lines (phase=<name>).
# Facts only, per run (`run=close|decode` on the scenario's data lines; tests/tests/rig_stock_p2p.rs
# judges them): the vmm's exit, KVM errors, L2 marker and L2's result (rig_vmm_facts; the result
# line has the close run's as they are and the decode run's prefixed `decode_`), the dma-bufs the
# vmm exported (rig_dmabuf_exports), CPU-path and stale lines of the vmm, per phase the samples
# (phase_samples lines), the KVM exits of the flips, the vmm's exit summary (KVM exits), the
# captured PNGs (rig_send_frames, per run, renamed frame-<run>-...).
# FAIL only when the facts are incomplete: setup (no /dev/kvm, bind), a vmm killed by a signal or
# at the timeout, no result line from L2's stock-p2p, or captured frames that could not be sent.
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
bdf=$(rig_bind_vfio 1af4 1110) || rig_fail vfio-bind-failed
group=$(rig_vfio_group "$bdf") || rig_fail no-iommu-group bdf="$bdf"
[ -c "$group" ] || rig_fail no-vfio-group-node bdf="$bdf" vfio_group="$group"
l2k=$(rig_l2_kernel)
l1_family=$(sed -n 's/^cpu family[[:space:]]*: //p' /proc/cpuinfo | head -n1)
l1_vendor=$(sed -n 's/^vendor_id[[:space:]]*: //p' /proc/cpuinfo | head -n1)
rig_data bdf="$bdf" vfio_group="$group" l2_kernel="$l2k" l1_cpu_vendor="$l1_vendor" l1_cpu_family="$l1_family"
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
kvm_exits_file=/sys/kernel/debug/kvm/exits
[ -r "$kvm_exits_file" ] || kvm_exits_file=""
cap=/tmp/cap
rm -rf "$cap"
mkdir -p "$cap"
export RUST_LOG="${RIG_RUST_LOG:-info}"

# The sampler: "<uptime> <maps> <fds> <kvm exits or 0>" every 0.25 s while the vmm lives.
sample_vmm() {
    local samples=$1 stop=$2 pid="" maps fds up _rest ex
    : >"$samples"
    while [ ! -e "$stop" ]; do
        if [ -z "$pid" ]; then
            pid=$(pidof vmm)
            pid=${pid%% *}
        fi
        if [ -n "$pid" ]; then
            [ -d "/proc/$pid" ] || break
            maps=$(wc -l <"/proc/$pid/maps" 2>/dev/null)
            fds=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)
            ex=0
            [ -z "$kvm_exits_file" ] || read -r ex <"$kvm_exits_file"
            read -r up _rest </proc/uptime
            case "$maps" in
                '' | 0 | *[!0-9]*) ;;
                *) [ "$fds" = 0 ] || echo "$up $maps $fds $ex" >>"$samples" ;;
            esac
        fi
        sleep 0.25
    done
}

# run_once TAG PROGRAM [rig.p2p=...] -> one vmm run; its facts as data lines with run=TAG; sets
# RUN_FIELDS (the result fields of this run) and REASON (the first run's missing facts, if any).
run_once() {
    local tag=$1 prog=$2 extra=$3 out samples stop sampler end t_flips t_flipped t_shown flip_exits
    local summary kvm_exits mmio_exits user_mmio cpu_path stale guest_error f frames
    out=/tmp/vmm-stock-p2p-$tag.out
    samples=/tmp/stock-p2p-$tag.samples
    stop=/tmp/stock-p2p-$tag.stop
    rm -f "$stop"
    sample_vmm "$samples" "$stop" &
    sampler=$!
    rm -f "$cap"/*
    rig_run_vmm 300 "$out" --device "vfio=$bdf,gpu=blob" --display "capture=$cap,keep=12" \
        --kernel "$l2k" --initramfs /rig/l2/initramfs.cpio.gz \
        --cmdline "$(rig_l2_cmdline stock-p2p) vfio.enable_unsafe_noiommu_mode=1 $extra" --memory 512M
    : >"$stop"
    wait "$sampler"
    rig_l2_forward "$out"
    rig_vmm_facts "$out" l2
    rig_dmabuf_exports "$out"

    # Samples per L2 phase: a phase runs from its phase= line to the next one (or the vmm's exit).
    grep -E "^[0-9.]+ RIG-DATA scenario=$prog phase=" "$out" |
        sed 's/^\([0-9.]*\) .*phase=\([^ ]*\).*/\1 \2/' >/tmp/stock-p2p.phases
    end=$(rig_uptime)
    awk -v end="$end" 'BEGIN { n = 0 }
        NR == FNR { t[n] = $1; p[n] = $2; n++; next }
        { for (i = 0; i < n; i++) { e = (i + 1 < n) ? t[i + 1] : end
            if ($1 >= t[i] && $1 < e) { k = p[i]; c[k]++
                if (!(k in mn) || $2 < mn[k]) mn[k] = $2; if ($2 > mx[k]) mx[k] = $2
                if (!(k in fn) || $3 < fn[k]) fn[k] = $3; if ($3 > fx[k]) fx[k] = $3 } } }
        END { for (i = 0; i < n; i++) { k = p[i]
            printf "%s %d %d %d %d %d\n", k, c[k], mn[k], mx[k], fn[k], fx[k] } }' \
        /tmp/stock-p2p.phases "$samples" >/tmp/stock-p2p.per-phase
    while read -r ph n mmin mmax fmin fmax; do
        rig_data run="$tag" phase_samples="$ph" samples="$n" maps_min="$mmin" maps_max="$mmax" \
            fds_min="$fmin" fds_max="$fmax"
    done </tmp/stock-p2p.per-phase

    # KVM exits around the flips: the last sample before phase=flips and the first after
    # phase=flipped, and the idle rate of the hold before (phase=shown-front).
    t_flips=$(awk '$2 == "flips" { print $1; exit }' /tmp/stock-p2p.phases)
    t_flipped=$(awk '$2 == "flipped" { print $1; exit }' /tmp/stock-p2p.phases)
    t_shown=$(awk '$2 == "shown-front" { print $1; exit }' /tmp/stock-p2p.phases)
    flip_exits=flip_window=none
    if [ -n "$kvm_exits_file" ] && [ -n "$t_flips" ] && [ -n "$t_flipped" ] && [ -n "$t_shown" ]; then
        flip_exits=$(awk -v a="$t_flips" -v b="$t_flipped" -v s="$t_shown" '
            $1 >= s && $1 < a { if (!is) { is = 1; it0 = $1; ie0 = $4 } it1 = $1; ie1 = $4 }
            $1 < a { t0 = $1; e0 = $4 }
            $1 >= b && !done { t1 = $1; e1 = $4; done = 1 }
            END { if (t0 == "" || !done) { print "flip_window=none"; exit }
                idle = (it1 > it0) ? (ie1 - ie0) / (it1 - it0) : 0
                printf "window_s=%.2f window_exits=%d idle_exits_per_s=%.0f\n", t1 - t0, e1 - e0, idle }' "$samples")
    fi
    # shellcheck disable=SC2086 # k=v words
    rig_data run="$tag" kvm_exits_debugfs="${kvm_exits_file:+yes}" $flip_exits

    # The vmm's exit summary ("...; KVM: exits=N io_exits=N mmio_exits=N ...") and its path lines.
    summary=$(grep -E '^[0-9.]+ vmm: .* user-space exits' "$out" | tail -n1)
    kvm_exits=$(echo "$summary" | sed -n 's/.*KVM: exits=\([0-9]*\).*/\1/p')
    mmio_exits=$(echo "$summary" | sed -n 's/.* mmio_exits=\([0-9]*\).*/\1/p')
    user_mmio=$(echo "$summary" | sed -n 's/.* port I\/O, \([0-9]*\) MMIO.*/\1/p')
    cpu_path=$(grep -c 'uses the CPU path' "$out")
    stale=$(grep -c 'went stale' "$out")
    guest_error=$(grep -c 'guest error' "$out")
    rig_data run="$tag" vmm_kvm_exits="${kvm_exits:-none}" vmm_kvm_mmio_exits="${mmio_exits:-none}" \
        vmm_user_mmio_exits="${user_mmio:-none}" cpu_path_lines="$cpu_path" stale_lines="$stale" \
        guest_error_lines="$guest_error"
    # The frames, renamed frame-TAG-... so that both runs' reach L0.
    frames=/tmp/stock-p2p-frames-$tag
    rm -rf "$frames"
    mkdir -p "$frames"
    for f in "$cap"/frame-*.png; do
        [ -e "$f" ] || continue
        mv "$f" "$frames/frame-$tag-${f##*/frame-}"
    done
    rig_send_frames "$frames"
    if [ -z "$RIG_REASON" ] && [ "$RIG_FRAMES" != 0 ] && [ "$RIG_FRAMES_SENT" = 0 ]; then
        RIG_REASON=frames-not-sent
    fi
    RUN_FIELDS="exports=$RIG_EXPORTS exports_vfio=$RIG_EXPORTS_VFIO vfio_sizes=${RIG_VFIO_SIZES:-none}"
    RUN_FIELDS="$RUN_FIELDS cpu_path_lines=$cpu_path frames=$RIG_FRAMES frames_sent=$RIG_FRAMES_SENT $RIG_FIELDS"
    [ -z "$RIG_REASON" ] || REASON=${REASON:-$RIG_REASON}
}

REASON=""
run_once close stock-p2p ""
fields_close=$RUN_FIELDS
run_once decode stock-p2p-decode "rig.p2p=--revoke,decode,--flips,2,--scenario,stock-p2p-decode"
fields_decode=""
for f in $RUN_FIELDS; do
    fields_decode="$fields_decode decode_$f"
done
RIG_REASON=$REASON
RIG_FIELDS=""
# shellcheck disable=SC2086 # k=v words
rig_report bdf="$bdf" l2_kernel="$l2k" l1_cpu_family="$l1_family" $fields_close $fields_decode
