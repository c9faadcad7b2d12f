/*
 * test_partition - the partition writer: offsets, receive times and stored
 * bytes; group commit; acks only after the covering fdatasync; failure
 * handling; close draining the queue; reopen continuing the offsets; the
 * interval and never policies.
 *
 * The test thread plays the loop thread (partition_submit); the partition's
 * writer thread calls done(), which the test collects under a mutex. All file
 * I/O of the log goes through an instrumented fileio that counts syncs, can
 * hold an fdatasync until the test releases it (a "slow disk", without
 * sleeping), and can inject EIO/ENOSPC.
 */
#include "testfs.h"
#include "fileio.h"
#include "frame.h"
#include "partition.h"
#include "pb_errors.h"
#include "reader.h"
#include "wire.h"

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define MAX_FD      1024
#define MAX_EVENTS  16
#define WAIT_LIMITS 60 /* seconds: a bound for waits on the writer, never reached when it works */

/* --- the instrumented fileio and the done() collector --- */

typedef struct harness {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* fileio state */
    bool is_log[MAX_FD];   /* fd is a .log segment */
    bool unsynced[MAX_FD]; /* written since its last fdatasync */
    size_t syncs;          /* completed fdatasyncs of .log files */
    size_t sync_calls;     /* fdatasync calls on .log files, failed ones included */
    bool gate_closed;      /* hold .log fdatasyncs until opened */
    int blocked;           /* fdatasyncs waiting at the gate */
    int fail_sync;         /* errno to fail .log fdatasyncs with; 0 = none */
    int fail_write;        /* errno to fail .log pwritevs with; 0 = none */
    /* done() state */
    size_t done_count;
    int early_acks; /* status 0 done() while a .log write was not yet synced */
    bool check_durable;
    _Atomic int64_t clock_ns;
    fileio io;
} harness;

static harness *io_h(const fileio *io)
{
    return io->ctx;
}

static int t_open(const fileio *io, const char *path, int flags, int mode)
{
    int fd = fileio_posix()->open(fileio_posix(), path, flags, mode);
    size_t n = strlen(path);
    if (fd >= 0 && fd < MAX_FD) {
        harness *h = io_h(io);
        pthread_mutex_lock(&h->lock);
        h->is_log[fd] = n > 4 && strcmp(path + n - 4, ".log") == 0;
        h->unsynced[fd] = false;
        pthread_mutex_unlock(&h->lock);
    }
    return fd;
}

static ssize_t t_pwritev(const fileio *io, int fd, const struct iovec *iov, int iovcnt, off_t off)
{
    harness *h = io_h(io);
    pthread_mutex_lock(&h->lock);
    bool is_log = fd < MAX_FD && h->is_log[fd];
    int fail = is_log ? h->fail_write : 0;
    pthread_mutex_unlock(&h->lock);
    if (fail)
        return -fail;
    ssize_t r = fileio_posix()->pwritev(fileio_posix(), fd, iov, iovcnt, off);
    if (r > 0 && is_log) {
        pthread_mutex_lock(&h->lock);
        h->unsynced[fd] = true;
        pthread_mutex_unlock(&h->lock);
    }
    return r;
}

static ssize_t t_pread(const fileio *io, int fd, void *buf, size_t len, off_t off)
{
    return fileio_posix()->pread(fileio_posix(), fd, buf, len, off);
}

static int t_fdatasync(const fileio *io, int fd)
{
    harness *h = io_h(io);
    pthread_mutex_lock(&h->lock);
    bool is_log = fd < MAX_FD && h->is_log[fd];
    if (is_log) {
        h->sync_calls++;
        while (h->gate_closed) {
            h->blocked++;
            pthread_cond_broadcast(&h->cond);
            pthread_cond_wait(&h->cond, &h->lock);
            h->blocked--;
        }
    }
    int fail = is_log ? h->fail_sync : 0;
    pthread_mutex_unlock(&h->lock);
    if (fail)
        return -fail;
    int r = fileio_posix()->fdatasync(fileio_posix(), fd);
    if (r == 0 && is_log) {
        pthread_mutex_lock(&h->lock);
        h->syncs++;
        h->unsynced[fd] = false; /* only the writer thread writes: nothing came in between */
        pthread_cond_broadcast(&h->cond);
        pthread_mutex_unlock(&h->lock);
    }
    return r;
}

static int t_fsync(const fileio *io, int fd)
{
    return fileio_posix()->fsync(fileio_posix(), fd);
}

