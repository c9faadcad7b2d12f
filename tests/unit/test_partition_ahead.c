/*
 * test_partition_ahead - the admission of the next take while one is
 * written and synced (server/partition_ahead.c), through a real partition:
 * the writer is held in its fdatasync (or in the reopen of its segment) by
 * a gate in the fileio, batches are queued meanwhile, and the test waits
 * until the helper thread has admitted them (partition_get_stats'
 * events_ahead) before it opens the gate. Checked: duplicates across and
 * within takes get the original offsets; a part with expectations after
 * the ones admitted ahead sees them; a take that is not stored takes the
 * ahead ids out of the window (a retry stores them, an id that was a
 * duplicate of the lost take is stored); receive times ascend with the
 * offsets; duplicates counted once in the metrics; a failed start of the helper is logged again
 * after one that worked.
 *
 * The test thread plays the loop thread (partition_submit); done() runs on
 * the writer thread and signals a condition variable.
 */
#include "fileio.h"
#include "metrics.h"
#include "partition.h"
#include "partition_internal.h"
#include "pb_errors.h"
#include "testfs.h"
#include "topics.h"
#include "wire.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define MAX_EVENTS  8
#define WAIT_LIMITS 30 /* seconds: bounds waits that end at once when the code works */
#define SEC         1000000000ll

typedef struct fixture {
    char root[64];
    pthread_mutex_t lock;
    pthread_cond_t cond;
    topics_budget budget;
    _Atomic int64_t clock_ns;
    /* The gate: .log opens and fdatasyncs wait while it is closed. */
    bool gate_closed;
    int blocked;        /* calls waiting at it */
    int fail_open_once; /* errno for the next .log open */
    int fail_sync;      /* errno for .log fdatasyncs */
    fileio io;
} fixture;

/* One batch of up to MAX_EVENTS events and its single part. */
typedef struct tbatch {
    pub_batch b;
    pub_part part;
    pub_event ev[MAX_EVENTS];
    uint32_t idx[MAX_EVENTS];
    pub_expect expect[1];
    uint8_t bytes[MAX_EVENTS][96];
    fixture *f;
    bool done;
} tbatch;

static bool is_log(const char *path)
{
    size_t n = strlen(path);
    return n > 4 && strcmp(path + n - 4, ".log") == 0;
}

/* Lock held: waits while the gate is closed. */
static void gate(fixture *f)
{
    while (f->gate_closed) {
        f->blocked++;
        pthread_cond_broadcast(&f->cond);
        pthread_cond_wait(&f->cond, &f->lock);
        f->blocked--;
    }
}

static int g_open(const fileio *io, const char *path, int flags, int mode)
{
    fixture *f = io->ctx;
    if (is_log(path)) {
        pthread_mutex_lock(&f->lock);
        gate(f);
        int fail = f->fail_open_once;
        f->fail_open_once = 0;
        pthread_mutex_unlock(&f->lock);
        if (fail)
            return -fail;
    }
    return fileio_posix()->open(fileio_posix(), path, flags, mode);
}

static int g_fdatasync(const fileio *io, int fd)
{
    fixture *f = io->ctx;
    off_t size = 0;
    /* Only the segment's syncs (its .idx and the snapshots are small files
     * written whole; the writer syncs the .log with data in it). */
    bool held = fileio_posix()->fsize(fileio_posix(), fd, &size) == 0 && size > 64;
    int fail = 0;
    if (held) {
        pthread_mutex_lock(&f->lock);
        gate(f);
        fail = f->fail_sync;
        pthread_mutex_unlock(&f->lock);
    }
    return fail ? -fail : fileio_posix()->fdatasync(fileio_posix(), fd);
}

static int64_t test_clock(void *ctx)
{
    fixture *f = ctx;
    return atomic_fetch_add(&f->clock_ns, 1000); /* 1 us per read: times move on */
}

