# tests/lib/harness.sh - what every shell integration test shares; sourced
# (`. "$(dirname "$0")/../lib/harness.sh"`) after `set -euo pipefail`.
#
#   fail MESSAGE...        prints the message indented on stderr, returns 1
#                          (inside a test run by `run`, that ends the test)
#   wait_until TRIES CMD.. runs CMD every 0.1 s until it succeeds, at most
#                          TRIES times (bounded: TRIES/10 seconds); 0 or 1
#   run NAME               runs the function NAME in a subshell with set -e,
#                          prints "ok   NAME" or "FAIL NAME" and counts it in
#                          the caller's $passed / $failed
# shellcheck shell=bash

fail() {
    echo "    $*" >&2
    return 1
}

wait_until() {
    local tries=$1
    shift
    local i
    for ((i = 0; i < tries; i++)); do
        if "$@"; then return 0; fi
        sleep 0.1
    done
    return 1
}

run() {
    local name=$1 rc
    set +e
    (
        set -e
        "$name"
    )
    rc=$?
    set -e
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        echo "ok   $name"
    else
        failed=$((failed + 1))
        echo "FAIL $name"
    fi
}
