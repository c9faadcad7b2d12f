#!/bin/bash
# `make install` into a temp prefix gives a header, static and shared
# libraries and a pkg-config file that a C program builds and runs against
# (both link modes), and the installed CLI runs.
set -euo pipefail
BUILD=${BUILD:-build}
top=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d /tmp/pbinstall.XXXXXX)
# The sanitized pass installs sanitized libraries: their users link the runtime.
san=""
case "$BUILD" in *san*) san="-fsanitize=address,undefined" ;; esac
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
check() { # name, command...
    local name=$1
    shift
    if "$@" >"$tmp/out" 2>&1; then
        echo "ok   $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name"
        sed 's/^/     /' "$tmp/out"
        failed=$((failed + 1))
    fi
}
check "make install" make -s -C "$top" BUILD="$BUILD" install PREFIX="$tmp/prefix"
cat >"$tmp/user.c" <<'C'
#include <protobus.h>
#include <stdio.h>
#include <string.h>
int main(void)
{
    /* Port 1 on loopback: nothing listens, so connect fails with a message. */
    pb_client *c = NULL;
    char err[256];
    int rc = pb_client_connect(&c, "127.0.0.1:1", NULL, err, sizeof err);
    printf("%s | %s\n", pb_strerror(rc), err);
    return rc == PB_ECONNECT && c == NULL && strstr(err, "127.0.0.1:1") ? 0 : 1;
}
C
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
check "pkg-config knows protobus" pkg-config --exists protobus
check "shared: build and run" bash -c "cc $san -std=c11 -Wall -Werror \$(pkg-config --cflags protobus) \
    '$tmp/user.c' -o '$tmp/user' \$(pkg-config --libs protobus) && \
    LD_LIBRARY_PATH='$tmp/prefix/lib' '$tmp/user'"
check "static: build and run" bash -c "cc $san -std=c11 -Wall -Werror \$(pkg-config --cflags protobus) \
    '$tmp/user.c' -o '$tmp/user-static' '$tmp/prefix/lib/libprotobus.a' \
    \$(pkg-config --libs --static protobus | sed 's/-lprotobus//') && '$tmp/user-static'"
check "installed CLI runs" "$tmp/prefix/bin/protobus" --version
# One release version (proto/protobus_version.h) everywhere it is shown.
check "one version: CLI, daemon, pkg-config" bash -c "v=\$(pkg-config --modversion protobus) && \
    [ \"\$('$tmp/prefix/bin/protobus' --version)\" = \"protobus \$v\" ] && \
    [ \"\$('$tmp/prefix/bin/protobusd' --version)\" = \"protobusd \$v\" ]"
check "installed daemon validates the default config" \
    "$tmp/prefix/bin/protobusd" --check -c "$top/conf/protobusd.conf"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
