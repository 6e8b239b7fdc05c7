#!/bin/sh
# vnc-clients-smoke (run.sh --l0-root): proves the path from L0's real, unmodified VNC clients,
# run inside L1 from L0's root (rig_l0), to a server in L1, and L2's input side:
#   1. rfb-fixture (guest-tools; a tiny RFB server that exists only to prove this path) listens on
#      127.0.0.1:5900 and on the unix socket RIG_L0_SHARED/rfb.sock (/tmp/rfb.sock in the chroot);
#   2. gvnccapture (TCP) and vncsnapshot (TCP, JPEG quality 100) capture its screen into the shared
#      directory; L0's python3 with PIL turns the JPEG into a PNG;
#   3. vncdotool sends `key a`, `move 10 20`, `click 1` over the unix socket (its first, cold start),
#      then captures the screen over TCP (warm start);
#   4. evdev-watch in L1 sees the events of a uinput keyboard that L0's python3 creates (KEY_A down
#      and up): the program against the kernel's evdev, on L2's kernel;
#   5. the vmm boots L2 with rig.l2=input (stock virtio_input + evdev, evdev-watch for 3 s, no
#      device required: the vmm has no virtio-input yet).
# Facts only (tests/tests/rig_vnc_clients_smoke.rs judges them): `RIG-DATA client=<name> version=..`
# lines (vnc-clients.sh --versions run in the chroot); per client run <run>_exit, <run>_start_s (L1
# seconds from the launch to the fixture's RFB-CLIENT line), <run>_run_s; l0_write_refused (1 if a
# write into L0's root failed, as it must); the files sent to L0 (the captures, the fixture's log
# with every RFB-KEY/RFB-POINTER line, evdev-watch's lines in L1); l1_uinput_exit, l1_evdev_exit,
# l1_evdev_events; the L2 run's rig_vmm_facts, l2_input (L2-INPUT's fields) and evdev-watch's
# result (forwarded).
# FAIL only when the facts are incomplete: no /l0, no vncdotool in L0's target/, the fixture did not
# listen, a file did not reach L0, no /dev/kvm, the vmm killed or no L2 result line.
. /rig/lib.sh

rig_l0_prepare || rig_fail no-l0-root
repo=$(rig_l0_repo) || rig_fail no-l0-repo
vncdotool=$repo/target/rig/vncdotool
[ -d "/l0$vncdotool/vncdotool" ] || rig_fail no-vncdotool path="$vncdotool"
shared=$RIG_L0_SHARED
# L0 stays unwritten: a write into this checkout's target/rig/ through /l0 must fail (L1's mount is
# ro and QEMU's export readonly=on). l0_write_refused=1 if it failed.
probe=/l0$repo/target/rig/.l0-write-probe
if (: >"$probe") 2>/dev/null; then
    refused=0
    rm -f "$probe"
else
    refused=1
fi
fields="l0_write_refused=$refused"

# The first program started in the chroot: L0's bash, libc and the script through 9p.
t0=$(rig_uptime)
rig_l0 bash "$repo/resources/rig/vnc-clients.sh" --versions >/tmp/versions.txt 2>&1
rc=$?
fields="$fields versions_exit=$rc versions_s=$(rig_sub "$(rig_uptime)" "$t0")"
set -f
while read -r line; do
    case "$line" in
        # shellcheck disable=SC2086 # a line of k=v words
        client=*) rig_data $line ;;
        *) rig_log "vnc-clients.sh: $line" ;;
    esac
done </tmp/versions.txt
set +f

# The fixture's lines go to the console and, stamped with L1's uptime, to /tmp/rfb.log.
: >/tmp/rfb.log
rfb-fixture --listen 127.0.0.1:5900 --listen "unix:$shared/rfb.sock" 2>&1 | rig_timestamp /tmp/rfb.log &
i=0
while [ "$(grep -c 'RFB-LISTEN' /tmp/rfb.log)" -lt 2 ]; do
    i=$((i + 1))
    [ "$i" -le 100 ] || rig_fail fixture-not-listening
    sleep 0.1
done

# client RUN SECS CMD... -> runs CMD through rig_l0 under L0's `timeout -s KILL SECS`, its output to
# the console (prefixed "RUN| "); appends RUN_exit, RUN_start_s and RUN_run_s to fields.
client() {
    local run=$1 secs=$2 t0 t1 rc start
    shift 2
    rig_log "$run: $* (timeout ${secs}s)"
    t0=$(rig_uptime)
    rig_l0 timeout -s KILL "$secs" "$@" >"/tmp/$run.out" 2>&1
    rc=$?
    t1=$(rig_uptime)
    sed "s/^/$run| /" "/tmp/$run.out"
    start=$(awk -v t0="$t0" '$1 + 0 >= t0 + 0 && $2 == "RFB-CLIENT" { print $1; exit }' /tmp/rfb.log)
    if [ -n "$start" ]; then
        start=$(rig_sub "$start" "$t0")
    else
        start=none
    fi
    fields="$fields ${run}_exit=$rc ${run}_start_s=$start ${run}_run_s=$(rig_sub "$t1" "$t0")"
}

client gvnccapture 300 gvnccapture 127.0.0.1:0 /tmp/gvnccapture.png
client vncsnapshot 300 vncsnapshot -quality 100 127.0.0.1:0 /tmp/vncsnapshot.jpg
client vncdotool_input 600 env PYTHONPATH="$vncdotool" python3 -m vncdotool.command \
    -s /tmp/rfb.sock key a move 10 20 click 1
client vncdotool_capture 600 env PYTHONPATH="$vncdotool" python3 -m vncdotool.command \
    -s 127.0.0.1::5900 capture /tmp/vncdotool.png
