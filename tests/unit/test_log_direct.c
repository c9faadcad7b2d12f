/* Tests for server/log_direct (through server/log): appends of at least
 * direct_min_bytes written around the page cache. On the real file system:
 * every record reads back intact, in order, across appends that start
 * mid-block and on a block boundary, end mid-block, span several staging
 * buffers, and cross segment rotations; appends below the threshold mix in;
 * the segment's size is exactly the bytes appended; nothing logs that
 * direct writes were given up. Through a file layer that refuses O_DIRECT:
 * the log says so once and appends the ordinary way, losing nothing. No
 * byte of an append written through the page cache is left in front of
 * one of its direct writes without being written out first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testfs.h"
#include "fileio.h"
#include "log.h"
#include "logharness.h"
#include "pb_errors.h"
#include "record.h"
#include "segment.h"

#define MAX_LEN 5000u /* largest test event */
#define MAX_N   4096u /* most events in one append */

/* Event `off`: 1..MAX_LEN bytes, its content a function of off. */
static size_t event_for(uint64_t off, uint8_t *buf)
{
    uint64_t h = testfs_mix64(off);
    size_t len = 1 + h % (off % 7 == 0 ? MAX_LEN : 1100);
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(testfs_mix64(h + i / 8) >> (8 * (i % 8)));
    return len;
}

/* log_append_sync's hook: the sync before is over; its outcome is taken. */
static int hooked;

static void on_synced(void *ctx)
{
    assert_int_equal(log_sync_finish(ctx, NULL), 0);
    hooked++;
}

/* Appends offsets [from, from + count): n events per append, each split
 * into data and suffix like the daemon's. Returns the bytes appended. */
static uint64_t append_n(pb_log *log, uint64_t from, size_t n, bool sync)
{
    static uint8_t scratch[MAX_N][MAX_LEN];
    static log_entry e[MAX_N];
    uint64_t bytes = 0;
    assert_true(n <= MAX_N);
    for (size_t i = 0; i < n; i++) {
        uint64_t off = from + i;
        uint8_t *p = scratch[i];
        size_t len = event_for(off, p);
        size_t cut = off % 3 == 0 ? len / 2 : len;
        e[i] = (log_entry){.data = p,
                           .len = cut,
                           .suffix = p + cut,
                           .suffix_len = len - cut,
                           .time_ns = T0 + (int64_t)off};
        bytes += PB_RECORD_HEADER_SIZE + len;
    }
    uint64_t first;
    int rc = sync ? log_append_sync(log, e, n, &first, from > 0 ? on_synced : NULL, NULL, log)
                  : log_append(log, e, n, &first);
    assert_int_equal(rc, 0);
    assert_true(first == from);
    return bytes;
}

/* lh_verify_with's check: event_for's bytes, append_n's time. */
static void check_event(uint64_t off, const pb_record *rec)
{
    static uint8_t want[MAX_LEN];
    size_t len = event_for(off, want);
    assert_int_equal(rec->event_len, len);
    assert_memory_equal(rec->event, want, len);
    assert_true(rec->time_ns == T0 + (int64_t)off);
}

/* Opens the log in lh_part through io (NULL: the real file layer). */
static pb_log *open_log(const fileio *io, uint64_t segment_bytes, uint64_t direct_min)
{
    log_options o = lh_direct_opts(segment_bytes, direct_min);
    o.io = io;
    pb_log *log;
    assert_int_equal(log_open(&log, lh_part, &o), 0);
    return log;
}

/* 2,000 events of 1..599 zero bytes, each in its own buffer (~600 KiB). */
static log_entry *filler(void)
{
    static log_entry e[2000];
    static uint8_t buf[2000][600];
    for (size_t i = 0; i < 2000; i++)
        e[i] = (log_entry){.data = buf[i], .len = 1 + i % 599, .time_ns = T0};
    return e;
}

