#!/usr/bin/env bash
# Isolation, F3 (issue 10): one rule of what a partition name is, and the
# daemon, `protobus cat` and subscribers all follow it. A real protobusd on
# 127.0.0.1 (a free port, a temp data directory), driven with the CLI:
#   - `protobusd --check` refuses [partition .hidden] and a template with a
#     literal leading ".";
#   - a capture group that produces a name starting with "." is refused at
#     publish, with an Error naming the topic and the produced name; so is
#     one that produces a static rule's partition name; nothing reaches disk;
#   - after a restart every acknowledged event is visible: cat of the data
#     directory prints them all, --verify is clean, `sub --from-beginning`
#     delivers them all;
#   - a directory holding segments under a name the rule refuses (as an older
#     daemon could leave) is reported by the daemon at start-up and by cat
#     (exit 1), never skipped silently; given by path it is read;
#   - a second protobusd on the same data directory is refused at start-up.
# Every wait is bounded; the daemon is stopped by PID; the temp dir goes.
set -euo pipefail
. "$(dirname "$0")/../lib/harness.sh" # harness_init, harness_cleanup, fail, wait_until, run, launch_daemon, stop_daemon

harness_init partnames
trap 'harness_cleanup' EXIT

write_conf() {
    cat >"$TMP/protobusd.conf" <<EOF
[server]
listen = 127.0.0.1:0
data_dir = $DATA

[partition orders]
match = orders\\..*

[partition $1]
match = x\\.([a-z.]*)

[partition events]
match = .*
EOF
}

start_daemon() {
    mkdir -p "$DATA"
    launch_daemon "$TMP/protobusd.conf"
}

test_check_refuses_hidden_names() {
    printf '[partition .hidden]\nmatch = .*\n' >"$TMP/bad1.conf"
    local rc=0
    "$PBD" --check -c "$TMP/bad1.conf" >"$TMP/out" 2>&1 || rc=$?
    [ "$rc" -eq 1 ] || fail "--check of [partition .hidden] exited $rc"
    grep -q 'bad1.conf:1: \[partition .hidden\]: a partition name may not start with "."' \
        "$TMP/out" || fail "message: $(cat "$TMP/out")"
    printf '[partition .t-$1]\nmatch = t\\.(.*)\n' >"$TMP/bad2.conf"
    rc=0
    "$PBD" --check -c "$TMP/bad2.conf" >"$TMP/out" 2>&1 || rc=$?
    [ "$rc" -eq 1 ] || fail "--check of [partition .t-\$1] exited $rc"
    # and start-up refuses it the same way
    rc=0
    "$PBD" -c "$TMP/bad1.conf" --data-dir "$TMP/never" >"$TMP/out" 2>&1 || rc=$?
    [ "$rc" -eq 1 ] || fail "start-up with [partition .hidden] exited $rc"
    [ ! -e "$TMP/never" ] || fail "a refused configuration created the data directory"
    "$PBD" --check -c "$TMP/protobusd.conf" >/dev/null
}

test_capture_group_refusals() {
    local rc=0
    "$PB" pub x..hidden one >"$TMP/out" 2>&1 || rc=$?
    [ "$rc" -eq 1 ] || fail "publish of x..hidden exited $rc"
    grep -q 'topic "x..hidden" matches \[partition $1\].*but the name ".hidden" is not a valid partition name' \
        "$TMP/out" || fail "message: $(cat "$TMP/out")"
    rc=0
    "$PB" pub x.orders two >"$TMP/out" 2>&1 || rc=$?
    [ "$rc" -eq 1 ] || fail "publish of x.orders exited $rc"
    grep -q 'the name "orders" it produces is the partition of \[partition orders\]' "$TMP/out" ||
        fail "message: $(cat "$TMP/out")"
    [ ! -e "$DATA/.hidden" ] || fail "a refused name reached the disk"
    # the acknowledged ones
    "$PB" pub orders.eu o1 >/dev/null
    "$PB" pub x.sensor s1 >/dev/null
    "$PB" pub x.a.b s2 >/dev/null
    "$PB" pub misc m1 >/dev/null
    [ -d "$DATA/sensor" ] && [ -d "$DATA/a.b" ] || fail "capture-group partitions missing"
}

