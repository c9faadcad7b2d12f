#!/usr/bin/env bash
# Integration test of the `protobus` CLI, used as a user would: a real
# protobusd on 127.0.0.1 (a free port, a temp data directory, two partitions
# with 64K segments so that rotation happens), then pub/sub round trips,
# stdin publishing, `cat` of the stored files after the daemon stopped
# (equal to what `sub --from-beginning` delivered), cat's filters, --follow
# across rotations, --verify of a damaged copy, and a file in the original
# protobus-server layout. Every wait is bounded; the daemon and background
# readers are stopped by PID; the temp dir is removed on exit.
#
# Environment: BUILD (default build) holds protobus and protobusd.
# Needs: jq, python3 (to write the original-layout file and flip a byte).
set -euo pipefail
. "$(dirname "$0")/../lib/harness.sh" # harness_init, harness_cleanup, fail, wait_until, run, launch_daemon, stop_daemon

harness_init cli
FPID=""
trap 'harness_cleanup "$FPID"' EXIT

# Polls "$@" every 0.1 s, at most $1 times (the first argument).

# Runs one test function in a subshell with errexit in force (errexit is
# ignored inside `if`, so the status is taken outside of one).

# (0 for a file a background job has not created yet.)
lines() { if [ -e "$1" ]; then wc -l <"$1" | tr -d ' '; else echo 0; fi; }

# --- the daemon -------------------------------------------------------------

start_daemon() {
    mkdir -p "$DATA"
    cat >"$TMP/protobusd.conf" <<EOF
[server]
listen = 127.0.0.1:0
data_dir = $DATA
max_event_bytes = 16K
max_frame_bytes = 1M
log_level = warn

[partition orders]
match = orders\\..*
segment_bytes = 64K

[partition events]
match = .*
segment_bytes = 64K
EOF
    : >"$TMP/daemon.log"
    launch_daemon "$TMP/protobusd.conf"
}

# --- tests with the daemon running -------------------------------------------

test_help_and_usage() {
    "$PB" --help | grep -q 'pub'
    "$PB" pub --help | grep -q -- '--type'
    "$PB" sub --help | grep -q -- '--from-beginning'
    "$PB" cat --help | grep -q -- '--verify'
    local rc=0
    "$PB" frobnicate 2>"$TMP/err" || rc=$?
    [ "$rc" -eq 2 ] || fail "unknown command: exit $rc, want 2"
    rc=0
    "$PB" pub 2>"$TMP/err" || rc=$?
    [ "$rc" -eq 2 ] || fail "pub without TOPIC: exit $rc, want 2"
    grep -q 'TOPIC' "$TMP/err"
    rc=0
    "$PB" cat --topic 'a(' "$DATA" 2>"$TMP/err" || rc=$?
    [ "$rc" -eq 2 ] || fail "bad --topic: exit $rc, want 2"
    grep -q 'a(' "$TMP/err" || fail "message does not name the pattern: $(cat "$TMP/err")"
    rc=0
    "$PB" sub --from-beginning --last 3 '.*' 2>"$TMP/err" || rc=$?
    [ "$rc" -eq 2 ] || fail "two start options: exit $rc, want 2"
}

