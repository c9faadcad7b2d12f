#!/usr/bin/env bash
# Integration test of retention (issue 14) against the real protobusd, used
# as a user would, through the `protobus` CLI: a partition with 16K segments
# and retain_bytes = 64K, so that segments rotate and are removed all the
# time; then
#   - a `sub --from-beginning` and a `cat --follow` that are paused (SIGSTOP)
#     while thousands of events are published, so that segments they had
#     listed or had open are removed under them; resumed (SIGCONT), each
#     must deliver offsets in increasing order, every gap covered by a
#     "removed by retention" notice (never a data-loss report), up to the
#     last event;
#   - a new `sub --from-beginning` starts at the first offset still stored
#     with no notice; `cat --verify` finds no problem; `sub --from-offset
#     events:0` gets one OUT_OF_RANGE notice naming 0..first-1, then events
#     from the first offset; `cat --from-offset 0` a note and exit 0;
#   - recycling (recycle_segments, on by default): segments made from
#     zeroed spares while the readers above run; with "no" no spare is
#     made; a restart keeps the spares for reuse and finds no torn tail;
#   - age retention with no publishing at all: retain_age = 2s removes the
#     closed segments on the daemon's timer;
#   - min_free_bytes above the disk's free space: publishes are refused
#     (RESOURCE_EXHAUSTED naming the partition and the free space), nothing
#     is written, the daemon keeps serving and stops cleanly.
# Every wait is bounded; the daemon and readers are stopped by PID; the
# temp dir is removed on exit.
#
# Environment: BUILD (default build) holds protobus and protobusd.
# Needs: python3 (to check the JSON lines).
set -euo pipefail
. "$(dirname "$0")/../lib/harness.sh" # fail, wait_until, run, launch_daemon, stop_daemon

BUILD=${BUILD:-build}
BUILD=$(cd "$BUILD" && pwd)
PB="$BUILD/protobus"
PBD="$BUILD/protobusd"
TMP=$(mktemp -d /tmp/pb_test_retention.XXXXXX)
DATA="$TMP/data"
DPID=""
SPID=""
CPID=""
passed=0
failed=0

