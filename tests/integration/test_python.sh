#!/bin/sh
# Integration: the Python client (client/python). Builds and installs the
# package the way a user does (pip, no index, no build isolation, into a venv
# made by Debian's python3 with --system-site-packages for python3-protobuf),
# from a copy of the sources so the tree stays clean, then runs its pytest
# suite against $BUILD/protobusd (every daemon on 127.0.0.1, a free port, a
# temp data dir, stopped by its PID: client/python/tests/conftest.py).
#
# Environment: BUILD (default build) holds protobusd.
set -eu
BUILD=${BUILD:-build}
top=$(cd "$(dirname "$0")/../.." && pwd)
PBD=$(cd "$BUILD" && pwd)/protobusd
PY=/usr/bin/python3
tmp=$(mktemp -d /tmp/pb_test_python.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

[ -x "$PBD" ] || { echo "test_python: $PBD not built" >&2; exit 1; }
"$PY" -m venv --system-site-packages "$tmp/venv"
cp -r "$top/client/python" "$tmp/src"
rm -rf "$tmp/src/build" "$tmp/src"/*.egg-info
if ! PROTOBUS_PROTO_DIR="$top/proto" "$tmp/venv/bin/pip" install --no-index \
    --no-build-isolation --no-warn-script-location "$tmp/src" >"$tmp/pip.log" 2>&1; then
    echo "FAIL pip install client/python"
    sed 's/^/     /' "$tmp/pip.log"
    exit 1
fi
echo "ok   pip install client/python"
# From the temp dir, so `import protobus` is the installed package.
cd "$tmp"
PROTOBUSD="$PBD" PYTHONDONTWRITEBYTECODE=1 "$tmp/venv/bin/python" -m pytest -q \
    -p no:cacheprovider --basetemp="$tmp/pytest" "$top/client/python/tests"
# The codecs and the protocol handling once more on protobuf's pure-Python
# backend (Debian's python3-protobuf may be built either way).
PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python PROTOBUSD="$PBD" PYTHONDONTWRITEBYTECODE=1 \
    "$tmp/venv/bin/python" -m pytest -q -p no:cacheprovider --basetemp="$tmp/pytest-py" \
    "$top/client/python/tests/test_wire.py" "$top/client/python/tests/test_protocol.py"
