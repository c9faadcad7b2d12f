#!/usr/bin/env bash
# Integration test of compressed segments (issue 14) against the real
# protobusd, through the `protobus` CLI as a user would: a partition with
# 64K segments and compress = zstd; JSON events like the README's are
# published so that segments rotate and are compressed in the background;
# then
#   - the closed segments are compressed files (smaller, zseg magic), the
#     daemon logs each compression;
#   - `sub --from-beginning` and `sub --from-offset events:N` deliver every
#     offset in order, the payloads intact;
#   - `cat` prints the same events, `cat --verify` finds no problem;
#   - after a restart (recovery over compressed segments) publishing goes on;
#   - a flipped bit in a compressed block of a copy of the data: `cat
#     --verify` fails naming the file, the compressed block and the offsets
#     lost, and reads everything else.
# Every wait is bounded; the daemon and readers are stopped by PID; the
# temp dir is removed on exit.
#
# Environment: BUILD (default build) holds protobus and protobusd.
set -euo pipefail

BUILD=${BUILD:-build}
BUILD=$(cd "$BUILD" && pwd)
PB="$BUILD/protobus"
PBD="$BUILD/protobusd"
TMP=$(mktemp -d /tmp/pb_test_compress.XXXXXX)
DATA="$TMP/data"
DPID=""
N=6000

