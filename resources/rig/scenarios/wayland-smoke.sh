#!/bin/sh
# wayland-smoke (run.sh --l0-root): a real Wayland compositor in L1 for the vmm's Wayland display:
# weston 14 from Debian 13 (resources/rig/weston-root.sh's root, run by lib.sh's rig_weston_* in a
# chroot), headless backend, one 1280x800 output, no GPU.
# Run 1 (gl renderer, Mesa's llvmpipe): wayland-info lists the globals and the linux-dmabuf
#   formats and modifiers; weston-simple-shm (a stock wl_shm client) runs, a screenshot
#   (weston-screenshooter) is taken while its window shows (wayland-shm.png) and one after it
#   ended (wayland-empty.png); weston-simple-egl (Mesa's llvmpipe, /dev/udmabuf in L1) runs for
#   10 s (which buffers it hands weston is a fact: wl_shm with Debian 13's Mesa); weston is stopped
#   with SIGTERM.
# Run 2 (pixman renderer): wayland-info again (its globals), then weston is killed with SIGKILL.
# Facts only (tests/tests/rig_wayland_smoke.rs judges them): weston's version and start time per run
# (RIG-DATA weston=...), the globals (RIG-DATA run=<r> global=<name> version=<v>), the dmabuf
# formats (RIG-DATA run=<r> dmabuf_format=<fourcc> modifiers=<names>), the shm formats, the
# protocol counts from WAYLAND_DEBUG=server (rig_weston_proto_counts), exit codes and timings, the
# screenshots sent to L0.
# FAIL only when the facts are incomplete: no /l0 or weston root, weston not ready, a screenshot
# that exists but could not be sent.
. /rig/lib.sh

rig_l0_prepare || rig_fail no-l0-root
rig_weston_prepare || rig_fail no-weston-root
fields=""

# info RUN -> wayland-info in the chroot; its globals, dmabuf and shm formats as RIG-DATA lines.
info() {
    local run=$1 t0 rc
    t0=$(rig_uptime)
    RIG_WESTON_TIMEOUT=120 rig_weston_run wayland-info >"/tmp/info-$run.txt" 2>&1
    rc=$?
    fields="$fields ${run}_info_exit=$rc ${run}_info_s=$(rig_sub "$(rig_uptime)" "$t0")"
    sed "s/^/wayland-info-$run| /" "/tmp/info-$run.txt"
    # interface: 'wl_compositor',   version:  5, name:  1
    sed -n "s/^interface: '\([^']*\)', *version: *\([0-9]*\),.*/\1 \2/p" "/tmp/info-$run.txt" |
        while read -r name version; do
            rig_data run="$run" global="$name" version="$version"
        done
    # Inside the zwp_linux_dmabuf_v1 block: 0x34325258 = 'XR24'; 0x0000000000000000 = LINEAR
    awk '/^interface: / { in_dmabuf = ($0 ~ /zwp_linux_dmabuf_v1/) }
        in_dmabuf && /= .*; 0x[0-9a-f]+ = / {
            split($0, a, "'"'"'"); fourcc = a[2]; m = $NF
            if (!(fourcc in mods)) order[n++] = fourcc
            mods[fourcc] = mods[fourcc] (mods[fourcc] == "" ? "" : ",") m
        }
        END { for (i = 0; i < n; i++) print order[i], mods[order[i]] }' "/tmp/info-$run.txt" |
        while read -r fourcc mods; do
            rig_data run="$run" dmabuf_format="$fourcc" modifiers="$mods"
        done
    # wl_shm's block: formats (fourcc):\n 0x34325258 = 'XR24' ... (one per line; 0/1 for the two
    # classic codes).
    shm=$(awk '/^interface: / { in_shm = ($0 ~ /'"'"'wl_shm'"'"'/) }
        in_shm && /= '"'"'/ { split($0, a, "'"'"'"); printf "%s%s", sep, a[2]; sep = "," }' \
        "/tmp/info-$run.txt")
    rig_data run="$run" shm_formats="${shm:-none}"
}