test_pub_sub_roundtrip() {
    "$PB" pub -v -t site=eu -t kind=new --type type.googleapis.com/test.Order \
        orders.eu '{"id":1}' >"$TMP/pos1"
    [ "$(cat "$TMP/pos1")" = "orders:0" ] || fail "pub -v printed '$(cat "$TMP/pos1")'"
    "$PB" pub -v misc.greeting 'hello world' >"$TMP/pos2"
    [ "$(cat "$TMP/pos2")" = "events:0" ] || fail "pub -v printed '$(cat "$TMP/pos2")'"

    "$PB" sub --from-beginning -n 2 --format json --timeout 10000 '.*' >"$TMP/rt.json"
    [ "$(lines "$TMP/rt.json")" -eq 2 ] || fail "sub gave $(lines "$TMP/rt.json") events"
    # (jq -s: jq 1.6's -e misjudges a last input that select() drops.)
    jq -e -s 'map(select(.topic == "orders.eu")) | length == 1 and (.[0] |
        .partition == "orders" and .offset == 0
        and .tags == {"site":"eu","kind":"new"} and .payload == "{\"id\":1}"
        and .payload_type == "type.googleapis.com/test.Order" and .payload_size == 8
        and (.server_receive_time | test("^20[0-9-]+T[0-9:.]+Z$")))' \
        "$TMP/rt.json" >/dev/null || fail "orders.eu event wrong: $(cat "$TMP/rt.json")"
    jq -e -s 'map(select(.topic == "misc.greeting")) | length == 1 and (.[0] |
        .partition == "events" and .offset == 0
        and .tags == {} and .payload == "hello world")' "$TMP/rt.json" >/dev/null ||
        fail "misc.greeting event wrong"

    # The patterns match whole topics: "orders" alone matches nothing here.
    "$PB" sub --from-beginning --timeout 300 --format json 'orders\..*' >"$TMP/rt2.json"
    [ "$(lines "$TMP/rt2.json")" -eq 1 ] || fail "pattern filter gave $(lines "$TMP/rt2.json")"
    "$PB" sub --from-beginning --timeout 300 'orders' >"$TMP/rt3"
    [ "$(lines "$TMP/rt3")" -eq 0 ] || fail "'orders' matched a topic partially"
}

test_pub_stdin_many() {
    seq 1 5000 | sed 's/^/line-/' | "$PB" pub -v bulk.load >"$TMP/bulk.pos"
    [ "$(lines "$TMP/bulk.pos")" -eq 5000 ] || fail "-v printed $(lines "$TMP/bulk.pos") lines"
    # Offsets are consecutive after misc.greeting's 0, in input order.
    seq 1 5000 | sed 's/^/events:/' | cmp -s - "$TMP/bulk.pos" || fail "positions not 1..5000"
    local segs
    segs=$(find "$DATA/events" -name '*.log' | wc -l)
    [ "$segs" -gt 1 ] || fail "no rotation: $segs segment(s)"
    "$PB" sub --last 1 --format json --timeout 300 'bulk\.load' >"$TMP/last.json"
    jq -e -s 'length == 1 and .[0].payload == "line-5000" and .[0].offset == 5000' \
        "$TMP/last.json" >/dev/null || fail "--last 1: $(cat "$TMP/last.json")"
    "$PB" sub --from-offset events:4998 --format json --timeout 300 'bulk\.load' >"$TMP/off.json"
    jq -e -s '[.[].offset] == [4998, 4999, 5000]' "$TMP/off.json" >/dev/null ||
        fail "--from-offset: $(jq -c .offset "$TMP/off.json" | tr '\n' ' ')"
}

test_pub_errors() {
    local rc=0
    "$PB" pub 'bad topic' x 2>"$TMP/err" || rc=$?
    [ "$rc" -eq 1 ] || fail "bad topic: exit $rc"
    grep -q 'bad topic' "$TMP/err" || fail "no topic in: $(cat "$TMP/err")"
    rc=0
    "$PB" pub -s 127.0.0.1:1 t x 2>"$TMP/err" || rc=$?
    [ "$rc" -eq 1 ] || fail "no server: exit $rc"
    grep -q '127.0.0.1:1' "$TMP/err" || fail "no address in: $(cat "$TMP/err")"
    # One line over the server's 16K max_event_bytes, after a good one.
    rc=0
    { echo ok-before; head -c 20000 /dev/zero | tr '\0' x; echo; } |
        "$PB" pub -v big.lines >"$TMP/big.pos" 2>"$TMP/err" || rc=$?
    [ "$rc" -eq 1 ] || fail "long line: exit $rc"
    grep -q 'line 2' "$TMP/err" || fail "line not named: $(cat "$TMP/err")"
    [ "$(lines "$TMP/big.pos")" -eq 1 ] || fail "the line before was not published"
    rc=0
    "$PB" pub -t novalue t x 2>"$TMP/err" || rc=$?
    [ "$rc" -eq 2 ] || fail "bad -t: exit $rc"
}

