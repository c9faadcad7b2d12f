#!/usr/bin/env bash
# A SIGTERM at any moment after protobusd says it is up (its port file
# exists) is a graceful stop: exit status 0 and "stopped cleanly" in the log,
# never the signal's default action. The port file used to be written before
# the signal handlers were installed; a supervisor that stopped a daemon it
# had just seen start killed it ungracefully about 1 time in 75 (found by
# test_iso_conns on a loaded machine). CYCLES start/stop cycles on one data
# directory, each SIGTERM sent as soon as the port file is seen (a tight
# poll, bounded by 10 s per cycle); the daemon is stopped by PID.
set -euo pipefail
. "$(dirname "$0")/../lib/harness.sh" # harness_init, harness_cleanup, fail, wait_until, run

harness_init signals
CYCLES=${CYCLES:-150}
trap 'harness_cleanup' EXIT

test_sigterm_right_after_start_is_graceful() {
    printf '[server]\nlisten = 127.0.0.1:0\ndata_dir = %s/data\n[partition events]\nmatch = .*\n' \
        "$TMP" >"$TMP/protobusd.conf"
    local i rc start
    for ((i = 1; i <= CYCLES; i++)); do
        rm -f "$TMP/port"
        "$PBD" -c "$TMP/protobusd.conf" --port-file "$TMP/port" 2>"$TMP/daemon.log" &
        DPID=$!
        start=$SECONDS
        while [ ! -s "$TMP/port" ]; do
            kill -0 "$DPID" 2>/dev/null || fail "cycle $i: protobusd exited before listening: $(cat "$TMP/daemon.log")"
            [ $((SECONDS - start)) -lt 10 ] || fail "cycle $i: no port file within 10 s"
        done
        kill -TERM "$DPID"
        rc=0
        wait "$DPID" || rc=$?
        DPID=""
        [ "$rc" -eq 0 ] || fail "cycle $i: exit status $rc after SIGTERM (143 = killed by it): $(tail -3 "$TMP/daemon.log")"
        grep -q "stopped cleanly" "$TMP/daemon.log" || fail "cycle $i: no \"stopped cleanly\": $(tail -3 "$TMP/daemon.log")"
    done
}

[ -x "$PBD" ] || {
    echo "test_signals: $PBD missing (run make)" >&2
    exit 1
}
run test_sigterm_right_after_start_is_graceful
echo "test_signals: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
