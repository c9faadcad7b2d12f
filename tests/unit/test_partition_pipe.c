/*
 * test_partition_pipe - the partition writer's pipelined takes
 * (partition_write.c, write_pipelined): with direct writes on, a plain
 * take's fdatasync runs on the log's helper thread while the writer
 * appends the next take behind it. Each take is acked only after its own
 * sync; a failed sync fails the take appended behind it too (and nothing
 * later is acked); a failed write of the take behind never un-acks the one
 * before; a take with an expectation is decided only once the take before
 * it is acked (it sees that take's events).
 *
 * The harness (tests/lib/partharness.h) holds the helper's fdatasync at a
 * gate; a write hook submits the next take while the first one is being
 * appended, so that it is surely taken while the first one's sync is
 * pending.
 */
#include "dedup.h"
#include "partharness.h"
#include "partition.h"
#include "partition_internal.h"
#include "pb_errors.h"
#include "reader.h"
#include "wire.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* Events per take: ~11 KB of records, more than two 4 KiB blocks, so that
 * every take goes the direct way (direct_min_bytes = 1). */
enum { BIG = 256 };

/* The first submit of the hook's batch, from inside a write of the take
 * before it (the writer's or the helper's: neither holds the queue's lock). */
typedef struct submit_later {
    partition *p;
    ph_batch *b;
} submit_later;

static void submit_hook(void *arg)
{
    submit_later *s = arg;
    partition_submit(s->p, &s->b->part);
}

/* A partition with direct writes (appends of direct_min_bytes or more)
 * and two takes stored (the second one pipelined: its sync ran on the
 * helper); *next: the next offset. NULL when the file system refuses
 * O_DIRECT (the test is skipped). */
static partition *open_direct(ph_fixture *f, uint64_t direct_min_bytes, uint64_t *next)
{
    f->opts.log.direct_min_bytes = direct_min_bytes;
    /* A pending take is acked after the next take's writes: the sync
     * counts at each done() are checked instead. */
    f->h.check_durable = false;
    partition *p = ph_open(f);
    *next = 0;
    for (int i = 0; i < 2; i++) {
        ph_batch *b = ph_publish(f, p, BIG, *next);
        assert_int_equal(b->part.status, 0);
        free(b);
        *next += BIG;
    }
    pthread_mutex_lock(&f->h.lock);
    size_t helper = f->h.helper_syncs;
    pthread_mutex_unlock(&f->h.lock);
    if (helper == 0) {
        assert_int_equal(partition_close(p), 0);
        return NULL;
    }
    return p;
}

static size_t done_now(ph_harness *h)
{
    pthread_mutex_lock(&h->lock);
    size_t n = h->done_count;
    pthread_mutex_unlock(&h->lock);
    return n;
}

/* open_direct with a dedup window, then a take with ids WARM_ID.. (stored
 * in line: the partition's first take with ids creates its dedup mark). */
enum { WARM_ID = 900000 };

static partition *open_ids(ph_fixture *f, uint64_t *next)
{
    f->opts.dedup_window_ms = 60000;
    f->opts.dedup_max_entries = 100000;
    partition *p = open_direct(f, 1, next);
    if (!p)
        return NULL;
    size_t before = done_now(&f->h);
    ph_batch *w = ph_batch_new(&f->h, p, BIG, *next);
    ph_give_ids(w, *next, WARM_ID, 0);
    partition_submit(p, &w->part);
    ph_wait_done(&f->h, before + 1);
    assert_int_equal(w->part.status, 0);
    free(w);
    *next += BIG;
    return p;
}

/* The scene most tests start from: take A (BIG events from next) held at
 * its sync, take B (from next + BIG) appended behind it: submitted from
 * inside A's append (the harness's write hook), so that it is surely taken
 * while A's sync is pending. Nothing is acked until the gate opens. */
typedef struct held_pair {
    ph_fixture *f;
    ph_harness *h;
    partition *p;
    uint64_t next;   /* A's first offset */
    size_t base;     /* completed .log syncs before A */
    size_t before;   /* done() calls before A */
    uint64_t ahead;  /* the partition's events_ahead before A */
    ph_batch *a, *b; /* free() both */
    bool ids;
    submit_later later;
} held_pair;

