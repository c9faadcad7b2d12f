/*
 * retharness - what the retention tests share (tests/unit/test_retention.c:
 * the policy; test_removal.c: the removal, the unlinker and recycling): a
 * temporary directory with partition "p" in it, an injected clock and
 * mirror floor, small-segment partition options, a publisher that waits
 * for the ack, and a reader that checks a contiguous range.
 */
#ifndef PB_TEST_RETHARNESS_H
#define PB_TEST_RETHARNESS_H

#include "fileio.h"
#include "partition.h"

#include <stdatomic.h>
#include <stdint.h>

#define T0       1700000000000000000ll
#define SEC      1000000000ll
#define EV_BYTES 100

/* The test's temporary directory (rh_setup) and partition "p" in it. */
extern char rh_root[64];
extern char rh_part_dir[128];

/* The partitions' clock (rh_popts) and mirror floor (UINT64_MAX: none). */
extern _Atomic int64_t rh_clock_ns;
extern uint64_t rh_floor_value;
int64_t rh_clock(void *ctx);
uint64_t rh_floor(void *ctx, const char *name);

/* 1 KiB segments (8 records of EV_BYTES + 24), fsync always, idle_ms 1,
 * the clock and floor above. */
partition_options rh_popts(void);

/* Publishes n (<= 16) events of EV_BYTES on topic "tt" and waits for the
 * ack. */
void rh_publish(partition *p, uint32_t n);

/* Retention runs after the acks: waits (bounded) for the writer to finish
 * and go dormant. */
void rh_wait_dormant(partition *p);

/* Waits (bounded) until the partition's first offset is above `above`
 * (retention removed up to there); returns it. */
uint64_t rh_wait_first_above(partition *p, uint64_t above);

/* Reads the partition in dir from the start (through io, or POSIX when
 * NULL): offsets first..end-1 in order, no damage reported. Returns the
 * first offset read. */
uint64_t rh_read_all(const char *dir, const fileio *io, uint64_t end);

/* Bytes of the .log files in dir. */
uint64_t rh_dir_log_bytes(const char *dir);

/* cmocka setup and teardown: makes rh_root (and names rh_part_dir), removes it. */
int rh_setup(void **state);
int rh_teardown(void **state);

#endif
