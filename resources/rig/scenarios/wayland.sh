#!/bin/sh
# wayland (run.sh --l0-root): the vmm's Wayland display (`--display wayland=<socket>`) with a real
# compositor in L1: weston 14 (Debian 13, resources/rig/weston-root.sh; lib.sh's rig_weston_*),
# headless, gl renderer on Mesa's llvmpipe (it offers zwp_linux_dmabuf_v1), one 1600x1000 output,
# its protocol traffic logged by WAYLAND_DEBUG=server. A second display, `vnc=unix:...`, gives L2
# the keyboard that steps it (vncdotool from L0's root presses F12), as in scenario vnc.
# First vmm run (rig.l2=vnc: the stock virtio-gpu driver's KMS blob framebuffer in guest RAM,
#   exported with udmabuf):
#   step 1, 1280x800: once the vmm logged the scanout's path, a screenshot (wl-1.png) and the
#     window's place from weston-debug's scene graph; F12;
#   step 2, the guest changes the mode to 1024x768 and flushes 200 times: screenshot wl-2.png;
#     then weston is killed (SIGKILL); F12;
#   step 3, 200 more flushes with no compositor; F12; L2 ends, the vmm exits.
# Second run (rig.l2=vnc-bar, ivshmem passed through): a blob in six out-of-order ranges of BAR2,
#   one VFIO dma-buf, which the compositor cannot map: screenshot wl-bar.png; F12. Weston is
#   stopped with SIGTERM.
# Before both: the vmm with `--display wayland=<a socket nobody listens on>` (nowl_exit, its
#   output as `vmm-nowl| ` lines).
# Facts only (tests/tests/rig_wayland.rs judges them): weston's version line, per screenshot
# `RIG-DATA shot=<name> exit= s= x= y= x2= y2=` (the window of title `vmm: scanout 0`), the
# protocol counts of each run (ram_* and bar_* from rig_weston_proto_counts), the vmm's facts
# (bar_* for the second run) and its output (path lines, exit summary), L2's lines, the screenshots.
# FAIL only when the facts are incomplete: no /l0, weston root or vncdotool, no /dev/kvm or
# /dev/udmabuf, weston not ready, the vmm killed, no L2 result, a screenshot that cannot be sent.
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
[ -c /dev/udmabuf ] || rig_fail no-dev-udmabuf
rig_l0_prepare || rig_fail no-l0-root
repo=$(rig_l0_repo) || rig_fail no-l0-repo
vncdotool=$repo/target/rig/vncdotool
[ -d "/l0$vncdotool/vncdotool" ] || rig_fail no-vncdotool path="$vncdotool"
rig_weston_prepare || rig_fail no-weston-root
shared=$RIG_L0_SHARED
rm -f "$shared"/*.png
fields=""
export RUST_LOG="${RIG_RUST_LOG:-info}"

# f12 RUN -> vncdotool (L0's python3) presses and releases F12 through the unix-socket VNC server.
f12() {
    local run=$1
    rig_l0 timeout -s KILL 600 env PYTHONPATH="$vncdotool" python3 -m vncdotool.command \
        -s /tmp/vnc.sock key f12 >"/tmp/$run.out" 2>&1
    fields="$fields ${run}_exit=$?"
    sed "s/^/$run| /" "/tmp/$run.out"
}

# shot NAME -> a screenshot as $shared/NAME.png and, from weston-debug's scene graph, where the
# window `vmm: scanout 0` is: RIG-DATA shot=NAME exit= s= x= y= x2= y2=.
shot() {
    local name=$1 pos
    # A commit or two after the path line: the window shows the frame.
    sleep 3
    rig_weston_screenshot "$shared/$name.png"
    RIG_WESTON_TIMEOUT=60 rig_weston_run weston-debug scene-graph >"/tmp/$name-scene.txt" 2>&1 &
    local dbg=$!
    sleep 5
    kill "$dbg" 2>/dev/null
    wait "$dbg" 2>/dev/null
    # View N (role xdg_toplevel, ..., top-level window 'vmm: scanout 0' of vmm, 0x...):
    #         position: (60, 66) -> (700, 546)
    pos=$(awk "/top-level window 'vmm: scanout 0'/ { want = 1; next }
        want && /position:/ { gsub(/[(),>-]/, \" \"); print \$2, \$3, \$4, \$5; exit }" \
        "/tmp/$name-scene.txt")
    # shellcheck disable=SC2086 # four numbers
    set -- $pos
    rig_data shot="$name" exit="$RIG_WESTON_SHOT_RC" s="$RIG_WESTON_SHOT_S" \
        x="${1:-none}" y="${2:-none}" x2="${3:-none}" y2="${4:-none}"
}

# ------------------------------------------------------------------ no compositor at the socket
/bin/vmm --device gpu=blob --display wayland=/tmp/no-such-compositor \
    --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz --memory 256M \
    </dev/null >/tmp/vmm-nowl.out 2>&1
fields="$fields nowl_exit=$?"
sed 's/^/vmm-nowl| /' /tmp/vmm-nowl.out

# ------------------------------------------------------------------ run 1: guest RAM (udmabuf)
rig_weston_start 1600x1000 gl || rig_fail weston-not-ready
out=/tmp/vmm-wayland.out
: >"$out"
rig_run_vmm 900 "$out" --device gpu=blob,width=1280,height=800 \
    --display "wayland=$RIG_WESTON_SOCKET" --display "vnc=unix:$shared/vnc.sock" \
    --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
    --cmdline "$(rig_l2_cmdline vnc)" --memory 512M &
vmm_pid=$!
if rig_wait_for "$out" step1 'RIG-DATA scenario=vnc-kms-1 .*shown=' 600; then
    rig_wait_for "$out" path1 'wayland: scanout 0 (1280x800' 120 && shot wl-1
    f12 f12_1
    if rig_wait_for "$out" step2 'RIG-DATA scenario=vnc-kms-2 .*flushes=' 900; then
        rig_wait_for "$out" path2 'wayland: scanout 0 (1024x768' 60
        shot wl-2
        rig_weston_kill
        fields="$fields weston_kill_exit=$RIG_WESTON_EXIT killed_at=$(rig_uptime)"
    fi
    f12 f12_2
    rig_wait_for "$out" step3 'RIG-DATA scenario=vnc-kms-3 .*flushes=' 900 && f12 f12_3
fi
wait "$vmm_pid"
rig_vmm_rc "$out"
rig_l2_forward "$out"
rig_vmm_facts "$out" l2
facts=$RIG_FIELDS
reason=$RIG_REASON
ram_counts=""
for kv in $(rig_weston_proto_counts); do
    ram_counts="$ram_counts ram_$kv"
done

# ------------------------------------------------------------------ run 2: a BAR blob (VFIO)
rig_weston_start 1600x1000 gl || rig_fail weston-not-ready run=bar
bdf=$(rig_bind_vfio 1af4 1110) || rig_fail vfio-bind-failed
out=/tmp/vmm-wayland-bar.out
: >"$out"
rig_run_vmm 900 "$out" --device "vfio=$bdf,gpu=blob" \
    --display "wayland=$RIG_WESTON_SOCKET" --display "vnc=unix:$shared/vnc.sock" \
    --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
    --cmdline "$(rig_l2_cmdline vnc-bar)" --memory 512M &
vmm_pid=$!
if rig_wait_for "$out" bar 'RIG-DATA scenario=gpu-user-blob shown=1' 600; then
    rig_wait_for "$out" bar_path 'wayland: scanout 0 (256x192 .*wl_shm' 120
    shot wl-bar
    f12 f12_bar
fi
wait "$vmm_pid"
rig_vmm_rc "$out"
rig_l2_forward "$out"
rig_vmm_facts "$out" l2
bar_facts=""
for kv in $RIG_FIELDS; do
    bar_facts="$bar_facts bar_$kv"
done
rig_dmabuf_exports "$out"
[ -n "$reason" ] || reason=$RIG_REASON
bar_counts=""
for kv in $(rig_weston_proto_counts); do
    bar_counts="$bar_counts bar_$kv"
done
rig_weston_stop
fields="$fields weston_stop_exit=$RIG_WESTON_EXIT"

sent=0
for f in wl-1.png wl-2.png wl-bar.png; do
    if [ -f "$shared/$f" ]; then
        rig_send_file "$shared/$f" "$f" || rig_fail send-failed name="$f"
        sent=$((sent + 1))
    fi
done
RIG_REASON=$reason
RIG_FIELDS="$fields $facts $bar_facts $ram_counts $bar_counts bar_exports_vfio=$RIG_EXPORTS_VFIO files_sent=$sent"
rig_report