static void on_done(pub_part *part)
{
    tbatch *t = (tbatch *)part->batch; /* b is its first member */
    pthread_mutex_lock(&t->f->lock);
    t->done = true;
    pthread_cond_broadcast(&t->f->cond);
    pthread_mutex_unlock(&t->f->lock);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    strcpy(f->root, "/tmp/test_ahead.XXXXXX");
    if (!mkdtemp(f->root))
        return -1;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    topics_budget_init(&f->budget, 1u << 20);
    atomic_init(&f->clock_ns, 1700000000 * SEC);
    f->io = *fileio_posix();
    f->io.open = g_open;
    f->io.fdatasync = g_fdatasync;
    f->io.ctx = f;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    testfs_rmrf(f->root);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->cond);
    free(f);
    return 0;
}

/* pthread_create (linked with --wrap, see the Makefile): while `fail` is
 * set, the calls after the next `skip` ones fail with EAGAIN, `fail` of
 * them; `calls` counts every call. */
int __real_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg);
static atomic_int create_skip, create_fail, create_calls;

int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg);
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg)
{
    atomic_fetch_add(&create_calls, 1);
    if (atomic_load(&create_fail) > 0) {
        if (atomic_load(&create_skip) > 0) {
            atomic_fetch_sub(&create_skip, 1);
        } else {
            atomic_fetch_sub(&create_fail, 1);
            return EAGAIN;
        }
    }
    return __real_pthread_create(t, a, fn, arg);
}

static partition *open_with(fixture *f, uint32_t max_entries, uint32_t idle_ms)
{
    partition_options o = {
        .fsync = PARTITION_FSYNC_ALWAYS,
        .topic_history = 4,
        .topics_budget = &f->budget,
        .dedup_window_ms = 60000,
        .dedup_max_entries = max_entries,
        .idle_ms = idle_ms,
    };
    o.log.io = &f->io;
    o.log.now_ns = test_clock;
    o.log.clock_ctx = f;
    partition *p = NULL;
    assert_int_equal(partition_open(&p, f->root, "p", &o), 0);
    return p;
}

static partition *open_p(fixture *f)
{
    return open_with(f, 1000, 0);
}

/* protobus_dedup_hits_total, from the process's metrics text. */
static uint64_t dedup_hits(void)
{
    static const char name[] = "\nprotobus_dedup_hits_total ";
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    assert_non_null(m);
    assert_int_equal(metrics_write_process(m), 0);
    assert_int_equal(fclose(m), 0);
    const char *at = strstr(buf, name);
    assert_non_null(at);
    uint64_t v = strtoull(at + strlen(name), NULL, 10);
    free(buf);
    return v;
}

/* A batch of events on topic "t" with the given ids (NULL-terminated list;
 * "" = no id), and the expectation "t" = exp (exp < 0: none given). */
static tbatch *make(fixture *f, partition *p, const char *const *ids, long long exp)
{
    tbatch *t = calloc(1, sizeof *t);
    assert_non_null(t);
    t->f = f;
    size_t n = 0;
    for (; ids[n]; n++) {
        assert_true(n < MAX_EVENTS);
        uint8_t *b = t->bytes[n];
        size_t k = wire_put_len_field(b, 1, "t", 1);
        size_t id_len = strlen(ids[n]);
        if (id_len)
            k += wire_put_len_field(b + k, 8, ids[n], id_len);
        t->ev[n] = (pub_event){.data = b,
                               .len = (uint32_t)k,
                               .topic = b + 2,
                               .topic_len = 1,
                               .id = id_len ? b + 5 : NULL,
                               .id_len = (uint8_t)id_len,
                               .offset = UINT64_MAX};
        t->idx[n] = (uint32_t)n;
    }
    if (exp >= 0) {
        t->expect[0] =
            (pub_expect){.topic = (const uint8_t *)"t", .topic_len = 1, .offset = (uint64_t)exp};
        t->b.nexpect = 1;
        t->b.expect = t->expect;
    }
    t->b.done = on_done;
    t->b.nevents = (uint32_t)n;
    t->b.events = t->ev;
    t->b.nparts = 1;
    t->b.parts = &t->part;
    t->part = (pub_part){.batch = &t->b, .partition = p, .events = t->idx, .count = (uint32_t)n};
    return t;
}

static void submit(tbatch *t)
{
    atomic_store(&t->b.pending, 1);
    partition_submit(t->part.partition, &t->part);
}

