#!/usr/bin/env bash
# systemd integration, without systemd running: `make install` into a temp
# prefix gives the unit (checked by `systemd-analyze verify` when the
# systemd package is there), the sysusers.d entry and a default
# configuration that `protobusd --check` accepts; protobusd's sd_notify
# messages are read from a unix datagram socket the test owns
# (NOTIFY_SOCKET): READY=1 once listening, WATCHDOG=1 every half
# WATCHDOG_USEC, RELOADING=1 then READY=1 around a SIGHUP, STOPPING=1 on
# SIGTERM; with JOURNAL_STREAM naming its stderr, log lines start with a
# "<N>" priority. Every wait is bounded; processes are stopped by PID.
#
# Environment: BUILD (default build) holds protobusd.
set -euo pipefail
. "$(dirname "$0")/../lib/harness.sh" # fail, wait_until, run

BUILD=${BUILD:-build}
top=$(cd "$(dirname "$0")/../.." && pwd)
BUILD_ABS=$(cd "$BUILD" && pwd)
PBD="$BUILD_ABS/protobusd"
PY=/usr/bin/python3
# The sanitized pass installs its own build: the same flags for make.
SAN_ARG=""
case "$BUILD" in *san*) SAN_ARG="SAN=1" ;; esac
TMP=$(mktemp -d /tmp/pb_test_systemd.XXXXXX)
DPID=""
LPID=""
passed=0
failed=0

