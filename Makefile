# Protobus build. `make` builds into build/; `make SAN=1` builds the same
# tree with AddressSanitizer + UndefinedBehaviorSanitizer into build/san/.
#
#   make            protobusd, protobus, libprotobus.a, libprotobus.so
#   make run        build and start protobusd on conf/protobusd.conf
#   make test       install missing Debian packages, build, run every test,
#                   then rebuild with ASan+UBSan and run them all again
#   make install    header, libraries and pkg-config file under $(PREFIX)

CC      ?= gcc
PREFIX  ?= /usr/local
PKGS    := libprotobuf-c libpcre2-8 libuv inih json-c libhs

ifeq ($(SAN),1)
BUILD   ?= build/san
OPT     := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
LDSAN   := -fsanitize=address,undefined
else
BUILD   ?= build
OPT     := -O2 -g
LDSAN   :=
endif

GEN     := $(BUILD)/gen
WARN    := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
CPPFLAGS += -D_GNU_SOURCE -I$(GEN) -Iproto -Iserver -Iclient -Itests/lib
CFLAGS  += -std=c11 $(OPT) $(WARN) -pthread -fPIC $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm
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
SERVER_OBJ := $(call obj,$(SERVER_SRC))
CLIENT_OBJ := $(call obj,$(CLIENT_SRC))
CLI_OBJ    := $(call obj,$(CLI_SRC))

UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BIN   := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
# Integration tests: C programs that start the real protobusd (tests/lib/itest.h).
INTEG_SRC  := $(wildcard tests/integration/test_*.c)
INTEG_BIN  := $(patsubst tests/integration/%.c,$(BUILD)/tests/%,$(INTEG_SRC))
TESTLIB_SRC := $(wildcard tests/lib/*.c)
TESTLIB_OBJ := $(call obj,$(TESTLIB_SRC))

# The two programs are built once their mains exist (the tree grows in steps).
BINS := $(BUILD)/libprotobus.a $(BUILD)/libprotobus.so
ifneq ($(wildcard server/main.c),)
BINS += $(BUILD)/protobusd
endif
ifneq ($(CLI_SRC),)
BINS += $(BUILD)/protobus
endif

.PHONY: all run test check unit integration deps install clean format fuzz
.SECONDARY:

all: $(BINS)

$(GEN)/protobus.pb-c.c $(GEN)/protobus.pb-c.h: proto/protobus.proto
	@mkdir -p $(GEN)
	protoc-c --c_out=$(GEN) -Iproto -I$(PROTO_INC) proto/protobus.proto

$(GEN)/google/protobuf/%.pb-c.c $(GEN)/google/protobuf/%.pb-c.h: $(PROTO_INC)/google/protobuf/%.proto
	@mkdir -p $(GEN)
	protoc-c --c_out=$(GEN) -I$(PROTO_INC) $<

$(BUILD)/obj/gen/%.o: $(GEN)/%.c $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -Wno-error -c -o $@ $<

$(BUILD)/obj/%.o: %.c $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# Internal archive: everything but the two mains, for the binaries and tests.
$(BUILD)/libpbinternal.a: $(PROTO_OBJ) $(SERVER_OBJ) $(CLIENT_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libprotobus.a: $(PROTO_OBJ) $(CLIENT_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libprotobus.so: $(PROTO_OBJ) $(CLIENT_OBJ)
	$(CC) -shared $(LDFLAGS) -Wl,-soname,libprotobus.so.1 -o $@ $^ $(LDLIBS)

$(BUILD)/protobusd: $(BUILD)/obj/server/main.o $(BUILD)/libpbinternal.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/protobus: $(CLI_OBJ) $(BUILD)/libpbinternal.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(TESTLIB_OBJ) $(BUILD)/libpbinternal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

$(BUILD)/tests/%: $(BUILD)/obj/tests/integration/%.o $(TESTLIB_OBJ) $(BUILD)/libpbinternal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

run: $(BUILD)/protobusd
	$(BUILD)/protobusd -c conf/protobusd.conf

# `make test`: three passes, plain, then ASan+UBSan, then ThreadSanitizer
# (the daemon and every threaded test; see `tsan` below). Each builds first.
test: deps
	$(MAKE) check
	$(MAKE) SAN=1 check
	$(MAKE) tsan

# One pass: build everything, run every unit test, then the integration tests.
check: all $(UNIT_BIN) $(INTEG_BIN)
	@BUILD=$(BUILD) tests/run-tests

deps:
	@tests/install-deps

install: $(BUILD)/libprotobus.a $(BUILD)/libprotobus.so $(BUILD)/protobus $(BUILD)/protobusd
	install -d $(DESTDIR)$(PREFIX)/include/protobus $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/bin
	install -m 644 client/protobus.h proto/pb_errors.h proto/reader.h proto/record.h \
	  $(DESTDIR)$(PREFIX)/include/protobus/
	install -m 644 $(BUILD)/libprotobus.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(BUILD)/libprotobus.so $(DESTDIR)$(PREFIX)/lib/libprotobus.so.1
	ln -sf libprotobus.so.1 $(DESTDIR)$(PREFIX)/lib/libprotobus.so
	install -m 755 $(BUILD)/protobus $(BUILD)/protobusd $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|@PREFIX@|$(PREFIX)|g' client/protobus.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/protobus.pc

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
	$(MAKE) BUILD=build/fuzz CC=$(FUZZ_CC) OPT="$(FUZZ_OPT)" LDSAN="-fsanitize=address,undefined" \
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
TSAN_THREAD_RE := pthread_create|uv_thread_create|partition_open|store_open|sub_registry_create
TSAN_UNIT      := $(patsubst tests/unit/%.c,%,$(shell grep -l -E '$(TSAN_THREAD_RE)' $(UNIT_SRC)))
TSAN_TESTS     := $(sort $(TSAN_UNIT) $(patsubst tests/integration/%.c,%,$(INTEG_SRC)))

tsan:
	$(MAKE) BUILD=build/tsan OPT="$(TSAN_OPT)" LDSAN=-fsanitize=thread build/tsan/protobusd \
	  $(TSAN_TESTS:%=build/tsan/tests/%)
	tests/run-tsan build/tsan $(TSAN_TESTS)

.PHONY: fuzz-bins fuzz-seeds tsan

# --- benchmarks ----------------------------------------------------------------
# `make bench`: tests/bench/run (baselines + the standard workloads, median of
# 3, one table; ~5-10 minutes). Not part of `make test`.
bench: $(BUILD)/protobusd $(BUILD)/protobus
	BUILD=$(BUILD) tests/bench/run

.PHONY: bench

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