static void deadline_in(struct timespec *ts)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += WAIT_LIMITS;
}

static void wait_done(tbatch *t)
{
    struct timespec dl;
    deadline_in(&dl);
    pthread_mutex_lock(&t->f->lock);
    while (!t->done)
        assert_int_equal(pthread_cond_timedwait(&t->f->cond, &t->f->lock, &dl), 0);
    pthread_mutex_unlock(&t->f->lock);
}

static void close_gate(fixture *f)
{
    pthread_mutex_lock(&f->lock);
    f->gate_closed = true;
    pthread_mutex_unlock(&f->lock);
}

/* Waits until the writer is held at the gate. */
static void wait_blocked(fixture *f)
{
    struct timespec dl;
    deadline_in(&dl);
    pthread_mutex_lock(&f->lock);
    while (f->blocked == 0)
        assert_int_equal(pthread_cond_timedwait(&f->cond, &f->lock, &dl), 0);
    pthread_mutex_unlock(&f->lock);
}

static void open_gate(fixture *f)
{
    pthread_mutex_lock(&f->lock);
    f->gate_closed = false;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

/* Waits (polling the counter: the helper signals nobody) until `count`
 * events were admitted ahead. */
static void wait_ahead(partition *p, uint64_t count)
{
    partition_stats st;
    for (int i = 0; i < WAIT_LIMITS * 1000; i++) {
        partition_get_stats(p, &st);
        if (st.events_ahead >= count)
            break;
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    }
    partition_get_stats(p, &st);
    assert_int_equal(st.events_ahead, count);
}

static void assert_stored(const tbatch *t, size_t i, uint64_t offset)
{
    assert_false(t->ev[i].duplicate);
    assert_int_equal(t->ev[i].offset, offset);
}

static void assert_dup(const tbatch *t, size_t i, uint64_t offset)
{
    assert_true(t->ev[i].duplicate);
    assert_int_equal(t->ev[i].offset, offset);
}

/* Duplicates across the take being synced and the ones admitted ahead,
 * and within those; a part with an expectation queued after them. */
static void test_ahead_duplicates_and_expectations(void **state)
{
    fixture *f = *state;
    partition *p = open_p(f);
    tbatch *a0 = make(f, p, (const char *[]){"a0", NULL}, -1);
    submit(a0); /* the first take with ids: marks the partition */
    wait_done(a0);
    close_gate(f);
    tbatch *a = make(f, p, (const char *[]){"a1", "a2", "", NULL}, -1);
    submit(a);
    wait_blocked(f); /* a is admitted, written, held in its fdatasync */
    tbatch *b = make(f, p, (const char *[]){"b1", "a2", "b1", "", "a0", NULL}, -1);
    tbatch *c = make(f, p, (const char *[]){"c1", "b1", NULL}, -1);
    submit(b);
    submit(c);
    wait_ahead(p, 7);
    tbatch *d = make(f, p, (const char *[]){"d1", NULL}, 6); /* t's last: c1 at 6 */
    tbatch *e = make(f, p, (const char *[]){"e1", NULL}, 5);
    submit(d);
    submit(e);
    open_gate(f);
    wait_done(e);
    assert_int_equal(a->part.status, 0);
    assert_stored(a, 0, 1);
    assert_stored(a, 1, 2);
    assert_stored(a, 2, 3);
    assert_int_equal(b->part.status, 0);
    assert_stored(b, 0, 4);
    assert_dup(b, 1, 2);
    assert_dup(b, 2, 4);
    assert_stored(b, 3, 5);
    assert_dup(b, 4, 0);
    assert_int_equal(c->part.status, 0);
    assert_stored(c, 0, 6);
    assert_dup(c, 1, 4);
    assert_int_equal(d->part.status, 0);
    assert_stored(d, 0, 7);
    assert_int_equal(e->part.status, PUB_EXPECT_FAILED);
    assert_int_equal(e->part.actual, 7);
    assert_int_equal(partition_end_offset(p), 8);
    /* Receive times ascend with the offsets. */
    assert_true(a->ev[0].time_ns <= b->ev[0].time_ns);
    assert_true(b->ev[0].time_ns <= c->ev[0].time_ns);
    assert_true(c->ev[0].time_ns <= d->ev[0].time_ns);
    /* The ids admitted ahead are in the window after a restart too. */
    assert_int_equal(partition_close(p), 0);
    p = open_p(f);
    tbatch *r = make(f, p, (const char *[]){"c1", "b1", "a1", "d1", "new", NULL}, -1);
    submit(r);
    wait_done(r);
    assert_dup(r, 0, 6);
    assert_dup(r, 1, 4);
    assert_dup(r, 2, 1);
    assert_dup(r, 3, 7);
    assert_stored(r, 4, 8);
    assert_int_equal(partition_close(p), 0);
    tbatch *all[] = {a0, a, b, c, d, e, r};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        free(all[i]);
}

/* The helper admits ahead at most PARTITION_TAKE_EVENTS events for the next
 * take (what its rounds admitted counts), however many parts are queued; the
 * rest waits in the queue; every event is stored once, in queue order. The
 * parts are queued all at once (under the partition's lock, as
 * partition_submit does), so one round sees them all. */
static void test_ahead_stops_at_the_take_cap(void **state)
{
    fixture *f = *state;
    partition *p = open_p(f);
    tbatch *a0 = make(f, p, (const char *[]){"a0", NULL}, -1);
    submit(a0);
    wait_done(a0);
    close_gate(f);
    tbatch *a = make(f, p, (const char *[]){"a1", NULL}, -1);
    submit(a);
    wait_blocked(f); /* a is admitted, written, held in its fdatasync */
    enum { N = PARTITION_TAKE_EVENTS / MAX_EVENTS + 100 };
    tbatch **q = calloc(N, sizeof *q);
    assert_non_null(q);
    char ids[MAX_EVENTS][24];
    const char *list[MAX_EVENTS + 1];
    for (size_t i = 0; i < N; i++) {
        for (size_t k = 0; k < MAX_EVENTS; k++) {
            snprintf(ids[k], sizeof ids[k], "q%zu-%zu", i, k);
            list[k] = ids[k];
        }
        list[MAX_EVENTS] = NULL;
        q[i] = make(f, p, list, -1);
        atomic_store(&q[i]->b.pending, 1);
    }
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < N; i++) {
        q[i]->part.next = NULL;
        if (p->tail)
            p->tail->next = &q[i]->part;
        else
            p->head = &q[i]->part;
        p->tail = &q[i]->part;
    }
    pthread_cond_broadcast(&p->ahead.cv);
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
    /* Exactly the cap, not the N x 8 queued: read once the helper has
     * reached it and had time to go on, the gate opened before asserting
     * (a failed assertion must not leave the writer held). */
    partition_stats st;
    for (int i = 0; i < WAIT_LIMITS * 1000; i++) {
        partition_get_stats(p, &st);
        if (st.events_ahead >= PARTITION_TAKE_EVENTS)
            break;
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    }
    nanosleep(&(struct timespec){.tv_nsec = 20000000}, NULL);
    partition_get_stats(p, &st);
    open_gate(f);
    assert_int_equal(st.events_ahead, PARTITION_TAKE_EVENTS);
    wait_done(q[N - 1]);
    assert_int_equal(a->part.status, 0);
    assert_stored(a, 0, 1);
    uint64_t next = 2;
    for (size_t i = 0; i < N; i++) {
        wait_done(q[i]);
        assert_int_equal(q[i]->part.status, 0);
        for (size_t k = 0; k < MAX_EVENTS; k++)
            assert_stored(q[i], k, next++);
    }
    assert_int_equal(partition_end_offset(p), next);
    assert_int_equal(partition_close(p), 0);
    for (size_t i = 0; i < N; i++)
        free(q[i]);
    free(q);
    free(a0);
    free(a);
}

