#!/usr/bin/env bash
# Integration: `protobus bench` runs every mode end to end against a real
# protobusd on 127.0.0.1 (a free port, a temp data directory) with small
# counts, and reports each figure its mode promises on the RESULT line;
# bad options and modes are refused with exit 2. Figures are not judged:
# timing on a shared machine is noise. Every run is bounded by --timeout;
# the daemon is stopped by its PID; the temp dir is removed.
#
# Environment: BUILD (default build) holds protobus and protobusd.
set -euo pipefail
. "$(dirname "$0")/../lib/harness.sh" # harness_init, harness_cleanup, fail, wait_until, run, launch_daemon, stop_daemon

harness_init bench
trap 'harness_cleanup' EXIT

# bench_ok "ARGS" KEY...: `protobus bench ARGS` exits 0 and its RESULT line
# has mode=MODE and every KEY=number.
bench_ok() {
    local args=$1 key rc=0
    shift
    # shellcheck disable=SC2086
    "$PB" bench --timeout 60000 $args >"$TMP/out" 2>&1 || rc=$?
    [ "$rc" -eq 0 ] || fail "bench $args: exit $rc: $(cat "$TMP/out")"
    grep '^RESULT ' "$TMP/out" >"$TMP/result" || fail "bench $args: no RESULT line: $(cat "$TMP/out")"
    for key in "$@"; do
        grep -qE "( )$key=[0-9.]+( |\$)" "$TMP/result" ||
            fail "bench $args: no $key in: $(cat "$TMP/result")"
    done
}

start_daemon() {
    mkdir -p "$TMP/data"
    printf '[server]\nlisten = 127.0.0.1:0\ndata_dir = %s\nlog_level = warn\n[partition events]\nmatch = .*\n' \
        "$TMP/data" >"$TMP/d.conf"
    : >"$TMP/daemon.log"
    launch_daemon "$TMP/d.conf"
}

test_pub() {
    bench_ok "pub -n 5000 -b 500 -p 2 --topics 3" pub_events pub_ev_s ack_p50_us ack_max_us \
        client_cpu_s
    grep -q 'RESULT mode=pub size=100 count=5000 ' "$TMP/result" || fail "$(cat "$TMP/result")"
}

# --ids: every event gets PREFIX-<sequence number>, counted up in place by
# each publisher (its own range): 12,050 events over 2 publishers cross
# 9 -> 10 ... 9999 -> 10000; each id stored once, 0..12049 all there.
test_pub_ids() {
    bench_ok "pub -n 12050 -b 500 -p 2 --ids" pub_events pub_ev_s
    timeout 30 "$PB" sub --format json --from-beginning --until-caught-up '.*' >"$TMP/ids.json" ||
        fail "sub --format json: exit $?"
    grep -o '"id":"bench[0-9]*-[0-9]*"' "$TMP/ids.json" | sed 's/.*-\([0-9]*\)"$/\1/' | sort -n >"$TMP/ids"
    [ "$(wc -l <"$TMP/ids")" -eq 12050 ] || fail "expected 12050 ids, got $(wc -l <"$TMP/ids")"
    seq 0 12049 | cmp -s - "$TMP/ids" || fail "ids are not 0..12049 once each: $(uniq -d "$TMP/ids" | head -3)"
}

test_sub() {
    bench_ok "sub -n 3000 --subs 3" pub_events sub_events sub_ev_s
    grep -q ' sub_events=9000 ' "$TMP/result" || fail "3 subscribers x 3000: $(cat "$TMP/result")"
}

test_sub_distinct() {
    bench_ok "sub -n 2000 --subs 10 --topics 20 --distinct" sub_events
    grep -q ' sub_events=2000 ' "$TMP/result" || fail "each event to one: $(cat "$TMP/result")"
}

# --sub-threads: 10 subscribers read by 3 shared threads (epoll), each
# subscriber's share counted as with a thread each.
test_sub_threads() {
    bench_ok "sub -n 2000 --subs 10 --topics 20 --distinct --sub-threads 3" sub_events
    grep -q ' sub_events=2000 ' "$TMP/result" || fail "each event to one: $(cat "$TMP/result")"
    bench_ok "sub -n 3000 --subs 3 --sub-threads 2" sub_events
    grep -q ' sub_events=9000 ' "$TMP/result" || fail "3 subscribers x 3000: $(cat "$TMP/result")"
}

test_latency() {
    bench_ok "latency --rate 2000 -n 200" ack_p50_us ack_p99_us delivery_p50_us delivery_p999_us
}

test_replay() {
    bench_ok "replay -n 2000" pub_events replay_events replay_first_ms
}