/* What a test changes in the scene. */
typedef struct pair_opts {
    /* open_ids, not open_direct: A's events get ids 0..BIG-1, B's BIG..
     * but for its first ndup, which repeat A's. */
    bool ids;
    uint32_t ndup;
    uint64_t direct_min_bytes; /* 0: 1, every take of BIG events direct */
    size_t b_events;           /* 0: BIG */
} pair_opts;

/* Opens the partition and makes A and B (hold_pair submits them). False
 * when the file system refuses O_DIRECT: the test skips. */
static bool open_pair(void **state, held_pair *s, pair_opts o)
{
    ph_fixture *f = *state;
    ph_harness *h = &f->h;
    *s = (held_pair){.f = f, .h = h};
    s->p = o.ids ? open_ids(f, &s->next)
                 : open_direct(f, o.direct_min_bytes ? o.direct_min_bytes : 1, &s->next);
    if (!s->p)
        return false;
    s->ahead = atomic_load(&s->p->events_ahead);
    s->base = ph_syncs_now(h);
    s->before = done_now(h);
    s->b = ph_batch_new(h, s->p, o.b_events ? o.b_events : BIG, s->next + BIG);
    s->a = ph_batch_new(h, s->p, BIG, s->next);
    if (o.ids) {
        ph_give_ids(s->b, s->next + BIG, BIG, o.ndup);
        ph_give_ids(s->a, s->next, 0, 0);
    }
    s->ids = o.ids;
    return true;
}

/* Holds A's sync with B appended behind it. Without ids B is submitted
 * from inside A's append (the write hook). With ids B is submitted once A's
 * sync is held (A's append is over: B is not admitted ahead during it,
 * test_partition_inline covers that; it is admitted at its own take, behind
 * A's pending sync), and this returns once B is surely admitted (or the
 * test proves less, never fails). */
static void hold_pair(held_pair *s)
{
    ph_harness *h = s->h;
    s->later = (submit_later){.p = s->p, .b = s->b};
    if (!s->ids) {
        pthread_mutex_lock(&h->lock);
        h->write_hook = submit_hook;
        h->write_hook_arg = &s->later;
        pthread_mutex_unlock(&h->lock);
    }
    ph_submit_held(h, s->p, s->a); /* A's sync, held */
    if (s->ids) {
        partition_submit(s->p, &s->b->part);
        nanosleep(&(struct timespec){.tv_nsec = 200 * 1000 * 1000}, NULL);
    }
}

/* The errno the harness fails .log fdatasyncs and pwritevs with (0: none). */
static void set_faults(ph_harness *h, int sync_errno, int write_errno)
{
    pthread_mutex_lock(&h->lock);
    h->fail_sync = sync_errno;
    h->fail_write = write_errno;
    pthread_mutex_unlock(&h->lock);
}

static void test_each_take_acked_after_its_own_sync(void **state)
{
    held_pair s;
    if (!open_pair(state, &s, (pair_opts){0}))
        skip();
    hold_pair(&s);
    assert_int_equal(done_now(s.h), s.before);
    ph_gate(s.h, false);
    ph_wait_done(s.h, s.before + 2);
    assert_int_equal(s.a->part.status, 0);
    assert_int_equal(s.b->part.status, 0);
    assert_true(s.a->syncs_at_done >= s.base + 1);
    assert_true(s.b->syncs_at_done >= s.base + 2);
    for (uint32_t k = 0; k < BIG; k++) {
        assert_int_equal(s.a->ev[k].offset, s.next + k);
        assert_int_equal(s.b->ev[k].offset, s.next + BIG + k);
    }
    assert_int_equal(partition_end_offset(s.p), s.next + 2 * BIG);
    assert_int_equal(partition_close(s.p), 0);
    ph_check_files(s.f, s.next + 2 * BIG);
    free(s.a);
    free(s.b);
}

/* Many parts queued at once (all under the queue's lock, from inside take A's
 * append): the writer takes them in takes of at most PARTITION_TAKE_EVENTS
 * events, pipelined one behind the other; each part acked once, after the
 * sync of its own take; offsets in queue order. */
typedef struct submit_many {
    partition *p;
    ph_batch **b;
    size_t n;
} submit_many;

