/*
 * test_store - the partitions of a data directory: opened at start-up,
 * created on demand, looked up, listed in name order, reopened with their
 * contents.
 */
#include "testfs.h"
#include "fileio.h"
#include "pb_errors.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

typedef struct fixture {
    char root[64];
    char data[96]; /* root/data: not created by the test */
    int calls;     /* options callback calls */
    char refuse[32];
} fixture;

static int options(void *ctx, const char *name, partition_options *opts)
{
    fixture *f = ctx;
    f->calls++;
    if (strcmp(name, f->refuse) == 0)
        return PB_EINVAL;
    opts->fsync = PARTITION_FSYNC_NEVER; /* the store's logic is under test, not the disk */
    opts->topic_history = 2;
    return 0;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    strcpy(f->root, "/tmp/test_store.XXXXXX");
    if (!mkdtemp(f->root))
        return -1;
    snprintf(f->data, sizeof f->data, "%s/data", f->root);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    testfs_rmrf(f->root);
    free(f);
    return 0;
}

static void assert_list(store *s, const char *const *names, size_t n)
{
    partition **v;
    size_t count;
    assert_int_equal(store_list(s, &v, &count), 0);
    assert_int_equal(count, n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(partition_name(v[i]), names[i]);
    free(v);
}

/* done() collector: the writer thread signals, the test waits (bounded). */
static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;

static void on_done(pub_part *part)
{
    pthread_mutex_lock(&done_lock);
    atomic_fetch_sub(&part->batch->pending, 1);
    pthread_cond_broadcast(&done_cond);
    pthread_mutex_unlock(&done_lock);
}

/* Stores one event (topic "x") in p and waits for its done(). */
static void store_one(partition *p)
{
    uint8_t ev[] = {0x0a, 0x01, 'x'}; /* EncapsulatedEvent{topic: "x"} */
    pub_event e = {.data = ev, .len = sizeof ev, .topic = ev + 2, .topic_len = 1};
    uint32_t idx = 0;
    pub_batch b = {.done = on_done, .nevents = 1, .events = &e, .nparts = 1};
    pub_part part = {.batch = &b, .partition = p, .events = &idx, .count = 1};
    b.parts = &part;
    atomic_init(&b.pending, 1);
    partition_submit(p, &part);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 60; /* a bound, never reached when the writer works */
    pthread_mutex_lock(&done_lock);
    int rc = 0;
    while (atomic_load(&b.pending) != 0 && rc == 0)
        rc = pthread_cond_timedwait(&done_cond, &done_lock, &ts);
    unsigned pending = atomic_load(&b.pending);
    pthread_mutex_unlock(&done_lock);
    assert_int_equal(pending, 0);
    assert_int_equal(part.status, 0);
}

static void test_get_creates_and_list_is_sorted(void **state)
{
    fixture *f = *state;
    store *s;
    assert_int_equal(store_open(&s, f->data, options, f), 0);
    assert_string_equal(store_data_dir(s), f->data);
    struct stat st;
    assert_int_equal(stat(f->data, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_list(s, NULL, 0);
    assert_int_equal(f->calls, 0);

    partition *b, *a, *c, *again;
    assert_int_equal(store_get(s, "beta", &b), 0);
    assert_int_equal(store_get(s, "alpha", &a), 0);
    assert_int_equal(store_get(s, "gamma.1", &c), 0);
    assert_int_equal(f->calls, 3);
    assert_int_equal(store_get(s, "alpha", &again), 0);
    assert_ptr_equal(again, a);
    assert_int_equal(f->calls, 3); /* no second open */
    assert_ptr_equal(store_find(s, "beta"), b);
    assert_null(store_find(s, "delta"));
    const char *const names[] = {"alpha", "beta", "gamma.1"};
    assert_list(s, names, 3);

    char dir[160];
    snprintf(dir, sizeof dir, "%s/beta", f->data);
    assert_int_equal(stat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_string_equal(partition_dir(b), dir);

    /* Invalid names never reach the file system. */
    partition *bad = (partition *)1;
    assert_int_equal(store_get(s, "../escape", &bad), PB_EINVAL);
    assert_null(bad);
    assert_int_equal(store_get(s, "", &bad), PB_EINVAL);
    assert_int_equal(store_get(s, "has space", &bad), PB_EINVAL);
    /* The options callback may refuse. */
    strcpy(f->refuse, "nope");
    assert_int_equal(store_get(s, "nope", &bad), PB_EINVAL);
    assert_null(store_find(s, "nope"));
    assert_list(s, names, 3);

    assert_int_equal(store_close(s), 0);
}

static void test_open_finds_existing_partitions(void **state)
{
    fixture *f = *state;
    store *s;
    assert_int_equal(store_open(&s, f->data, options, f), 0);
    partition *p;
    const char *const created[] = {"zeta", "eta", "a-b_c.d"};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(store_get(s, created[i], &p), 0);
        if (i == 1) {
            store_one(p);
            store_one(p);
        }
    }
    assert_int_equal(store_close(s), 0);

    /* Things in data_dir that are not partitions are skipped. */
    char path[160];
    snprintf(path, sizeof path, "%s/not-a-dir", f->data);
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    assert_true(fd >= 0);
    assert_int_equal(close(fd), 0);
    snprintf(path, sizeof path, "%s/bad name", f->data);
    assert_int_equal(mkdir(path, 0755), 0);

    f->calls = 0;
    assert_int_equal(store_open(&s, f->data, options, f), 0);
    assert_int_equal(f->calls, 3);
    const char *const sorted[] = {"a-b_c.d", "eta", "zeta"};
    assert_list(s, sorted, 3);
    p = store_find(s, "eta");
    assert_non_null(p);
    assert_int_equal(partition_end_offset(p), 2); /* its records came back */
    assert_int_equal(partition_end_offset(store_find(s, "zeta")), 0);
    assert_int_equal(store_close(s), 0);

    /* A partition the options refuse at start-up is left closed. */
    strcpy(f->refuse, "eta");
    assert_int_equal(store_open(&s, f->data, options, f), 0);
    const char *const two[] = {"a-b_c.d", "zeta"};
    assert_list(s, two, 2);
    assert_int_equal(store_close(s), 0);
}

/* F4: max_partitions stops store_get from creating more, before anything
 * reaches the disk; existing partitions are still served, and start-up
 * opens every partition found whatever their number. */
static void test_max_partitions(void **state)
{
    fixture *f = *state;
    store *s;
    partition *p, *q;
    assert_int_equal(store_open(&s, f->data, options, f), 0);
    store_set_max_partitions(s, 2);
    assert_int_equal(store_max_partitions(s), 2);
    assert_int_equal(store_get(s, "a", &p), 0);
    assert_int_equal(store_get(s, "b", &q), 0);
    int calls = f->calls;
    assert_int_equal(store_get(s, "c", &p), STORE_EFULL);
    assert_null(p);
    assert_int_equal(f->calls, calls); /* refused before the options too */
    char dir[160];
    struct stat st;
    snprintf(dir, sizeof dir, "%s/c", f->data);
    assert_int_equal(stat(dir, &st), -1);
    assert_int_equal(store_get(s, "a", &p), 0); /* existing: served */
    assert_int_equal(store_count(s), 2);
    store_set_max_partitions(s, 0);
    assert_int_equal(store_get(s, "c", &p), 0);
    store_one(p);
    assert_int_equal(store_close(s), 0);

    assert_int_equal(store_open(&s, f->data, options, f), 0);
    store_set_max_partitions(s, 1);
    assert_int_equal(store_count(s), 3);
    assert_int_equal(partition_end_offset(store_find(s, "c")), 1);
    assert_int_equal(store_get(s, "d", &p), STORE_EFULL);
    assert_int_equal(store_close(s), 0);
}

/* A fileio that fails a chosen step of creating a partition. */
static int fail_open_log, fail_dir_sync;

static int f_open(const fileio *io, const char *path, int flags, int mode)
{
    size_t n = strlen(path);
    if (fail_open_log && n > 4 && strcmp(path + n - 4, ".log") == 0)
        return -EMFILE;
    return fileio_posix()->open(fileio_posix(), path, flags, mode);
}

/* fail_dir_sync = N: the Nth directory fsync from now fails. */
static int f_fsync_fd(const fileio *io, int fd)
{
    if (fail_dir_sync && --fail_dir_sync == 0)
        return -EIO;
    return fileio_posix()->fsync(fileio_posix(), fd);
}

static int failing_options(void *ctx, const char *name, partition_options *opts)
{
    static fileio io;
    io = *fileio_posix();
    io.open = f_open;
    io.fsync = f_fsync_fd;
    int rc = options(ctx, name, opts);
    opts->log.io = &io;
    return rc;
}

/* F4: a partition whose creation fails part way leaves nothing on disk:
 * not the directory (mkdir came first), not a segment. */
static void test_failed_creation_leaves_nothing(void **state)
{
    fixture *f = *state;
    store *s;
    partition *p;
    char dir[160];
    struct stat st;
    assert_int_equal(store_open(&s, f->data, failing_options, f), 0);

    fail_open_log = 1; /* the directory exists, the segment cannot be created */
    assert_int_equal(store_get(s, "x", &p), -EMFILE);
    snprintf(dir, sizeof dir, "%s/x", f->data);
    assert_int_equal(stat(dir, &st), -1);
    fail_open_log = 0;

    /* The first directory sync is the data directory's after mkdir; the
     * second the partition directory's once segment and index exist. */
    for (int n = 1; n <= 2; n++) {
        fail_dir_sync = n;
        assert_int_equal(store_get(s, "y", &p), -EIO);
        snprintf(dir, sizeof dir, "%s/y", f->data);
        assert_int_equal(stat(dir, &st), -1);
        fail_dir_sync = 0;
    }

    /* A directory made by someone else is never removed. */
    snprintf(dir, sizeof dir, "%s/z", f->data);
    assert_int_equal(mkdir(dir, 0755), 0);
    char keep[200];
    snprintf(keep, sizeof keep, "%s/theirs", dir);
    testfs_write_file(keep, "x", 1);
    fail_open_log = 1;
    assert_true(store_get(s, "z", &p) < 0);
    fail_open_log = 0;
    assert_int_equal(stat(keep, &st), 0);

    assert_int_equal(store_get(s, "x", &p), 0); /* and it can be created later */
    store_one(p);
    assert_int_equal(store_close(s), 0);
}

static void test_open_fails_on_bad_data_dir(void **state)
{
    fixture *f = *state;
    store *s = (store *)1;
    /* data_dir is a file. */
    char path[160];
    snprintf(path, sizeof path, "%s/file", f->root);
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    assert_true(fd >= 0);
    assert_int_equal(close(fd), 0);
    assert_int_equal(store_open(&s, path, options, f), -ENOTDIR);
    assert_null(s);
    /* Its parent does not exist. */
    snprintf(path, sizeof path, "%s/no/such", f->root);
    assert_int_equal(store_open(&s, path, options, f), -ENOENT);
    assert_null(s);
}

/* One store per data directory: a second open is refused (EBUSY) while
 * the first is open, names the holder's pid in the log, and succeeds once
 * the first is closed. The lock file is not a partition. */
static void test_second_open_of_a_data_dir_refused(void **state)
{
    fixture *f = *state;
    store *a, *b = (store *)1;
    assert_int_equal(store_open(&a, f->data, options, f), 0);
    partition *p;
    assert_int_equal(store_get(a, "alpha", &p), 0);
    assert_int_equal(store_open(&b, f->data, options, f), -EBUSY);
    assert_null(b);
    char path[160], pid[32] = "", want[32];
    snprintf(path, sizeof path, "%s/.lock", f->data);
    FILE *lf = fopen(path, "r");
    assert_non_null(lf);
    assert_non_null(fgets(pid, sizeof pid, lf));
    fclose(lf);
    snprintf(want, sizeof want, "%ld\n", (long)getpid());
    assert_string_equal(pid, want);
    assert_int_equal(store_close(a), 0);
    assert_int_equal(store_open(&b, f->data, options, f), 0);
    const char *names[] = {"alpha"};
    assert_list(b, names, 1);
    assert_int_equal(store_close(b), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_creates_and_list_is_sorted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_finds_existing_partitions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_partitions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_creation_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_fails_on_bad_data_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_open_of_a_data_dir_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
