# Protobus build. `make` builds into build/; `make SAN=1` builds the same
# tree with AddressSanitizer + UndefinedBehaviorSanitizer into build/san/.
#
#   make            protobusd, protobus, libprotobus.a, libprotobus.so (+ .so.1)
#   make run        build and start protobusd on conf/protobusd.conf
#   make test       install missing Debian packages, build, run every test,
#                   then again built with ASan+UBSan, then the threaded ones
#                   built with TSan (BUILD_JOBS build jobs, TEST_JOBS programs
#                   at a time: tests/run-tests)
#   make install    public headers, libraries and pkg-config file under $(PREFIX);
#                   protobusd.service, the protobus user (sysusers.d) and a default
#                   configuration in $(SYSCONFDIR)/protobus/ (kept if there)

CC      ?= gcc
PREFIX  ?= /usr/local

# A fresh machine: every goal that builds first makes sure the Debian packages
# it needs are there (tests/install-deps installs them with apt-get as root;
# otherwise it names them and the build stops). Checked once, by the top make,
# before anything below asks pkg-config; a few dpkg queries when all is there.
NO_DEPS_GOALS := clean format deps
ifeq ($(MAKELEVEL),0)
ifneq ($(filter-out $(NO_DEPS_GOALS),$(or $(MAKECMDGOALS),all)),)
ifneq ($(shell tests/install-deps >&2 && echo ok),ok)
$(error Debian packages are missing (named above); `sudo make deps` installs them)
endif
endif
endif
# libnats: the NATS C client, for the mirrors to JetStream (server/mirror*).
# libsodium: argon2id password hashes (server/auth.c, `protobus passwd`).
# libssl: TLS (server/tls.c; libprotobus's client side, client/tls.c).
# libmicrohttpd: the metrics_listen endpoint (server/metrics_http.c).
# libsystemd: sd_notify for Type=notify (server/sdnotify.c).
# libzstd: compressed segments (proto/zseg.c: the daemon writes them, every
# reader, libprotobus's pb_reader included, reads them).
# libisal: ISA-L's CRC-32C (proto/crc32c.c: every record's checksum, written
# and read, libprotobus's included).
PKGS    := libprotobuf-c libpcre2-8 libuv inih json-c libhs libnats libsodium libssl libcrypto \
           libmicrohttpd libsystemd libzstd libisal

ifeq ($(SAN),1)
BUILD   ?= build/san
OPT     := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
LDSAN   := -fsanitize=address,undefined
else
BUILD   ?= build
OPT     := -O2 -g
LDSAN   :=
endif

# The release version: proto/protobus_version.h is its one source.
PB_VERSION := $(shell sed -n 's/^\#define PB_VERSION_\(MAJOR\|MINOR\|PATCH\) *//p' \
                proto/protobus_version.h | paste -sd.)

GEN     := $(BUILD)/gen
WARN    := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
CPPFLAGS += -D_GNU_SOURCE
# Each layer sees only its own headers and those below it, so an include
# that runs the wrong way fails to compile: proto/ sees proto, client/ and
# server/ see proto and themselves (never each other), client/cli/ sees
# client and proto; tests see all.
INCLUDES = -I$(GEN) -Iproto -Iserver -Iclient -Iclient/cli -Itests/lib
# -fvisibility=hidden: only PB_API functions leave libprotobus (see below).
CFLAGS  += -std=c11 $(OPT) $(WARN) -pthread -fPIC -fvisibility=hidden $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm
# The CLI needs no event loop, no config parser and no JSON library (it
# writes its JSON itself: client/cli/render.c).
CLI_LDLIBS := $(shell pkg-config --libs libprotobuf-c libpcre2-8 libsodium libssl libcrypto libzstd libisal 2>/dev/null) -lpthread -lm
LDFLAGS += $(LDSAN) -pthread