static void submit_many_hook(void *arg)
{
    submit_many *s = arg;
    partition *p = s->p;
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < s->n; i++) {
        s->b[i]->part.next = NULL;
        if (p->tail)
            p->tail->next = &s->b[i]->part;
        else
            p->head = &s->b[i]->part;
        p->tail = &s->b[i]->part;
    }
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
}

static void test_long_queue_in_capped_pipelined_takes(void **state)
{
    ph_fixture *f = *state;
    ph_harness *h = &f->h;
    uint64_t next;
    partition *p = open_direct(f, 1, &next);
    if (!p)
        skip();
    enum { PER_TAKE = PARTITION_TAKE_EVENTS / BIG, N = PER_TAKE + 8 };
    ph_batch **b = calloc(N, sizeof *b);
    assert_non_null(b);
    for (size_t i = 0; i < N; i++)
        b[i] = ph_batch_new(h, p, BIG, next + BIG * (i + 1)); /* seq = offset */
    size_t base = ph_syncs_now(h), before = done_now(h);
    ph_batch *a = ph_batch_new(h, p, BIG, next);
    submit_many many = {.p = p, .b = b, .n = N};
    pthread_mutex_lock(&h->lock);
    h->write_hook = submit_many_hook;
    h->write_hook_arg = &many;
    pthread_mutex_unlock(&h->lock);
    ph_submit_held(h, p, a); /* A's sync, held */
    assert_int_equal(done_now(h), before);
    ph_gate(h, false);
    ph_wait_done(h, before + 1 + N);
    assert_int_equal(a->part.status, 0);
    assert_true(a->syncs_at_done >= base + 1);
    uint64_t off = next + BIG;
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(b[i]->part.status, 0);
        for (uint32_t k = 0; k < BIG; k++)
            assert_int_equal(b[i]->ev[k].offset, off++);
        /* Two takes: the first PER_TAKE parts, then the rest, each acked
         * after a sync of its own (after A's). */
        assert_true(b[i]->syncs_at_done > a->syncs_at_done);
        if (i > 0 && i != PER_TAKE)
            assert_int_equal(b[i]->syncs_at_done, b[i - 1]->syncs_at_done);
        else if (i == PER_TAKE)
            assert_true(b[i]->syncs_at_done > b[i - 1]->syncs_at_done);
    }
    assert_int_equal(partition_end_offset(p), off);
    assert_int_equal(partition_close(p), 0);
    ph_check_files(f, off);
    for (size_t i = 0; i < N; i++)
        free(b[i]);
    free(b);
    free(a);
}

/* Reads offsets 0..end-1 back through the end the partition published. */
static void check_readable(ph_fixture *f, uint64_t end)
{
    char dir[96];
    snprintf(dir, sizeof dir, "%s/p", f->root);
    pb_reader *r;
    assert_int_equal(pb_reader_open(&r, dir), 0);
    pb_reader_set_end(r, end);
    pb_record rec;
    for (uint64_t o = 0; o < end; o++) {
        assert_int_equal(pb_reader_next(r, &rec), 0);
        assert_int_equal(rec.offset, o);
    }
    assert_int_equal(pb_reader_next(r, &rec), PB_EEOF);
    pb_reader_close(r);
}

static void test_failed_sync_fails_the_take_behind(void **state)
{
    held_pair s;
    if (!open_pair(state, &s, (pair_opts){0}))
        skip();
    hold_pair(&s);
    pthread_mutex_lock(&s.h->lock);
    s.h->fail_sync = EIO;
    size_t calls = s.h->sync_calls;
    pthread_mutex_unlock(&s.h->lock);
    ph_gate(s.h, false);
    ph_wait_done(s.h, s.before + 2);
    assert_int_equal(s.a->part.status, -EIO);
    assert_true(s.b->part.status < 0); /* written behind a failed sync: never acked */
    assert_int_equal(partition_status(s.p), -EIO);
    assert_int_equal(partition_end_offset(s.p), s.next);
    for (uint32_t k = 0; k < BIG; k++)
        assert_true(s.a->ev[k].offset == UINT64_MAX && s.b->ev[k].offset == UINT64_MAX);
    pthread_mutex_lock(&s.h->lock);
    /* B's sync was never begun: the one call after A's is the log's sync
     * of its cut back to the durable end (server/log.c, log_cut_to_durable). */
    assert_int_equal(s.h->sync_calls, calls + 1);
    s.h->fail_sync = 0;
    pthread_mutex_unlock(&s.h->lock);
    /* One fault, counted once: B failed because of A's sync, not a write. */
    partition_stats st;
    partition_get_stats(s.p, &st);
    assert_int_equal(st.fsync_errors, 1);
    assert_int_equal(st.write_errors, 0);
    ph_batch *c = ph_publish(s.f, s.p, 1, s.next);
    assert_int_equal(c->part.status, PB_EFAILED);
    assert_true(partition_close(s.p) < 0);
    check_readable(s.f, s.next);
    free(s.a);
    free(s.b);
    free(c);
}