/* A segment's .log file (for the file layers that watch its writes). */
static bool is_log_path(const char *path)
{
    size_t n = strlen(path);
    return n > 4 && strcmp(path + n - 4, ".log") == 0;
}

/* Sizes of the appends: single events (below any block), a few, hundreds
 * (several blocks), thousands (several 1 MiB staging buffers). */
static const size_t sizes[] = {1, 3, 200, 1, 4096, 17, 900, 2, 2500, 64, 1, 1500, 5, 3000};

/* Appends the sizes[] to log (then closes it): n events, bytes bytes. */
static void run_appends(pb_log *log, uint64_t *n, uint64_t *bytes)
{
    *n = 0;
    *bytes = 0;
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        *bytes += append_n(log, *n, sizes[k], false);
        *n += sizes[k];
        if (k % 3 == 2)
            assert_int_equal(log_sync(log), 0);
    }
    assert_int_equal(log_close(log), 0);
}

/* The real file layer, counting the descriptors opened with O_DIRECT. */
static fileio counting;
static int direct_opens;

static int open_counting(const fileio *io, const char *path, int flags, int mode)
{
    direct_opens += (flags & O_DIRECT) != 0;
    return fileio_posix()->open(fileio_posix(), path, flags, mode);
}

static void test_direct_appends_read_back(void **state)
{
    counting = *fileio_posix();
    counting.open = open_counting;
    direct_opens = 0;
    uint64_t n, bytes; /* one segment; every append direct */
    run_appends(open_log(&counting, 1u << 30, 1), &n, &bytes);
    lh_verify_with(n, check_event, true);
    char path[PATH_MAX];
    lh_seg_path(path, 0, ".log");
    assert_true((uint64_t)lh_file_size(path) == PB_FILE_HEADER_SIZE + bytes); /* no padding */
    assert_null(strstr(lh_messages, "through the page cache"));
    assert_true(direct_opens == 1); /* taken, once per segment */
    /* Reopened (recovery finds nothing to cut), the log appends on. */
    pb_log *log = open_log(&counting, 1u << 30, 1);
    assert_null(strstr(lh_messages, "torn"));
    append_n(log, n, 1000, false);
    assert_int_equal(log_close(log), 0);
    lh_verify_with(n + 1000, check_event, true);
}

static void test_direct_and_buffered_mixed_across_rotations(void **state)
{
    /* 3 MiB segments, direct from 64 KiB: small appends go the ordinary
     * way, large ones directly, some of them split by a rotation. */
    uint64_t n, bytes;
    run_appends(open_log(NULL, 3u << 20, 64u << 10), &n, &bytes);
    lh_verify_with(n, check_event, true);
    uint64_t bases[16];
    assert_true(testfs_list_bases(lh_part, bases, 16) >= 3);
    assert_null(strstr(lh_messages, "through the page cache"));
}

/* log_append_sync / log_sync_finish: each append's sync begun on the
 * helper (right behind its last direct write, or queued after an ordinary
 * append) and handed over during the next append (its hook) or after it (which may rotate, a
 * rotation waiting for the sync first, or go the ordinary way, its own
 * write waiting too): every sync succeeds, every record reads back,
 * log_sync_async says the helper takes them once direct writes are
 * running. */
static fileio sync_counting;
static int helper_syncs;

static int fdatasync_counting(const fileio *io, int fd)
{
    char name[16] = "";
    (void)pthread_getname_np(pthread_self(), name, sizeof name);
    if (strncmp(name, "pbd:", 4) == 0)
        __atomic_fetch_add(&helper_syncs, 1, __ATOMIC_RELAXED);
    return fileio_posix()->fdatasync(fileio_posix(), fd);
}

