#!/bin/bash
# libprotobus's public face, as installed by `make install` into a temp
# prefix (the rules are written down in the Makefile, "libprotobus"):
#  - only public headers are installed (protobus.h and protobus_*.h), each
#    compiles on its own as C and as C++, and includes nothing else of ours;
#  - the API is every function those headers declare, as the compiler reads
#    them (gcc -aux-info), so the list is never written down twice;
#  - libprotobus.so exports exactly that list (nm -D --defined-only), and the
#    global symbols of libprotobus.a are exactly that list too;
#  - the SONAME is libprotobus.so.MAJOR, installed with its two links;
#  - a C++ program (g++) built against the installed header links every API
#    function and runs, against the shared and against the static library.
set -euo pipefail
BUILD=${BUILD:-build}
top=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d /tmp/pbapi.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# The sanitized pass installs sanitized libraries: their users link the runtime.
san=""
case "$BUILD" in *san*) san="-fsanitize=address,undefined" ;; esac
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

prefix="$tmp/prefix"
inc="$prefix/include/protobus"
lib="$prefix/lib"
if ! make -s -C "$top" BUILD="$BUILD" install PREFIX="$prefix" >"$tmp/install.log" 2>&1; then
    echo "FAIL make install"
    sed 's/^/     /' "$tmp/install.log"
    exit 1
fi

# --- the headers ---------------------------------------------------------------

only_public_headers() {
    local h dep bad=0
    [ -f "$inc/protobus.h" ] || { echo "protobus.h is not installed" && bad=1; }
    for h in "$inc"/*; do
        case "$(basename "$h")" in
        protobus.h | protobus_*.h) ;;
        *) echo "not a public header: $(basename "$h")" && bad=1 ;;
        esac
        # Quoted includes must name installed headers; the rest is <libc>.
        for dep in $(sed -n 's/^#include "\(.*\)".*/\1/p' "$h"); do
            [ -f "$inc/$dep" ] ||
                { echo "$(basename "$h") includes \"$dep\", which is not installed" && bad=1; }
        done
    done
    [ "$bad" -eq 0 ]
}
check "only public headers installed, including only each other" only_public_headers