test_sub_filters_and_stop() {
    "$PB" sub --from-beginning -t site=eu --format json --timeout 300 '.*' >"$TMP/tag.json"
    jq -e -s 'length == 1 and .[0].topic == "orders.eu"' "$TMP/tag.json" >/dev/null ||
        fail "-t filter: $(cat "$TMP/tag.json")"
    "$PB" sub --from-time '2200-01-01T00:00:00Z' --timeout 300 '.*' >"$TMP/future"
    [ "$(lines "$TMP/future")" -eq 0 ] || fail "--from-time in the future gave events"
    # Runs until a signal, then exits 0.
    "$PB" sub 'nothing\..*' >"$TMP/sig.out" 2>"$TMP/sig.err" &
    local spid=$! rc=0
    sleep 0.3
    kill -TERM "$spid"
    wait "$spid" || rc=$?
    [ "$rc" -eq 0 ] || fail "sub after SIGTERM: exit $rc ($(cat "$TMP/sig.err"))"
    rc=0
    "$PB" sub --timeout 300 'a(' 2>"$TMP/err" || rc=$?
    [ "$rc" -eq 1 ] || fail "bad pattern at the server: exit $rc"
    grep -q 'a(' "$TMP/err" || fail "server message not shown: $(cat "$TMP/err")"
}

follow_has() { grep -q '"payload":"follow-3000"' "$TMP/follow.json"; }
follow_started() { [ "$(lines "$TMP/follow.json")" -ge "$1" ]; }

test_cat_follow() {
    local before
    before=$(find "$DATA/events" -name '*.log' | wc -l)
    "$PB" cat --follow --format json "$DATA" >"$TMP/follow.json" 2>"$TMP/follow.err" &
    FPID=$!
    # History first: everything stored so far (2 + 5000 + 1 events).
    wait_until 100 follow_started 5003 || fail "history: $(lines "$TMP/follow.json") lines"
    seq 1 3000 | sed 's/^/follow-/' | "$PB" pub follow.test
    wait_until 100 follow_has || fail "new events not seen: $(lines "$TMP/follow.json") lines"
    kill -TERM "$FPID"
    local rc=0
    wait "$FPID" || rc=$?
    FPID=""
    [ "$rc" -eq 0 ] || fail "cat --follow after SIGTERM: exit $rc ($(cat "$TMP/follow.err"))"
    local after
    after=$(find "$DATA/events" -name '*.log' | wc -l)
    [ "$after" -gt "$before" ] || fail "no rotation while following ($before -> $after)"
    jq -r 'select(.topic == "follow.test") | .payload' "$TMP/follow.json" >"$TMP/follow.payloads"
    seq 1 3000 | sed 's/^/follow-/' | cmp -s - "$TMP/follow.payloads" ||
        fail "followed events missing, duplicated or out of order"
}

test_sub_capture_all() {
    # Everything stored, as a subscriber sees it; compared with cat below.
    "$PB" sub --from-beginning -n 8003 --format json --timeout 10000 '.*' >"$TMP/sub_all.json"
    [ "$(lines "$TMP/sub_all.json")" -eq 8003 ] || fail "sub gave $(lines "$TMP/sub_all.json")"
}

test_sub_until_caught_up() {
    # History only: every stored event (the same as sub_all), then exit 0
    # by itself, without -n or --timeout.
    local rc=0
    timeout 60 "$PB" sub --from-beginning --until-caught-up --format json '.*' \
        >"$TMP/caught.json" || rc=$?
    [ "$rc" -eq 0 ] || fail "sub --from-beginning --until-caught-up: exit $rc"
    sort "$TMP/caught.json" >"$TMP/a"
    sort "$TMP/sub_all.json" >"$TMP/b"
    cmp -s "$TMP/a" "$TMP/b" || fail "--until-caught-up gave $(lines "$TMP/caught.json") lines"
    # New events only: no history, so it ends at once with nothing.
    timeout 20 "$PB" sub --until-caught-up '.*' >"$TMP/caught_new" || rc=$?
    [ "$rc" -eq 0 ] || fail "sub --until-caught-up (new only): exit $rc"
    [ "$(lines "$TMP/caught_new")" -eq 0 ] || fail "new-only history printed something"
    "$PB" sub --help | grep -q -- '--until-caught-up'
}

# --- tests on the files, daemon stopped --------------------------------------