static void test_failed_write_behind_keeps_the_ack_before(void **state)
{
    held_pair s;
    if (!open_pair(state, &s, (pair_opts){0}))
        skip();
    hold_pair(&s);
    /* A is written (its sync waits at the gate); B's writes, queued
     * behind that sync, fail. */
    set_faults(s.h, 0, EIO);
    ph_gate(s.h, false);
    ph_wait_done(s.h, s.before + 2);
    assert_int_equal(s.a->part.status, 0);
    assert_int_equal(s.b->part.status, -EIO);
    assert_int_equal(partition_status(s.p), -EIO);
    assert_int_equal(partition_end_offset(s.p), s.next + BIG);
    for (uint32_t k = 0; k < BIG; k++)
        assert_int_equal(s.a->ev[k].offset, s.next + k);
    set_faults(s.h, 0, 0);
    assert_true(partition_close(s.p) < 0);
    check_readable(s.f, s.next + BIG);
    free(s.a);
    free(s.b);
}

/* A's sync fails (EIO) and B's head block, written the ordinary way behind
 * it, fails with ENOSPC (reported by B's append before anything collected
 * A's sync): the failed sync decides. The partition is failed for good (a
 * full disk would heal: the log reopened, A's and B's records published
 * though A's sync failed); nothing of A or B is acked or visible. */
static void test_failed_sync_then_full_disk_never_heals(void **state)
{
    held_pair s;
    if (!open_pair(state, &s, (pair_opts){0}))
        skip();
    hold_pair(&s);
    /* Let the writer queue B's jobs behind A's held sync and wait for its
     * head block (if it is slower, A's sync is collected first: the test
     * proves less, never fails). */
    nanosleep(&(struct timespec){.tv_nsec = 200 * 1000 * 1000}, NULL);
    set_faults(s.h, EIO, ENOSPC);
    ph_gate(s.h, false);
    ph_wait_done(s.h, s.before + 2);
    assert_int_equal(s.a->part.status, -EIO);
    assert_true(s.b->part.status < 0);
    assert_true(partition_status(s.p) < 0);
    assert_int_equal(partition_end_offset(s.p), s.next);
    for (uint32_t k = 0; k < BIG; k++)
        assert_true(s.a->ev[k].offset == UINT64_MAX && s.b->ev[k].offset == UINT64_MAX);
    set_faults(s.h, 0, 0);
    /* Failed for good, not "disk full, resumes when space is back". */
    ph_batch *c = ph_publish(s.f, s.p, 1, s.next);
    assert_int_equal(c->part.status, PB_EFAILED);
    assert_int_equal(partition_end_offset(s.p), s.next);
    assert_true(partition_close(s.p) < 0);
    check_readable(s.f, s.next);
    free(s.a);
    free(s.b);
    free(c);
}

/* B expects topic t0's last offset to be A's last t0 event: that holds
 * only if A was acked (its events in the topic table) before B was
 * decided, though B was queued while A's sync was held. */
static void test_expectation_sees_the_pending_take(void **state)
{
    held_pair s;
    if (!open_pair(state, &s, (pair_opts){0}))
        skip();
    uint64_t last_t0 = s.next + BIG - 1;
    while (last_t0 % 3 != 0)
        last_t0--;
    pub_expect ex = {.topic = (const uint8_t *)"t0", .topic_len = 2, .offset = last_t0};
    s.b->b.nexpect = 1;
    s.b->b.expect = &ex;
    hold_pair(&s);
    ph_gate(s.h, false);
    ph_wait_done(s.h, s.before + 2);
    assert_int_equal(s.a->part.status, 0);
    assert_int_equal(s.b->part.status, 0);
    assert_int_equal(s.b->ev[0].offset, s.next + BIG);
    assert_int_equal(partition_close(s.p), 0);
    ph_check_files(s.f, s.next + 2 * BIG);
    free(s.a);
    free(s.b);
}