test_seek() {
    bench_ok "seek --offset 1 -n 2" seek_p50_us seek_max_us
    bench_ok "seek --time -1h -n 2" seek_p50_us
}

test_tcp() {
    bench_ok "tcp --bytes 20000000" tcp_mb_s
    # The socket-to-disk baseline: its temp file is gone afterwards; a
    # directory that does not exist is named in the error (exit 1).
    mkdir -p "$TMP/sink"
    bench_ok "tcp --bytes 20000000 --to-file $TMP/sink --commit-bytes 4000000" tcp_file_mb_s tcp_file_syncs
    bench_ok "tcp --bytes 20000001 --to-file $TMP/sink --direct" tcp_file_mb_s
    [ -z "$(ls -A "$TMP/sink")" ] || fail "tcp --to-file left $(ls "$TMP/sink")"
    local rc=0
    "$PB" bench tcp --bytes 1000 --to-file "$TMP/nowhere" 2>"$TMP/err" || rc=$?
    [ "$rc" -eq 1 ] || fail "tcp --to-file into a missing directory: exit $rc, want 1"
    grep -q "cannot create $TMP/nowhere/protobus-bench-tcp" "$TMP/err" || fail "$(cat "$TMP/err")"
}

test_refusals() {
    local rc=0
    "$PB" bench frobnicate 2>"$TMP/err" || rc=$?
    [ "$rc" -eq 2 ] || fail "unknown mode: exit $rc, want 2"
    grep -q "unknown mode 'frobnicate'" "$TMP/err" || fail "$(cat "$TMP/err")"
    rc=0
    "$PB" bench --size 4 pub 2>"$TMP/err" || rc=$?
    [ "$rc" -eq 2 ] || fail "--size 4: exit $rc, want 2"
    grep -q -- "--size '4': expected a whole number from 8" "$TMP/err" || fail "$(cat "$TMP/err")"
    rc=0
    "$PB" bench pub sub 2>"$TMP/err" || rc=$?
    [ "$rc" -eq 2 ] || fail "two modes: exit $rc, want 2"
    rc=0
    "$PB" bench --timeout 60000 seek 2>"$TMP/err" || rc=$?
    [ "$rc" -eq 1 ] || fail "seek without --offset/--time: exit $rc, want 1"
    grep -q 'exactly one of --offset and --time' "$TMP/err" || fail "$(cat "$TMP/err")"
    # Into a file first: grep -q stops reading at its match, and the rest of
    # the help then fails to write (SIGPIPE), which pipefail would report.
    "$PB" bench --help >"$TMP/help" || fail "bench --help: exit $?"
    grep -q -- '--distinct' "$TMP/help" || fail "bench --help does not list --distinct"
    grep -q -- '--to-file DIR' "$TMP/help" || fail "bench --help does not list --to-file"
}

# tests/bench/run's cli workload end to end with 2,000 events (its own
# daemon, its own temp dir under TMP): the three CLI rows and their figures;
# an unknown workload name is refused with exit 2.
test_bench_run_cli() {
    local root rc=0
    root=$(cd "$(dirname "$0")/../.." && pwd)
    (cd "$root" && TMPDIR="$TMP" BUILD="$BUILD" WORKLOADS=cli RUNS=1 CLI_EVENTS=2000 \
        timeout 120 tests/bench/run) >"$TMP/run.out" 2>"$TMP/run.err" || rc=$?
    [ "$rc" -eq 0 ] || fail "bench/run: exit $rc: $(tail -5 "$TMP/run.err")"
    for row in "cli sub --format raw" "cli sub --format json" "cli cat --format json"; do
        grep -qE "^\| $row > file \| events/s \| [0-9]+ " "$TMP/run.out" ||
            fail "no figure for $row: $(cat "$TMP/run.out")"
    done
    ! grep -q "Baselines" "$TMP/run.out" || fail "baselines measured for WORKLOADS=cli"
    rc=0
    (cd "$root" && TMPDIR="$TMP" BUILD="$BUILD" WORKLOADS=bogus tests/bench/run) \
        >/dev/null 2>"$TMP/run.err" || rc=$?
    [ "$rc" -eq 2 ] || fail "WORKLOADS=bogus: exit $rc, want 2"
    grep -q "WORKLOADS=bogus: expected" "$TMP/run.err" || fail "$(cat "$TMP/run.err")"
}

start_daemon
run test_pub
run test_pub_ids
run test_sub
run test_sub_distinct
run test_sub_threads
run test_latency
run test_replay
run test_seek
run test_tcp
run test_refusals
run test_bench_run_cli
kill -TERM "$DPID"
wait "$DPID" || echo "protobusd exited with $?: $(cat "$TMP/daemon.log")" >&2
DPID=""
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
