/* Tests for server/log_cache (through server/log): with cache_bytes set,
 * the writer drops the page cache of durable bytes that lie more than
 * cache_bytes behind the end of the partition, and never anything newer or
 * not yet synced; closed segments go whole once cache_bytes follow them;
 * cache_bytes = 0 drops nothing; a fileio layer without drop_cache (the
 * power-loss simulation's) is fine. The layer here is the real file system
 * with drop_cache (and fdatasync) watched. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "log.h"
#include "pb_errors.h"
#include "reader.h"
#include "segment.h"
#include "simio.h"
#include "testfs.h"

#define T0       1700000000000000000ll
#define SEG      (8ull << 20)
#define KEEP     (1ull << 20)
#define EV_BYTES 1000u
#define MAX_FD   1024
#define MAX_SEGS 64

static char root[64];
static char part[128];

static int setup(void **state)
{
    return testfs_make_root(root, sizeof root, "pb_test_log_cache", part, sizeof part);
}

static int teardown(void **state)
{
    return testfs_rmrf(root);
}

/* ---- the watching layer ------------------------------------------------ */

static fileio watch_io;
static char fd_path[MAX_FD][PATH_MAX];
static uint64_t fd_synced[MAX_FD]; /* file size at its last fdatasync */
static bool fd_reopened[MAX_FD];   /* opened read-only (a closed segment) */
static int drops;
/* Per segment (index in base order), the highest byte dropped so far. */
static uint64_t dropped_to[MAX_SEGS];

static int w_open(const fileio *io, const char *path, int flags, int mode)
{
    int fd = fileio_posix()->open(fileio_posix(), path, flags, mode);
    if (fd >= 0 && fd < MAX_FD) {
        snprintf(fd_path[fd], PATH_MAX, "%s", path);
        fd_synced[fd] = 0;
        fd_reopened[fd] = (flags & O_ACCMODE) == O_RDONLY;
    }
    return fd;
}

static uint64_t size_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

static int w_fdatasync(const fileio *io, int fd)
{
    int rc = fileio_posix()->fdatasync(fileio_posix(), fd);
    if (rc == 0 && fd < MAX_FD && strstr(fd_path[fd], ".log"))
        fd_synced[fd] = size_of(fd_path[fd]);
    return rc;
}

/* The partition's .log files in base order: their sizes; returns count. */
static size_t segments(uint64_t *bases, uint64_t *sizes)
{
    size_t n = testfs_list_bases(part, bases, MAX_SEGS);
    char path[PATH_MAX];
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(segment_path(path, sizeof path, part, bases[i], ".log"), 0);
        sizes[i] = size_of(path);
    }
    return n;
}

/* Checks each drop against the files as they are when it is asked: the
 * dropped bytes are durable, and at least KEEP bytes follow them. */
static int w_drop_cache(const fileio *io, int fd, off_t off, off_t len)
{
    assert_true(fd >= 0 && fd < MAX_FD);
    uint64_t bases[MAX_SEGS], sizes[MAX_SEGS], total = 0, start = 0;
    size_t n = segments(bases, sizes), k = n;
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX];
        assert_int_equal(segment_path(path, sizeof path, part, bases[i], ".log"), 0);
        if (strcmp(path, fd_path[fd]) == 0) {
            k = i;
            start = total;
        }
        total += sizes[i];
    }
    assert_true(k < n);
    uint64_t end = len == 0 ? sizes[k] : (uint64_t)off + (uint64_t)len;
    if (fd_reopened[fd])
        assert_true(k + 1 < n); /* a whole closed segment: rotation synced it */
    else
        assert_true(end <= fd_synced[fd]);
    assert_true(total - (start + end) >= KEEP);
    assert_true(off % 4096 == 0);
    if (end > dropped_to[k])
        dropped_to[k] = end;
    drops++;
    return fileio_posix()->drop_cache(fileio_posix(), fd, off, len);
}

static void watch_reset(void)
{
    watch_io = *fileio_posix();
    watch_io.open = w_open;
    watch_io.fdatasync = w_fdatasync;
    watch_io.drop_cache = w_drop_cache;
    drops = 0;
    memset(dropped_to, 0, sizeof dropped_to);
}

/* ---- helpers ----------------------------------------------------------- */