# The tests run in subshells: the PIDs they start are kept in files too,
# so that whatever fails, everything is stopped (by its PID).
stop_started() {
    local f p
    for f in "$TMP"/*.pid; do
        [ -e "$f" ] || continue
        p=$(cat "$f")
        kill -CONT "$p" 2>/dev/null || true
        kill -KILL "$p" 2>/dev/null || true
        rm -f "$f"
    done
}

cleanup() {
    stop_started
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

run() {
    local name=$1 rc
    set +e
    (
        set -e
        "$name"
    )
    rc=$?
    set -e
    stop_started
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        echo "ok   $name"
    else
        failed=$((failed + 1))
        echo "FAIL $name"
    fi
}

# start_daemon RETAIN_LINES...: one partition "events", 16K segments
# (SEGMENT_BYTES to change); SERVER_EXTRA: one more [server] line.
start_daemon() {
    mkdir -p "$DATA"
    rm -f "$TMP/port"
    {
        echo "[server]"
        echo "listen = 127.0.0.1:0"
        echo "data_dir = $DATA"
        echo "log_level = info"
        echo "max_event_bytes = 16K"
        echo "max_frame_bytes = 1M"
        echo "subscriber_queue_bytes = 64K"
        echo "${SERVER_EXTRA:-}"
        echo "[partition events]"
        echo "match = .*"
        echo "segment_bytes = ${SEGMENT_BYTES:-16K}"
        for l in "$@"; do echo "$l"; done
    } >"$TMP/protobusd.conf"
    launch_daemon "$TMP/protobusd.conf"
}

log_count() { find "$DATA/events" -name '*.log' | wc -l | tr -d ' '; }
first_base() { find "$DATA/events" -name '*.log' -printf '%f\n' | sort | head -1 | sed 's/\.log$//; s/^0*//; s/^$/0/'; }

# check_stream JSONFILE ERRFILE LAST_PAYLOAD [MUST_GAP]: offsets increase;
# every gap is named by a "removed by retention" line of ERRFILE; the last
# payload came; with MUST_GAP=1, at least one gap was (the reader really was
# overtaken by retention).
check_stream() {
    python3 - "$1" "$2" "$3" "${4:-1}" <<'EOF'
import json, re, sys
out, err, last, must_gap = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
removed = []
for line in open(err):
    m = re.search(r"offsets (\d+)[.-]+(\d+)[^\n]*removed by retention", line)
    if m:
        removed.append((int(m.group(1)), int(m.group(2))))
    if "data loss" in line or "lost" in line:
        sys.exit("damage reported: " + line.strip())
prev = None
seen_last = False
gaps = 0
for line in open(out):
    ev = json.loads(line)
    off = ev["offset"]
    if prev is not None:
        if off <= prev:
            sys.exit(f"offset {off} after {prev}")
        if off != prev + 1:
            gaps += 1
            if not any(a == prev + 1 and b == off - 1 for a, b in removed):
                sys.exit(f"gap {prev + 1}..{off - 1} not reported (notices: {removed})")
    prev = off
    seen_last |= ev.get("payload") == last
if not seen_last:
    sys.exit(f"last event {last} not delivered (last offset {prev})")
print(f"    {out.rsplit('/', 1)[-1]}: {gaps} gap(s), all reported as removed by retention")
if must_gap and (gaps == 0 or not removed):
    sys.exit(f"no removal seen under the reader (gaps {gaps}, notices {removed})")
EOF
}

has_last() { grep -q "\"payload\":\"$2\"" "$1"; }

# Bytes the kernel holds on the connections to the daemon (what it wrote
# and the paused subscriber has not read): tx_queue of the daemon's end
# plus rx_queue of the client's (/proc/net/tcp, hex ports and counts).
socket_bytes() {
    python3 - "$(cat "$TMP/port")" <<'EOF2'
import sys
port, total = int(sys.argv[1]), 0
for line in list(open("/proc/net/tcp"))[1:]:
    f = line.split()
    local, remote = int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16)
    tx, rx = (int(x, 16) for x in f[4].split(":"))
    total += (tx if local == port else 0) + (rx if remote == port else 0)
print(total)
EOF2
}

# publish_mb N FROM: N times 1,000 events of some 910 bytes (x-FROM.. on).
publish_mb() {
    local i pad
    pad=$(printf '%0900d' 0)
    for ((i = $2; i < $2 + $1; i++)); do
        seq $((1000 * i + 1)) $((1000 * i + 1000)) | sed "s/^/x-/; s/\$/-$pad/" | "$PB" pub ret.test
    done
}

# Whether the paused readers (at offset 200) must meet a removed offset:
# all that can reach the subscriber without the files is the bytes in its
# socket, the daemon's output buffer (256 KiB, server/subconn.c) and its
# live queue (64K), and the one segment its replay may hold open (the
# paused cat holds one too, its first); each event is over 900 bytes. The
# first offset still stored must lie beyond. What it saw goes to
# $TMP/reach (for a failure's message).
overtaken() {
    local held reach first
    held=$(socket_bytes)
    reach=$((200 + (held + 256 * 1024 + 64 * 1024 + $(numfmt --from=iec "${SEGMENT_BYTES:-16K}")) / 900))
    first=$(first_base)
    echo "paused: $held bytes in the subscriber's socket, reach $reach, first offset stored $first" >"$TMP/reach"
    [ "$first" -gt "$reach" ]
}