cleanup() {
    # Tests run in subshells: their daemons' PIDs are also in $TMP/pids.
    if [ -f "$TMP/pids" ]; then
        while read -r p; do kill -KILL "$p" 2>/dev/null || true; done <"$TMP/pids"
    fi
    if [ -n "$DPID" ]; then kill -KILL "$DPID" 2>/dev/null || true; fi
    if [ -n "$LPID" ]; then kill -KILL "$LPID" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

test_install_files() {
    make -s -C "$top" $SAN_ARG BUILD="$BUILD" install PREFIX="$TMP/prefix" >"$TMP/install.log" 2>&1 ||
        fail "make install: $(cat "$TMP/install.log")"
    local unit="$TMP/prefix/lib/systemd/system/protobusd.service"
    local conf="$TMP/prefix/etc/protobus/protobusd.conf"
    [ -f "$unit" ] || fail "no unit"
    [ -f "$TMP/prefix/lib/sysusers.d/protobus.conf" ] || fail "no sysusers.d entry"
    [ -f "$conf" ] || fail "no configuration"
    grep -q "^ExecStart=$TMP/prefix/bin/protobusd -c $TMP/prefix/etc/protobus/protobusd.conf$" "$unit" ||
        fail "ExecStart: $(grep ExecStart "$unit")"
    for k in Type=notify User=protobus StateDirectory=protobus ProtectSystem=strict \
        NoNewPrivileges=yes LimitNOFILE= WatchdogSec=; do
        grep -q "^$k" "$unit" || fail "unit lacks $k"
    done
    grep -q '^data_dir = /var/lib/protobus' "$conf" || fail "data_dir: $(grep data_dir "$conf")"
    "$PBD" --check -c "$conf" >/dev/null || fail "the installed configuration fails --check"
    # A second install keeps an edited configuration.
    echo "# edited" >>"$conf"
    make -s -C "$top" $SAN_ARG BUILD="$BUILD" install PREFIX="$TMP/prefix" >/dev/null 2>&1
    tail -1 "$conf" | grep -q '^# edited$' || fail "make install overwrote the configuration"
}

test_unit_verifies() {
    if ! command -v systemd-analyze >/dev/null; then
        echo "    SKIP: systemd-analyze not installed (Debian package systemd)"
        return 0
    fi
    local unit="$TMP/prefix/lib/systemd/system/protobusd.service"
    [ -f "$unit" ] || fail "no unit (test_install_files failed)"
    # verify needs ExecStart's binary and the user; the binary was installed.
    SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$unit" >"$TMP/verify.log" 2>&1 || true
    # Only problems with this unit count (not the host's other units).
    if grep -i 'protobusd.service' "$TMP/verify.log" | grep -v 'User=\|Group=\|protobus.*user'; then
        fail "systemd-analyze verify: $(cat "$TMP/verify.log")"
    fi
}

# Reads datagrams on $1 into $2, one message per line ("\n" inside a
# message becomes " | "), until killed or 60 s.
start_listener() {
    "$PY" - "$1" "$2" <<'PYEOF' &
import socket, sys, time
path, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.settimeout(0.2)
end = time.time() + 60
with open(out, "a", buffering=1) as f:
    while time.time() < end:
        try:
            m = s.recv(4096)
        except socket.timeout:
            continue
        f.write(m.decode().replace("\n", " | ") + "\n")
PYEOF
    LPID=$!
    echo "$LPID" >>"$TMP/pids"
    wait_until 50 test -S "$1"
}

watchdogs_at_least() { [ "$(grep -c '^WATCHDOG=1$' "$TMP/notify.log")" -ge "$1" ]; }

test_notify_and_journal() {
    start_listener "$TMP/notify.sock" "$TMP/notify.log"
    cat >"$TMP/d.conf" <<EOF
[server]
listen = 127.0.0.1:0
data_dir = $TMP/data
log_level = info
[partition events]
match = .*
EOF
    : >"$TMP/daemon.log"
    local js
    js=$(stat -c '%d:%i' "$TMP/daemon.log")
    NOTIFY_SOCKET="$TMP/notify.sock" WATCHDOG_USEC=200000 JOURNAL_STREAM="$js" \
        "$PBD" -c "$TMP/d.conf" --port-file "$TMP/port" 2>>"$TMP/daemon.log" &
    DPID=$!
    echo "$DPID" >>"$TMP/pids"
    wait_until 100 grep -q '^READY=1 | STATUS=serving on 127.0.0.1:' "$TMP/notify.log" ||
        fail "no READY=1: $(cat "$TMP/notify.log")"
    test -s "$TMP/port" || fail "READY=1 before the port file"
    wait_until 50 watchdogs_at_least 3 ||
        fail "WATCHDOG=1: $(grep -c WATCHDOG "$TMP/notify.log") times in 5 s at 100 ms"
    kill -HUP "$DPID"
    wait_until 100 grep -q '^READY=1 | STATUS=serving (configuration reloaded' "$TMP/notify.log" ||
        fail "no READY=1 after the reload: $(cat "$TMP/notify.log")"
    grep -q '^RELOADING=1$' "$TMP/notify.log" || fail "no RELOADING=1"
    kill -TERM "$DPID"
    local rc=0
    wait_until 300 sh -c "! kill -0 $DPID 2>/dev/null" || true
    wait "$DPID" || rc=$?
    DPID=""
    [ "$rc" -eq 0 ] || fail "protobusd exited with $rc"
    wait_until 50 grep -q '^STOPPING=1' "$TMP/notify.log" || fail "no STOPPING=1"
    # Order: READY before RELOADING before STOPPING.
    local order
    order=$(grep -v WATCHDOG "$TMP/notify.log" | cut -c1-11 | tr '\n' ',')
    case "$order" in
    "READY=1 | S,RELOADING=1,READY=1 | S,STOPPING=1"*) ;;
    *) fail "order: $order" ;;
    esac
    # The journal form of the log lines.
    grep -q '^<6>INFO listening on 127.0.0.1:' "$TMP/daemon.log" ||
        fail "no <6> line: $(head -3 "$TMP/daemon.log")"
    if grep -q '^20[0-9][0-9]-' "$TMP/daemon.log"; then fail "a timestamped line in journal mode"; fi
    kill "$LPID" 2>/dev/null || true
    wait "$LPID" 2>/dev/null || true
    LPID=""
}

test_plain_stderr_without_journal() {
    # JOURNAL_STREAM naming another file: timestamps as usual.
    NOTIFY_SOCKET= JOURNAL_STREAM=1:1 "$PBD" --check -c "$TMP/d.conf" >/dev/null 2>&1 || true
    "$PBD" -c "$TMP/d.conf" --port-file "$TMP/port2" 2>"$TMP/plain.log" &
    DPID=$!
    echo "$DPID" >>"$TMP/pids"
    wait_until 100 test -s "$TMP/port2" || fail "did not start"
    kill -TERM "$DPID"
    wait "$DPID" || true
    DPID=""
    grep -q '^20[0-9][0-9]-.*Z INFO listening on' "$TMP/plain.log" || fail "$(head -2 "$TMP/plain.log")"
}

run test_install_files
run test_unit_verifies
run test_notify_and_journal
run test_plain_stderr_without_journal
echo "test_systemd: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