headers_compile_alone() {
    local h
    for h in "$inc"/*.h; do
        gcc -std=c11 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c "$h" || return 1
        g++ -std=c++11 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c++ "$h" || return 1
    done
}
check "each public header compiles alone as C11 and as C++11" headers_compile_alone

# The API: every function the public headers declare, read by the compiler.
echo '#include <protobus.h>' >"$tmp/api.c"
gcc -std=c11 -I"$inc" -aux-info "$tmp/aux.txt" -fsyntax-only "$tmp/api.c"
grep -F "/* $inc/" "$tmp/aux.txt" | sed -n 's/.*[ *]\([A-Za-z_][A-Za-z0-9_]*\) (.*/\1/p' |
    sort -u >"$tmp/api.txt"
check "the headers declare an API, all pb_*" bash -c "[ \$(wc -l <'$tmp/api.txt') -ge 20 ] &&
    ! grep -v '^pb_' '$tmp/api.txt' && grep -qx pb_client_connect '$tmp/api.txt' &&
    grep -qx pb_reader_next '$tmp/api.txt' && grep -qx pb_strerror '$tmp/api.txt'"

# --- the libraries ---------------------------------------------------------------

same_as_api() { # label, file with one symbol per line
    if ! diff -u "$tmp/api.txt" "$2" >"$tmp/diff"; then
        echo "$1 differs from the API declared in the headers (-declared +exported):"
        cat "$tmp/diff"
        return 1
    fi
}

so_exports_api() {
    nm -D --defined-only "$lib/libprotobus.so" | awk '{print $NF}' | sed 's/@.*//' | sort -u \
        >"$tmp/so.txt"
    same_as_api "libprotobus.so's exports" "$tmp/so.txt"
}
check "libprotobus.so exports exactly the declared API (nm -D)" so_exports_api

a_globals_are_api() {
    nm -g --defined-only "$lib/libprotobus.a" | awk 'NF == 3 {print $3}' | sort -u >"$tmp/a.txt"
    same_as_api "libprotobus.a's global symbols" "$tmp/a.txt"
}
check "libprotobus.a's global symbols are exactly the declared API" a_globals_are_api

soname_and_links() {
    local soname real
    soname=$(readelf -d "$lib/libprotobus.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
    [[ "$soname" =~ ^libprotobus\.so\.[0-9]+$ ]] || { echo "SONAME '$soname'" && return 1; }
    [ "$(readlink "$lib/libprotobus.so")" = "$soname" ] || { echo "libprotobus.so link" && return 1; }
    real=$(readlink "$lib/$soname")
    [[ "$real" =~ ^$soname\.[0-9]+\.[0-9]+$ ]] || { echo "$soname -> '$real'" && return 1; }
    [ -f "$lib/$real" ] && [ ! -L "$lib/$real" ]
}
check "SONAME libprotobus.so.MAJOR, links .so -> .so.MAJOR -> .so.MAJOR.MINOR.PATCH" soname_and_links

# --- a C++ program ---------------------------------------------------------------

{
    cat <<'CPP'
// Built by tests/integration/test_api.sh against the installed header.
#include <protobus.h>

#include <cstdio>
#include <cstring>
#include <string>

template <typename F> static bool linked(F *f) { return f != nullptr; }

static int failures = 0;
static void expect(bool ok, const char *what)
{
    if (!ok) {
        std::fprintf(stderr, "C++ user: %s\n", what);
        failures++;
    }
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    const std::string dir = argv[1]; // an empty directory
    // Every API function, by address: the link fails if one is missing.
    int missing = 0;
CPP
    sed 's/.*/    missing += !linked(\&&);/' "$tmp/api.txt"
    cat <<'CPP'
    expect(missing == 0, "an API function has a null address");

    expect(std::strcmp(pb_version(), PB_VERSION_STRING) == 0, "pb_version() != PB_VERSION_STRING");
    expect(std::string(pb_strerror(PB_ECONNECT)) == "connection failed", "pb_strerror");
    expect(std::string(pb_code_name(PB_CODE_DATA_LOSS)) == "DATA_LOSS", "pb_code_name");

    pb_client_options o;
    pb_client_options_init(&o);
    expect(std::string(o.name) == std::string("libprotobus ") + PB_VERSION_STRING,
           "default Hello name");

    // Port 1 on loopback: nothing listens, so connect fails with a message.
    pb_client *c = nullptr;
    char err[256] = "";
    int rc = pb_client_connect(&c, "127.0.0.1:1", &o, err, sizeof err);
    expect(rc == PB_ECONNECT && c == nullptr && std::strstr(err, "127.0.0.1:1"), err);
    rc = pb_client_connect(&c, "::1:7420", &o, err, sizeof err);
    expect(rc == PB_EINVAL && std::strstr(err, "brackets"), err);

    pb_reader *r = nullptr;
    expect(pb_reader_open(&r, (dir + "/nope").c_str()) == PB_ENOTFOUND, "pb_reader_open");
    char **names = nullptr;
    size_t n = 99;
    expect(pb_partition_list(dir.c_str(), &names, &n) == 0 && n == 0, "pb_partition_list");
    pb_partition_list_free(names, n);

    std::printf("C++ user: libprotobus %s, %s\n", pb_version(), failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
CPP
} >"$tmp/user.cpp"
mkdir -p "$tmp/empty"

export PKG_CONFIG_PATH="$lib/pkgconfig"
cxx_flags="-std=c++11 -Wall -Wextra -Werror $san"
check "C++ (g++), shared: build and run" bash -c "g++ $cxx_flags \$(pkg-config --cflags protobus) \
    '$tmp/user.cpp' -o '$tmp/user-shared' \$(pkg-config --libs protobus) &&
    LD_LIBRARY_PATH='$lib' '$tmp/user-shared' '$tmp/empty'"
check "C++ (g++), static: build and run" bash -c "g++ $cxx_flags \$(pkg-config --cflags protobus) \
    '$tmp/user.cpp' -o '$tmp/user-static' '$lib/libprotobus.a' \
    \$(pkg-config --libs --static protobus | sed 's/-lprotobus//') && '$tmp/user-static' '$tmp/empty'"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