test_everything_visible_after_restart() {
    "$PB" cat --format json "$DATA" >"$TMP/cat.json"
    [ "$(wc -l <"$TMP/cat.json")" -eq 4 ] || fail "cat printed $(wc -l <"$TMP/cat.json") events, want 4"
    "$PB" cat --verify "$DATA" >"$TMP/verify" || fail "verify: $(cat "$TMP/verify")"
    grep -q 'verified 4 record(s) in 4 source(s): 0 problem(s)' "$TMP/verify" ||
        fail "verify: $(cat "$TMP/verify")"
    "$PB" sub --from-beginning -n 4 --timeout 5000 --format json '.*' >"$TMP/sub.json"
    [ "$(wc -l <"$TMP/sub.json")" -eq 4 ] || fail "sub delivered $(wc -l <"$TMP/sub.json"), want 4"
}

test_unlisted_directory_reported() {
    # As a daemon that allowed such names could have left it: a partition
    # directory under a hidden name, holding acknowledged events.
    mv "$DATA/sensor" "$DATA/.sensor"
    local rc=0
    "$PB" cat --format json "$DATA" >"$TMP/cat.json" 2>"$TMP/err" || rc=$?
    [ "$rc" -eq 1 ] || fail "cat of a data dir with .sensor/ exited $rc"
    grep -q "$DATA/.sensor: holds segment files but is not a partition directory" "$TMP/err" ||
        fail "cat said: $(cat "$TMP/err")"
    [ "$(wc -l <"$TMP/cat.json")" -eq 3 ] || fail "cat printed $(wc -l <"$TMP/cat.json"), want 3"
    rc=0
    "$PB" cat --verify "$DATA" >"$TMP/verify" 2>/dev/null || rc=$?
    [ "$rc" -eq 1 ] || fail "verify exited $rc"
    grep -q '1 problem(s)' "$TMP/verify" || fail "verify: $(cat "$TMP/verify")"
    # by path, it is read
    "$PB" cat --format json "$DATA/.sensor" >"$TMP/one.json"
    grep -q '"topic":"x.sensor"' "$TMP/one.json" || fail "cat by path: $(cat "$TMP/one.json")"
}

test_daemon_reports_unlisted_directory() {
    grep -q "data directory $DATA: .sensor/ holds segment files but is not a partition" \
        "$TMP/daemon.log" || fail "no start-up warning in the log"
    mv "$DATA/.sensor" "$DATA/sensor"
}

# A second daemon on the same data directory (another port) is refused at
# start-up, naming the directory and the running daemon's pid; the first
# goes on serving; the lock file is no partition for cat.
test_second_daemon_refused() {
    sed 's/^listen = .*/listen = 127.0.0.1:0/' "$TMP/protobusd.conf" >"$TMP/second.conf"
    local rc=0
    timeout 20 "$PBD" -c "$TMP/second.conf" --port-file "$TMP/port2" 2>"$TMP/second.log" || rc=$?
    [ "$rc" -ne 0 ] || fail "a second protobusd on $DATA started"
    [ "$rc" -ne 124 ] || fail "a second protobusd on $DATA was still running after 20 s"
    grep -q "data directory $DATA is in use by another protobusd (pid $DPID" "$TMP/second.log" ||
        fail "second daemon said: $(cat "$TMP/second.log")"
    [ ! -s "$TMP/port2" ] || fail "the second daemon listened"
    "$PB" pub misc after-refusal >/dev/null || fail "the first daemon stopped serving"
    "$PB" cat --verify "$DATA" >"$TMP/verify" || fail "verify: $(cat "$TMP/verify")"
    grep -q 'verified 5 record(s) in 4 source(s): 0 problem(s)' "$TMP/verify" ||
        fail "verify: $(cat "$TMP/verify")"
}

[ -x "$PB" ] && [ -x "$PBD" ] || {
    echo "test_partnames: $PB or $PBD missing (run make)" >&2
    exit 1
}

write_conf '$1'
run test_check_refuses_hidden_names
start_daemon
run test_capture_group_refusals
stop_daemon
start_daemon
run test_everything_visible_after_restart
stop_daemon
run test_unlisted_directory_reported
start_daemon
stop_daemon
run test_daemon_reports_unlisted_directory
start_daemon
run test_everything_visible_after_restart
run test_second_daemon_refused
stop_daemon

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
