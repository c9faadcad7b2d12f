/*
 * retharness - see retharness.h.
 */
#include "retharness.h"

#include "partsubmit.h"
#include "pb_errors.h"
#include "reader.h"
#include "segment.h"
#include "testfs.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

char rh_root[64];
char rh_part_dir[128];

_Atomic int64_t rh_clock_ns;
int64_t rh_clock(void *ctx)
{
    (void)ctx;
    return atomic_load(&rh_clock_ns);
}

/* The events of one batch (tests/lib/partsubmit submits and waits). */
static pub_event batch_ev[PARTSUBMIT_MAX];
static uint8_t ev_bytes[PARTSUBMIT_MAX][EV_BYTES];

/* Publishes n (<= 16) events of EV_BYTES and waits for the ack. */
void rh_publish(partition *p, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        /* field 1 (topic) "tt", then padding in field 15 (bytes) */
        uint8_t *e = ev_bytes[i];
        e[0] = 0x0a;
        e[1] = 2;
        e[2] = 't';
        e[3] = 't';
        e[4] = 0x7a; /* field 15, length-delimited */
        e[5] = EV_BYTES - 6;
        memset(e + 6, 'x', EV_BYTES - 6);
        batch_ev[i] = (pub_event){.data = e, .len = EV_BYTES, .topic = e + 2, .topic_len = 2};
    }
    assert_int_equal(partsubmit(p, batch_ev, n), 0);
}

/* Retention runs after the acks: wait (bounded) for the writer to finish
 * and go dormant (idle_ms = 1). */
void rh_wait_dormant(partition *p)
{
    for (int i = 0; i < 5000 && partition_writer_running(p); i++)
        usleep(1000);
    assert_false(partition_writer_running(p));
}

uint64_t rh_wait_first_above(partition *p, uint64_t above)
{
    for (int i = 0; i < 5000 && partition_first_offset(p) <= above; i++)
        usleep(1000);
    return partition_first_offset(p);
}

uint64_t rh_floor_value = UINT64_MAX;
uint64_t rh_floor(void *ctx, const char *name)
{
    (void)ctx;
    (void)name;
    return rh_floor_value;
}

partition_options rh_popts(void)
{
    partition_options o = {0};
    o.log.segment_bytes = 1024; /* 8 records of 124 bytes after the header */
    o.log.index_interval_bytes = 256;
    o.log.now_ns = rh_clock;
    o.fsync = PARTITION_FSYNC_ALWAYS;
    o.topic_history = 4;
    o.idle_ms = 1;
    o.retain_floor = rh_floor;
    return o;
}

/* Reads the partition from the start: offsets first..end-1 in order, no
 * damage reported. Returns the first offset read. */
uint64_t rh_read_all(const char *dir, const fileio *io, uint64_t end)
{
    pb_reader *r;
    segment_io sio;
    if (io) {
        fileio_segment_io(io, &sio);
        assert_int_equal(pb_reader_open_io(&r, dir, &sio), 0);
    } else {
        assert_int_equal(pb_reader_open(&r, dir), 0);
    }
    pb_record rec;
    uint64_t first = UINT64_MAX, next = 0;
    int rc;
    while ((rc = pb_reader_next(r, &rec)) == 0) {
        if (first == UINT64_MAX)
            first = next = rec.offset;
        assert_int_equal(rec.offset, next);
        next++;
    }
    assert_int_equal(rc, PB_EEOF);
    assert_int_equal(next, end);
    pb_reader_close(r);
    return first;
}

uint64_t rh_dir_log_bytes(const char *dir)
{
    uint64_t bases[256], total = 0;
    size_t n = testfs_list_bases(dir, bases, 256);
    for (size_t i = 0; i < n; i++) {
        char path[256];
        size_t len;
        segment_path(path, sizeof path, dir, bases[i], ".log");
        free(testfs_read_file(path, &len));
        total += len;
    }
    return total;
}

int rh_setup(void **state)
{
    (void)state;
    return testfs_make_root(rh_root, sizeof rh_root, "pb_test_ret", rh_part_dir,
                            sizeof rh_part_dir);
}

int rh_teardown(void **state)
{
    (void)state;
    return testfs_rmrf(rh_root);
}