# The JPEG as a PNG for the test (L0's PIL decodes it).
t0=$(rig_uptime)
rig_l0 python3 -c 'import sys
from PIL import Image
Image.open(sys.argv[1]).convert("RGB").save(sys.argv[2])' /tmp/vncsnapshot.jpg /tmp/vncsnapshot.png \
    >/tmp/jpeg_to_png.out 2>&1
rc=$?
sed 's/^/jpeg_to_png| /' /tmp/jpeg_to_png.out
fields="$fields jpeg_to_png_exit=$rc jpeg_to_png_s=$(rig_sub "$(rig_uptime)" "$t0")"

pid=$(pidof rfb-fixture) && kill $pid
sleep 0.2
cp /tmp/rfb.log "$shared/rfb-fixture.log"
sent=0
missing=""
for f in gvnccapture.png vncsnapshot.jpg vncsnapshot.png vncdotool.png rfb-fixture.log; do
    if [ -f "$shared/$f" ]; then
        rig_send_file "$shared/$f" "$f" || rig_fail send-failed name="$f"
        sent=$((sent + 1))
    else
        missing="$missing,$f"
    fi
done
missing=${missing#,}
fields="$fields files_sent=$sent files_missing=${missing:-none}"
fields="$fields rfb_keys=$(grep -c ' RFB-KEY ' /tmp/rfb.log) rfb_pointers=$(grep -c ' RFB-POINTER ' /tmp/rfb.log)"

# evdev-watch against real kernel events, in L1 (the same kernel as L2's): L0's python3 creates a
# uinput keyboard, evdev-watch opens the event devices, then the keyboard sends KEY_A down and up
# (type 1 code 30), each followed by a SYN_REPORT. evdev-watch stops after 4 events; its lines go to
# L0 as evdev-l1.txt.
modfail=""
while read -r ko; do
    [ -n "$ko" ] || continue
    insmod "$ko" || modfail="$modfail ${ko##*/}"
done </rig/input-modules.list
[ -z "$modfail" ] || rig_fail insmod-failed modules="$(echo "${modfail# }" | tr ' ' ',')"
cat >"$shared/uinput-key.py" <<'EOT'
import fcntl, os, struct, time
UI_SET_EVBIT, UI_SET_KEYBIT, UI_DEV_CREATE, UI_DEV_DESTROY = 0x40045564, 0x40045565, 0x5501, 0x5502
EV_SYN, EV_KEY, KEY_A = 0, 1, 30
fd = os.open("/dev/uinput", os.O_WRONLY)
fcntl.ioctl(fd, UI_SET_EVBIT, EV_KEY)
fcntl.ioctl(fd, UI_SET_KEYBIT, KEY_A)
# struct uinput_user_dev: name[80], input_id, ff_effects_max, then absmax/absmin/absfuzz/absflat[64].
os.write(fd, struct.pack("80sHHHHi", b"rig uinput keyboard", 6, 0x1234, 0x5678, 1, 0) + bytes(4 * 64 * 4))
fcntl.ioctl(fd, UI_DEV_CREATE)
open("/tmp/uinput.ready", "w").close()
for _ in range(600):
    if os.path.exists("/tmp/uinput.go"):
        break
    time.sleep(0.1)
for t, c, v in ((EV_KEY, KEY_A, 1), (EV_SYN, 0, 0), (EV_KEY, KEY_A, 0), (EV_SYN, 0, 0)):
    os.write(fd, struct.pack("llHHi", 0, 0, t, c, v))
time.sleep(1)
fcntl.ioctl(fd, UI_DEV_DESTROY)
print("uinput: sent KEY_A down and up")
EOT
rm -f "$shared/uinput.ready" "$shared/uinput.go"
rig_l0 python3 /tmp/uinput-key.py >/tmp/uinput.out 2>&1 &
uinput_pid=$!
i=0
while [ ! -e "$shared/uinput.ready" ] && [ "$i" -lt 600 ]; do
    i=$((i + 1))
    sleep 0.1
done
evdev-watch --secs 60 --count 4 --devices 1 --scenario l1-evdev-watch >"$shared/evdev-l1.txt" 2>&1 &
evdev_pid=$!
i=0
while ! grep -q '^EVDEV-READY' "$shared/evdev-l1.txt" && [ "$i" -lt 300 ]; do
    i=$((i + 1))
    sleep 0.1
done
: >"$shared/uinput.go"
wait "$evdev_pid"
evdev_rc=$?
wait "$uinput_pid"
uinput_rc=$?
sed 's/^/uinput| /' /tmp/uinput.out
sed 's/^/l1-evdev| /' "$shared/evdev-l1.txt"
rig_send_file "$shared/evdev-l1.txt" evdev-l1.txt || rig_fail send-failed name=evdev-l1.txt
fields="$fields l1_uinput_exit=$uinput_rc l1_evdev_exit=$evdev_rc l1_evdev_events=$(grep -c '^EVDEV ' "$shared/evdev-l1.txt")"

# L2: the stock input drivers and evdev-watch.
[ -c /dev/kvm ] || rig_fail no-dev-kvm
out=/tmp/vmm-input.out
rig_run_vmm 200 "$out" --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
    --cmdline "$(rig_l2_cmdline input) rig.evdev=secs=3,devices=0" --memory 512M
rig_l2_forward "$out"
rig_vmm_facts "$out" l2
input=$(sed -n 's/.*L2-INPUT: \(.*\)$/\1/p' "$out" | head -n1)
ready=$(sed -n 's/.*EVDEV-READY \(.*\)$/\1/p' "$out" | head -n1)
RIG_FIELDS="$fields $RIG_FIELDS l2_input=$(rig_word "${input:-none}") l2_evdev_ready=$(rig_word "${ready:-none}")"
rig_report
