#!/usr/bin/env bash
# Integration test of SIGHUP (server/reload.c) against a real protobusd on
# 127.0.0.1 (a free port, a temp data directory): a good file adds a rule
# (a topic routed before the reload, and so in the route cache, goes to the
# new rule's partition after it), raises max_event_bytes (an event refused
# before is accepted) and changes a restart-only setting (logged by name);
# an open subscription stays; a bad file (a regex that does not compile, a
# bad limit) is refused with file:line and changes nothing. Every wait is
# bounded; processes are stopped by PID.
#
# Environment: BUILD (default build) holds protobus and protobusd.
set -euo pipefail
. "$(dirname "$0")/../lib/harness.sh" # harness_init, harness_cleanup, fail, wait_until, run, launch_daemon, stop_daemon

harness_init reload
PPID_BG=""
SPID=""
trap 'harness_cleanup "$PPID_BG" "$SPID"' EXIT

conf_a() {
    cat >"$TMP/protobusd.conf" <<EOF
[server]
listen = 127.0.0.1:0
data_dir = $DATA
log_level = info
max_event_bytes = 1K
max_frame_bytes = 64K

[partition orders]
match = orders\\..*

[partition events]
match = .*
EOF
}

# B: a rule for audit.* before the catch-all, a larger max_event_bytes,
# fsync changed (restart-only).
conf_b() {
    cat >"$TMP/protobusd.conf" <<EOF
[server]
listen = 127.0.0.1:0
data_dir = $DATA
log_level = info
max_event_bytes = 4K
max_frame_bytes = 64K
fsync = never

[partition orders]
match = orders\\..*

[partition audit]
match = audit\\..*

[partition events]
match = .*
EOF
}

start_daemon() {
    mkdir -p "$DATA"
    conf_a
    : >"$TMP/daemon.log"
    launch_daemon "$TMP/protobusd.conf"
}

log_count() { grep -c -- "$1" "$TMP/daemon.log" || true; }

# Sends SIGHUP and waits for one more log line with text $1.
hup_and_wait() {
    local want
    want=$(($(log_count "$1") + 1))
    kill -HUP "$DPID"
    local i
    for ((i = 0; i < 100; i++)); do
        [ "$(log_count "$1")" -ge "$want" ] && return 0
        sleep 0.1
    done
    fail "no '$1' in the log: $(tail -5 "$TMP/daemon.log")"
}

stored() { "$PB" cat "$DATA/$1" 2>/dev/null | wc -l; }

big() { head -c 2000 /dev/zero | tr '\0' x; }

test_good_reload() {
    "$PB" pub audit.x before
    [ -d "$DATA/events" ] && [ ! -d "$DATA/audit" ] || fail "audit.x not in events before the reload"
    if "$PB" pub events.big "$(big)" 2>"$TMP/e"; then
        fail "2000 bytes accepted with max_event_bytes = 1K"
    fi
    conf_b
    hup_and_wait "SIGHUP: configuration reloaded from"
    grep -q "fsync changed; it takes effect at the next restart" "$TMP/daemon.log" ||
        fail "the restart-only change was not logged"
    "$PB" pub audit.x after
    [ "$(stored audit)" -eq 1 ] || fail "audit.x after the reload: $(stored audit) in audit"
    "$PB" pub events.big "$(big)" || fail "2000 bytes refused after max_event_bytes = 4K"
    # The subscription is untouched and sees the event published after.
    wait_until 50 grep -q after "$TMP/sub.out" || fail "subscriber got: $(cat "$TMP/sub.out")"
    kill -0 "$SPID" || fail "the subscription ended"
}

test_bad_reload_refused() {
    cat >"$TMP/protobusd.conf" <<EOF
[server]
listen = 127.0.0.1:0
data_dir = $DATA
max_event_bytes = 1K

[partition audit]
match = audit\\.(
EOF
    hup_and_wait "SIGHUP: configuration refused, the running configuration stays"
    grep -q "refused, the running configuration stays: $TMP/protobusd.conf:7:" "$TMP/daemon.log" ||
        fail "no file:line: $(grep refused "$TMP/daemon.log")"
    # Nothing changed: the rules and max_event_bytes = 4K of B still hold.
    "$PB" pub audit.y still
    [ "$(stored audit)" -eq 2 ] || fail "audit.y: $(stored audit) in audit"
    "$PB" pub events.big "$(big)" || fail "max_event_bytes went back"
    # A bad limit is refused too.
    conf_b
    sed -i 's/^max_event_bytes = 4K/max_event_bytes = lots/' "$TMP/protobusd.conf"
    hup_and_wait "SIGHUP: configuration refused, the running configuration stays"
    grep -q "protobusd.conf:5: max_event_bytes" "$TMP/daemon.log" || fail "no line for the limit"
    kill -0 "$SPID" || fail "the subscription ended"
}

start_daemon
# A live subscription across the reloads (started here: each test runs in a
# subshell).
"$PB" sub 'audit\..*' >"$TMP/sub.out" 2>"$TMP/sub.err" &
SPID=$!
sleep 0.3
run test_good_reload
run test_bad_reload_refused
if [ -n "$SPID" ]; then
    kill -TERM "$SPID"
    wait "$SPID" || true
    SPID=""
fi
stop_daemon || failed=$((failed + 1))
echo "test_reload: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