/* The take before the ahead ones is refused before anything is written
 * (its segment cannot be reopened: the log stays usable): the ahead parts
 * are admitted afresh, so an id that was a duplicate of the refused take's
 * is stored, and a retry of the refused take is stored after them. */
static void test_ahead_discarded_when_take_not_stored(void **state)
{
    fixture *f = *state;
    partition *p = open_p(f);
    tbatch *a0 = make(f, p, (const char *[]){"k0", NULL}, -1);
    submit(a0);
    wait_done(a0);
    /* Idle until its files are closed? Not needed: a released log reopens
     * its segment; force one by closing and opening the partition. */
    assert_int_equal(partition_close(p), 0);
    p = open_p(f);
    uint64_t hits = dedup_hits();
    close_gate(f);
    tbatch *a = make(f, p, (const char *[]){"k1", "k2", NULL}, -1);
    submit(a);
    wait_blocked(f); /* a is admitted, its append reopening the segment */
    tbatch *b = make(f, p, (const char *[]){"k2", "k3", "k0", NULL}, -1);
    submit(b);
    wait_ahead(p, 3);
    pthread_mutex_lock(&f->lock);
    f->fail_open_once = EMFILE;
    pthread_mutex_unlock(&f->lock);
    open_gate(f);
    wait_done(b);
    assert_true(a->part.status < 0);
    assert_int_equal(b->part.status, 0);
    assert_stored(b, 0, 1); /* k2 was a's: not stored, so b's is */
    assert_stored(b, 1, 2);
    assert_dup(b, 2, 0);
    /* b passed the window twice (ahead with k2 and k0 duplicates, then
     * afresh): one duplicate acknowledged, one counted. */
    assert_int_equal(dedup_hits() - hits, 1);
    tbatch *retry = make(f, p, (const char *[]){"k1", "k2", NULL}, -1);
    submit(retry);
    wait_done(retry);
    assert_stored(retry, 0, 3);
    assert_dup(retry, 1, 1);
    assert_int_equal(partition_end_offset(p), 4);
    assert_int_equal(partition_close(p), 0);
    free(a0);
    free(a);
    free(b);
    free(retry);
}

