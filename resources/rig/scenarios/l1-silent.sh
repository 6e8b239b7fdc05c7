#!/bin/sh
# run.sh's watch on L1, for an L1 that stays silent: stops L1's heartbeat for good and waits.
# run.sh should save L1's CPU state, send an NMI and, the heartbeat still missing, stop QEMU
# (exit 4), so this scenario reports a result only when something is wrong.
. /rig/lib.sh

pid=$(cat /tmp/rig-heartbeat.pid 2>/dev/null) || rig_fail no-heartbeat
kill -STOP "$pid" 2>/dev/null || rig_fail no-heartbeat pid="$pid"
rig_log "heartbeat stopped for good at $(rig_uptime)s"
sleep 900
rig_fail still-running-after-900s