/* B, one small event, goes the ordinary way: its write waits for A's sync
 * (log_sync_collect), which fails with EIO. One fault, counted once: an
 * fsync error, no write error for B (it failed because of A's sync). */
static void test_failed_sync_counted_once(void **state)
{
    held_pair s;
    if (!open_pair(state, &s, (pair_opts){.b_events = 1}))
        skip();
    hold_pair(&s);
    set_faults(s.h, EIO, 0);
    ph_gate(s.h, false);
    ph_wait_done(s.h, s.before + 2);
    assert_int_equal(s.a->part.status, -EIO);
    assert_true(s.b->part.status < 0);
    assert_int_equal(partition_status(s.p), -EIO);
    set_faults(s.h, 0, 0);
    partition_stats st;
    partition_get_stats(s.p, &st);
    assert_int_equal(st.fsync_errors, 1);
    assert_int_equal(st.write_errors, 0);
    assert_true(partition_close(s.p) < 0);
    check_readable(s.f, s.next);
    free(s.a);
    free(s.b);
}

/* A large pipelined take (40 batches queued while the take before waits
 * for A's held sync) leaves its arrays in the pending slot; then many
 * small takes that are not plain (below direct_min_bytes): the arrays are
 * given back after a window of them (shrink_after_take), the pending
 * slot's pair too, not only at go_idle (never, with idle_ms = 0). */
enum { MANY = 40 };

static void test_large_pending_pair_shrinks(void **state)
{
    held_pair s;
    /* BIG events are plain, one is not. */
    if (!open_pair(state, &s, (pair_opts){.direct_min_bytes = 1000}))
        skip();
    hold_pair(&s);
    s.next += 2 * BIG;
    ph_batch *many[MANY];
    for (int i = 0; i < MANY; i++) {
        many[i] = ph_batch_new(s.h, s.p, BIG, s.next);
        s.next += BIG;
        partition_submit(s.p, &many[i]->part);
    }
    ph_gate(s.h, false);
    ph_wait_done(s.h, s.before + 2 + MANY);
    for (int i = 0; i < MANY; i++) {
        assert_int_equal(many[i]->part.status, 0);
        free(many[i]);
    }
    for (int i = 0; i < 70; i++) {
        ph_batch *c = ph_publish(s.f, s.p, 1, s.next++);
        assert_int_equal(c->part.status, 0);
        free(c);
    }
    /* The writer held in one more small take's sync: nothing of it runs. */
    ph_batch *c = ph_batch_new(s.h, s.p, 1, s.next++);
    ph_submit_held(s.h, s.p, c);
    size_t pend_cap = s.p->pend.cap, cap = s.p->cap;
    ph_gate(s.h, false);
    ph_wait_done(s.h, s.before + 2 + MANY + 71);
    assert_true(cap <= 2 * 4096);
    assert_true(pend_cap <= 2 * 4096); /* (KEEP_EVENTS: 4096) */
    assert_int_equal(partition_close(s.p), 0);
    ph_check_files(s.f, s.next);
    free(s.a);
    free(s.b);
    free(c);
}

/* As above (B's writes fail behind A's held sync), with a compressed copy
 * ready to install (set up here as the compressor's done() would leave
 * it, ready long enough to be installed mid-queue): A's upkeep must not
 * install it on the failed log, which would fail the partition as
 * "compression's directory sync" before B's append names the cause. The
 * writer's messages go to stderr: captured in a file. */