static void test_pipelined_syncs_across_rotations(void **state)
{
    sync_counting = *fileio_posix();
    sync_counting.fdatasync = fdatasync_counting;
    helper_syncs = 0;
    hooked = 0;
    pb_log *log = open_log(&sync_counting, 3u << 20, 64u << 10);
    assert_int_equal(log_sync_finish(log, NULL), 0); /* none pending: 0 */
    uint64_t n = 0;
    for (int round = 0; round < 2; round++) {
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            int fired = hooked;
            append_n(log, n, sizes[k], true);
            /* The append before's sync (the first time there is none),
             * unless the hook took it during this append. */
            if (n > 0 && hooked == fired)
                assert_int_equal(log_sync_finish(log, NULL), 0);
            n += sizes[k];
        }
    }
    assert_true(log_sync_async(log));
    uint64_t ns = 1;
    assert_int_equal(log_sync_finish(log, &ns), 0);
    assert_true(ns > 0);
    assert_int_equal(log_sync_finish(log, &ns), 0); /* once only */
    assert_int_equal(ns, 0);
    assert_int_equal(log_close(log), 0);
    assert_true(__atomic_load_n(&helper_syncs, __ATOMIC_RELAXED) >= 6);
    assert_true(hooked > 0); /* some outcomes were taken inside the next append */
    lh_verify_with(n, check_event, true);
    uint64_t bases[16];
    assert_true(testfs_list_bases(lh_part, bases, 16) >= 3);
    assert_null(strstr(lh_messages, "through the page cache"));
}

/* A file layer whose open refuses O_DIRECT, as some file systems do. */
static fileio no_direct;

static int open_no_direct(const fileio *io, const char *path, int flags, int mode)
{
    if (flags & O_DIRECT)
        return -EINVAL;
    return fileio_posix()->open(fileio_posix(), path, flags, mode);
}

static void test_refused_direct_falls_back(void **state)
{
    no_direct = *fileio_posix();
    no_direct.open = open_no_direct;
    uint64_t n, bytes;
    run_appends(open_log(&no_direct, 1u << 30, 1), &n, &bytes);
    lh_verify_with(n, check_event, true);
    const char *m = strstr(lh_messages, "open with O_DIRECT failed");
    assert_non_null(m);
    assert_non_null(strstr(m, "appending through the page cache from now on"));
    assert_null(strstr(m + 1, "open with O_DIRECT failed")); /* said once */
}

/* The order of the writes to segment files: within one append, no byte
 * written the ordinary way (page cache) may be left unwritten out in front
 * of a direct write (a crash before the sync could leave that page
 * unwritten before records that reached the disk). */
static fileio ordering;
static int log_fds[8], direct_fd = -1;
static bool ordinary_seen, ahead, took_direct;

static bool is_log_fd(int fd)
{
    for (size_t i = 0; i < 8; i++)
        if (log_fds[i] == fd)
            return true;
    return false;
}

static int open_ordering(const fileio *io, const char *path, int flags, int mode)
{
    int fd = fileio_posix()->open(fileio_posix(), path, flags, mode);
    if (fd >= 0 && is_log_path(path)) {
        for (size_t i = 0; i < 8; i++)
            if (log_fds[i] < 0) {
                log_fds[i] = fd;
                break;
            }
        if (flags & O_DIRECT)
            direct_fd = fd;
    }
    return fd;
}

static int close_ordering(const fileio *io, int fd)
{
    for (size_t i = 0; i < 8; i++)
        if (log_fds[i] == fd)
            log_fds[i] = -1;
    if (fd == direct_fd)
        direct_fd = -1;
    return fileio_posix()->close(fileio_posix(), fd);
}

static int write_out_ordering(const fileio *io, int fd, off_t off, off_t len)
{
    if (is_log_fd(fd))
        ordinary_seen = false; /* on the device before what follows */
    return fileio_posix()->write_out(fileio_posix(), fd, off, len);
}

static ssize_t pwritev_ordering(const fileio *io, int fd, const struct iovec *iov, int n, off_t off)
{
    if (fd == direct_fd && fd >= 0) {
        took_direct = true;
        ahead |= ordinary_seen;
    } else if (is_log_fd(fd)) {
        ordinary_seen = true;
    }
    return fileio_posix()->pwritev(fileio_posix(), fd, iov, n, off);
}

