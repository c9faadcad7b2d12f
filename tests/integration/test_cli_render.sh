#!/usr/bin/env bash
# Integration test of what `protobus cat` and `protobus sub` print (issue 12
# part 3: the renderer was rewritten for speed and must print the same
# bytes):
#   - cat of a fixed data set (render/tricky.py: unicode, control
#     characters, NULs in strings, binary payloads, repeated tags and
#     fields, every timestamp field, the int64 edges) equals the output the
#     old renderer gave (render/expected.*, made by commit ab7a7a2's CLI, plus the "id" key that --format json gained with EncapsulatedEvent.id),
#     in json, text and raw; every json line parses (jq);
#   - sub of tricky events published through a real protobusd (127.0.0.1,
#     free port, temp dir, stopped by PID) equals cat of the stored files in
#     all three formats, its json parses, and its raw output is exactly the
#     payloads published.
#
# Environment: BUILD (default build). Needs: jq, python3.
set -euo pipefail

BUILD=${BUILD:-build}
BUILD=$(cd "$BUILD" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
PB="$BUILD/protobus"
PBD="$BUILD/protobusd"
TMP=$(mktemp -d /tmp/pb_test_cli_render.XXXXXX)
DPID=""
failed=0

cleanup() {
    if [ -n "$DPID" ]; then kill -KILL "$DPID" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
    echo "FAIL $*" >&2
    failed=$((failed + 1))
}

for tool in jq python3; do
    command -v "$tool" >/dev/null || {
        echo "test_cli_render: $tool is required" >&2
        exit 1
    }
done

# Every line of $1 is one JSON object (jq -e fails on anything else).
json_lines_ok() {
    local n
    n=$(jq -c 'select(type == "object")' "$1" | wc -l) || return 1
    [ "$n" -eq "$(wc -l <"$1")" ]
}

# --- cat of the fixed data set against the old renderer's output ---------------

python3 "$HERE/render/tricky.py" "$TMP/tricky.pb"
for fmt in json text raw; do
    if ! "$PB" cat --format "$fmt" "$TMP/tricky.pb" >"$TMP/cat.$fmt" 2>"$TMP/cat.err"; then
        fail "cat --format $fmt: $(cat "$TMP/cat.err")"
    elif ! cmp -s "$TMP/cat.$fmt" "$HERE/render/expected.$fmt"; then
        fail "cat --format $fmt differs from render/expected.$fmt:"
        diff "$HERE/render/expected.$fmt" "$TMP/cat.$fmt" | head -20 >&2 || true
    else
        echo "ok   cat --format $fmt: same bytes as before"
    fi
done
json_lines_ok "$TMP/cat.json" && echo "ok   cat json parses" || fail "cat json does not parse"

# --- sub through the daemon equals cat of the stored files -----------------------

mkdir -p "$TMP/data"
cat >"$TMP/conf" <<CONF
[server]
listen = 127.0.0.1:0
data_dir = $TMP/data
log_level = warn

[partition events]
match = .*
CONF
"$PBD" -c "$TMP/conf" --port-file "$TMP/port" 2>"$TMP/daemon.log" &
DPID=$!
for ((i = 0; i < 100; i++)); do
    [ -s "$TMP/port" ] && break
    sleep 0.1
done
[ -s "$TMP/port" ] || { cat "$TMP/daemon.log" >&2; echo "protobusd did not start" >&2; exit 1; }
export PROTOBUS_SERVER="127.0.0.1:$(cat "$TMP/port")"

# Payload lines (no newline inside): unicode, control characters, quotes,
# invalid UTF-8 (base64 in json), a long one (cut in text).
python3 - "$TMP/payloads" <<'PY'
import sys
lines = [
    "café 日本 😀".encode(),
    bytes(range(1, 10)) + bytes(range(11, 32)) + b"\x7f",
    b'quote " backslash \\ slash /',
    b"\xff\xfe\x00binary",
    ("é" * 50).encode(),
    b"",
]
with open(sys.argv[1], "wb") as f:
    f.write(b"\n".join(lines) + b"\n")
PY
"$PB" pub -t "site=eu" -t "ké=日本" -t $'ctl=\x01\t\x7f' --type "type.googleapis.com/é" \
    "orders.eu" <"$TMP/payloads" || fail "pub (tags)"
"$PB" pub "ünïcödé.\"quoted\"\\topic" "one more" || fail "pub (topic)"
"$PB" pub -t "a=1" -t "a=2" "dup.tags" "x" || fail "pub (repeated tag)"

for fmt in json text raw; do
    "$PB" sub --from-beginning --until-caught-up --format "$fmt" '.*' >"$TMP/sub.$fmt" ||
        fail "sub --format $fmt"
done
kill -TERM "$DPID"
for ((i = 0; i < 300; i++)); do
    kill -0 "$DPID" 2>/dev/null || break
    sleep 0.1
done
wait "$DPID" || fail "protobusd exit status"
DPID=""

for fmt in json text raw; do
    "$PB" cat --format "$fmt" "$TMP/data" >"$TMP/stored.$fmt" || fail "cat data --format $fmt"
    if cmp -s "$TMP/sub.$fmt" "$TMP/stored.$fmt"; then
        echo "ok   sub --format $fmt equals cat of the stored files"
    else
        fail "sub --format $fmt differs from cat:"
        diff "$TMP/stored.$fmt" "$TMP/sub.$fmt" | head -20 >&2 || true
    fi
done
[ "$(wc -l <"$TMP/sub.json")" -eq 8 ] && json_lines_ok "$TMP/sub.json" &&
    echo "ok   sub json: 8 lines that parse" || fail "sub json: $(cat "$TMP/sub.json")"
python3 - "$TMP/payloads" "$TMP/want.raw" <<'PY'
import sys
data = open(sys.argv[1], "rb").read().split(b"\n")[:-1]
open(sys.argv[2], "wb").write(b"".join(data) + b"one morex")
PY
cmp -s "$TMP/sub.raw" "$TMP/want.raw" && echo "ok   sub raw: exactly the payloads" ||
    fail "sub raw is not the payloads published"

[ "$failed" -eq 0 ]
