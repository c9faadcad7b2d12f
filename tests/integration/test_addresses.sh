#!/usr/bin/env bash
# Integration: one host:port convention on both sides (proto/hostport.h).
# protobusd --listen and `protobus -s` refuse malformed addresses with the
# same messages; a daemon listening on [::1] (skipped when the machine has
# no IPv6 loopback) logs its listener and its peers as [::1]:PORT, never as
# a bare ::1:PORT, and the CLI reaches it through "[::1]:PORT". Every wait
# is bounded; the daemon is stopped by its PID; the temp dir is removed.
#
# Environment: BUILD (default build) holds protobus and protobusd.
set -euo pipefail
. "$(dirname "$0")/../lib/harness.sh" # harness_init, harness_cleanup, fail, wait_until, run

harness_init addr
trap 'harness_cleanup' EXIT

# expect_refusal STATUS TEXT COMMAND...: COMMAND exits with STATUS and says TEXT.
expect_refusal() {
    local want=$1 text=$2 rc=0
    shift 2
    "$@" >"$TMP/out" 2>&1 || rc=$?
    [ "$rc" -eq "$want" ] || fail "$*: exit $rc, want $want: $(cat "$TMP/out")"
    grep -qF -- "$text" "$TMP/out" || fail "$*: no \"$text\" in: $(cat "$TMP/out")"
}

test_daemon_refuses_bad_listen() {
    expect_refusal 2 '"::1:7420": put an IPv6 address in brackets' \
        "$PBD" --check --listen ::1:7420
    expect_refusal 2 '"localhost:7420": "localhost" is not a numeric IPv4 address' \
        "$PBD" --check --listen localhost:7420
    expect_refusal 2 '"127.0.0.1" is not host:port' "$PBD" --check --listen 127.0.0.1
    expect_refusal 2 '"127.0.0.1:70000": port must be a number 0..65535' \
        "$PBD" --check --listen 127.0.0.1:70000
    # A good one passes the check.
    "$PBD" --check --listen '[::1]:0' >/dev/null
}

test_cli_refuses_bad_server() {
    expect_refusal 1 'address "::1:7420": put an IPv6 address in brackets' \
        "$PB" pub -s ::1:7420 t x
    expect_refusal 1 'address "127.0.0.1:0": port must be a number 1..65535' \
        "$PB" pub -s 127.0.0.1:0 t x
    expect_refusal 1 'address "[::1]7420" is not host:port' "$PB" pub -s '[::1]7420' t x
}

have_ipv6_loopback() {
    python3 -c 'import socket; s = socket.socket(socket.AF_INET6); s.bind(("::1", 0))' 2>/dev/null
}

test_ipv6_peers_in_brackets() {
    if ! have_ipv6_loopback; then
        echo "    (no IPv6 loopback on this machine: skipped)"
        return 0
    fi
    mkdir -p "$TMP/data"
    printf '[server]\nlog_level = debug\n[partition events]\nmatch = .*\n' >"$TMP/d.conf"
    "$PBD" -c "$TMP/d.conf" --listen '[::1]:0' --data-dir "$TMP/data" \
        --port-file "$TMP/port" 2>"$TMP/daemon.log" &
    DPID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        [ -s "$TMP/port" ] && break
        sleep 0.1
    done
    [ -s "$TMP/port" ] || fail "protobusd did not start: $(cat "$TMP/daemon.log")"
    local port
    port=$(cat "$TMP/port")
    "$PB" pub -s "[::1]:$port" addr.test hello
    "$PB" sub -s "[::1]:$port" --from-beginning -n 1 --format raw 'addr\..*' >"$TMP/got"
    [ "$(cat "$TMP/got")" = hello ] || fail "sub over [::1] got: $(cat "$TMP/got")"
    # A connection the daemon closes for a malformed frame (an oversized
    # length prefix) is logged with its peer address.
    python3 - "$port" <<'PY'
import socket, sys
s = socket.create_connection(("::1", int(sys.argv[1])), timeout=10)
s.sendall(b"\xff" * 9 + b"\x01")
while s.recv(4096):
    pass
PY
    kill -TERM "$DPID"
    local rc=0
    wait "$DPID" || rc=$?
    DPID=""
    [ "$rc" -eq 0 ] || fail "protobusd exited with $rc"
    grep -qF "listening on [::1]:$port" "$TMP/daemon.log" ||
        fail "no 'listening on [::1]:$port' in: $(cat "$TMP/daemon.log")"
    grep -qE "connection \[::1\]:[0-9]+: " "$TMP/daemon.log" ||
        fail "no connection [::1]:PORT line in: $(cat "$TMP/daemon.log")"
    grep -qE "subscriber \[::1\]:[0-9]+: " "$TMP/daemon.log" ||
        fail "no subscriber [::1]:PORT line in: $(cat "$TMP/daemon.log")"
    if grep -E '(^|[^[])::1:[0-9]' "$TMP/daemon.log"; then
        fail "an address without brackets (above) in the log"
    fi
}

run test_daemon_refuses_bad_listen
run test_cli_refuses_bad_server
run test_ipv6_peers_in_brackets
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
