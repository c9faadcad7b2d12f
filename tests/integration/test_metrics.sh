#!/usr/bin/env bash
# Integration test of metrics_listen: a real protobusd on 127.0.0.1 (free
# ports, a temp data directory, three partitions, one mirror), events published with the
# CLI, /metrics scraped during and after a publish and parsed with Debian's
# python3-prometheus-client text parser (tests/integration/metrics_check.py),
# the numbers checked against what was published; /healthz 200; unknown
# paths 404; a bad metrics_listen refused by --check with file:line;
# `promtool check metrics` lints a scrape; the oldest record time follows
# retention; a [mirror] with unreachable NATS servers exports its lag.
# (/healthz 503 on an injected EIO, and 200 again once a full disk has
# healed: tests/integration/test_iofail.c.)
# Every wait is bounded; the daemon is stopped by PID; the temp dir removed.
#
# Environment: BUILD (default build) holds protobus and protobusd.
set -euo pipefail
. "$(dirname "$0")/../lib/harness.sh" # harness_init, harness_cleanup, fail, wait_until, run, launch_daemon, stop_daemon

harness_init metrics
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3 # Debian's, which sees python3-prometheus-client
PPID_BG=""
trap 'harness_cleanup "$PPID_BG"' EXIT

# GET http://$MADDR$1 -> body in $2, status code on stdout.
http_get() {
    "$PY" - "$MADDR" "$1" "$2" <<'PYEOF'
import sys, urllib.request, urllib.error
addr, path, out = sys.argv[1:4]
try:
    r = urllib.request.urlopen(f"http://{addr}{path}", timeout=10)
    code, body = r.status, r.read()
except urllib.error.HTTPError as e:
    code, body = e.code, e.read()
open(out, "wb").write(body)
print(code)
PYEOF
}

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

[mirror m1]
nats_url = nats://127.0.0.1:9
partitions = orders
stream = PBTEST
subject_prefix = pb.

[partition aged]
match = aged\\..*
segment_bytes = 16K
retain_bytes = 64K

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

check() { "$PY" "$HERE/metrics_check.py" "$@"; }

# --- tests ----------------------------------------------------------------

test_healthz_ok() {
    local code
    code=$(http_get /healthz "$TMP/h")
    [ "$code" = 200 ] || fail "/healthz: $code, want 200"
    grep -qx ok "$TMP/h" || fail "/healthz body: $(cat "$TMP/h")"
}

test_unknown_path_404() {
    local code
    code=$(http_get /nope "$TMP/n")
    [ "$code" = 404 ] || fail "/nope: $code, want 404"
}

# The numbers after known publishes: 3 pub commands (3 connections, 3
# Publish frames) to orders, one of 50 lines to events.
test_counts_match_published() {
    "$PB" pub orders.a one
    "$PB" pub orders.b two
    "$PB" pub orders.a three
    seq 1 50 | "$PB" pub events.x
    local code
    code=$(http_get /metrics "$TMP/m")
    [ "$code" = 200 ] || fail "/metrics: $code"
    check "$TMP/m" \
        'protobus_partitions=2' \
        'protobus_partition_events_appended_total{partition=orders}=3' \
        'protobus_partition_events_appended_total{partition=events}=50' \
        'protobus_partition_next_offset{partition=orders}=3' \
        'protobus_partition_next_offset{partition=events}=50' \
        'protobus_partition_segments{partition=orders}>=1' \
        'protobus_partition_disk_bytes{partition=events}>=100' \
        'protobus_partition_bytes_appended_total{partition=events}>=100' \
        'protobus_partition_up{partition=orders}=1' \
        'protobus_partition_write_errors_total{partition=orders}=0' \
        'protobus_partition_fsync_errors_total{partition=events}=0' \
        'protobus_partition_oldest_record_seconds{partition=orders}>=1700000000' \
        'protobus_connections_accepted_total=4' \
        'protobus_publish_batch_events_sum=53' \
        'protobus_publish_ack_seconds_count>=4' \
        'protobus_fsync_seconds_count>=4' \
        'protobus_errors_sent_total{code=INVALID_ARGUMENT}=0' \
        'process_resident_memory_bytes>=1000000' \
        'protobus_process_threads>=2' \
        'process_open_fds>=3'
    # The oldest record is not in the future.
    local oldest now
    oldest=$(sed -n 's/^protobus_partition_oldest_record_seconds{partition="orders"} //p' "$TMP/m")
    now=$(date +%s)
    "$PY" -c "import sys; sys.exit(0 if float('$oldest') <= $now + 1 else 1)" ||
        fail "oldest record time $oldest is after now $now"
}

