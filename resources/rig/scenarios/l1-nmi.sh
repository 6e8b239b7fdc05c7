#!/bin/sh
# run.sh's watch on L1, for an L1 that wakes up: stops L1's heartbeat, waits for the NMI run.sh
# sends a silent L1 (the NMI count in /proc/interrupts), starts the heartbeat again and stays up
# 15 s more so that run.sh sees it back. Reports the NMI counts and when the heartbeat stopped.
. /rig/lib.sh

nmis() { awk '$1 == "NMI:" { print $2 }' /proc/interrupts; }
pid=$(cat /tmp/rig-heartbeat.pid 2>/dev/null) || rig_fail no-heartbeat
kill -0 "$pid" 2>/dev/null || rig_fail no-heartbeat pid="$pid"
before=$(nmis)
[ -n "$before" ] || rig_fail no-nmi-count
kill -STOP "$pid"
stopped=$(rig_uptime)
rig_log "heartbeat stopped at ${stopped}s; NMIs so far: $before"
waited=0
while [ "$(nmis)" = "$before" ] && [ "$waited" -lt 300 ]; do
    sleep 1
    waited=$((waited + 1))
done
after=$(nmis)
nmi_at=$(rig_uptime)
kill -CONT "$pid"
[ "$after" != "$before" ] || rig_fail no-nmi nmis_before="$before" waited_s="$waited"
rig_log "NMI by ${nmi_at}s (NMIs: $after); heartbeat started again"
sleep 15
rig_result PASS nmis_before="$before" nmis_after="$after" stopped_s="$stopped" nmi_s="$nmi_at"