static void test_no_page_cache_write_ahead_of_direct(void **state)
{
    ordering = *fileio_posix();
    ordering.open = open_ordering;
    ordering.close = close_ordering;
    ordering.pwritev = pwritev_ordering;
    ordering.write_out = write_out_ordering;
    for (size_t i = 0; i < 8; i++)
        log_fds[i] = -1;
    pb_log *log = open_log(&ordering, 1u << 30, 1);
    uint64_t n = 0;
    size_t direct_appends = 0;
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        ordinary_seen = ahead = took_direct = false;
        append_n(log, n, sizes[k], false);
        n += sizes[k];
        assert_false(ahead);
        direct_appends += took_direct;
        assert_int_equal(log_sync(log), 0);
    }
    assert_int_equal(log_close(log), 0);
    assert_true(direct_appends >= 6); /* the appends of whole blocks */
    lh_verify_with(n, check_event, true);
}

/* A file layer whose third direct write fails with EIO (on the helper
 * thread that makes them): the append is written again the ordinary way,
 * every record with its CRC (log_direct.c left them to the copy into the
 * staging buffers, which stopped part way), and later appends go through
 * the page cache. */
static fileio failing;
static int fail_direct_fd = -1, direct_writes;

static int open_failing(const fileio *io, const char *path, int flags, int mode)
{
    int fd = fileio_posix()->open(fileio_posix(), path, flags, mode);
    if (fd >= 0 && (flags & O_DIRECT))
        fail_direct_fd = fd;
    return fd;
}

static ssize_t pwritev_failing(const fileio *io, int fd, const struct iovec *iov, int n, off_t off)
{
    if (fd == fail_direct_fd && ++direct_writes == 3)
        return -EIO;
    return fileio_posix()->pwritev(fileio_posix(), fd, iov, n, off);
}

static pb_log *open_failing_log(void)
{
    failing = *fileio_posix();
    failing.open = open_failing;
    failing.pwritev = pwritev_failing;
    direct_writes = 0;
    return open_log(&failing, 1u << 30, 1);
}

static void test_failed_direct_write_rewritten_with_crcs(void **state)
{
    pb_log *log = open_failing_log();
    uint64_t n = 0;
    for (size_t k = 0; k < 3; k++) { /* 3000 events of ~550 B: 3 stages or more */
        append_n(log, n, 1000, false);
        n += 1000;
    }
    assert_int_equal(log_sync(log), 0);
    assert_int_equal(log_status(log), 0);
    assert_true(direct_writes == 3); /* none after the failure */
    const char *m = strstr(lh_messages, "direct write failed");
    assert_non_null(m);
    assert_non_null(strstr(m, "appending through the page cache from now on"));
    append_n(log, n, 500, false);
    n += 500;
    assert_int_equal(log_close(log), 0);
    lh_verify_with(n, check_event, true);
}

/* The same through log_append_sync (the partition's pipelined takes): the
 * failed direct write is found once the append's sync is queued behind it
 * (log_direct.c, finish_append); that sync is waited for, the append is
 * written again the ordinary way, the log stays up, and every record
 * reads back. */
static void test_failed_direct_write_behind_a_queued_sync(void **state)
{
    pb_log *log = open_failing_log();
    uint64_t n = 0;
    for (size_t k = 0; k < 3; k++) {
        append_n(log, n, 1000, true);
        n += 1000;
        assert_int_equal(log_sync_finish(log, NULL), 0);
        assert_int_equal(log_status(log), 0);
    }
    assert_true(direct_writes == 3); /* none after the failure */
    assert_non_null(strstr(lh_messages, "direct write failed"));
    append_n(log, n, 500, true);
    n += 500;
    assert_int_equal(log_sync_finish(log, NULL), 0);
    assert_int_equal(log_close(log), 0);
    lh_verify_with(n, check_event, true);
}

