#!/bin/sh
# vnc (run.sh --l0-root): the vmm's VNC server with real clients from L0's root (rig_l0), the stock
# virtio-gpu and virtio-input drivers in L2 (rig.l2=vnc, see l2/vnc.sh):
#   vmm --device gpu=blob,width=1280,height=800 --display vnc=127.0.0.1:5900
#       --display vnc=unix:<shared>/vnc.sock     (two servers: every display sees every frame)
# Step 1 (L2 shows a 1280x800 KMS blob framebuffer in guest RAM, pattern variant 0):
#   gvnccapture over TCP -> gvnc-1.png; vncsnapshot (RFB 3.3) -> a JPEG, made vncsnap-1.png by L0's
#   PIL; vncdotool over the unix socket sends `key a`,
#   `move 100 200`, `click 1`; a vncdotool session (resources/rig/vnc-session.py) captures
#   vncdo-1.png over TCP and presses F12, which ends the step in L2.
# Step 2 (L2 changes the mode to 1024x768 and flushes the whole screen 200 times): the same
#   vncdotool session, still connected, captures vncdo-2.png (DesktopSize, then the new frame).
#   Then vnc-stress opens 52 connections at once (50 idle after the handshake, 1 that asks for
#   full updates every 100 ms and never reads, 1 that reads every update and asks for the next, like
#   a viewer) for 60 s and vncdotool presses F12.
# Step 3 (a new 1024x768 framebuffer, 200 whole-screen flushes, with the 52 connections open):
#   gvnccapture over TCP -> gvnc-3.png; vncdotool presses F12; L2 ends, the vmm exits.
# Second vmm run: ivshmem (bound to vfio-pci) passed through with `--device vfio=<BDF>,gpu=blob
#   --display vnc=127.0.0.1:5900 --display vnc=127.0.0.1:5901,password-file=...`; L2
#   (rig.l2=vnc-bar) shows a blob in six out-of-order ranges of its BAR2 (one VFIO dma-buf);
#   gvnccapture (5900) -> bar-gvnc.png; vncdotool with a wrong password (5901: refused, no
#   bar-badpw.png), then with the right one -> bar-vncdo.png, and F12.
# Facts only (tests/tests/rig_vnc.rs judges them): client versions (RIG-DATA client=...), each
# client run's <run>_exit and <run>_run_s, the step timings, vnc-stress's line, L2's lines
# (forwarded: gpu-kms-blob per step with flushes_ms, the EVDEV lines of evdev-watch), the vmm's facts,
# the second run's facts (bar_* fields, bar_exports_vfio) and the captures sent to L0.
# FAIL only when the facts are incomplete: no /l0 or vncdotool, no /dev/kvm or /dev/udmabuf, the
# vmm killed, no L2 result line, a capture that exists but could not be sent.
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
[ -c /dev/udmabuf ] || rig_fail no-dev-udmabuf
rig_l0_prepare || rig_fail no-l0-root
repo=$(rig_l0_repo) || rig_fail no-l0-repo
vncdotool=$repo/target/rig/vncdotool
[ -d "/l0$vncdotool/vncdotool" ] || rig_fail no-vncdotool path="$vncdotool"
shared=$RIG_L0_SHARED
rm -f "$shared"/*.png "$shared/mode2"

rig_l0 bash "$repo/resources/rig/vnc-clients.sh" --versions >/tmp/versions.txt 2>&1
set -f
while read -r line; do
    case "$line" in
        # shellcheck disable=SC2086 # a line of k=v words
        client=*) rig_data $line ;;
        *) rig_log "vnc-clients.sh: $line" ;;
    esac
done </tmp/versions.txt
set +f

export RUST_LOG="${RIG_RUST_LOG:-info}"
out=/tmp/vmm-vnc.out
# In the background while the clients run; its exit code comes from its output (RIG-VMM-EXIT).
: >"$out"
RIG_VMM_T0=$(rig_uptime)
RIG_VMM_SECS=1500
rig_run_vmm 1500 "$out" --device gpu=blob,width=1280,height=800 \
    --display vnc=127.0.0.1:5900 --display "vnc=unix:$shared/vnc.sock" \
    --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
    --cmdline "$(rig_l2_cmdline vnc)" --memory 512M &
vmm_pid=$!

fields=""
# client RUN SECS CMD... -> CMD through rig_l0 under L0's `timeout -s KILL SECS`, its output to the
# console (prefixed "RUN| "); adds RUN_exit and RUN_run_s to fields.
client() {
    local run=$1 secs=$2 t0 rc
    shift 2
    rig_log "$run: $* (timeout ${secs}s)"
    t0=$(rig_uptime)
    rig_l0 timeout -s KILL "$secs" "$@" >"/tmp/$run.out" 2>&1
    rc=$?
    sed "s/^/$run| /" "/tmp/$run.out"
    fields="$fields ${run}_exit=$rc ${run}_run_s=$(rig_sub "$(rig_uptime)" "$t0")"
}
vncdo() {
    local run=$1 secs=$2
    shift 2
    client "$run" "$secs" env PYTHONPATH="$vncdotool" python3 -m vncdotool.command "$@"
}

if rig_wait_for "$out" step1 'RIG-DATA scenario=vnc-kms-1 .*shown=' 600; then
    client gvnccapture_1 300 gvnccapture 127.0.0.1:0 /tmp/gvnc-1.png
    # vncsnapshot speaks RFB 3.3 and writes a JPEG (quality 100); L0's PIL makes it a PNG.
    client vncsnapshot_1 300 vncsnapshot -quality 100 127.0.0.1:0 /tmp/vncsnap-1.jpg
    rig_l0 python3 -c 'import sys
from PIL import Image
Image.open(sys.argv[1]).convert("RGB").save(sys.argv[2])' /tmp/vncsnap-1.jpg /tmp/vncsnap-1.png \
        >/tmp/jpeg_to_png.out 2>&1
    fields="$fields jpeg_to_png_exit=$?"
    vncdo vncdo_input 600 -s /tmp/vnc.sock key a move 100 200 click 1
    t0=$(rig_uptime)
    rig_l0 timeout -s KILL 900 env PYTHONPATH="$vncdotool" python3 \
        "$repo/resources/rig/vnc-session.py" 127.0.0.1::5900 /tmp/vncdo-1.png /tmp/vncdo-2.png \
        /tmp/mode2 >/tmp/session.out 2>&1 &
    session=$!
    if rig_wait_for "$out" step2 'RIG-DATA scenario=vnc-kms-2 .*flushes=' 900; then
        : >"$shared/mode2"
    fi
    wait "$session"
    rc=$?
    sed 's/^/vnc-session| /' /tmp/session.out
    fields="$fields session_exit=$rc session_run_s=$(rig_sub "$(rig_uptime)" "$t0")"
    # 50 idle connections and one that never reads, open during step 3.
    vnc-stress --connect 127.0.0.1:5900 --idle 50 --stuck 1 --readers 1 --hold-secs 60 \
        --scenario vnc-stress >/tmp/stress.out 2>&1 &
    stress=$!
    i=0
    while ! grep -q '^VNC-STRESS-READY' /tmp/stress.out && [ "$i" -lt 600 ]; do
        i=$((i + 1))
        sleep 0.1
    done
    fields="$fields stress_ready_at=$(rig_uptime)"
    vncdo vncdo_f12_2 600 -s /tmp/vnc.sock key f12
    if rig_wait_for "$out" step3 'RIG-DATA scenario=vnc-kms-3 .*flushes=' 900; then
        client gvnccapture_3 300 gvnccapture 127.0.0.1:0 /tmp/gvnc-3.png
        fields="$fields gvnccapture_3_end_at=$(rig_uptime)"
    fi
    wait "$stress"
    fields="$fields stress_exit=$? stress_end_at=$(rig_uptime)"
    vncdo vncdo_f12_3 600 -s /tmp/vnc.sock key f12
    sed 's/^/vnc-stress| /' /tmp/stress.out
    stress_line=$(grep '^VNC-STRESS ' /tmp/stress.out | head -n1)
    # shellcheck disable=SC2086 # k=v words
    [ -z "$stress_line" ] || rig_data ${stress_line#VNC-STRESS }
fi
wait "$vmm_pid"
rig_vmm_rc "$out"
rig_l2_forward "$out"
rig_vmm_facts "$out" l2
facts=$RIG_FIELDS
reason=$RIG_REASON

# The second run: a blob in the passed-through ivshmem BAR2 (L2's rig.l2=vnc-bar), captured by
# both clients, ended by F12.
bdf=$(rig_bind_vfio 1af4 1110) || rig_fail vfio-bind-failed
out=/tmp/vmm-vnc-bar.out
: >"$out"
RIG_VMM_T0=$(rig_uptime)
RIG_VMM_SECS=900
echo "rig-secret" >/tmp/vnc-password
rig_run_vmm 900 "$out" --device "vfio=$bdf,gpu=blob" --display vnc=127.0.0.1:5900 \
    --display "vnc=127.0.0.1:5901,password-file=/tmp/vnc-password" \
    --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
    --cmdline "$(rig_l2_cmdline vnc-bar)" --memory 512M &
vmm_pid=$!
if rig_wait_for "$out" bar 'RIG-DATA scenario=gpu-user-blob shown=1' 600; then
    client gvnccapture_bar 300 gvnccapture 127.0.0.1:0 /tmp/bar-gvnc.png
    # VNC Authentication: the right password gets the picture, a wrong one is refused.
    vncdo vncdo_badpw 60 -s 127.0.0.1::5901 -p wrong-one capture /tmp/bar-badpw.png
    vncdo vncdo_bar 600 -s 127.0.0.1::5901 -p rig-secret capture /tmp/bar-vncdo.png key f12
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

sent=0
for f in gvnc-1.png vncsnap-1.png vncdo-1.png vncdo-2.png gvnc-3.png bar-gvnc.png bar-vncdo.png \
    bar-badpw.png; do
    if [ -f "$shared/$f" ]; then
        rig_send_file "$shared/$f" "$f" || rig_fail send-failed name="$f"
        sent=$((sent + 1))
    fi
done
RIG_REASON=$reason
RIG_FIELDS="$fields $facts $bar_facts bar_exports_vfio=$RIG_EXPORTS_VFIO files_sent=$sent"
rig_report