static int t_ftruncate(const fileio *io, int fd, off_t len)
{
    return fileio_posix()->ftruncate(fileio_posix(), fd, len);
}

static int t_fsize(const fileio *io, int fd, off_t *size)
{
    return fileio_posix()->fsize(fileio_posix(), fd, size);
}

static int t_close(const fileio *io, int fd)
{
    harness *h = io_h(io);
    if (fd >= 0 && fd < MAX_FD) {
        pthread_mutex_lock(&h->lock);
        h->is_log[fd] = false;
        h->unsynced[fd] = false;
        pthread_mutex_unlock(&h->lock);
    }
    return fileio_posix()->close(fileio_posix(), fd);
}

static int t_mkdir(const fileio *io, const char *path, int mode)
{
    return fileio_posix()->mkdir(fileio_posix(), path, mode);
}

static int t_rmdir(const fileio *io, const char *path)
{
    return fileio_posix()->rmdir(fileio_posix(), path);
}

static int t_unlink(const fileio *io, const char *path)
{
    return fileio_posix()->unlink(fileio_posix(), path);
}

static int t_rename(const fileio *io, const char *from, const char *to)
{
    return fileio_posix()->rename(fileio_posix(), from, to);
}

static int t_list_dir(const fileio *io, const char *path, fileio_dirent_fn fn, void *arg)
{
    return fileio_posix()->list_dir(fileio_posix(), path, fn, arg);
}

static int64_t t_now(void *ctx)
{
    harness *h = ctx;
    return atomic_load(&h->clock_ns);
}

static size_t h_early_acks(harness *h)
{
    pthread_mutex_lock(&h->lock);
    size_t n = h->early_acks;
    pthread_mutex_unlock(&h->lock);
    return n;
}

static void on_done(pub_part *part)
{
    harness *h = part->batch->conn;
    pthread_mutex_lock(&h->lock);
    if (h->check_durable && part->status == 0)
        for (int fd = 0; fd < MAX_FD; fd++)
            if (h->is_log[fd] && h->unsynced[fd])
                h->early_acks++;
    h->done_count++;
    atomic_fetch_sub(&part->batch->pending, 1);
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
}

static void deadline_in(struct timespec *ts, int seconds)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += seconds;
}

/* Waits (bounded) until `count` done() calls have been made. */
static void wait_done(harness *h, size_t count)
{
    struct timespec ts;
    deadline_in(&ts, WAIT_LIMITS);
    pthread_mutex_lock(&h->lock);
    int rc = 0;
    while (h->done_count < count && rc == 0)
        rc = pthread_cond_timedwait(&h->cond, &h->lock, &ts);
    size_t got = h->done_count;
    pthread_mutex_unlock(&h->lock);
    assert_int_equal(got, count);
}

/* Waits (bounded) until the writer is held at the fdatasync gate. */
static void wait_blocked(harness *h)
{
    struct timespec ts;
    deadline_in(&ts, WAIT_LIMITS);
    pthread_mutex_lock(&h->lock);
    int rc = 0;
    while (h->blocked == 0 && rc == 0)
        rc = pthread_cond_timedwait(&h->cond, &h->lock, &ts);
    int blocked = h->blocked;
    pthread_mutex_unlock(&h->lock);
    assert_int_equal(blocked, 1);
}

/* Waits (bounded) until at least `count` .log fdatasyncs have completed. */
static void wait_syncs(harness *h, size_t count)
{
    struct timespec ts;
    deadline_in(&ts, WAIT_LIMITS);
    pthread_mutex_lock(&h->lock);
    int rc = 0;
    while (h->syncs < count && rc == 0)
        rc = pthread_cond_timedwait(&h->cond, &h->lock, &ts);
    size_t got = h->syncs;
    pthread_mutex_unlock(&h->lock);
    assert_true(got >= count);
}

static void gate(harness *h, bool closed)
{
    pthread_mutex_lock(&h->lock);
    h->gate_closed = closed;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
}

static size_t syncs_now(harness *h)
{
    pthread_mutex_lock(&h->lock);
    size_t n = h->syncs;
    pthread_mutex_unlock(&h->lock);
    return n;
}

/* --- batches, as net.c would build them --- */

typedef struct test_batch {
    pub_batch b;
    pub_event ev[MAX_EVENTS];
    pub_part part;
    uint32_t idx[MAX_EVENTS];
    uint8_t bytes[MAX_EVENTS * 64];
} test_batch;