/* A file layer whose first ordinary write to a segment, once armed, fails
 * with EIO: the head block of the second direct append, written by the
 * helper thread. The append fails and so does the
 * log (an ordinary write failed), and what the first append stored and
 * synced reads back. */
static fileio failing_lead;
static int lead_log_fd = -1, lead_direct_fd = -1;
static bool lead_armed, lead_failed;

static int open_failing_lead(const fileio *io, const char *path, int flags, int mode)
{
    int fd = fileio_posix()->open(fileio_posix(), path, flags, mode);
    if (fd >= 0 && is_log_path(path)) {
        if (flags & O_DIRECT)
            lead_direct_fd = fd;
        else
            lead_log_fd = fd;
    }
    return fd;
}

static ssize_t pwritev_failing_lead(const fileio *io, int fd, const struct iovec *iov, int n,
                                    off_t off)
{
    if (lead_armed && fd == lead_log_fd && off % 4096 != 0 && !lead_failed) {
        lead_failed = true;
        return -EIO;
    }
    return fileio_posix()->pwritev(fileio_posix(), fd, iov, n, off);
}

static void test_failed_head_block_write_fails_the_log(void **state)
{
    failing_lead = *fileio_posix();
    failing_lead.open = open_failing_lead;
    failing_lead.pwritev = pwritev_failing_lead;
    lead_log_fd = lead_direct_fd = -1;
    lead_armed = lead_failed = false;
    pb_log *log = open_log(&failing_lead, 1u << 30, 1);
    append_n(log, 0, 1000, false);
    assert_int_equal(log_sync(log), 0);
    assert_true(lead_direct_fd >= 0);
    lead_armed = true;
    log_entry *e = filler();
    uint64_t first;
    assert_true(log_append(log, e, 2000, &first) < 0);
    assert_true(lead_failed);
    assert_true(log_status(log) < 0);
    assert_non_null(strstr(lh_messages, "failed"));
    (void)log_close(log);
    lh_verify_with(1000, check_event, true);
}

/* A file layer whose write-out (sync_file_range of the head block, on the
 * helper), once armed, fails with out_err: Linux reports a page's writeback
 * error to that call and clears it, so the fdatasync after it succeeds.
 * A real failure (ENOSPC here: a full disk would otherwise heal) fails the
 * append and the log as a failed sync, for good; a write-out the file
 * system does not do (EINVAL) is ignored. */
static fileio failing_out;
static int out_err;
static bool out_armed, out_called;

static int write_out_failing(const fileio *io, int fd, off_t off, off_t len)
{
    if (out_armed) {
        out_called = true;
        return -out_err;
    }
    return fileio_posix()->write_out(fileio_posix(), fd, off, len);
}

static void failed_write_out(int err)
{
    failing_out = *fileio_posix();
    failing_out.write_out = write_out_failing;
    out_err = err;
    out_armed = out_called = false;
    pb_log *log = open_log(&failing_out, 1u << 30, 1);
    append_n(log, 0, 1000, false); /* ends mid-block: the next append has a head block */
    assert_int_equal(log_sync(log), 0);
    out_armed = true;
    log_entry *e = filler();
    uint64_t first;
    int rc = log_append(log, e, 2000, &first);
    out_armed = false;
    assert_true(out_called);
    if (err == EINVAL) {
        assert_int_equal(rc, 0);
        assert_int_equal(log_sync(log), 0);
        assert_int_equal(log_close(log), 0);
        /* Nothing lost around the ignored write-out: the 1,000 read back
         * (filler's 2,000 after them have other bytes), all 3,000 kept. */
        lh_verify_with(1000, check_event, false);
        log = open_log(NULL, 1u << 30, 1);
        assert_true(log_next_offset(log) == 3000);
        assert_int_equal(log_close(log), 0);
        return;
    }
    assert_int_equal(rc, -err);
    assert_int_equal(log_status(log), -err);
    assert_false(log_failure_heals(log));
    assert_int_equal(log_sync(log), PB_EFAILED);
    assert_non_null(strstr(lh_messages, "write-out"));
    (void)log_close(log);
    /* The head block was written (never acked: whole records of it may
     * be kept, its torn last one is cut); the first append reads back. */
    log = open_log(NULL, 1u << 30, 1);
    assert_true(log_next_offset(log) >= 1000 && log_next_offset(log) < 3000);
    assert_int_equal(log_close(log), 0);
    lh_verify_with(1000, check_event, false); /* more may follow */
}