/* The take before the ahead ones fails in its fdatasync: the partition
 * fails, the ahead parts are refused too, and after a restart (the window
 * rebuilt from what the log holds) their ids are not in it unless stored. */
static void test_ahead_refused_when_sync_fails(void **state)
{
    fixture *f = *state;
    partition *p = open_p(f);
    tbatch *a0 = make(f, p, (const char *[]){"s0", NULL}, -1);
    submit(a0);
    wait_done(a0);
    close_gate(f);
    tbatch *a = make(f, p, (const char *[]){"s1", NULL}, -1);
    submit(a);
    wait_blocked(f);
    tbatch *b = make(f, p, (const char *[]){"s2", "s1", NULL}, -1);
    submit(b);
    wait_ahead(p, 2);
    pthread_mutex_lock(&f->lock);
    f->fail_sync = EIO;
    pthread_mutex_unlock(&f->lock);
    open_gate(f);
    wait_done(b);
    assert_true(a->part.status < 0);
    assert_true(b->part.status < 0);
    assert_int_equal(partition_end_offset(p), 1);
    assert_true(partition_close(p) < 0);
    pthread_mutex_lock(&f->lock);
    f->fail_sync = 0;
    pthread_mutex_unlock(&f->lock);
    p = open_p(f);
    tbatch *r = make(f, p, (const char *[]){"s2", "s0", NULL}, -1);
    submit(r);
    wait_done(r);
    assert_int_equal(r->part.status, 0);
    assert_false(r->ev[0].duplicate); /* b's s2 was never stored */
    assert_dup(r, 1, 0);
    assert_int_equal(partition_close(p), 0);
    free(a0);
    free(a);
    free(b);
    free(r);
}

/* How many times `what` occurs in the file fd (stderr's copy). */
static int count_lines(int fd, const char *what)
{
    char buf[8192];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    assert_true(n >= 0);
    buf[n] = 0;
    int k = 0;
    for (const char *at = buf; (at = strstr(at, what)) != NULL; at += strlen(what))
        k++;
    return k;
}