/* n events with topic "t<seq % 3>" and payload_size = seq, seq counting from first_seq. */
static test_batch *batch_new(harness *h, partition *p, size_t n, uint64_t first_seq)
{
    test_batch *tb = calloc(1, sizeof *tb);
    assert_non_null(tb);
    assert_true(n <= MAX_EVENTS);
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        char topic[16];
        uint64_t seq = first_seq + i;
        int tl = snprintf(topic, sizeof topic, "t%llu", (unsigned long long)(seq % 3));
        uint8_t *e = tb->bytes + pos;
        size_t len = wire_put_len_field(e, 1, topic, (size_t)tl);
        len += wire_put_varint_field(e + len, 6, seq);
        tb->ev[i] = (pub_event){.data = e,
                                .len = (uint32_t)len,
                                .topic = e + 2,
                                .topic_len = (uint32_t)tl,
                                .part = 0,
                                .offset = UINT64_MAX};
        tb->idx[i] = (uint32_t)i;
        pos += len;
    }
    tb->part = (pub_part){
        .batch = &tb->b, .partition = p, .events = tb->idx, .count = (uint32_t)n, .status = 1};
    tb->b.done = on_done;
    atomic_init(&tb->b.pending, 1);
    tb->b.conn = h;
    tb->b.nevents = (uint32_t)n;
    tb->b.events = tb->ev;
    tb->b.nparts = 1;
    tb->b.parts = &tb->part;
    tb->b.bytes = tb->bytes;
    tb->b.bytes_len = pos;
    return tb;
}

/* --- fixture --- */

typedef struct fixture {
    harness h;
    char root[64];
    partition_options opts;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    strcpy(f->root, "/tmp/test_partition.XXXXXX");
    if (!mkdtemp(f->root))
        return -1;
    harness *h = &f->h;
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->cond, NULL);
    h->check_durable = true;
    atomic_init(&h->clock_ns, 1700000000123456789ll);
    h->io = (fileio){.open = t_open,
                     .pwritev = t_pwritev,
                     .pread = t_pread,
                     .fdatasync = t_fdatasync,
                     .fsync = t_fsync,
                     .ftruncate = t_ftruncate,
                     .fsize = t_fsize,
                     .close = t_close,
                     .mkdir = t_mkdir,
                     .rmdir = t_rmdir,
                     .unlink = t_unlink,
                     .rename = t_rename,
                     .list_dir = t_list_dir,
                     .ctx = h};
    f->opts = (partition_options){
        .log = {.io = &h->io, .now_ns = t_now, .clock_ctx = h},
        .fsync = PARTITION_FSYNC_ALWAYS,
        .topic_history = 4,
    };
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    testfs_rmrf(f->root);
    pthread_mutex_destroy(&f->h.lock);
    pthread_cond_destroy(&f->h.cond);
    free(f);
    return 0;
}

static partition *open_p(fixture *f)
{
    partition *p = NULL;
    assert_int_equal(partition_open(&p, f->root, "p", &f->opts), 0);
    return p;
}

/* Submits one batch of n events and waits for its done(). */
static test_batch *publish(fixture *f, partition *p, size_t n, uint64_t first_seq)
{
    size_t before;
    pthread_mutex_lock(&f->h.lock);
    before = f->h.done_count;
    pthread_mutex_unlock(&f->h.lock);
    test_batch *tb = batch_new(&f->h, p, n, first_seq);
    partition_submit(p, &tb->part);
    wait_done(&f->h, before + 1);
    return tb;
}

/* Reads the partition back: offsets 0..count-1, each event = client bytes +
 * the server_receive_time suffix with the record's time. */
