#!/bin/sh
# console-file: self-test of the rig's L1 -> L0 file channel (rig_send_file: base64 between marker lines
# on the serial console, decoded and checked by rig-tests). Sends 1 MiB of random bytes; the result
# line carries its sha256 and the send time (tests/tests/rig_console_file.rs checks the received file).
. /rig/lib.sh

f=/tmp/console-file.bin
dd if=/dev/urandom of="$f" bs=1024 count=1024 2>/dev/null || rig_fail dd-failed
sum=$(sha256sum "$f") || rig_fail sha256sum-failed
t0=$(rig_uptime)
rig_send_file "$f" random.bin || rig_fail send-failed
t1=$(rig_uptime)
rig_result PASS name=random.bin size="$(wc -c <"$f")" sha256="${sum%% *}" send_s="$(rig_sub "$t1" "$t0")"