# RETAIN: retain_bytes (default 64K); SPARES=no: it leaves no room for a
# recycled spare. The daemon's log is this run's only.
test_readers_while_segments_are_removed() {
    : >"$TMP/daemon.log"
    start_daemon "retain_bytes = ${RETAIN:-64K}"
    seq 1 200 | sed 's/^/r-/' | "$PB" pub ret.test
    "$PB" sub --from-beginning --format json '.*' >"$TMP/sub.json" 2>"$TMP/sub.err" &
    SPID=$!
    echo "$SPID" >"$TMP/sub.pid"
    "$PB" cat --follow --format json "$DATA" >"$TMP/cat.json" 2>"$TMP/cat.err" &
    CPID=$!
    echo "$CPID" >"$TMP/cat.pid"
    wait_until 100 has_last "$TMP/sub.json" r-200 || fail "sub: history not delivered"
    wait_until 100 has_last "$TMP/cat.json" r-200 || fail "cat: history not read"
    # Both readers pause; 20 MB go in (with 16K segments some 1,300 of
    # them), all but the newest few removed under them. Whether that is
    # more than can reach the subscriber without the files depends on its
    # socket, whose receive buffer the kernel may grow while it is paused
    # (tcp_rmem's maximum, 32 MiB here): more goes in until the first
    # offset stored is out of the readers' reach (overtaken), at most
    # 48 MB more.
    kill -STOP "$SPID" "$CPID"
    publish_mb 20 0
    local more=0
    until overtaken; do
        [ "$more" -lt 48 ] || fail "not overtaken: $(socket_bytes) bytes in the subscriber's socket, first offset $(first_base)"
        publish_mb 1 $((20 + more))
        more=$((more + 1))
    done
    [ "$more" -eq 0 ] || echo "    $more MB more published: $(socket_bytes) bytes in the subscriber's socket"
    echo the-end | "$PB" pub ret.test
    # Retention keeps the partition within retain_bytes (the active
    # segment aside): the .log files hold at most that and one segment.
    local stored
    stored=$(find "$DATA/events" -name '*.log' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
    [ "$stored" -le $(($(numfmt --from=iec "${RETAIN:-64K}") + $(numfmt --from=iec "${SEGMENT_BYTES:-16K}"))) ] ||
        fail "retention left $stored bytes in $(log_count) segments"
    kill -CONT "$SPID" "$CPID"
    wait_until 300 has_last "$TMP/sub.json" the-end || fail "sub: did not reach the end"
    wait_until 300 has_last "$TMP/cat.json" the-end || fail "cat: did not reach the end"
    kill -TERM "$SPID" "$CPID"
    wait "$SPID" "$CPID" 2>/dev/null || true
    SPID="" CPID=""
    rm -f "$TMP/sub.pid" "$TMP/cat.pid"
    check_stream "$TMP/cat.json" "$TMP/cat.err" the-end || fail "cat --follow: $(cat "$TMP/cat.err")"
    # The subscriber was caught up (live) when paused: its overflowed queue
    # sent it back to the files, where retention had removed what it
    # missed: the server's replay reports it (OUT_OF_RANGE).
    check_stream "$TMP/sub.json" "$TMP/sub.err" the-end ||
        fail "sub: $(cat "$TMP/sub.err"); $(cat "$TMP/reach"); $(grep -E 'live queue full|removed by retention' "$TMP/daemon.log" | grep subscriber | head -5)"
    if grep -q "data loss" "$TMP/sub.err"; then fail "sub reported damage: $(cat "$TMP/sub.err")"; fi
    echo "    notices: sub $(grep -c 'removed by retention' "$TMP/sub.err" || true)," \
        "cat $(grep -c 'removed by retention' "$TMP/cat.err" || true)"
    # A new subscriber from the beginning starts at the first offset left,
    # with no notice. Retention may still remove a segment meanwhile (a
    # spare the unlinker made after the last removal counts at the next
    # upkeep tick's run): the first offset when the subscription started
    # lies between the two readings around it.
    local before after got
    before=$(first_base)
    "$PB" sub --from-beginning --until-caught-up --format json '.*' >"$TMP/sub2.json" 2>"$TMP/sub2.err"
    after=$(first_base)
    got=$(head -1 "$TMP/sub2.json" | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["offset"])')
    [ "$got" -ge "$before" ] && [ "$got" -le "$after" ] ||
        fail "from-beginning started at $got, first segment $before (before) .. $after (after)"
    # No notice, unless retention removed a segment while it read (a slow,
    # sanitized reader still in the first segment): then only notices of
    # offsets below the first one left after it.
    if [ -s "$TMP/sub2.err" ]; then
        [ "$after" -gt "$before" ] || fail "from-beginning got notices: $(cat "$TMP/sub2.err")"
        python3 - "$TMP/sub2.err" "$after" <<'EOF2' || fail "from-beginning got notices: $(cat "$TMP/sub2.err")"
import re, sys
after = int(sys.argv[2])
for line in open(sys.argv[1]):
    m = re.search(r"offsets (\d+)\.\.(\d+) of partition events were removed by retention", line)
    if not m or int(m.group(2)) >= after:
        sys.exit(1)
EOF2
    fi
    # START_OFFSETS below the first offset: one OUT_OF_RANGE notice naming
    # the removed range, then delivery from the first offset on.
    before=$(first_base)
    "$PB" sub --from-offset events:0 --until-caught-up --format json '.*' >"$TMP/sub3.json" 2>"$TMP/sub3.err"
    after=$(first_base)
    got=$(head -1 "$TMP/sub3.json" | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["offset"])')
    [ "$got" -ge "$before" ] && [ "$got" -le "$after" ] ||
        fail "from-offset 0 started at $got, first segment $before (before) .. $after (after)"
    grep -q "offsets 0\.\.$((got - 1)) of partition events were removed by retention" "$TMP/sub3.err" ||
        fail "no OUT_OF_RANGE notice for 0..$((got - 1)): $(cat "$TMP/sub3.err")"
    # cat from an offset below the first: a note, exit 0.
    "$PB" cat --from-offset 0 --format json "$DATA" >"$TMP/cat3.json" 2>"$TMP/cat3.err" ||
        fail "cat --from-offset 0: exit $? ($(cat "$TMP/cat3.err"))"
    grep -q "removed by retention" "$TMP/cat3.err" || fail "cat: no note: $(cat "$TMP/cat3.err")"
    grep -q "retention removed" "$TMP/daemon.log" || fail "no removal logged"
    # Recycling (on by default) made segments of removed ones where the
    # file system zeroes ranges; the readers above saw no damage for it.
    if [ "${SPARES:-yes}" = no ]; then
        [ -z "$(find "$DATA/events" -name 'spare.*')" ] || fail "spares made: $(ls "$DATA/events")"
        if grep -q "made from a recycled spare" "$TMP/daemon.log"; then fail "a segment made from a spare"; fi
    elif zero_range_here; then
        grep -q "made from a recycled spare" "$TMP/daemon.log" || fail "no segment made from a spare"
    fi
    # cat --verify sees no problem, once the daemon has stopped: while it
    # runs, that upkeep tick's removal could take a segment between the
    # verify's listing and its open (reported as a problem).
    stop_daemon
    "$PB" cat --verify "$DATA" >"$TMP/verify.out" 2>"$TMP/verify.err" || fail "cat --verify: $(cat "$TMP/verify.out" "$TMP/verify.err")"
}

# Whether the file system under $TMP zeroes ranges (fallocate ZERO_RANGE):
# recycling needs it (tmpfs and some overlays say no: removed segments are
# freed as before there).
zero_range_here() {
    head -c 8192 /dev/zero >"$TMP/zprobe"
    fallocate -z -o 0 -l 8192 "$TMP/zprobe" 2>/dev/null
    local rc=$?
    rm -f "$TMP/zprobe"
    return $rc
}

# recycle_segments = no: every removed segment is freed, no spare is made;
# with the default, spares (spare.0, spare.1) appear, at most two, and a
# restart keeps them for reuse; either way the data verifies.
test_recycling_both_ways() {
    local mode
    for mode in no yes; do
        rm -rf "$DATA"
        : >"$TMP/daemon.log"
        SERVER_EXTRA="recycle_segments = $mode" start_daemon "retain_bytes = 64K"
        local i pad
        pad=$(printf '%0900d' 0)
        for ((i = 0; i < 3; i++)); do
            seq $((1000 * i + 1)) $((1000 * i + 1000)) | sed "s/^/y-/; s/\$/-$pad/" | "$PB" pub rec.test
        done
        # Stopped, the daemon has made every removal durable and its
        # unlinker has recycled what it was handed (store_close): the
        # spares are all there, and no removal runs under the verify.
        # (While it ran, after a sleep, the last take's removals, made
        # after its ack, could meet the verify, and the last removal's
        # recycling come later: its directory sync waits for an upkeep
        # tick, 1 to 2 s after it.)
        stop_daemon
        "$PB" cat --verify "$DATA" >"$TMP/verify.out" 2>&1 || fail "$mode: cat --verify: $(cat "$TMP/verify.out")"
        grep -q ' 0 problem' "$TMP/verify.out" || fail "$mode: $(cat "$TMP/verify.out")"
        local spares
        spares=$(find "$DATA/events" -name 'spare.*' | wc -l | tr -d ' ')
        [ "$spares" -le 2 ] || fail "$mode: $spares spares"
        if [ "$mode" = no ]; then
            [ "$spares" -eq 0 ] || fail "recycle_segments = no made $spares spare(s)"
            if grep -q "recycled spare" "$TMP/daemon.log"; then fail "no: a segment made from a spare"; fi
        elif zero_range_here; then
            grep -q "made from a recycled spare" "$TMP/daemon.log" || fail "yes: no segment made from a spare"
        fi
        SERVER_EXTRA="recycle_segments = $mode" start_daemon "retain_bytes = 64K"
        local after
        after=$(find "$DATA/events" -name 'spare.*' | wc -l | tr -d ' ')
        [ "$after" -eq "$spares" ] || fail "$mode: $spares spare(s) before a restart, $after after (reused)"
        if grep -q "torn or corrupt tail" "$TMP/daemon.log"; then fail "$mode: a restart found a torn tail"; fi
        "$PB" cat --verify "$DATA" >"$TMP/verify.out" 2>&1 || fail "$mode: cat --verify after restart: $(cat "$TMP/verify.out")"
        stop_daemon
    done
}

# The same with 2 MiB segments: the unlinker frees each removed segment
# nobody has open in 1 MiB steps (server/unlinker.h); the one the paused
# cat --follow has open is left whole for it (a write lease refused), and
# neither reader sees damage. retain_bytes = two segments leaves no room
# for a spare (server/partition.c): none is made, every removed segment
# is freed.
test_readers_while_large_segments_are_freed_in_steps() {
    rm -rf "$DATA"
    SEGMENT_BYTES=2M RETAIN=4M SPARES=no test_readers_while_segments_are_removed
}

test_age_retention_without_publishing() {
    rm -rf "$DATA"
    start_daemon "retain_age = 2s"
    for ((i = 0; i < 3; i++)); do
        seq 1 300 | sed "s/^/a$i-/" | "$PB" pub age.test
    done
    local before
    before=$(log_count)
    [ "$before" -ge 3 ] || fail "only $before segments written"
    # Nothing is published now: the daemon's timer must age them out.
    only_active() { [ "$(log_count)" -eq 1 ]; }
    wait_until 100 only_active || fail "still $(log_count) segments after 10 s"
    stop_daemon
}

test_min_free_bytes_refuses() {
    rm -rf "$DATA"
    SERVER_EXTRA="min_free_bytes = 1000000G" start_daemon
    local rc=0
    echo one | "$PB" pub full.test 2>"$TMP/pub.err" || rc=$?
    [ "$rc" -ne 0 ] || fail "a publish below min_free_bytes was acknowledged"
    grep -q "RESOURCE_EXHAUSTED" "$TMP/pub.err" || fail "not RESOURCE_EXHAUSTED: $(cat "$TMP/pub.err")"
    grep -q "partition events" "$TMP/pub.err" || fail "partition not named: $(cat "$TMP/pub.err")"
    grep -q "bytes free" "$TMP/pub.err" || fail "free space not named: $(cat "$TMP/pub.err")"
    # Refused up front now (the writer's probe is known to the loop).
    rc=0
    echo two | "$PB" pub full.test 2>"$TMP/pub2.err" || rc=$?
    [ "$rc" -ne 0 ] || fail "the second publish was acknowledged"
    grep -q "below min_free_bytes" "$TMP/pub2.err" || fail "second refusal: $(cat "$TMP/pub2.err")"
    "$PB" sub --from-beginning --until-caught-up '.*' >"$TMP/none.out"
    [ ! -s "$TMP/none.out" ] || fail "something was stored: $(cat "$TMP/none.out")"
    stop_daemon
}

run test_readers_while_segments_are_removed
run test_readers_while_large_segments_are_freed_in_steps
run test_recycling_both_ways
run test_age_retention_without_publishing
run test_min_free_bytes_refuses

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
