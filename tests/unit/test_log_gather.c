/* Tests for server/log_direct's gathered writes: the staging buffers that
 * the writer filled while the helper wrote go out together, one pwritev
 * of several buffers. Through a file layer whose first direct write of
 * each append waits (SLOW_NS: the writer fills the other stages
 * meanwhile, even under a sanitizer): the next write carries several
 * stages, and every record reads back in order; when such a write
 * fails, every stage in it counts as failed, the append is written again
 * the ordinary way (through log_append_sync, whose sync is queued behind
 * it), the log stays up and nothing is lost. The helper thread (pbd:) asks the kernel
 * for a 0.1 ms time slice (read back with sched_getattr where the kernel
 * has custom slices). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "fileio.h"
#include "log.h"
#include "record.h"
#include "sched_attr.h"
#include "logharness.h"
#include "testfs.h"

#define N       6000u /* events of one append: ~6 MiB, several stages */
#define LEN     1000u
#define SLOW_NS 300000000l /* the first direct write: the writer fills the others */

/* The direct descriptor's writes: how many, the most iovecs in one, and
 * (fail_multi) the first with more than one fails with EIO; slow_next: the
 * next one waits SLOW_NS (set before each append). Written by the helper
 * thread, read after the append returned (it waited for them). */
static fileio slow;
static int slow_fd = -1;
static int writes, most_iov;
static bool fail_multi, failed_one, slow_next;

static int open_slow(const fileio *io, const char *path, int flags, int mode)
{
    int fd = fileio_posix()->open(fileio_posix(), path, flags, mode);
    if (fd >= 0 && (flags & O_DIRECT))
        slow_fd = fd;
    return fd;
}

static ssize_t pwritev_slow(const fileio *io, int fd, const struct iovec *iov, int n, off_t off)
{
    if (fd == slow_fd && fd >= 0) {
        writes++;
        most_iov = n > most_iov ? n : most_iov;
        if (fail_multi && n > 1 && !failed_one) {
            failed_one = true;
            return -EIO;
        }
        if (slow_next) {
            slow_next = false;
            struct timespec ts = {.tv_nsec = SLOW_NS};
            nanosleep(&ts, NULL);
        }
    }
    return fileio_posix()->pwritev(fileio_posix(), fd, iov, n, off);
}

static uint8_t byte_of(uint64_t off, size_t i)
{
    return (uint8_t)(testfs_mix64(off * 4099 + i / 8) >> (8 * (i % 8)));
}

/* Appends offsets [from, from + N) of LEN bytes each (sync: through
 * log_append_sync, the pending sync's outcome taken after it). */
static void append_all(pb_log *log, uint64_t from, bool sync)
{
    static uint8_t data[N][LEN];
    static log_entry e[N];
    for (size_t k = 0; k < N; k++) {
        for (size_t i = 0; i < LEN; i++)
            data[k][i] = byte_of(from + k, i);
        e[k] = (log_entry){.data = data[k], .len = LEN, .time_ns = T0 + (int64_t)(from + k)};
    }
    uint64_t first;
    slow_next = true;
    int rc = sync ? log_append_sync(log, e, N, &first, NULL, NULL, NULL)
                  : log_append(log, e, N, &first);
    assert_int_equal(rc, 0);
    assert_true(first == from);
    if (sync)
        assert_int_equal(log_sync_finish(log, NULL), 0);
}

/* lh_verify_with's check: LEN bytes of byte_of(off, i), append_all's time. */
static void check_event(uint64_t off, const pb_record *rec)
{
    assert_int_equal(rec->event_len, LEN);
    for (size_t i = 0; i < LEN; i++)
        if (rec->event[i] != byte_of(off, i))
            fail_msg("offset %llu: byte %zu differs", (unsigned long long)off, i);
    assert_true(rec->time_ns == T0 + (int64_t)off);
}

static pb_log *open_slow_log(void)
{
    slow = *fileio_posix();
    slow.open = open_slow;
    slow.pwritev = pwritev_slow;
    slow_fd = -1;
    writes = most_iov = 0;
    failed_one = false;
    log_options o = lh_direct_opts(1u << 30, 1);
    o.io = &slow;
    pb_log *log;
    assert_int_equal(log_open(&log, lh_part, &o), 0);
    return log;
}

static void test_stages_gathered_read_back(void **state)
{
    fail_multi = false;
    pb_log *log = open_slow_log();
    append_all(log, 0, false);
    append_all(log, N, true);
    assert_int_equal(log_sync(log), 0);
    assert_int_equal(log_close(log), 0);
    if (slow_fd < 0 && writes == 0)
        skip(); /* no O_DIRECT here: nothing to gather */
    assert_true(most_iov > 1);
    assert_null(strstr(lh_messages, "direct write failed"));
    lh_verify_with(2 * N, check_event, true);
}

static void test_failed_gathered_write_rewritten(void **state)
{
    fail_multi = true;
    pb_log *log = open_slow_log();
    append_all(log, 0, true);
    if (slow_fd < 0) {
        assert_int_equal(log_close(log), 0);
        skip(); /* no O_DIRECT here: nothing to gather */
    }
    assert_true(failed_one); /* a write of several stages was made, and failed */
    assert_int_equal(log_status(log), 0);
    const char *m = strstr(lh_messages, "direct write failed");
    assert_non_null(m);
    assert_non_null(strstr(m, "appending through the page cache from now on"));
    int before = writes;
    append_all(log, N, true);
    assert_int_equal(writes, before); /* none after the failure */
    assert_int_equal(log_close(log), 0);
    lh_verify_with(2 * N, check_event, true);
}

/* The slice (sched_runtime) of this process's thread named pbd:*, 0 if
 * the kernel does not say; -1: no such thread. */
static long long helper_slice(void)
{
    DIR *dir = opendir("/proc/self/task");
    assert_non_null(dir);
    long long slice = -1;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL && slice < 0) {
        char path[300], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (!fgets(comm, sizeof comm, f))
            comm[0] = '\0';
        fclose(f);
        if (strncmp(comm, "pbd:", 4) != 0)
            continue;
        pb_sched_attr a = {0};
        long tid = strtol(de->d_name, NULL, 10);
        slice = syscall(SYS_sched_getattr, tid, &a, PB_SCHED_ATTR_SIZE, 0) == 0 ? (long long)a.runtime
                                                                                : 0;
    }
    closedir(dir);
    return slice;
}

static void test_helper_asks_for_a_short_slice(void **state)
{
    fail_multi = false;
    pb_log *log = open_slow_log();
    append_all(log, 0, false); /* starts the helper */
    long long slice = helper_slice();
    assert_int_equal(log_close(log), 0);
    if (slice <= 0)
        skip(); /* no O_DIRECT (no helper), or no custom slices */
    assert_int_equal(slice, 100000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        LH_TEST(test_stages_gathered_read_back),
        LH_TEST(test_failed_gathered_write_rewritten),
        LH_TEST(test_helper_asks_for_a_short_slice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