static void test_failed_write_behind_named_first(void **state)
{
    held_pair s;
    if (!open_pair(state, &s, (pair_opts){0}))
        skip();
    hold_pair(&s);
    pthread_mutex_lock(&s.p->lock);
    s.p->zjob.rc = 1; /* compressed: to be installed */
    s.p->zjob.base = 0;
    s.p->zbusy = s.p->zready = true;
    s.p->zready_mono = 0;
    pthread_mutex_unlock(&s.p->lock);
    char path[128];
    snprintf(path, sizeof path, "%s/stderr", s.f->root);
    fflush(stderr);
    int saved = dup(2);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    set_faults(s.h, 0, EIO);
    ph_gate(s.h, false);
    ph_wait_done(s.h, s.before + 2);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    assert_int_equal(s.a->part.status, 0);
    assert_int_equal(s.b->part.status, -EIO);
    assert_int_equal(partition_status(s.p), -EIO);
    set_faults(s.h, 0, 0);
    static char text[16384];
    FILE *in = fopen(path, "r");
    assert_non_null(in);
    size_t got = fread(text, 1, sizeof text - 1, in);
    text[got] = '\0';
    fclose(in);
    fputs(text, stderr);
    assert_null(strstr(text, "compression's directory sync failed"));
    assert_non_null(strstr(text, "partition p: write failed"));
    pthread_mutex_lock(&s.p->lock);
    s.p->zbusy = s.p->zready = false; /* (no compressor to cancel it at close) */
    pthread_mutex_unlock(&s.p->lock);
    assert_true(partition_close(s.p) < 0);
    free(s.a);
    free(s.b);
}

/* --- takes with event ids, pipelined (the dedup window's rules) --- */

/* Byte for byte: every event of A and B acked as stored is the record at
 * its acked offset, one acked as a duplicate points at a record with its
 * id, no id is stored twice (ph_check_acked); the files hold at least the
 * `end` records the partition published. */
static void check_ids_acked(held_pair *s, uint64_t end)
{
    ph_batch *both[2] = {s->a, s->b};
    assert_true(ph_check_acked(s->f, NULL, both, 2) >= end);
}

/* A's sync fails: neither A's ids nor B's (pipelined behind it, not
 * admitted ahead) stay in the window, so a retry of either is stored, not
 * acked as a duplicate; the ids stored before stay. */
static void test_ids_failed_sync_takes_both_takes_ids_out(void **state)
{
    held_pair s;
    if (!open_pair(state, &s, (pair_opts){.ids = true}))
        skip();
    hold_pair(&s);
    assert_int_equal(done_now(s.h), s.before);
    set_faults(s.h, EIO, 0);
    ph_gate(s.h, false);
    ph_wait_done(s.h, s.before + 2);
    assert_int_equal(s.a->part.status, -EIO);
    assert_true(s.b->part.status < 0);
    assert_int_equal(atomic_load(&s.p->events_ahead), s.ahead);
    for (uint64_t k = 0; k < 2 * BIG; k++)
        assert_int_equal(ph_window_has(s.p, k), UINT64_MAX);
    for (uint64_t k = 0; k < BIG; k++)
        assert_int_equal(ph_window_has(s.p, WARM_ID + k), s.next - BIG + k);
    set_faults(s.h, 0, 0);
    assert_true(partition_close(s.p) < 0);
    check_readable(s.f, s.next);
    check_ids_acked(&s, s.next);
    free(s.a);
    free(s.b);
}

/* B's write fails behind A's sync, which succeeds: A's ids stay in the
 * window at A's offsets, B's are gone. */
static void test_ids_failed_write_behind_takes_only_its_ids_out(void **state)
{
    held_pair s;
    if (!open_pair(state, &s, (pair_opts){.ids = true}))
        skip();
    hold_pair(&s);
    set_faults(s.h, 0, EIO);
    ph_gate(s.h, false);
    ph_wait_done(s.h, s.before + 2);
    assert_int_equal(s.a->part.status, 0);
    assert_int_equal(s.b->part.status, -EIO);
    for (uint64_t k = 0; k < BIG; k++) {
        assert_int_equal(s.a->ev[k].offset, s.next + k);
        assert_int_equal(ph_window_has(s.p, k), s.next + k);
        assert_int_equal(ph_window_has(s.p, BIG + k), UINT64_MAX);
    }
    set_faults(s.h, 0, 0);
    assert_true(partition_close(s.p) < 0);
    check_readable(s.f, s.next + BIG);
    check_ids_acked(&s, s.next + BIG);
    free(s.a);
    free(s.b);
}

/* B repeats DUPS of A's ids: found (A's ids are in the window while A is
 * pending), acked as duplicates with A's offsets, and only after A's sync
 * returned 0 (nothing is acked while it is held); B's other events are
 * stored right after A's, B pipelined (not admitted ahead). */