static void test_failed_write_out_fails_the_log(void **state)
{
    failed_write_out(ENOSPC);
}

static void test_unsupported_write_out_ignored(void **state)
{
    failed_write_out(EINVAL);
}

/* A double fault (log_direct.c, finish_append): the append's last partial
 * block (an ordinary write on the helper) fails with ENOSPC, and the
 * fdatasync queued right behind it fails with EIO. The sync covered the
 * append's direct-written blocks: the log fails as by a failed sync, for
 * good (a full disk alone would heal: a reopen would publish those
 * records though their sync failed). */
static fileio double_fault;
static int df_log_fd = -1;
static bool df_armed, df_tail_failed, df_sync_failed;

static int open_double_fault(const fileio *io, const char *path, int flags, int mode)
{
    int fd = fileio_posix()->open(fileio_posix(), path, flags, mode);
    if (fd >= 0 && !(flags & O_DIRECT) && is_log_path(path))
        df_log_fd = fd;
    return fd;
}

static ssize_t pwritev_double_fault(const fileio *io, int fd, const struct iovec *iov, int n,
                                    off_t off)
{
    if (__atomic_load_n(&df_armed, __ATOMIC_ACQUIRE) && fd == df_log_fd && off % 4096 == 0) {
        __atomic_store_n(&df_tail_failed, true, __ATOMIC_RELEASE);
        return -ENOSPC;
    }
    return fileio_posix()->pwritev(fileio_posix(), fd, iov, n, off);
}

static int fdatasync_double_fault(const fileio *io, int fd)
{
    if (__atomic_load_n(&df_armed, __ATOMIC_ACQUIRE)) {
        __atomic_store_n(&df_sync_failed, true, __ATOMIC_RELEASE);
        return -EIO;
    }
    return fileio_posix()->fdatasync(fileio_posix(), fd);
}

static void test_failed_last_block_and_sync_never_heals(void **state)
{
    double_fault = *fileio_posix();
    double_fault.open = open_double_fault;
    double_fault.pwritev = pwritev_double_fault;
    double_fault.fdatasync = fdatasync_double_fault;
    df_log_fd = -1;
    df_armed = df_tail_failed = df_sync_failed = false;
    pb_log *log = open_log(&double_fault, 1u << 30, 1);
    append_n(log, 0, 1000, false);
    assert_int_equal(log_sync(log), 0);
    assert_true(log_sync_async(log)); /* the helper runs: the sync is queued on it */
    __atomic_store_n(&df_armed, true, __ATOMIC_RELEASE);
    log_entry *e = filler();
    uint64_t first;
    int rc = log_append_sync(log, e, 2000, &first, NULL, NULL, NULL);
    assert_true(__atomic_load_n(&df_tail_failed, __ATOMIC_ACQUIRE));
    assert_true(rc < 0);
    assert_true(log_status(log) < 0);
    assert_false(log_failure_heals(log)); /* the sync behind the writes failed */
    (void)log_sync_finish(log, NULL);
    (void)log_close(log);
    __atomic_store_n(&df_armed, false, __ATOMIC_RELEASE);
    if (__atomic_load_n(&df_sync_failed, __ATOMIC_ACQUIRE))
        assert_non_null(strstr(lh_messages, "fdatasync"));
}

/* The sync of one append (A, on the helper) fails with EIO while the next
 * append (B) is written: B's writes stop there (PB_EFAILED), once those
 * queued are over; nothing more is written, rotated or created on the
 * failed log (the sync's error was reported once: a second fdatasync of
 * the segment, a rotation's, would succeed). */