/* A full window (4 ids): take a (x1) is admitted, evicting w1, and b's
 * three ids admitted ahead evict w2..w4; a is then not stored (its segment
 * cannot be reopened). The stored ids it and b pushed out come back: b is
 * stored afresh (evicting w1..w3 for good, the bound), and a retry of w4
 * is a duplicate, before and after a restart (the window's snapshot). */
static void test_window_kept_when_take_not_stored(void **state)
{
    fixture *f = *state;
    partition *p = open_with(f, 4, 0);
    tbatch *w = make(f, p, (const char *[]){"w1", "w2", "w3", "w4", NULL}, -1);
    submit(w);
    wait_done(w);
    assert_int_equal(partition_close(p), 0); /* the next append reopens the segment */
    p = open_with(f, 4, 0);
    close_gate(f);
    tbatch *a = make(f, p, (const char *[]){"x1", NULL}, -1);
    submit(a);
    wait_blocked(f); /* a is admitted, its append reopening the segment */
    tbatch *b = make(f, p, (const char *[]){"y1", "y2", "y3", NULL}, -1);
    submit(b);
    wait_ahead(p, 3);
    pthread_mutex_lock(&f->lock);
    f->fail_open_once = EMFILE;
    pthread_mutex_unlock(&f->lock);
    open_gate(f);
    wait_done(b);
    assert_true(a->part.status < 0);
    assert_int_equal(b->part.status, 0);
    assert_stored(b, 0, 4);
    assert_stored(b, 2, 6);
    tbatch *r1 = make(f, p, (const char *[]){"w4", NULL}, -1);
    submit(r1);
    wait_done(r1);
    assert_dup(r1, 0, 3); /* before the fix: stored again at 7 */
    assert_int_equal(partition_close(p), 0);
    p = open_with(f, 4, 0);
    tbatch *r = make(f, p, (const char *[]){"w4", "y1", "w3", NULL}, -1);
    submit(r);
    wait_done(r);
    assert_dup(r, 0, 3);
    assert_dup(r, 1, 4);
    assert_stored(r, 2, 7); /* the oldest went for b's ids: the bound */
    assert_int_equal(partition_close(p), 0);
    free(w);
    free(a);
    free(b);
    free(r1);
    free(r);
}

/* One take with ids on a writer that starts for it (idle_ms: each take gets
 * a new writer, then the writer and its helper end), the helper's start
 * failing or not. */
static void take_with_helper(fixture *f, partition *p, const char *id, bool fail)
{
    atomic_store(&create_calls, 0);
    atomic_store(&create_skip, 1); /* the writer starts */
    atomic_store(&create_fail, fail ? 1 : 0);
    tbatch *t = make(f, p, (const char *[]){id, NULL}, -1);
    submit(t);
    wait_done(t);
    assert_int_equal(t->part.status, 0);
    assert_false(t->ev[0].duplicate);
    free(t);
    atomic_store(&create_fail, 0);
    assert_int_equal(atomic_load(&create_calls), 2); /* a new writer, then the helper */
    /* Past idle_ms the writer ends (its helper first): waited for, not
     * assumed after a sleep (a loaded machine runs it late). */
    for (int i = 0; i < 6000 && partition_writer_running(p); i++)
        nanosleep(&(struct timespec){.tv_nsec = 5000000}, NULL);
    assert_false(partition_writer_running(p));
}

/* The helper cannot start: logged; it starts on the next try; when it
 * cannot start again, that is logged again (not only the first time). */
static void test_helper_start_failure_logged_again(void **state)
{
    static const char what[] = "cannot start the thread that admits takes ahead";
    fixture *f = *state;
    char path[96];
    snprintf(path, sizeof path, "%s/stderr", f->root);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    partition *p = open_with(f, 1000, 10);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    take_with_helper(f, p, "h1", true);
    take_with_helper(f, p, "h2", false);
    take_with_helper(f, p, "h3", true);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    assert_int_equal(count_lines(fd, what), 2);
    close(fd);
    assert_int_equal(partition_close(p), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ahead_duplicates_and_expectations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ahead_stops_at_the_take_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ahead_discarded_when_take_not_stored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ahead_refused_when_sync_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_helper_start_failure_logged_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_kept_when_take_not_stored, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