# Generated protobuf-c code (never committed).
PROTO_INC  := $(shell pkg-config --variable=includedir protobuf 2>/dev/null || echo /usr/include)
GEN_C      := $(GEN)/protobus.pb-c.c $(GEN)/google/protobuf/timestamp.pb-c.c \
              $(GEN)/google/protobuf/any.pb-c.c
GEN_H      := $(GEN_C:.c=.h)

PROTO_SRC  := $(wildcard proto/*.c)
SERVER_SRC := $(filter-out server/main.c,$(wildcard server/*.c))
CLIENT_SRC := $(wildcard client/*.c)
CLI_SRC    := $(wildcard client/cli/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
GEN_OBJ    := $(patsubst $(GEN)/%.c,$(BUILD)/obj/gen/%.o,$(GEN_C))
PROTO_OBJ  := $(call obj,$(PROTO_SRC)) $(GEN_OBJ)
# What libprotobus needs of proto/: all but the pattern sets (PCRE2), which
# only the daemon and the CLI use.
LIB_PROTO_OBJ := $(filter-out $(call obj,proto/patterns.c),$(PROTO_OBJ))
SERVER_OBJ := $(call obj,$(SERVER_SRC))
CLIENT_OBJ := $(call obj,$(CLIENT_SRC))
CLI_OBJ    := $(call obj,$(CLI_SRC))
CLI_MAIN   := $(BUILD)/obj/client/cli/main.o

UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BIN   := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
# Integration tests: C programs that start the real protobusd (tests/lib/itest.h).
INTEG_SRC  := $(wildcard tests/integration/test_*.c)
INTEG_BIN  := $(patsubst tests/integration/%.c,$(BUILD)/tests/%,$(INTEG_SRC))
TESTLIB_SRC := $(wildcard tests/lib/*.c)
TESTLIB_OBJ := $(call obj,$(TESTLIB_SRC))

# --- libprotobus, the public library --------------------------------------------
# Public API: the functions declared PB_API in the public headers, which are
# client/protobus.h (the one header a user includes) and the
# proto/protobus_*.h it includes. Rule: a header is public iff its name
# starts with "protobus"; a public header includes only public headers and
# the C library, is C++-safe (extern "C"), and marks every function PB_API.
# `make install` installs those headers and no other.
#
# Exports. Every object is compiled with -fvisibility=hidden, so
# libprotobus.so exports exactly the PB_API functions. libprotobus.a holds
# one relocatable object (ld -r of the library's objects) in which objcopy
# --localize-hidden turned every hidden symbol local. Rule, for both
# libraries: every global symbol they define is a PB_API function (all
# pb_*); internals (crc32c, wire_*, client_*, the generated protobus__* and
# google__protobuf__* code) are not global, so they cannot clash with a
# user's own names. tests/integration/test_api.sh checks both libraries
# against the installed headers.
#
# ABI version, separate from the release version (proto/protobus_version.h).
# The SONAME is libprotobus.so.$(SO_MAJOR); the file is
# libprotobus.so.$(SO_VERSION).
#   SO_MAJOR  +1 on every ABI break: a PB_API function removed or its
#             signature changed; a public struct's size or layout or a public
#             enum value changed; a documented behaviour changed
#             incompatibly. SO_MINOR and SO_PATCH then go back to 0.
#   SO_MINOR  +1 when PB_API functions or enum values are added (programs
#             built against the previous version still run).
#   SO_PATCH  +1 for a release that changes no public declaration.
# 2: protocol version 1 (pb_client_subscribe waits for the server's answer
# and returns its refusal; pb_item gained caught_up and PB_ITEM_CAUGHT_UP).
# 3: pb_client_options gained user, password and the TLS fields (its size
# changed); PB_CODE_UNAUTHENTICATED; pb_client_publish_id,
# pb_client_expect_last, pb_received_event_id, pb_position.duplicate,
# pb_server_error's expectation fields.
# 3.1: PB_ITEM_OUT_OF_RANGE (offsets removed by retention) and PB_EREMOVED.
SO_MAJOR   := 3
SO_VERSION := $(SO_MAJOR).1.0
SO_FILE    := $(BUILD)/libprotobus.so.$(SO_VERSION)
PUBLIC_HEADERS := client/protobus.h $(wildcard proto/protobus_*.h)
# proto/ without the pattern sets (LIB_PROTO_OBJ: no PCRE2 in the library).
LIB_OBJ    := $(LIB_PROTO_OBJ) $(CLIENT_OBJ)

# The two programs are built once their mains exist (the tree grows in steps).
BINS := $(BUILD)/libprotobus.a $(BUILD)/libprotobus.so $(BUILD)/libprotobus.so.$(SO_MAJOR)
ifneq ($(wildcard server/main.c),)
BINS += $(BUILD)/protobusd
endif
ifneq ($(CLI_SRC),)
BINS += $(BUILD)/protobus
endif

.PHONY: all run test check layers unit integration deps install clean format fuzz
.SECONDARY:

all: $(BINS)

# &: one protoc-c run makes both (a -j build ran it twice, the second
# rewriting the header while other jobs compiled against it).
$(GEN)/protobus.pb-c.c $(GEN)/protobus.pb-c.h &: proto/protobus.proto
	@mkdir -p $(GEN)
	protoc-c --c_out=$(GEN) -Iproto -I$(PROTO_INC) proto/protobus.proto

$(GEN)/google/protobuf/%.pb-c.c $(GEN)/google/protobuf/%.pb-c.h: $(PROTO_INC)/google/protobuf/%.proto
	@mkdir -p $(GEN)
	protoc-c --c_out=$(GEN) -I$(PROTO_INC) $<

$(BUILD)/obj/gen/%.o: INCLUDES = -I$(GEN) -Iproto
$(BUILD)/obj/proto/%.o: INCLUDES = -I$(GEN) -Iproto
$(BUILD)/obj/client/%.o: INCLUDES = -I$(GEN) -Iproto -Iclient
$(BUILD)/obj/client/cli/%.o: INCLUDES = -I$(GEN) -Iproto -Iclient -Iclient/cli
$(BUILD)/obj/server/%.o: INCLUDES = -I$(GEN) -Iproto -Iserver

$(BUILD)/obj/gen/%.o: $(GEN)/%.c $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(INCLUDES) $(CFLAGS) -Wno-error -c -o $@ $<

$(BUILD)/obj/%.o: %.c $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(INCLUDES) $(CFLAGS) -MMD -MP -c -o $@ $<

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# The shared code (proto/ and the generated protobuf-c code), for the CLI.
$(BUILD)/libpbproto.a: $(PROTO_OBJ)
	@rm -f $@
	ar rcs $@ $^

# Internal archive: everything but the two mains, for the daemon and tests
# (the unit tests also reach the CLI's render and timefmt through it).
$(BUILD)/libpbinternal.a: $(PROTO_OBJ) $(SERVER_OBJ) $(CLIENT_OBJ) $(filter-out $(CLI_MAIN),$(CLI_OBJ))
	@rm -f $@
	ar rcs $@ $^

# One object, internals made local (see "libprotobus" above).
$(BUILD)/libprotobus.a: $(LIB_OBJ)
	@rm -f $@ $(BUILD)/libprotobus.o
	$(LD) -r -o $(BUILD)/libprotobus.o $^
	objcopy --localize-hidden $(BUILD)/libprotobus.o
	ar rcs $@ $(BUILD)/libprotobus.o
	@rm -f $(BUILD)/libprotobus.o

# -z defs: a library that needs a package nobody linked fails here, not in
# a user's program; --as-needed: it records only the packages it uses.
$(SO_FILE): $(LIB_OBJ)
	$(CC) -shared $(LDFLAGS) -Wl,-soname,libprotobus.so.$(SO_MAJOR) -Wl,-z,defs -Wl,--as-needed \
	  -o $@ $^ $(LDLIBS)

# The links an installed system has: .so.MAJOR (what programs load) and .so
# (what -lprotobus finds when linking).
$(BUILD)/libprotobus.so.$(SO_MAJOR) $(BUILD)/libprotobus.so: $(SO_FILE)
	ln -sf $(notdir $<) $@

$(BUILD)/protobusd: $(BUILD)/obj/server/main.o $(BUILD)/libpbinternal.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The CLI is a client: its own objects, the client library's and proto's,
# never the daemon's.
$(BUILD)/protobus: $(CLI_OBJ) $(CLIENT_OBJ) $(BUILD)/libpbproto.a
	$(CC) $(LDFLAGS) -o $@ $^ $(CLI_LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(TESTLIB_OBJ) $(BUILD)/libpbinternal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

$(BUILD)/tests/%: $(BUILD)/obj/tests/integration/%.o $(TESTLIB_OBJ) $(BUILD)/libpbinternal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

# test_ingest fails allocations on request (its __wrap_malloc).
$(BUILD)/tests/test_ingest: LDFLAGS += -Wl,--wrap=malloc
# test_partition_ahead fails thread starts on request (its __wrap_pthread_create).
$(BUILD)/tests/test_partition_ahead: LDFLAGS += -Wl,--wrap=pthread_create
# test_dedup fails the window's growth on request (its __wrap_realloc, __wrap_mremap).
$(BUILD)/tests/test_dedup: LDFLAGS += -Wl,--wrap=realloc -Wl,--wrap=mremap
# test_partition_shrink fails a resize on request (its __wrap_realloc).
$(BUILD)/tests/test_partition_shrink: LDFLAGS += -Wl,--wrap=realloc

# exec: protobusd replaces the recipe's shell, so a signal to make's process
# group reaches the daemon directly (tests/fresh-run stops it that way).
run: $(BUILD)/protobusd
	exec $(BUILD)/protobusd -c conf/protobusd.conf

# `make test`: three passes, plain, then ASan+UBSan, then ThreadSanitizer
# (the daemon and every threaded test; see `tsan` below). Each builds first.
# The builds of `make test` and `make fuzz` use every core (BUILD_JOBS; CI
# runs a bare `make test` and `make fuzz`, which built one job at a time);
# the test programs run TEST_JOBS at a time (tests/run-tests). Figures:
# tests/bench/NOTES.md, "make test's wall time".
BUILD_JOBS ?= $(shell nproc)
test: deps
	@s=$$(date +%s); $(MAKE) -j$(BUILD_JOBS) check && echo "== make check: $$(($$(date +%s) - s)) s"
	@s=$$(date +%s); $(MAKE) -j$(BUILD_JOBS) SAN=1 check && echo "== make SAN=1 check: $$(($$(date +%s) - s)) s"
	@s=$$(date +%s); $(MAKE) -j$(BUILD_JOBS) tsan && echo "== make tsan: $$(($$(date +%s) - s)) s"

# One pass: check the include layers, build everything, run every unit
# test, then the integration tests.
# The sanitizer pass runs all its programs TEST_JOBS at a time (the latency
# budgets that make three run alone are asserted in the plain pass only).
check: layers all $(UNIT_BIN) $(INTEG_BIN)
	@BUILD=$(BUILD) $(if $(filter 1,$(SAN)),TEST_ALONE=) tests/run-tests

# The #include lines run one way (proto <- server, proto <- client, and the
# server's layers in data-flow order): tests/check-layers.
layers:
	@tests/check-layers

deps:
	@tests/install-deps

# The daemon's configuration and systemd files. /usr and /usr/local keep
# their configuration in /etc; any other PREFIX (a test's temp dir) in
# PREFIX/etc. DESTDIR stages it all (packaging).
SYSCONFDIR ?= $(if $(filter /usr /usr/local,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR    ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d

install: $(BUILD)/libprotobus.a $(SO_FILE) $(BUILD)/protobus $(BUILD)/protobusd
	install -d $(DESTDIR)$(PREFIX)/include/protobus $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/bin
	install -m 644 $(PUBLIC_HEADERS) $(DESTDIR)$(PREFIX)/include/protobus/
	install -m 644 $(BUILD)/libprotobus.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(SO_FILE) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libprotobus.so.$(SO_VERSION) $(DESTDIR)$(PREFIX)/lib/libprotobus.so.$(SO_MAJOR)
	ln -sf libprotobus.so.$(SO_MAJOR) $(DESTDIR)$(PREFIX)/lib/libprotobus.so
	install -m 755 $(BUILD)/protobus $(BUILD)/protobusd $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(PB_VERSION)|g' client/protobus.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/protobus.pc
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(SYSCONFDIR)/protobus
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' conf/protobusd.service \
	  > $(DESTDIR)$(UNITDIR)/protobusd.service
	install -m 644 conf/protobus.sysusers $(DESTDIR)$(SYSUSERSDIR)/protobus.conf
	@# An existing configuration is kept; the default's data_dir is the unit's StateDirectory.
	test -e $(DESTDIR)$(SYSCONFDIR)/protobus/protobusd.conf || \
	  sed -e 's|^data_dir = ./data .*|data_dir = /var/lib/protobus  # StateDirectory=protobus (protobusd.service)|' \
	    -e '1s|.*|# protobusd configuration (installed by make install; read by protobusd.service).|' \
	    conf/protobusd.conf > $(DESTDIR)$(SYSCONFDIR)/protobus/protobusd.conf

format:
	clang-format -i $(PROTO_SRC) $(SERVER_SRC) server/main.c $(CLIENT_SRC) $(CLI_SRC) \
	  $(wildcard proto/*.h server/*.h client/*.h client/cli/*.h tests/unit/*.c tests/lib/*.[ch])

clean:
	rm -rf build

# --- fuzzing (tests/fuzz) --------------------------------------------------
# Each tests/fuzz/fuzz_<name>.c defines LLVMFuzzerTestOneInput. `make check`
# replays its corpus (tests/fuzz/corpus/<name>/) with a gcc driver, built as
# $(BUILD)/tests/test_fuzz_<name>, so no clang is needed there. `make fuzz`
# builds every target with clang's libFuzzer + ASan/UBSan into build/fuzz and
# runs each for FUZZ_SECONDS, or for FUZZ_RUNS executions when that is set
# (`make fuzz FUZZ_RUNS=1000000`); new inputs collect in build/fuzz/corpus/.
FUZZ_NAMES      := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_REPLAY_BIN := $(patsubst %,$(BUILD)/tests/test_fuzz_%,$(FUZZ_NAMES))
FUZZ_SECONDS    ?= 60
FUZZ_RUNS       ?=
FUZZ_CC         ?= clang
FUZZ_OPT        := -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
                   -fno-sanitize-recover=all

check: $(FUZZ_REPLAY_BIN)

$(BUILD)/tests/test_fuzz_%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(BUILD)/obj/tests/fuzz/replay.o \
                            $(BUILD)/libpbinternal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# fuzz_render compares the CLI's renderer with the old one (tests/lib).
$(BUILD)/tests/test_fuzz_render: $(BUILD)/obj/tests/fuzz/fuzz_render.o $(BUILD)/obj/tests/fuzz/replay.o \
                                 $(BUILD)/obj/tests/lib/render_ref.o $(BUILD)/libpbinternal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/fuzzers/fuzz_render: $(BUILD)/obj/tests/fuzz/fuzz_render.o \
                              $(BUILD)/obj/tests/lib/render_ref.o $(BUILD)/libpbinternal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

# The libFuzzer binaries; built by `make fuzz` with BUILD=build/fuzz.
$(BUILD)/fuzzers/fuzz_%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(BUILD)/libpbinternal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

fuzz-bins: $(patsubst %,$(BUILD)/fuzzers/fuzz_%,$(FUZZ_NAMES))

# `make fuzz-seeds` regenerates the seed inputs (tests/fuzz/seeds.c) in the
# corpora; needed only when a format changes.
$(BUILD)/fuzzers/seeds: $(BUILD)/obj/tests/fuzz/seeds.o $(BUILD)/libpbinternal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

fuzz-seeds: $(BUILD)/fuzzers/seeds
	$(BUILD)/fuzzers/seeds tests/fuzz/corpus

# What `make fuzz` needs besides the build's packages (make test does not).
FUZZ_DEPS := clang libclang-rt-14-dev

# clang warns about other things than gcc: -Werror stays with the gcc build.
fuzz:
	@tests/install-deps $(FUZZ_DEPS)
	$(MAKE) -j$(BUILD_JOBS) BUILD=build/fuzz CC=$(FUZZ_CC) OPT="$(FUZZ_OPT)" LDSAN="-fsanitize=address,undefined" \
	  WARN="-Wall -Wextra -Wno-unused-parameter" fuzz-bins
	FUZZ_SECONDS="$(FUZZ_SECONDS)" FUZZ_RUNS="$(FUZZ_RUNS)" tests/fuzz/run-fuzz build/fuzz $(FUZZ_NAMES)

# --- ThreadSanitizer ---------------------------------------------------------
# `make tsan`: every integration test (so the daemon itself, also built with
# TSan) and the unit tests that start threads, built with -fsanitize=thread
# into build/tsan and run by tests/run-tsan; any report fails it
# (tests/tsan.supp lists known false positives, with reasons). The shell
# scripts in tests/integration are left out: they load libprotobus.so into
# programs that are not built with TSan, which TSan cannot run.
TSAN_OPT       := -O1 -g -fno-omit-frame-pointer -fsanitize=thread
TSAN_THREAD_RE := pthread_create|fake_server_run|\bsh_start\b|uv_thread_create|partition_open|store_open|sub_registry_create|inflater_start|compressor_start|unlinker_start
TSAN_UNIT      := $(patsubst tests/unit/%.c,%,$(shell grep -l -E '$(TSAN_THREAD_RE)' $(UNIT_SRC)))
# test_iso_topics is a memory-at-scale test (400,000 topics): 180 s under
# TSan for no thread it does not share with test_iso_partitions and
# test_topics, so it runs in the plain and ASan passes only.
TSAN_SKIP      := test_iso_topics
# test_log_direct, test_log_gather and test_partition_pipe start no thread themselves: the log's direct writes start
# their helper thread (server/log_direct.c); test_partition_take opens its partition through the
# harness (tests/lib/partharness.c), whose writer thread detaches the takes; so do test_partition_inline
# and test_ahead_fail.
TSAN_EXTRA     := test_log_direct test_log_gather test_partition_pipe test_partition_take test_partition_inline \
                  test_ahead_fail
TSAN_TESTS     := $(sort $(TSAN_UNIT) $(TSAN_EXTRA) $(filter-out $(TSAN_SKIP),$(patsubst tests/integration/%.c,%,$(INTEG_SRC))))

tsan:
	$(MAKE) BUILD=build/tsan OPT="$(TSAN_OPT)" LDSAN=-fsanitize=thread build/tsan/protobusd \
	  $(TSAN_TESTS:%=build/tsan/tests/%)
	tests/run-tsan build/tsan $(TSAN_TESTS)

.PHONY: fuzz-bins fuzz-seeds tsan

# --- benchmarks ----------------------------------------------------------------
# `make bench`: tests/bench/run (baselines + the standard workloads, median of
# 3, one table; ~5-10 minutes). Not part of `make test`.
bench: $(BUILD)/protobusd $(BUILD)/protobus $(FANOUT_FLOOR)
	BUILD=$(BUILD) tests/bench/run

.PHONY: bench

# `make bench-standby`: tests/bench/standby, the hot standby's publish rate
# (alone, async, sync) and replication lag; RUNS and COUNT as there.
bench-standby: $(BUILD)/protobusd $(BUILD)/protobus
	BUILD=$(BUILD) tests/bench/standby

.PHONY: bench-standby

# `make bench-matcher`: tests/bench/matcher_bench.c, the topic matching of
# the "100k topics + 1,000 subscriptions" workload alone: one PCRE2 match
# per pattern per topic (today's fan-out) against the combined matcher
# (server/matcher.c), MATCHER_RUNS runs and their medians. `make check`
# builds it (without running it) so that it keeps compiling.
MATCHER_RUNS  ?= 5
MATCHER_BENCH := $(BUILD)/bench/matcher_bench

$(BUILD)/bench/%: $(BUILD)/obj/tests/bench/%.o $(BUILD)/libpbinternal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

check: $(MATCHER_BENCH)

bench-matcher: $(MATCHER_BENCH)
	$(MATCHER_BENCH) -r $(MATCHER_RUNS)

.PHONY: bench-matcher

# tests/bench/fanout_floor.c: the fan-out row's baseline, the same sends to
# 1,000 loopback sockets without a broker (tests/bench/run runs it in the
# fanout workload). Built by `make check` and `make bench`.
FANOUT_FLOOR := $(BUILD)/bench/fanout_floor

check: $(FANOUT_FLOOR)

# `make bench-dedup`: tests/bench/dedup_bench.c, what event ids cost the
# daemon's CPU per event (the writer's admission with and without the dedup
# window, the loop thread's hash), DEDUP_RUNS runs and their medians. Built
# by `make check` so that it keeps compiling.
DEDUP_RUNS  ?= 5
DEDUP_BENCH := $(BUILD)/bench/dedup_bench

check: $(DEDUP_BENCH)

bench-dedup: $(DEDUP_BENCH)
	$(DEDUP_BENCH) -r $(DEDUP_RUNS)

.PHONY: bench-dedup

# --- Python client (client/python) ----------------------------------------------
# `make install-python` installs the `protobus` package into the virtualenv
# PYTHON_VENV (default build/venv), creating it first if needed with Debian's
# python3 (PYTHON) and --system-site-packages, so the package finds Debian's
# python3-protobuf; pip builds it offline (protoc generates protobus_pb2.py
# from proto/protobus.proto at that moment). `make install-python
# PYTHON_VENV=/path/to/venv` installs into another one; then
# `/path/to/venv/bin/python -c 'import protobus'`. `make bench-python` runs
# tests/bench/python_bench.py with it. The tests run in `make check`
# (tests/integration/test_python.sh, a venv of their own).
PYTHON      ?= /usr/bin/python3
PYTHON_VENV ?= build/venv

install-python:
	@tests/install-deps
	test -x $(PYTHON_VENV)/bin/python || $(PYTHON) -m venv --system-site-packages $(PYTHON_VENV)
	$(PYTHON_VENV)/bin/pip install --no-index --no-build-isolation --no-warn-script-location \
	  client/python

bench-python: $(BUILD)/protobusd install-python
	BUILD=$(BUILD) $(PYTHON_VENV)/bin/python tests/bench/python_bench.py

.PHONY: install-python bench-python

# `make bench-mirror`: tests/bench/mirror_bench.c, a mirror to JetStream on
# a 3-node NATS cluster on loopback: the publish rate with a mirror running
# against without (same run, alternating rounds), the mirror's throughput
# and its lag. MIRROR_EVENTS events per round, MIRROR_ROUNDS rounds.
MIRROR_EVENTS ?= 200000
MIRROR_ROUNDS ?= 3
MIRROR_BENCH  := $(BUILD)/bench/mirror_bench

$(MIRROR_BENCH): $(BUILD)/obj/tests/bench/mirror_bench.o $(TESTLIB_OBJ) $(BUILD)/libpbinternal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

check: $(MIRROR_BENCH)

bench-mirror: $(MIRROR_BENCH) $(BUILD)/protobusd
	BUILD=$(BUILD) $(MIRROR_BENCH) -n $(MIRROR_EVENTS) -r $(MIRROR_ROUNDS)

.PHONY: bench-mirror