static fileio sync_once;
static bool so_armed, so_failed;

static int fdatasync_once(const fileio *io, int fd)
{
    if (__atomic_load_n(&so_armed, __ATOMIC_ACQUIRE) &&
        !__atomic_exchange_n(&so_failed, true, __ATOMIC_ACQ_REL))
        return -EIO;
    return fileio_posix()->fdatasync(fileio_posix(), fd);
}

static int so_hook_rc = 1;

static void on_synced_rc(void *ctx)
{
    so_hook_rc = log_sync_finish(ctx, NULL);
}

static void test_failed_sync_stops_the_next_append(void **state)
{
    sync_once = *fileio_posix();
    sync_once.fdatasync = fdatasync_once;
    so_armed = so_failed = false;
    so_hook_rc = 1;
    pb_log *log = open_log(&sync_once, 4u << 20, 1);
    static log_entry e[8000];
    static uint8_t buf[1000];
    for (size_t i = 0; i < 8000; i++)
        e[i] = (log_entry){.data = buf, .len = sizeof buf, .time_ns = T0};
    uint64_t first;
    __atomic_store_n(&so_armed, true, __ATOMIC_RELEASE);
    assert_int_equal(log_append_sync(log, e, 1000, &first, NULL, NULL, NULL), 0); /* A: ~1 MiB */
    /* B: ~3 MiB more fill the segment (A's sync is over by then: B's
     * writes queue behind it), then a rotation and ~4 MiB more. */
    int rc = log_append_sync(log, e, 7000, &first, on_synced_rc, NULL, log);
    assert_true(__atomic_load_n(&so_failed, __ATOMIC_ACQUIRE));
    int a = so_hook_rc == 1 ? log_sync_finish(log, NULL) : so_hook_rc;
    assert_int_equal(a, -EIO);
    assert_true(rc < 0);
    assert_int_equal(log_status(log), -EIO);
    assert_false(log_failure_heals(log));
    uint64_t bases[4];
    assert_int_equal(testfs_list_bases(lh_part, bases, 4), 1); /* no segment on a failed log */
    (void)log_sync_finish(log, NULL);
    (void)log_close(log);
}

/* Misuse: three syncs begun (log_append_sync) without taking the outcomes.
 * The second outcome collected while the first waits is said (a bug in
 * the caller) and never replaces a failure. */
static void test_second_outcome_before_the_first_taken(void **state)
{
    pb_log *log = open_log(NULL, 1u << 30, 1);
    log_entry *e = filler();
    uint64_t first;
    for (int k = 0; k < 3; k++)
        assert_int_equal(log_append_sync(log, e, 2000, &first, NULL, NULL, NULL), 0);
    if (!log_sync_async(log)) {
        assert_int_equal(log_close(log), 0);
        skip();
    }
    assert_non_null(strstr(lh_messages, "collected before the one before was taken"));
    assert_int_equal(log_sync_finish(log, NULL), 0);
    assert_int_equal(log_close(log), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        LH_TEST(test_direct_appends_read_back),
        LH_TEST(test_direct_and_buffered_mixed_across_rotations),
        LH_TEST(test_pipelined_syncs_across_rotations),
        LH_TEST(test_refused_direct_falls_back),
        LH_TEST(test_no_page_cache_write_ahead_of_direct),
        LH_TEST(test_failed_direct_write_rewritten_with_crcs),
        LH_TEST(test_failed_direct_write_behind_a_queued_sync),
        LH_TEST(test_failed_head_block_write_fails_the_log),
        LH_TEST(test_failed_write_out_fails_the_log),
        LH_TEST(test_unsupported_write_out_ignored),
        LH_TEST(test_failed_last_block_and_sync_never_heals),
        LH_TEST(test_failed_sync_stops_the_next_append),
        LH_TEST(test_second_outcome_before_the_first_taken),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