# Prometheus's own linter accepts a scrape taken with every kind of metric
# populated (counters, gauges, histograms after publishes): names, types,
# HELP lines, _total suffixes, histogram buckets.
test_promtool_lints_clean() {
    "$PB" pub orders.a lint
    http_get /metrics "$TMP/mp" >/dev/null
    grep -q '^protobus_publish_ack_seconds_bucket' "$TMP/mp" || fail "no histogram in the scrape"
    promtool check metrics <"$TMP/mp" >"$TMP/lint" 2>&1 || fail "promtool check metrics: $(cat "$TMP/lint")"
    [ ! -s "$TMP/lint" ] || fail "promtool check metrics: $(cat "$TMP/lint")"
}

# Scrapes while 20000 events are being published: every scrape parses, the
# count never goes backwards, and the last equals what was published.
test_scrape_during_publish() {
    local before
    http_get /metrics "$TMP/m0" >/dev/null
    before=$(sed -n 's/^protobus_partition_events_appended_total{partition="events"} //p' "$TMP/m0")
    before=${before%.*}
    seq 1 20000 | "$PB" pub events.load &
    PPID_BG=$!
    local prev=$before n i
    for ((i = 0; i < 200; i++)); do
        http_get /metrics "$TMP/mi" >/dev/null
        check "$TMP/mi" "protobus_partitions=2" || fail "scrape $i did not parse"
        n=$(sed -n 's/^protobus_partition_events_appended_total{partition="events"} //p' "$TMP/mi")
        n=${n%.*}
        [ "$n" -ge "$prev" ] || fail "events went back from $prev to $n"
        prev=$n
        kill -0 "$PPID_BG" 2>/dev/null || break
        sleep 0.02
    done
    wait "$PPID_BG" || fail "pub failed"
    PPID_BG=""
    http_get /metrics "$TMP/m1" >/dev/null
    check "$TMP/m1" "protobus_partition_events_appended_total{partition=events}=$((before + 20000))" \
        "protobus_partition_next_offset{partition=events}=$((before + 20000))" \
        "protobus_connections_open=0"
}

test_refused_and_errors_counted() {
    # A frame whose length prefix is over max_frame_bytes: the server sends
    # an Error (RESOURCE_EXHAUSTED) and closes.
    "$PY" - "$PROTOBUS_SERVER" <<'PYEOF'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=10)
s.sendall(bytes([0xff, 0xff, 0xff, 0xff, 0x0f]))
while s.recv(4096):
    pass
PYEOF
    http_get /metrics "$TMP/m2" >/dev/null
    check "$TMP/m2" 'protobus_errors_sent_total{code=RESOURCE_EXHAUSTED}>=1' \
        'protobus_connections_open=0'
}

# Retention raises the first offset; the oldest record time follows it
# (the scrape remembers each partition's oldest time per first offset).
test_oldest_follows_retention() {
    "$PB" pub aged.x first
    http_get /metrics "$TMP/r0" >/dev/null
    local t0 t1 i first=0
    t0=$(sed -n 's/^protobus_partition_oldest_record_seconds{partition="aged"} //p' "$TMP/r0")
    [ -n "$t0" ] && [ "$t0" != 0 ] || fail "no oldest time for aged: $(grep aged "$TMP/r0")"
    sleep 0.2
    head -c 100 /dev/zero | tr '\0' x >"$TMP/line"
    for ((i = 0; i < 3000; i++)); do cat "$TMP/line"; echo; done | "$PB" pub aged.x
    for ((i = 0; i < 100; i++)); do
        http_get /metrics "$TMP/r1" >/dev/null
        first=$(sed -n 's/^protobus_partition_first_offset{partition="aged"} //p' "$TMP/r1")
        [ "${first%.*}" -gt 0 ] && break
        sleep 0.1
    done
    [ "${first%.*}" -gt 0 ] || fail "retention removed nothing in 10 s (first offset $first)"
    t1=$(sed -n 's/^protobus_partition_oldest_record_seconds{partition="aged"} //p' "$TMP/r1")
    "$PY" -c "import sys; sys.exit(0 if float('$t1') > float('$t0') else 1)" ||
        fail "oldest record time stayed $t1 (was $t0) after retention moved the first offset to $first"
}