# ------------------------------------------------------------------ run 1: gl (llvmpipe)
rig_weston_start 1280x800 gl || rig_fail weston-not-ready renderer=gl
fields="$fields gl_start_s=$RIG_WESTON_START_S"
rig_log "weston (gl) ready in ${RIG_WESTON_START_S}s, pid $RIG_WESTON_PID, socket $WAYLAND_DISPLAY"
# The socket as L1 sees it: a program outside the chroot (the vmm) connects here.
[ -S "$RIG_WESTON_SOCKET" ] && fields="$fields socket_in_l1=1" || fields="$fields socket_in_l1=0"
info gl

# A stock wl_shm client; the screenshot is taken once it has committed a few frames.
t0=$(rig_uptime)
rig_weston_spawn weston-simple-shm >/tmp/simple-shm.out 2>&1
client=$RIG_WESTON_SPAWNED
i=0
while [ "$(grep -c 'wl_surface#[0-9]*\.commit(' "$RIG_WESTON_PROTO")" -lt 10 ] && [ "$i" -lt 1200 ]; do
    kill -0 "$client" 2>/dev/null || break
    i=$((i + 1))
    sleep 0.1
done
fields="$fields shm_client_frames_at=$(rig_sub "$(rig_uptime)" "$t0")"
sleep 2
rig_weston_screenshot /tmp/wayland-shm.png
fields="$fields shot_shm_exit=$RIG_WESTON_SHOT_RC shot_shm_s=$RIG_WESTON_SHOT_S"
if kill -0 "$client" 2>/dev/null; then
    fields="$fields shm_client_alive=1"
    kill -TERM "$client"
else
    fields="$fields shm_client_alive=0"
fi
wait "$client"
fields="$fields shm_client_exit=$?"
sed 's/^/simple-shm| /' /tmp/simple-shm.out | head -n 20
sleep 1
rig_weston_screenshot /tmp/wayland-empty.png
fields="$fields shot_empty_exit=$RIG_WESTON_SHOT_RC"
# shellcheck disable=SC2046 # k=v words
rig_data run=gl $(rig_weston_proto_counts)
# A stock EGL client on Mesa's llvmpipe: whether it hands weston dma-bufs (udmabuf) or wl_shm
# buffers is a fact of this Mesa; the counts cover the whole run so far.
RIG_WESTON_TIMEOUT=${RIG_EGL_SECS:-10} rig_weston_run weston-simple-egl >/tmp/simple-egl.out 2>&1
fields="$fields egl_client_exit=$?"
sed 's/^/simple-egl| /' /tmp/simple-egl.out | head -n 20
# shellcheck disable=SC2046 # k=v words
rig_data run=gl-egl $(rig_weston_proto_counts)
grep -m 6 'zwp_linux_buffer_params_v1#[0-9]*\.\(create\|created\|failed\)' "$RIG_WESTON_PROTO" |
    sed 's/^/weston-protocol| /'
rig_weston_stop
fields="$fields gl_stop_exit=$RIG_WESTON_EXIT"
sed 's/^/weston-gl-log| /' "$RIG_WESTON_LOG" | head -n 60
cp "$RIG_WESTON_PROTO" /tmp/proto-gl.log

# ------------------------------------------------------------------ run 2: pixman
rig_weston_start 1280x800 pixman || rig_fail weston-not-ready renderer=pixman
fields="$fields pixman_start_s=$RIG_WESTON_START_S"
info pixman
rig_weston_kill
fields="$fields pixman_kill_exit=$RIG_WESTON_EXIT"

sent=0
for f in wayland-shm.png wayland-empty.png; do
    if [ -f "/tmp/$f" ]; then
        rig_send_file "/tmp/$f" "$f" || rig_fail send-failed name="$f"
        sent=$((sent + 1))
    fi
done
RIG_REASON=""
RIG_FIELDS="$fields files_sent=$sent"
rig_report
