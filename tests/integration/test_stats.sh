#!/usr/bin/env bash
# Integration test of `protobus stats`: a real protobusd on 127.0.0.1 with
# metrics_listen (free ports, a temp data directory, two partitions), a
# known state published with the CLI, then `stats --format json` checked
# with jq against it (offsets, counts, rates while a publish runs), the
# table's rows, --watch --count, and the errors (no server, bad options).
# Every wait is bounded; the daemon is stopped by PID; the temp dir removed.
#
# Environment: BUILD (default build) holds protobus and protobusd.
set -euo pipefail
. "$(dirname "$0")/../lib/harness.sh" # harness_init, harness_cleanup, fail, wait_until, run, launch_daemon, stop_daemon

harness_init stats
PPID_BG=""
SPID=""
trap 'harness_cleanup "$PPID_BG" "$SPID"' EXIT

metrics_addr() {
    grep -o 'metrics on http://[^/]*' "$TMP/daemon.log" | head -1 | sed 's|.*http://||'
}

start_daemon() {
    mkdir -p "$DATA"
    cat >"$TMP/protobusd.conf" <<EOF
[server]
listen = 127.0.0.1:0
metrics_listen = 127.0.0.1:0
data_dir = $DATA
log_level = info

[partition orders]
match = orders\\..*

[partition events]
match = .*
EOF
    : >"$TMP/daemon.log"
    launch_daemon "$TMP/protobusd.conf"
    MADDR=$(metrics_addr)
    [ -n "$MADDR" ] || {
        echo "no metrics address in the log:" >&2
        cat "$TMP/daemon.log" >&2
        exit 1
    }
}

# --- tests ----------------------------------------------------------------

# The known state: orders 3 events, events 50.
publish_known_state() {
    "$PB" pub orders.a one
    "$PB" pub orders.b two
    "$PB" pub orders.a three
    seq 1 50 | "$PB" pub events.x
}

jq_part() { jq -r --arg p "$2" ".partitions[] | select(.name == \$p) | $3" "$1"; }

test_json_known_state() {
    "$PB" stats -m "$MADDR" --format json --interval 0.2 >"$TMP/s.json"
    [ "$(jq '.partitions | length' "$TMP/s.json")" = 2 ] || fail "partitions: $(cat "$TMP/s.json")"
    [ "$(jq_part "$TMP/s.json" orders .next_offset)" = 3 ] || fail "orders next_offset"
    [ "$(jq_part "$TMP/s.json" orders .events_appended)" = 3 ] || fail "orders events"
    [ "$(jq_part "$TMP/s.json" events .next_offset)" = 50 ] || fail "events next_offset"
    [ "$(jq_part "$TMP/s.json" events .state)" = ok ] || fail "events state"
    [ "$(jq_part "$TMP/s.json" events .events_per_s)" = 0 ] || fail "idle rate not 0"
    [ "$(jq_part "$TMP/s.json" events '.segments >= 1')" = true ] || fail "segments"
    [ "$(jq_part "$TMP/s.json" events '.disk_bytes > 100')" = true ] || fail "disk_bytes"
    jq_part "$TMP/s.json" orders .oldest_record_time | grep -q '^20[0-9][0-9]-' ||
        fail "oldest_record_time: $(jq_part "$TMP/s.json" orders .oldest_record_time)"
    [ "$(jq .connections_open "$TMP/s.json")" = 0 ] || fail "connections_open"
    [ "$(jq .subscriptions.active "$TMP/s.json")" = 0 ] || fail "subscriptions"
}

# A rate while events are published (a subscriber live meanwhile), then
# the table with both partitions.
test_rate_and_table_while_publishing() {
    "$PB" sub --from-beginning 'events\..*' >/dev/null 2>&1 &
    SPID=$!
    # About 3 s of publishing, 1000 events every 50 ms.
    for ((k = 0; k < 60; k++)); do
        seq 1 1000
        sleep 0.05
    done | "$PB" pub events.load &
    PPID_BG=$!
    sleep 0.5
    "$PB" stats -m "$MADDR" --format json --interval 0.5 >"$TMP/r.json"
    "$PB" stats -m "$MADDR" --interval 0.2 >"$TMP/t.txt"
    wait "$PPID_BG" || fail "pub failed"
    PPID_BG=""
    kill -TERM "$SPID"
    wait "$SPID" || true
    SPID=""
    local r
    r=$(jq_part "$TMP/r.json" events .events_per_s)
    jq -e --arg p events '.partitions[] | select(.name == $p) | .events_per_s > 0' "$TMP/r.json" \
        >/dev/null || fail "events_per_s while publishing: $r"
    [ "$(jq .subscriptions.active "$TMP/r.json")" = 1 ] || fail "subscriptions: $(cat "$TMP/r.json")"
    grep -q '^PARTITION ' "$TMP/t.txt" || fail "no table header: $(cat "$TMP/t.txt")"
    grep -Eq '^orders +3 ' "$TMP/t.txt" || fail "no orders row: $(cat "$TMP/t.txt")"
    grep -Eq '^events +[0-9]+ .* ok$' "$TMP/t.txt" || fail "no events row: $(cat "$TMP/t.txt")"
}

test_watch_count() {
    "$PB" stats -m "$MADDR" --format json --watch --count 3 --interval 0.1 >"$TMP/w.json"
    [ "$(wc -l <"$TMP/w.json")" -eq 3 ] || fail "--watch --count 3: $(wc -l <"$TMP/w.json") lines"
    jq -e '.partitions | length == 2' "$TMP/w.json" >/dev/null || fail "watch output"
}

test_errors() {
    local rc=0
    "$PB" stats -m 127.0.0.1:1 2>"$TMP/e" || rc=$?
    [ "$rc" -eq 1 ] || fail "no server: exit $rc"
    grep -q 'cannot connect to 127.0.0.1:1' "$TMP/e" || fail "message: $(cat "$TMP/e")"
    rc=0
    "$PB" stats --format yaml 2>"$TMP/e" || rc=$?
    [ "$rc" -eq 2 ] || fail "bad --format: exit $rc"
    rc=0
    "$PB" stats -m "$PROTOBUS_SERVER" --interval 0.1 2>"$TMP/e" || rc=$?
    [ "$rc" -eq 1 ] || fail "not an HTTP server: exit $rc"
    "$PB" stats --help | grep -q -- '--watch' || fail "help"
}

start_daemon
publish_known_state
run test_json_known_state
run test_rate_and_table_while_publishing
run test_watch_count
run test_errors
stop_daemon || failed=$((failed + 1))
echo "test_stats: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