enum { DUPS = 16 };

static void test_ids_duplicate_of_pending_acked_after_its_sync(void **state)
{
    held_pair s;
    if (!open_pair(state, &s, (pair_opts){.ids = true, .ndup = DUPS}))
        skip();
    hold_pair(&s);
    assert_int_equal(done_now(s.h), s.before);
    ph_gate(s.h, false);
    ph_wait_done(s.h, s.before + 2);
    assert_int_equal(s.a->part.status, 0);
    assert_int_equal(s.b->part.status, 0);
    assert_int_equal(atomic_load(&s.p->events_ahead), s.ahead);
    assert_true(s.a->syncs_at_done >= s.base + 1);
    assert_true(s.b->syncs_at_done >= s.a->syncs_at_done);
    for (uint32_t k = 0; k < BIG; k++) {
        assert_int_equal(s.a->ev[k].offset, s.next + k);
        assert_int_equal(s.b->ev[k].duplicate, k < DUPS);
        assert_int_equal(s.b->ev[k].offset, k < DUPS ? s.next + k : s.next + BIG + k - DUPS);
    }
    assert_int_equal(partition_end_offset(s.p), s.next + 2 * BIG - DUPS);
    assert_int_equal(partition_close(s.p), 0);
    check_readable(s.f, s.next + 2 * BIG - DUPS);
    check_ids_acked(&s, s.next + 2 * BIG - DUPS);
    free(s.a);
    free(s.b);
}

/* B's events all repeat A's ids (nothing of B to write) and A's sync
 * fails: B is not acked (its duplicates' originals were never stored). */
static void test_ids_all_duplicates_behind_failed_sync_not_acked(void **state)
{
    held_pair s;
    if (!open_pair(state, &s, (pair_opts){.ids = true, .ndup = BIG}))
        skip();
    hold_pair(&s);
    set_faults(s.h, EIO, 0);
    ph_gate(s.h, false);
    ph_wait_done(s.h, s.before + 2);
    assert_int_equal(s.a->part.status, -EIO);
    assert_true(s.b->part.status < 0);
    for (uint64_t k = 0; k < BIG; k++)
        assert_int_equal(ph_window_has(s.p, k), UINT64_MAX);
    set_faults(s.h, 0, 0);
    assert_true(partition_close(s.p) < 0);
    check_readable(s.f, s.next);
    check_ids_acked(&s, s.next);
    free(s.a);
    free(s.b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_each_take_acked_after_its_own_sync, ph_setup,
                                        ph_teardown),
        cmocka_unit_test_setup_teardown(test_long_queue_in_capped_pipelined_takes, ph_setup,
                                        ph_teardown),
        cmocka_unit_test_setup_teardown(test_failed_sync_fails_the_take_behind, ph_setup,
                                        ph_teardown),
        cmocka_unit_test_setup_teardown(test_failed_write_behind_keeps_the_ack_before, ph_setup,
                                        ph_teardown),
        cmocka_unit_test_setup_teardown(test_failed_sync_then_full_disk_never_heals, ph_setup,
                                        ph_teardown),
        cmocka_unit_test_setup_teardown(test_expectation_sees_the_pending_take, ph_setup,
                                        ph_teardown),
        cmocka_unit_test_setup_teardown(test_failed_sync_counted_once, ph_setup, ph_teardown),
        cmocka_unit_test_setup_teardown(test_large_pending_pair_shrinks, ph_setup, ph_teardown),
        cmocka_unit_test_setup_teardown(test_failed_write_behind_named_first, ph_setup,
                                        ph_teardown),
        cmocka_unit_test_setup_teardown(test_ids_failed_sync_takes_both_takes_ids_out, ph_setup,
                                        ph_teardown),
        cmocka_unit_test_setup_teardown(test_ids_failed_write_behind_takes_only_its_ids_out,
                                        ph_setup, ph_teardown),
        cmocka_unit_test_setup_teardown(test_ids_duplicate_of_pending_acked_after_its_sync,
                                        ph_setup, ph_teardown),
        cmocka_unit_test_setup_teardown(test_ids_all_duplicates_behind_failed_sync_not_acked,
                                        ph_setup, ph_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
