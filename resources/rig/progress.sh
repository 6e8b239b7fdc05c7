# shellcheck shell=bash
# Progress lines for long host-side steps (build-kernel.sh's make), sourced by bash scripts.

# rig_elapsed SECS -> "MmSSs".
rig_elapsed() {
    printf '%dm%02ds\n' $(($1 / 60)) $(($1 % 60))
}

# rig_progress LABEL LOG EVERY PATTERN LAST CMD... -> runs CMD (stdin /dev/null) with its stdout
# and stderr in LOG (emptied first; kept afterwards). While it runs, prints on stderr every EVERY
# seconds "LABEL: <elapsed>, <n> objects so far", n being the number of LOG lines that match
# PATTERN (grep -E), with " (<LAST> last time)" if LAST is not empty. At the end it prints
# "LABEL: done in <elapsed>, <n> objects (log: LOG)", or "LABEL: FAILED (exit S) after ..." and the
# last 20 lines of LOG. Sets RIG_PROGRESS_COUNT to the final n and returns CMD's exit status.
# CMD is stopped (SIGTERM) if the calling script exits or is interrupted first.
rig_progress() {
    local label=$1 log=$2 every=$3 pattern=$4 last=$5 t0 now next pid rc=0 n
    shift 5
    : >"$log"
    t0=$(date +%s)
    next=$((t0 + every))
    "$@" >>"$log" 2>&1 </dev/null &
    pid=$!
    # A background job of a script ignores SIGINT: stop it by hand when the script ends early.
    # shellcheck disable=SC2064 # the pid is known now
    trap "kill $pid 2>/dev/null" EXIT
    # shellcheck disable=SC2064
    trap "kill $pid 2>/dev/null; exit 130" INT TERM
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        now=$(date +%s)
        if [ "$now" -ge "$next" ] && kill -0 "$pid" 2>/dev/null; then
            n=$(grep -cE -- "$pattern" "$log" || true)
            echo "$label: $(rig_elapsed $((now - t0))), $n objects so far${last:+ ($last last time)}" >&2
            next=$((now + every))
        fi
    done
    wait "$pid" || rc=$?
    trap - EXIT INT TERM
    RIG_PROGRESS_COUNT=$(grep -cE -- "$pattern" "$log" || true)
    now=$(date +%s)
    if [ "$rc" = 0 ]; then
        echo "$label: done in $(rig_elapsed $((now - t0))), $RIG_PROGRESS_COUNT objects (log: $log)" >&2
    else
        echo "$label: FAILED (exit $rc) after $(rig_elapsed $((now - t0))), $RIG_PROGRESS_COUNT objects; last lines of $log:" >&2
        tail -n 20 "$log" >&2
    fi
    return "$rc"
}