test_cat_equals_sub() {
    "$PB" cat --format json "$DATA" >"$TMP/cat_all.json"
    jq -e . "$TMP/cat_all.json" >/dev/null || fail "cat output is not JSON lines"
    sort "$TMP/cat_all.json" >"$TMP/a"
    sort "$TMP/sub_all.json" >"$TMP/b"
    cmp -s "$TMP/a" "$TMP/b" || fail "cat and sub --from-beginning differ"
    # Merged by receive time; each partition in offset order.
    jq -r .server_receive_time "$TMP/cat_all.json" | sort -c ||
        fail "cat output not ordered by receive time"
    for p in orders events; do
        jq -r "select(.partition == \"$p\") | .offset" "$TMP/cat_all.json" | sort -n -c ||
            fail "partition $p out of order"
    done
}

test_cat_filters() {
    "$PB" cat --topic 'orders\..*' --format json "$DATA" >"$TMP/f1"
    jq -e -s 'length == 1 and .[0].topic == "orders.eu"' "$TMP/f1" >/dev/null ||
        fail "--topic: $(cat "$TMP/f1")"
    "$PB" cat --topic 'follow\.(test|other)' "$DATA" >"$TMP/f2"
    [ "$(lines "$TMP/f2")" -eq 3000 ] || fail "--topic alternation: $(lines "$TMP/f2")"
    "$PB" cat -t site=eu -t kind=new --format json "$DATA" >"$TMP/f3"
    jq -e -s 'length == 1 and .[0].offset == 0' "$TMP/f3" >/dev/null || fail "-t: $(cat "$TMP/f3")"
    "$PB" cat -t site=us "$DATA" >"$TMP/f4"
    [ "$(lines "$TMP/f4")" -eq 0 ] || fail "-t site=us matched"

    # A time window taken from the data itself.
    local t1 t2 want
    t1=$(sed -n 1000p "$TMP/cat_all.json" | jq -r .server_receive_time)
    t2=$(sed -n 4000p "$TMP/cat_all.json" | jq -r .server_receive_time)
    want=$(jq -r --arg a "$t1" --arg b "$t2" \
        'select(.server_receive_time >= $a and .server_receive_time <= $b) | .offset' \
        "$TMP/cat_all.json" | wc -l)
    "$PB" cat --from-time "$t1" --to-time "$t2" --format json "$DATA" >"$TMP/f5"
    [ "$(lines "$TMP/f5")" -eq "$want" ] || fail "time window: $(lines "$TMP/f5") want $want"
    jq -e -s --arg a "$t1" --arg b "$t2" \
        'all(.[]; .server_receive_time >= $a and .server_receive_time <= $b)' "$TMP/f5" \
        >/dev/null || fail "time window: events outside"
    "$PB" cat --from-time -1d "$DATA" >"$TMP/f6"
    [ "$(lines "$TMP/f6")" -eq 8003 ] || fail "--from-time -1d: $(lines "$TMP/f6")"

    "$PB" cat --from-offset 4999 --format json "$DATA/events" >"$TMP/f7"
    jq -e -s '.[0].offset == 4999 and .[0].partition == "events"
        and all(.[]; .offset >= 4999)' "$TMP/f7" >/dev/null || fail "--from-offset"

    # One segment file on its own: a rotated one in the middle.
    local seg
    seg=$(find "$DATA/events" -name '*.log' | sort | sed -n 2p)
    "$PB" cat --format json "$seg" >"$TMP/f8"
    local base=$((10#$(basename "$seg" .log)))
    jq -e -s --argjson b "$base" '.[0].offset == $b and .[0].partition == "events"' "$TMP/f8" \
        >/dev/null || fail "segment file: $(head -1 "$TMP/f8")"

    "$PB" cat --format raw --topic 'misc\.greeting' "$DATA" >"$TMP/f9"
    [ "$(cat "$TMP/f9")" = "hello world" ] || fail "raw: '$(cat "$TMP/f9")'"
    "$PB" cat --topic 'misc\.greeting' "$DATA" | grep -q 'events:0 misc.greeting' ||
        fail "text format"
}

test_cat_verify() {
    "$PB" cat --verify "$DATA" >"$TMP/v1"
    grep -q '0 problem' "$TMP/v1" || fail "clean data: $(cat "$TMP/v1")"
    mkdir -p "$TMP/bad"
    local seg copy size
    seg=$(find "$DATA/events" -name '*.log' | sort | sed -n 2p)
    copy="$TMP/bad/$(basename "$seg")"
    cp "$seg" "$copy"
    size=$(stat -c %s "$copy")
    python3 - "$copy" "$((size / 2))" <<'EOF'
import sys
path, pos = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(pos)
    b = f.read(1)
    f.seek(pos)
    f.write(bytes([b[0] ^ 0xFF]))
EOF
    local rc=0
    "$PB" cat --verify "$copy" >"$TMP/v2" 2>"$TMP/v2.err" || rc=$?
    [ "$rc" -eq 1 ] || fail "--verify on damage: exit $rc"
    grep -q "$copy: byte [0-9]*: .*offset.* lost" "$TMP/v2.err" ||
        fail "report does not name file, position and offsets: $(cat "$TMP/v2.err")"
    grep -q '1 problem' "$TMP/v2" || fail "summary: $(cat "$TMP/v2")"
    # Without --verify: the other records are printed, the damage still
    # reported and the exit status 1.
    rc=0
    "$PB" cat --format json "$copy" >"$TMP/v3" 2>"$TMP/v3.err" || rc=$?
    [ "$rc" -eq 1 ] || fail "cat of damaged file: exit $rc"
    grep -q "$copy" "$TMP/v3.err" || fail "damage not reported by plain cat"
    local whole
    whole=$("$PB" cat "$seg" | wc -l)
    [ "$(lines "$TMP/v3")" -eq $((whole - 1)) ] || fail "$(lines "$TMP/v3") of $whole printed"
}

# Zero tails (FORMAT.md Part B, "The end of a segment": a recycled segment's
# unused end): a copy of a partition whose active segment and newest rotated
# one end in zeros reads, verifies and follows like the original, with no
# problem reported.
test_cat_zero_tail() {
    local z="$TMP/zero/events" segs n
    mkdir -p "$TMP/zero"
    cp -a "$DATA/events" "$z"
    mapfile -t segs < <(find "$z" -name '*.log' | sort)
    n=${#segs[@]}
    [ "$n" -ge 2 ] || fail "zero tail: only $n segment(s)"
    truncate -s +3M "${segs[n - 1]}"
    truncate -s +5000 "${segs[n - 2]}"
    "$PB" cat --verify "$z" >"$TMP/z1" 2>"$TMP/z1.err" || fail "zero tail: --verify failed: $(cat "$TMP/z1.err")"
    "$PB" cat --verify "$DATA/events" >"$TMP/z0"
    grep -q ' 0 problem' "$TMP/z1" || fail "zero tail: $(cat "$TMP/z1")"
    [ "$(grep -o '[0-9]* record(s)' "$TMP/z1")" = "$(grep -o '[0-9]* record(s)' "$TMP/z0")" ] ||
        fail "zero tail: $(cat "$TMP/z1") against $(cat "$TMP/z0")"
    "$PB" cat --verify "${segs[n - 1]}" | grep -q ' 0 problem' || fail "zero tail: one file"
    "$PB" cat --verify "${segs[n - 2]}" | grep -q ' 0 problem' || fail "zero tail: rotated file"
    local want
    want=$("$PB" cat "$DATA/events" | wc -l)
    "$PB" cat --follow "$z" >"$TMP/z2" 2>"$TMP/z2.err" &
    FPID=$!
    wait_until 100 zero_follow_has "$want" || fail "zero tail: --follow read $(lines "$TMP/z2") of $want"
    sleep 0.3 # it waits at the zeros, reporting nothing
    kill -TERM "$FPID"
    local rc=0
    wait "$FPID" || rc=$?
    FPID=""
    [ "$rc" -eq 0 ] || fail "zero tail: cat --follow exit $rc ($(cat "$TMP/z2.err"))"
    [ "$(lines "$TMP/z2")" -eq "$want" ] || fail "zero tail: --follow $(lines "$TMP/z2") of $want"
    [ ! -s "$TMP/z2.err" ] || fail "zero tail: --follow said $(cat "$TMP/z2.err")"
}

zero_follow_has() { [ "$(lines "$TMP/z2")" -ge "$1" ]; }

test_cat_original_layout() {
    mkdir -p "$TMP/old"
    # Three events as the original protobus-server stored them: u32 LE
    # length + EncapsulatedEvent (hand-encoded protobuf), no file header.
    python3 - "$TMP/old/sensors.pb" <<'EOF'
import struct, sys

def varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])

def field(num, data):  # length-delimited
    return varint(num << 3 | 2) + varint(len(data)) + data

def timestamp(sec, nanos):
    return varint(1 << 3) + varint(sec) + varint(2 << 3) + varint(nanos)

with open(sys.argv[1], "wb") as f:
    for i in range(3):
        payload = ("reading %d" % i).encode()
        any_ = field(1, b"type.googleapis.com/google.protobuf.BytesValue") + field(2, payload)
        ev = field(1, ("sensors.t%d.temp" % i).encode())
        ev += field(2, field(1, b"site") + field(2, ("s%d" % i).encode()))
        ev += field(3, timestamp(1600000000 + i, 0))
        ev += field(5, timestamp(1600000000 + i, 1000 + i))
        ev += varint(6 << 3) + varint(len(any_))
        ev += field(7, any_)
        f.write(struct.pack("<I", len(ev)) + ev)
EOF
    "$PB" cat --format json "$TMP/old/sensors.pb" >"$TMP/o1"
    jq -e -s 'length == 3 and ([.[].offset] == [0, 1, 2])
        and all(.[]; .partition == "sensors.pb")
        and .[1].topic == "sensors.t1.temp" and .[1].tags == {"site":"s1"}
        and .[1].payload == "reading 1"
        and .[1].server_receive_time == "2020-09-13T12:26:41.000001001Z"' "$TMP/o1" \
        >/dev/null || fail "original layout: $(cat "$TMP/o1")"
    # Also found as *.pb in a data directory, and checked by --verify.
    "$PB" cat "$TMP/old" >"$TMP/o2"
    [ "$(lines "$TMP/o2")" -eq 3 ] || fail "data dir with .pb: $(lines "$TMP/o2")"
    "$PB" cat --verify "$TMP/old/sensors.pb" | grep -q '3 record(s).*0 problem' ||
        fail "verify of original layout"
    # A truncated last record is reported.
    head -c -5 "$TMP/old/sensors.pb" >"$TMP/trunc.pb"
    local rc=0
    "$PB" cat "$TMP/trunc.pb" >"$TMP/o3" 2>"$TMP/o3.err" || rc=$?
    [ "$rc" -eq 1 ] || fail "truncated: exit $rc"
    [ "$(lines "$TMP/o3")" -eq 2 ] || fail "truncated: $(lines "$TMP/o3") events printed"
    grep -q 'trunc.pb: byte [0-9]*: record cut short' "$TMP/o3.err" ||
        fail "truncation report: $(cat "$TMP/o3.err")"
}

test_cat_errors() {
    local rc=0
    "$PB" cat "$TMP/does-not-exist" 2>"$TMP/err" || rc=$?
    [ "$rc" -eq 1 ] || fail "missing path: exit $rc"
    grep -q 'does-not-exist' "$TMP/err" || fail "path not named"
    rc=0
    local idx
    idx=$(find "$DATA/events" -name '*.idx' | head -1)
    "$PB" cat "$idx" 2>"$TMP/err" || rc=$?
    [ "$rc" -eq 1 ] || fail "index file: exit $rc"
    grep -q 'index file' "$TMP/err" || fail "index file message: $(cat "$TMP/err")"
}

# --- main ---------------------------------------------------------------------

for tool in jq python3; do
    command -v "$tool" >/dev/null || {
        echo "test_cli: $tool is required" >&2
        exit 1
    }
done
[ -x "$PB" ] && [ -x "$PBD" ] || {
    echo "test_cli: $PB or $PBD missing (run make)" >&2
    exit 1
}

# Issue 13 on a daemon of its own (a fresh data directory): ids stored once
# (--id, --id-from-line, -v "duplicate", sub --format json "id"), and
# --expect-last refusing with the topic's real last offset.
test_pub_ids_and_expect() {
    DATA=$TMP/data-es
    rm -f "$TMP/port"
    start_daemon
    trap 'kill -KILL "$DPID" 2>/dev/null || true' EXIT
    "$PB" pub -v --id order-1 es.orders created >"$TMP/es1"
    [ "$(cat "$TMP/es1")" = "events:0" ] || fail "first --id: $(cat "$TMP/es1")"
    "$PB" pub -v --id order-1 es.orders created >"$TMP/es2"
    [ "$(cat "$TMP/es2")" = "events:0 duplicate" ] || fail "repeated --id: $(cat "$TMP/es2")"
    printf 'a\tone\nb\ttwo\norder-1\tthree\na\tfour\n' |
        "$PB" pub -v --id-from-line es.lines >"$TMP/es3"
    printf 'events:1\nevents:2\nevents:0 duplicate\nevents:1 duplicate\n' |
        cmp -s - "$TMP/es3" || fail "--id-from-line -v: $(tr '\n' ' ' <"$TMP/es3")"
    local rc=0
    printf 'no tab here\n' | "$PB" pub --id-from-line es.lines 2>"$TMP/err" || rc=$?
    [ "$rc" -eq 1 ] && grep -q 'line 1: no TAB' "$TMP/err" || fail "no TAB: $rc $(cat "$TMP/err")"
    "$PB" sub --from-beginning --until-caught-up --format json 'es\..*' >"$TMP/es.json"
    jq -e -s '[.[] | .id] == ["order-1", "a", "b"] and [.[].payload] == ["created", "one", "two"]' \
        "$TMP/es.json" >/dev/null || fail "sub json ids: $(cat "$TMP/es.json")"

    "$PB" pub -v --expect-last none es.cart first >"$TMP/es4"
    [ "$(cat "$TMP/es4")" = "events:3" ] || fail "--expect-last none: $(cat "$TMP/es4")"
    rc=0
    "$PB" pub --expect-last none es.cart again 2>"$TMP/err" || rc=$?
    [ "$rc" -eq 1 ] || fail "--expect-last mismatch: exit $rc"
    grep -q 'FAILED_PRECONDITION: expected topic es.cart to have no events, but it ends at offset 3' \
        "$TMP/err" || fail "mismatch message: $(cat "$TMP/err")"
    printf 'x\ny\n' | "$PB" pub -v --expect-last 3 es.cart >"$TMP/es5"
    printf 'events:4\nevents:5\n' | cmp -s - "$TMP/es5" || fail "stdin --expect-last: $(cat "$TMP/es5")"
    rc=0
    "$PB" pub --expect-last 3 es.cart late 2>"$TMP/err" || rc=$?
    [ "$rc" -eq 1 ] && grep -q 'but it ends at offset 5' "$TMP/err" || fail "stale: $(cat "$TMP/err")"
    # More lines than one Publish holds (the server's max_batch_events is
    # 65,536; 16K events, 1M frames here): all or nothing, so nothing.
    rc=0
    seq 1 70000 | "$PB" pub --expect-last 5 es.cart 2>"$TMP/err" || rc=$?
    [ "$rc" -eq 1 ] && grep -q 'nothing was published' "$TMP/err" || fail "big: $rc $(cat "$TMP/err")"
    "$PB" pub -v --expect-last 5 es.cart after >"$TMP/es6"
    [ "$(cat "$TMP/es6")" = "events:6" ] || fail "after the refused input: $(cat "$TMP/es6")"
    rc=0
    "$PB" pub --expect-last soon es.cart x 2>/dev/null || rc=$?
    [ "$rc" -eq 2 ] || fail "bad --expect-last: exit $rc"
    rc=0
    echo x | "$PB" pub --id a es.cart 2>/dev/null || rc=$?
    [ "$rc" -eq 2 ] || fail "--id without MESSAGE: exit $rc"
    stop_daemon
}

start_daemon
run test_help_and_usage
run test_pub_sub_roundtrip
run test_pub_stdin_many
run test_pub_errors
run test_sub_filters_and_stop
run test_cat_follow
run test_sub_capture_all
run test_sub_until_caught_up
stop_daemon
run test_cat_equals_sub
run test_cat_filters
run test_cat_verify
run test_cat_zero_tail
run test_cat_original_layout
run test_cat_errors
run test_pub_ids_and_expect

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