static void check_files(fixture *f, uint64_t count)
{
    char dir[96];
    snprintf(dir, sizeof dir, "%s/p", f->root);
    pb_reader *r;
    assert_int_equal(pb_reader_open(&r, dir), 0);
    for (uint64_t i = 0; i < count; i++) {
        pb_record rec;
        assert_int_equal(pb_reader_next(r, &rec), 0);
        assert_int_equal(rec.offset, i);
        event_view v;
        char err[160];
        assert_int_equal(event_scan(rec.event, rec.event_len, &v, err, sizeof err), 0);
        assert_int_equal(v.payload_size, (int64_t)i); /* the tests publish seq = offset */
        assert_true(v.server_receive_time.present);
        assert_int_equal(v.server_receive_time.ns, rec.time_ns);
        uint8_t want[128];
        char topic[16];
        int tl = snprintf(topic, sizeof topic, "t%llu", (unsigned long long)(i % 3));
        size_t len = wire_put_len_field(want, 1, topic, (size_t)tl);
        len += wire_put_varint_field(want + len, 6, i);
        len += event_put_receive_time(want + len, sizeof want - len, rec.time_ns);
        assert_int_equal(rec.event_len, len);
        assert_memory_equal(rec.event, want, len);
    }
    pb_record rec;
    assert_int_equal(pb_reader_next(r, &rec), PB_EEOF);
    pb_reader_close(r);
}

/* partition_foreach_topic callback: copies the offsets of one topic. */
typedef struct topic_probe {
    const char *name;
    uint64_t offsets[8];
    size_t count;
    int topics;
} topic_probe;

static int probe_topic(void *ctx, const char *topic, size_t len, const uint64_t *offs, size_t n)
{
    topic_probe *tp = ctx;
    tp->topics++;
    if (len == strlen(tp->name) && memcmp(topic, tp->name, len) == 0 && n <= 8) {
        memcpy(tp->offsets, offs, n * sizeof *offs);
        tp->count = n;
    }
    return 0;
}

/* --- tests --- */

static void test_offsets_times_and_stored_bytes(void **state)
{
    fixture *f = *state;
    partition *p = open_p(f);
    assert_string_equal(partition_name(p), "p");
    assert_int_equal(partition_end_offset(p), 0);

    test_batch *b1 = publish(f, p, 3, 0);
    assert_int_equal(b1->part.status, 0);
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(b1->ev[i].offset, i);
        assert_int_equal(b1->ev[i].time_ns, 1700000000123456789ll);
    }
    assert_int_equal(partition_end_offset(p), 3);

    /* The clock goes back: receive times do not. */
    atomic_store(&f->h.clock_ns, 1600000000000000000ll);
    test_batch *b2 = publish(f, p, 5, 3);
    for (uint32_t i = 0; i < 5; i++) {
        assert_int_equal(b2->ev[i].offset, 3 + i);
        assert_int_equal(b2->ev[i].time_ns, 1700000000123456789ll);
    }
    atomic_store(&f->h.clock_ns, 1800000000000000001ll);
    test_batch *b3 = publish(f, p, 1, 8);
    assert_int_equal(b3->ev[0].offset, 8);
    assert_int_equal(b3->ev[0].time_ns, 1800000000000000001ll);
    assert_int_equal(partition_end_offset(p), 9);
    assert_int_equal(partition_status(p), 0);

    check_files(f, 9);

    /* Topics t0, t1, t2 (seq % 3), each with its offsets. */
    uint64_t want_t0[] = {0, 3, 6};
    topic_probe t0 = {.name = "t0"};
    assert_int_equal(partition_foreach_topic(p, 0, probe_topic, &t0), 3);
    assert_int_equal(t0.count, 3);
    assert_memory_equal(t0.offsets, want_t0, sizeof want_t0);

    assert_int_equal(partition_close(p), 0);
    assert_int_equal(f->h.early_acks, 0);
    free(b1);
    free(b2);
    free(b3);
}

static void test_group_commit_and_ack_after_sync(void **state)
{
    fixture *f = *state;
    harness *h = &f->h;
    partition *p = open_p(f);
    /* The first append creates the segment; count syncs from after it. */
    free(publish(f, p, 1, 0));
    size_t base = syncs_now(h);

    /* A slow disk: the fdatasync covering batch A is held ... */
    gate(h, true);
    test_batch *a = batch_new(h, p, 2, 1);
    partition_submit(p, &a->part);
    wait_blocked(h);
    /* ... while 50 more batches arrive. */
    enum { N = 50 };
    test_batch *more[N];
    for (size_t i = 0; i < N; i++) {
        more[i] = batch_new(h, p, 1 + i % 4, 0);
        partition_submit(p, &more[i]->part);
    }
    /* Nothing is acknowledged while the sync covering it has not returned. */
    pthread_mutex_lock(&h->lock);
    size_t done_while_held = h->done_count;
    pthread_mutex_unlock(&h->lock);
    assert_int_equal(done_while_held, 1);
    assert_int_equal(a->part.status, 1);

    gate(h, false);
    wait_done(h, 2 + N);
    /* One sync for A, one for everything that queued up behind it. */
    assert_int_equal(syncs_now(h) - base, 2);
    assert_int_equal(h->early_acks, 0);

    /* Offsets: contiguous, in submission and batch order. */
    assert_int_equal(a->part.status, 0);
    assert_int_equal(a->ev[0].offset, 1);
    assert_int_equal(a->ev[1].offset, 2);
    uint64_t next = 3;
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(more[i]->part.status, 0);
        for (uint32_t k = 0; k < more[i]->part.count; k++)
            assert_int_equal(more[i]->ev[k].offset, next++);
        free(more[i]);
    }
    assert_int_equal(partition_end_offset(p), next);
    assert_int_equal(partition_close(p), 0);
    free(a);
}