static pb_log *open_log(const fileio *io, uint64_t cache_bytes)
{
    log_options o = {.segment_bytes = SEG,
                     .index_interval_bytes = 4096,
                     .cache_bytes = cache_bytes,
                     .io = io};
    pb_log *log;
    assert_int_equal(log_open(&log, part, &o), 0);
    return log;
}

/* Appends count events of EV_BYTES in batches of 64, syncing after each
 * batch when sync is set. */
static void append_events(pb_log *log, uint64_t count, bool sync)
{
    static uint8_t data[EV_BYTES];
    log_entry e[64];
    for (uint64_t done = 0; done < count;) {
        size_t n = count - done < 64 ? (size_t)(count - done) : 64;
        for (size_t i = 0; i < n; i++) {
            memset(data, (int)((done + i) & 0xff), sizeof data);
            e[i] = (log_entry){.data = data, .len = sizeof data, .time_ns = T0 + (int64_t)done};
        }
        assert_int_equal(log_append(log, e, n, NULL), 0);
        if (sync)
            assert_int_equal(log_sync(log), 0);
        done += n;
    }
}

static void verify_count(uint64_t n)
{
    pb_reader *r;
    pb_record rec;
    uint64_t seen = 0;
    assert_int_equal(pb_reader_open(&r, part), 0);
    while (pb_reader_next(r, &rec) == 0) {
        assert_true(rec.offset == seen);
        assert_int_equal(rec.event_len, EV_BYTES);
        seen++;
    }
    pb_reader_close(r);
    assert_true(seen == n);
}

/* ---- tests ------------------------------------------------------------- */

/* ~20 MiB through 8 MiB segments, synced per batch: closed segments are
 * dropped whole once KEEP bytes follow them, the active one up to about
 * KEEP (plus a drop step) behind its end; every drop was checked above. */
static void test_drops_behind_the_writer(void **state)
{
    watch_reset();
    pb_log *log = open_log(&watch_io, KEEP);
    const uint64_t events = 23000;
    append_events(log, events, true);
    uint64_t bases[MAX_SEGS], sizes[MAX_SEGS];
    size_t n = segments(bases, sizes);
    assert_true(n == 3);
    assert_true(dropped_to[0] == sizes[0]);
    assert_true(dropped_to[1] == sizes[1]);
    assert_true(sizes[2] > KEEP + (4u << 20));
    assert_true(dropped_to[2] + KEEP + (2u << 20) + 4096 >= sizes[2]);
    assert_true(drops >= 4 && drops < 20); /* in steps, not per batch */
    assert_int_equal(log_close(log), 0);
    verify_count(events);
}

/* Unsynced appends (fsync = never): nothing of the active segment is
 * dropped; rotation syncs a segment, which may then go. */
static void test_only_durable_bytes_dropped(void **state)
{
    watch_reset();
    pb_log *log = open_log(&watch_io, KEEP);
    append_events(log, 20000, false);
    uint64_t bases[MAX_SEGS], sizes[MAX_SEGS];
    assert_true(segments(bases, sizes) == 3);
    assert_true(dropped_to[0] == sizes[0]);
    assert_true(dropped_to[2] == 0);
    assert_int_equal(log_close(log), 0);
    verify_count(20000);
}

/* cache_bytes = 0: the kernel keeps what it likes; nothing is dropped. */
static void test_zero_keeps_everything(void **state)
{
    watch_reset();
    pb_log *log = open_log(&watch_io, 0);
    append_events(log, 20000, true);
    assert_int_equal(drops, 0);
    assert_int_equal(log_close(log), 0);
    verify_count(20000);
}

/* A layer without drop_cache (the power-loss simulation) just writes. */
static void test_layer_without_drop_cache(void **state)
{
    simio *s;
    assert_int_equal(simio_create(&s), 0);
    assert_int_equal(simio_add_root(s, root), 0);
    assert_null(simio_io(s)->drop_cache);
    pb_log *log = open_log(simio_io(s), KEEP);
    append_events(log, 20000, true);
    assert_true(log_next_offset(log) == 20000);
    assert_int_equal(log_close(log), 0);
    simio_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_drops_behind_the_writer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_only_durable_bytes_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zero_keeps_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(test_layer_without_drop_cache, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