cleanup() {
    if [ -n "$DPID" ]; then kill -KILL "$DPID" 2>/dev/null || true; fi
    if [ -s "$TMP/sub.pid" ]; then kill -KILL "$(cat "$TMP/sub.pid")" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

. "$(dirname "$0")/../lib/harness.sh" # wait_until, launch_daemon, stop_daemon

# This script runs straight through: a failure ends it (the harness's fail
# returns 1 for tests run by `run`).
fail() {
    echo "FAIL: $*" >&2
    if [ -f "$TMP/daemon.log" ]; then tail -20 "$TMP/daemon.log" >&2; fi
    exit 1
}

start_daemon() {
    mkdir -p "$DATA"
    rm -f "$TMP/port"
    cat >"$TMP/protobusd.conf" <<CONF
[server]
listen = 127.0.0.1:0
data_dir = $DATA
log_level = info
compress = zstd
[partition events]
match = .*
segment_bytes = 64K
compress_level = 5
CONF
    launch_daemon "$TMP/protobusd.conf"
}

events() {
    local from=$1 to=$2 i
    for ((i = from; i <= to; i++)); do
        printf '{"sensor":"temp-%d","value":%d.5,"unit":"C","site":"plant-north","seq":%d}\n' \
            $((i % 17)) $((i * 7 % 1000)) "$i"
    done
}

# check_json FILE FIRST LAST: offsets FIRST..LAST in order, payload seq = offset + 1.
check_json() {
    python3 - "$1" "$2" "$3" <<'PY'
import json, sys
path, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
want = first
for line in open(path):
    ev = json.loads(line)
    if ev["offset"] != want:
        sys.exit(f"{path}: offset {ev['offset']}, expected {want}")
    if json.loads(ev["payload"])["seq"] != want + 1:
        sys.exit(f"{path}: offset {want}: wrong payload {ev['payload']}")
    want += 1
if want != last + 1:
    sys.exit(f"{path}: ended before offset {want} (expected up to {last})")
PY
}

is_zseg() { [ "$(head -c 48 "$1" | tail -c 8 | tr -d '\000')" = "PBZSTD01" ]; }

start_daemon
events 1 "$N" | "$PB" pub sensors.temp
wait_until 100 grep -q "compressed segment" "$TMP/daemon.log" || fail "no compression logged"

# All closed segments compressed (the newest, active one stays plain).
nlogs=$(find "$DATA/events" -name '*.log' | wc -l)
[ "$nlogs" -ge 5 ] || fail "expected several segments, found $nlogs"
newest=$(find "$DATA/events" -name '*.log' | sort | tail -1)
wait_until 100 bash -c "[ \$(grep -c 'compressed segment' '$TMP/daemon.log') -ge $((nlogs - 1)) ]" ||
    fail "not every closed segment was compressed"
for f in $(find "$DATA/events" -name '*.log' | sort | head -n -1); do
    is_zseg "$f" || fail "$f is not compressed"
    [ "$(stat -c %s "$f")" -lt 20000 ] || fail "$f: $(stat -c %s "$f") bytes, hardly compressed"
done
is_zseg "$newest" && fail "the active segment $newest was compressed"
echo "ok   $((nlogs - 1)) closed segments compressed"

timeout 20 "$PB" sub --from-beginning --format json '.*' >"$TMP/sub.json" 2>"$TMP/sub.err" &
echo $! >"$TMP/sub.pid"
wait_until 150 bash -c "[ \$(wc -l <'$TMP/sub.json') -ge $N ]" || fail "sub --from-beginning: $(wc -l <"$TMP/sub.json") events"
kill "$(cat "$TMP/sub.pid")" 2>/dev/null || true
wait "$(cat "$TMP/sub.pid")" 2>/dev/null || true
check_json "$TMP/sub.json" 0 $((N - 1)) || fail "sub --from-beginning"
echo "ok   sub --from-beginning"

timeout 20 "$PB" sub --from-offset events:2500 --format json '.*' >"$TMP/sub2.json" 2>"$TMP/sub2.err" &
echo $! >"$TMP/sub.pid"
wait_until 150 bash -c "[ \$(wc -l <'$TMP/sub2.json') -ge $((N - 2500)) ]" || fail "sub --from-offset"
kill "$(cat "$TMP/sub.pid")" 2>/dev/null || true
wait "$(cat "$TMP/sub.pid")" 2>/dev/null || true
check_json "$TMP/sub2.json" 2500 $((N - 1)) || fail "sub --from-offset"
echo "ok   sub --from-offset events:2500"

"$PB" cat --format json "$DATA" >"$TMP/cat.json"
check_json "$TMP/cat.json" 0 $((N - 1)) || fail "cat"
"$PB" cat --verify "$DATA" >"$TMP/verify.out" 2>&1 || fail "cat --verify: $(cat "$TMP/verify.out")"
grep -q "verified $N record(s).*0 problem(s)" "$TMP/verify.out" || fail "cat --verify: $(cat "$TMP/verify.out")"
echo "ok   cat, cat --verify"

stop_daemon
start_daemon
events $((N + 1)) $((N + 100)) | "$PB" pub sensors.temp
"$PB" cat --format json "$DATA" >"$TMP/cat2.json"
check_json "$TMP/cat2.json" 0 $((N + 99)) || fail "cat after restart"
stop_daemon
grep -q "WARN\|ERROR" "$TMP/daemon.log" && fail "warnings in the daemon's log"
echo "ok   restart over compressed segments, publishing goes on"

cp -r "$DATA" "$TMP/bad"
victim=$(find "$TMP/bad/events" -name '*.log' | sort | sed -n 2p)
size=$(stat -c %s "$victim")
python3 -c "
import sys
f = open(sys.argv[1], 'r+b'); f.seek(int(sys.argv[2])); b = f.read(1)
f.seek(int(sys.argv[2])); f.write(bytes([b[0] ^ 8]))" "$victim" $((size / 3))
if "$PB" cat --verify "$TMP/bad" >"$TMP/bad.out" 2>&1; then fail "cat --verify passed a flipped bit"; fi
grep -q "$victim.*compressed block.*offsets [0-9]*-[0-9]* lost" "$TMP/bad.out" ||
    fail "cat --verify did not name the block: $(cat "$TMP/bad.out")"
{ "$PB" cat --format json "$TMP/bad" 2>/dev/null || true; } | wc -l >"$TMP/bad.count"
[ "$(cat "$TMP/bad.count")" -gt $((N - 1000)) ] || fail "cat read too little around the damage"
echo "ok   a flipped bit in a compressed block is reported: $(grep -o 'compressed block.*' "$TMP/bad.out" | head -1)"