static void test_sync_failure_fails_the_partition(void **state)
{
    fixture *f = *state;
    harness *h = &f->h;
    partition *p = open_p(f);
    free(publish(f, p, 2, 0));
    f->h.check_durable = false; /* the failed take leaves unsynced bytes behind */

    pthread_mutex_lock(&h->lock);
    h->fail_sync = EIO;
    size_t calls = h->sync_calls;
    pthread_mutex_unlock(&h->lock);
    test_batch *x = publish(f, p, 3, 2);
    assert_int_equal(x->part.status, -EIO);
    assert_int_equal(partition_status(p), -EIO);
    assert_int_equal(partition_end_offset(p), 2); /* nothing of x became visible */
    for (uint32_t i = 0; i < 3; i++)
        assert_int_equal(x->ev[i].offset, UINT64_MAX);

    /* The disk "recovers": the partition must not retry and then ack. */
    pthread_mutex_lock(&h->lock);
    h->fail_sync = 0;
    pthread_mutex_unlock(&h->lock);
    test_batch *y = publish(f, p, 1, 2);
    assert_int_equal(y->part.status, PB_EFAILED);
    test_batch *z = publish(f, p, 4, 2);
    assert_int_equal(z->part.status, PB_EFAILED);
    pthread_mutex_lock(&h->lock);
    assert_int_equal(h->sync_calls, calls + 1);
    pthread_mutex_unlock(&h->lock);
    assert_int_equal(partition_end_offset(p), 2);

    /* What was acknowledged stays readable. */
    char dir[96];
    snprintf(dir, sizeof dir, "%s/p", f->root);
    pb_reader *r;
    assert_int_equal(pb_reader_open(&r, dir), 0);
    pb_reader_set_end(r, partition_end_offset(p));
    pb_record rec;
    assert_int_equal(pb_reader_next(r, &rec), 0);
    assert_int_equal(rec.offset, 0);
    assert_int_equal(pb_reader_next(r, &rec), 0);
    assert_int_equal(rec.offset, 1);
    assert_int_equal(pb_reader_next(r, &rec), PB_EEOF);
    pb_reader_close(r);

    assert_true(partition_close(p) < 0);
    free(x);
    free(y);
    free(z);
}

static void test_write_failure_fails_the_partition(void **state)
{
    fixture *f = *state;
    harness *h = &f->h;
    partition *p = open_p(f);
    free(publish(f, p, 1, 0));
    pthread_mutex_lock(&h->lock);
    h->fail_write = ENOSPC;
    size_t calls = h->sync_calls;
    pthread_mutex_unlock(&h->lock);
    test_batch *x = publish(f, p, 2, 1);
    assert_int_equal(x->part.status, -ENOSPC);
    assert_int_equal(partition_status(p), -ENOSPC);
    pthread_mutex_lock(&h->lock);
    h->fail_write = 0;
    assert_int_equal(h->sync_calls, calls); /* no sync after a failed write */
    pthread_mutex_unlock(&h->lock);
    test_batch *y = publish(f, p, 2, 1);
    /* Stopped until space is back (the daemon's upkeep tick resumes it;
     * tests/unit/test_upkeep.c): later batches get the same ENOSPC. */
    assert_int_equal(y->part.status, -ENOSPC);
    assert_int_equal(partition_end_offset(p), 1);
    assert_true(partition_close(p) < 0);
    free(x);
    free(y);
}

static void *closer(void *arg)
{
    return (void *)(intptr_t)partition_close(arg);
}

