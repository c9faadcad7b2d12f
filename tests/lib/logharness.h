/*
 * logharness - what the segment log's tests share (tests/unit/test_log.c:
 * writing, indexing and rotation; test_log_recovery.c: recovery, failed
 * I/O and power loss; test_log_direct.c and test_log_gather.c: direct
 * writes; test_reader.c: its events and appends): a temporary directory
 * with partition directory lh_part in it, deterministic events for each
 * offset (varied sizes, some appended in two parts), a fixed clock,
 * captured log messages, and a reader that checks every event
 * (lh_verify_with: each test's own check of an event's bytes).
 */
#ifndef PB_TEST_LOGHARNESS_H
#define PB_TEST_LOGHARNESS_H

#include "log.h"
#include "protobus_reader.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define T0 1700000000000000000ll

/* The test's temporary directory (lh_setup) and the log's directory in it. */
extern char lh_root[64];
extern char lh_part[128];

/* The messages the log said since the last lh_open_log_opts (one a line),
 * the most severe level among them, and whether lh_opts asks for
 * synced_acks (fsync = always). */
extern char lh_messages[16384];
extern enum log_level lh_worst;
extern bool lh_synced_acks;
void lh_capture(void *ctx, enum log_level level, const char *msg);

/* The clock lh_opts gives the log: *(int64_t *)ctx, lh_clock_value there. */
extern int64_t lh_clock_value;
int64_t lh_fixed_clock(void *ctx);

/* The event at offset off into buf (20-300 bytes); returns its length. */
size_t lh_event_for(uint64_t off, uint8_t *buf);
/* Its receive time: T0 + off microseconds. */
int64_t lh_time_for(uint64_t off);

/* Options: segment_bytes, 1 KiB index interval, the fixed clock, the
 * captured messages, lh_synced_acks. */
log_options lh_opts(uint64_t segment_bytes);
/* The same for the direct-write tests (test_log_direct, test_log_gather):
 * 4 KiB index interval, appends of direct_min bytes or more written around
 * the page cache. */
log_options lh_direct_opts(uint64_t segment_bytes, uint64_t direct_min);
/* Opens the log in lh_part (failing the test with the messages if not). */
pb_log *lh_open_log_opts(const log_options *o);
pb_log *lh_open_log(uint64_t segment_bytes);

/* The most events lh_append_range puts in one log_append. */
#define LH_MAX_BATCH 512

/* Appends offsets [from, from+count) (lh_event_for's bytes, every fourth
 * event split into data + suffix as the daemon does) in batches of 1 to
 * max_batch (at most LH_MAX_BATCH), each at lh_time_for(off). 0 or the
 * append's error. */
int lh_append_range(pb_log *log, uint64_t from, uint64_t count, size_t max_batch);
/* The same with the receive times time_for gives (test_reader: records that
 * share a time). */
typedef int64_t lh_time_fn(uint64_t off);
int lh_append_range_timed(pb_log *log, uint64_t from, uint64_t count, size_t max_batch,
                          lh_time_fn *time_for);

/* Checks the record read back at offset off (its content; the offset is
 * checked already), failing the test if it is not what was appended. */
typedef void lh_check_fn(uint64_t off, const pb_record *rec);
/* Reads lh_part from its start: offsets 0..n-1 in order, each given to
 * check; then, when to_end, the end of the partition (nothing after n-1). */
void lh_verify_with(uint64_t n, lh_check_fn *check, bool to_end);
/* lh_verify_with's check for lh_append_range's events: lh_event_for's
 * bytes and lh_time_for's time. */
void lh_check_event(uint64_t off, const pb_record *rec);
/* Reads the whole partition: offsets 0..n-1 with the right content
 * (lh_check_event), nothing after. */
void lh_verify_all(uint64_t n);

/* lh_part/<base><ext>, into out[PATH_MAX]. */
void lh_seg_path(char *out, uint64_t base, const char *ext);
off_t lh_file_size(const char *path);

/* Record positions of a .log: pos[i] for its i-th record; returns count. */
size_t lh_record_positions(const char *path, uint64_t *pos, size_t cap);

/* cmocka setup and teardown: makes lh_root (and names lh_part) and empties
 * lh_messages; removes lh_root. */
int lh_setup(void **state);
int lh_teardown(void **state);
/* A cmocka test with them (for the tests[] table). */
#define LH_TEST(f) cmocka_unit_test_setup_teardown(f, lh_setup, lh_teardown)

#endif