# A [mirror] whose NATS servers are unreachable (127.0.0.1:9, nothing
# listens): its counters and lag are exported, and the lag is what orders
# holds (none of it shipped): the events, and the age of the oldest.
test_mirror_lag_exported() {
    local i ok=""
    for ((i = 0; i < 100; i++)); do
        http_get /metrics "$TMP/mm" >/dev/null
        if check "$TMP/mm" 'protobus_mirror_lag_events{mirror=m1}{partition=orders}>=3' 2>/dev/null; then
            ok=1
            break
        fi
        sleep 0.1
    done
    [ -n "$ok" ] || fail "no lag for mirror m1: $(grep mirror "$TMP/mm")"
    check "$TMP/mm" 'protobus_mirror_connected{mirror=m1}=0' \
        'protobus_mirror_stored_total{mirror=m1}=0' \
        'protobus_mirror_shipped_offset{mirror=m1}{partition=orders}=0' \
        'protobus_mirror_lag_seconds{mirror=m1}{partition=orders}>=0.1' ||
        fail "mirror m1's numbers"
}

# A live subscriber that sleeps between events: each publish wakes it
# through the fan-out's waker, which sends the records itself (plain TCP,
# the partition known to the subscription): the wake-ups are counted.
test_fanout_wakeups_counted() {
    local i ok="" spid
    "$PB" pub orders.live zero # the partition exists before the subscription
    "$PB" sub 'orders\.live' -n 3 --timeout 20000 >"$TMP/live.out" &
    spid=$!
    for ((i = 0; i < 100; i++)); do
        http_get /metrics "$TMP/w0" >/dev/null
        if check "$TMP/w0" 'protobus_subscriptions{phase=live}>=1' 2>/dev/null; then
            ok=1
            break
        fi
        sleep 0.1
    done
    [ -n "$ok" ] || { kill -KILL "$spid"; fail "the subscription never went live"; }
    for i in 1 2 3; do
        sleep 0.3
        "$PB" pub orders.live "e$i"
    done
    wait_until 100 eval '! kill -0 '"$spid"' 2>/dev/null' || { kill -KILL "$spid"; fail "sub did not get 3 events"; }
    wait "$spid" || fail "sub failed"
    [ "$(wc -l <"$TMP/live.out")" = 3 ] || fail "sub printed: $(cat "$TMP/live.out")"
    http_get /metrics "$TMP/w1" >/dev/null
    check "$TMP/w1" 'protobus_fanout_wakeups_total{how=waker}>=1' \
        'protobus_fanout_wakeups_total{how=handed}>=0' \
        'protobus_fanout_wakeups_total{how=signalled}>=0' || fail "fan-out wake-ups"
    local w h s
    w=$(sed -n 's/^protobus_fanout_wakeups_total{how="waker"} //p' "$TMP/w1")
    h=$(sed -n 's/^protobus_fanout_wakeups_total{how="handed"} //p' "$TMP/w1")
    s=$(sed -n 's/^protobus_fanout_wakeups_total{how="signalled"} //p' "$TMP/w1")
    [ $((w + h + s)) -ge 3 ] || fail "wake-ups $w + $h + $s, want >= 3 (one per publish)"
}

test_bad_metrics_listen_refused() {
    printf '[server]\nmetrics_listen = localhost:x\n[partition e]\nmatch = .*\n' >"$TMP/bad.conf"
    local rc=0
    "$PBD" --check -c "$TMP/bad.conf" 2>"$TMP/err" || rc=$?
    [ "$rc" -ne 0 ] || fail "--check accepted a bad metrics_listen"
    grep -q 'bad.conf:2: metrics_listen' "$TMP/err" || fail "message: $(cat "$TMP/err")"
}

start_daemon
run test_healthz_ok
run test_unknown_path_404
run test_counts_match_published
run test_promtool_lints_clean
run test_scrape_during_publish
run test_refused_and_errors_counted
run test_oldest_follows_retention
run test_mirror_lag_exported
run test_fanout_wakeups_counted
run test_bad_metrics_listen_refused
stop_daemon || failed=$((failed + 1))
echo "test_metrics: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