static void test_close_drains_and_reopen_continues(void **state)
{
    fixture *f = *state;
    harness *h = &f->h;
    partition *p = open_p(f);
    free(publish(f, p, 1, 0));

    /* Hold the writer in a sync so that the next batches are surely queued
     * when the close begins. */
    gate(h, true);
    test_batch *a = batch_new(h, p, 1, 1);
    partition_submit(p, &a->part);
    wait_blocked(h);
    enum { N = 10 };
    test_batch *queued[N];
    uint64_t seq = 2;
    for (size_t i = 0; i < N; i++) {
        queued[i] = batch_new(h, p, 3, seq);
        seq += 3;
        partition_submit(p, &queued[i]->part);
    }
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, closer, p), 0);
    gate(h, false);
    void *ret;
    assert_int_equal(pthread_join(t, &ret), 0);
    assert_int_equal((int)(intptr_t)ret, 0);
    /* Every queued part was written, synced and completed before close returned. */
    assert_int_equal(h->done_count, 2 + N);
    assert_int_equal(a->part.status, 0);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(queued[i]->part.status, 0);
        free(queued[i]);
    }
    assert_int_equal(h->early_acks, 0);
    free(a);

    /* Reopen: offsets continue, the topic table comes back. */
    p = open_p(f);
    assert_int_equal(partition_end_offset(p), seq);
    topic_probe t1 = {.name = "t1"};
    assert_int_equal(partition_foreach_topic(p, 0, probe_topic, &t1), 3);
    uint64_t want_t1[] = {22, 25, 28, 31}; /* the last 4 offsets = 1 (mod 3) below 32 */
    assert_int_equal(t1.count, 4);
    assert_memory_equal(t1.offsets, want_t1, sizeof want_t1);
    test_batch *b = publish(f, p, 2, seq);
    assert_int_equal(b->ev[0].offset, seq);
    assert_int_equal(b->ev[1].offset, seq + 1);
    assert_int_equal(partition_close(p), 0);
    check_files(f, seq + 2);
    free(b);
}

/* Descriptors of this process open on files under dir. */
static int fds_under(const char *dir)
{
    char link[64], target[512];
    int n = 0;
    for (int fd = 0; fd < MAX_FD; fd++) {
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t k = readlink(link, target, sizeof target - 1);
        if (k <= 0)
            continue;
        target[k] = '\0';
        if (strncmp(target, dir, strlen(dir)) == 0)
            n++;
    }
    return n;
}

/* Waits (bounded) until the partition's writer has gone idle. */
static void wait_dormant(partition *p)
{
    for (int i = 0; i < WAIT_LIMITS * 100 && partition_writer_running(p); i++)
        usleep(10000);
    assert_false(partition_writer_running(p));
}

/* F4: a partition holds no descriptor and no thread unless written to:
 * dormant after open, a writer (and its files) while it has work, dormant
 * again idle_ms after the last, and writing goes on where it stopped. */
static void test_idle_partition_holds_no_descriptor_or_thread(void **state)
{
    fixture *f = *state;
    f->opts.idle_ms = 1000;
    partition *p = open_p(f);
    assert_false(partition_writer_running(p));
    assert_int_equal(fds_under(f->root), 0);

    test_batch *a = batch_new(&f->h, p, 3, 0);
    partition_submit(p, &a->part);
    /* Set by the submit itself; cleared only idle_ms after the work. */
    assert_true(partition_writer_running(p));
    wait_done(&f->h, 1);
    assert_int_equal(a->part.status, 0);
    wait_dormant(p);
    assert_int_equal(fds_under(f->root), 0);

    /* Woken again: the files reopen, offsets continue. */
    test_batch *b = publish(f, p, 2, 3);
    assert_int_equal(b->part.status, 0);
    assert_int_equal(b->ev[0].offset, 3);
    wait_dormant(p);
    assert_int_equal(fds_under(f->root), 0);
    for (uint64_t seq = 5; seq < 8; seq++)
        free(publish(f, p, 1, seq));
    assert_int_equal(h_early_acks(&f->h), 0);
    assert_int_equal(partition_close(p), 0);
    check_files(f, 8);
    free(a);
    free(b);

    /* Closing a dormant partition saves its topics; reopening finds all. */
    f->opts.idle_ms = 1;
    p = open_p(f);
    assert_int_equal(partition_end_offset(p), 8);
    free(publish(f, p, 1, 8));
    wait_dormant(p);
    assert_int_equal(partition_close(p), 0);
    check_files(f, 9);
}

