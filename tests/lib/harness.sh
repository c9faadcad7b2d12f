# tests/lib/harness.sh - what every shell integration test shares; sourced
# (`. "$(dirname "$0")/../lib/harness.sh"`) after `set -euo pipefail`.
#
#   fail MESSAGE...        prints the message indented on stderr, returns 1
#                          (inside a test run by `run`, that ends the test)
#   wait_until TRIES CMD.. runs CMD every 0.1 s until it succeeds, at most
#                          TRIES times (bounded: TRIES/10 seconds); 0 or 1
#   run NAME               runs the function NAME in a subshell with set -e,
#                          prints "ok   NAME" or "FAIL NAME" and counts it in
#                          the caller's $passed / $failed
#   launch_daemon CONF     starts "$PBD -c CONF" (port file $TMP/port, removed
#                          first; stderr appended to $TMP/daemon.log; its pid
#                          in $TMP/daemon.pid); sets DPID and PROTOBUS_SERVER;
#                          if no port within 10 s, prints the log and exits
#                          the test
#   stop_daemon            SIGTERM to $DPID, waits for it (at most 30 s), clears
#                          DPID and $TMP/port; returns 1 with the log unless it
#                          exited 0 (a graceful stop)
#   harness_init NAME      BUILD (absolute; default build), PB, PBD, a fresh
#                          TMP (/tmp/pb_test_NAME.XXXXXX), DATA ($TMP/data),
#                          DPID="", passed=0, failed=0
#   harness_cleanup [PID]...  for the EXIT trap: SIGKILL to each PID given that
#                          is not empty, then to $DPID, waits, removes $TMP
# shellcheck shell=bash

harness_init() {
    BUILD=${BUILD:-build}
    BUILD=$(cd "$BUILD" && pwd)
    PB="$BUILD/protobus"
    PBD="$BUILD/protobusd"
    TMP=$(mktemp -d "/tmp/pb_test_$1.XXXXXX")
    DATA="$TMP/data"
    DPID=""
    passed=0
    failed=0
}

harness_cleanup() {
    local pid
    for pid in "$@" "$DPID"; do
        if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}

fail() {
    echo "    $*" >&2
    return 1
}

wait_until() {
    local tries=$1
    shift
    local i
    for ((i = 0; i < tries; i++)); do
        if "$@"; then return 0; fi
        sleep 0.1
    done
    return 1
}

run() {
    local name=$1 rc
    set +e
    (
        set -e
        "$name"
    )
    rc=$?
    set -e
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        echo "ok   $name"
    else
        failed=$((failed + 1))
        echo "FAIL $name"
    fi
}

launch_daemon() {
    rm -f "$TMP/port"
    "$PBD" -c "$1" --port-file "$TMP/port" >/dev/null 2>>"$TMP/daemon.log" &
    DPID=$!
    # For a cleanup trap in the parent shell: tests run by `run` start the
    # daemon in a subshell, whose DPID the trap does not see.
    echo "$DPID" >"$TMP/daemon.pid"
    if ! wait_until 100 test -s "$TMP/port"; then
        echo "protobusd did not start:" >&2
        cat "$TMP/daemon.log" >&2
        exit 1
    fi
    export PROTOBUS_SERVER="127.0.0.1:$(cat "$TMP/port")"
}

stop_daemon() {
    kill -TERM "$DPID"
    local i rc=0
    for ((i = 0; i < 300; i++)); do
        kill -0 "$DPID" 2>/dev/null || break
        sleep 0.1
    done
    wait "$DPID" || rc=$?
    DPID=""
    rm -f "$TMP/port" "$TMP/daemon.pid"
    [ "$rc" -eq 0 ] || {
        echo "protobusd exited with $rc:" >&2
        cat "$TMP/daemon.log" >&2
        return 1
    }
}