static void test_interval_policy(void **state)
{
    fixture *f = *state;
    harness *h = &f->h;
    h->check_durable = false; /* acks do not wait for the sync under this policy */
    f->opts.fsync = PARTITION_FSYNC_INTERVAL;
    f->opts.fsync_interval_ms = 3600 * 1000;
    partition *p = open_p(f);
    free(publish(f, p, 1, 0));
    size_t base = syncs_now(h);
    for (uint64_t i = 1; i < 10; i += 3)
        free(publish(f, p, 3, i));
    /* Acknowledged without a sync: the interval has not passed. */
    assert_int_equal(syncs_now(h), base);
    assert_int_equal(partition_end_offset(p), 10);
    /* Close syncs what is pending. */
    assert_int_equal(partition_close(p), 0);
    assert_true(syncs_now(h) > base);
    check_files(f, 10);

    /* A short interval: the writer syncs on its own once idle. */
    f->opts.fsync_interval_ms = 1;
    p = open_p(f);
    base = syncs_now(h);
    free(publish(f, p, 2, 10));
    wait_syncs(h, base + 1);
    assert_int_equal(partition_close(p), 0);
    check_files(f, 12);
}

static void test_never_policy(void **state)
{
    fixture *f = *state;
    harness *h = &f->h;
    h->check_durable = false;
    f->opts.fsync = PARTITION_FSYNC_NEVER;
    partition *p = open_p(f);
    free(publish(f, p, 1, 0));
    size_t base = syncs_now(h);
    for (uint64_t i = 1; i < 13; i += 4)
        free(publish(f, p, 4, i));
    assert_int_equal(syncs_now(h), base);
    assert_int_equal(partition_end_offset(p), 13);
    assert_int_equal(partition_close(p), 0);
    check_files(f, 13);
}

static void test_oversized_event_refused_alone(void **state)
{
    fixture *f = *state;
    harness *h = &f->h;
    f->opts.log.max_record_bytes = 100;
    partition *p = open_p(f);
    free(publish(f, p, 1, 0));

    /* Hold the writer so the big and the small batch are taken together. */
    gate(h, true);
    test_batch *a = batch_new(h, p, 1, 1);
    partition_submit(p, &a->part);
    wait_blocked(h);
    test_batch *big = batch_new(h, p, 2, 2);
    static uint8_t big_event[160];
    size_t len = wire_put_len_field(big_event, 1, "t2", 2);
    len += wire_put_len_field(big_event + len, 15, big_event + 100, 60); /* unknown field */
    assert_true(len < 100);                                              /* fits alone ... */
    len += wire_put_len_field(big_event + len, 15, big_event + 100, 30);
    assert_true(len > 90); /* ... not with the suffix */
    big->ev[1].data = big_event;
    big->ev[1].len = (uint32_t)len;
    partition_submit(p, &big->part);
    test_batch *small = batch_new(h, p, 2, 2);
    partition_submit(p, &small->part);
    gate(h, false);
    wait_done(h, 4);

    assert_int_equal(a->part.status, 0);
    assert_int_equal(big->part.status, PB_ETOOBIG);
    assert_int_equal(small->part.status, 0);
    assert_int_equal(small->ev[0].offset, 2);
    assert_int_equal(small->ev[1].offset, 3);
    assert_int_equal(partition_status(p), 0);
    assert_int_equal(partition_end_offset(p), 4);
    assert_int_equal(partition_close(p), 0);
    check_files(f, 4);
    free(a);
    free(big);
    free(small);
}

static void test_empty_part_and_bad_options(void **state)
{
    fixture *f = *state;
    partition *p = open_p(f);
    test_batch *e = publish(f, p, 0, 0);
    assert_int_equal(e->part.status, 0);
    assert_int_equal(partition_end_offset(p), 0);
    assert_int_equal(partition_close(p), 0);
    free(e);

    partition_options bad = f->opts;
    bad.topic_history = 0;
    assert_int_equal(partition_open(&p, f->root, "p", &bad), PB_EINVAL);
    assert_null(p);
    bad = f->opts;
    bad.fsync = 7;
    assert_int_equal(partition_open(&p, f->root, "p", &bad), PB_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_offsets_times_and_stored_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_and_ack_after_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_failure_fails_the_partition, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_failure_fails_the_partition, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_drains_and_reopen_continues, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_partition_holds_no_descriptor_or_thread, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_interval_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_never_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversized_event_refused_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_part_and_bad_options, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
