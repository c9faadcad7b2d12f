/*
 * test_partition_inline - the admission ahead that the writer does itself
 * while a pipelined take's append waits for the device (partition_ahead.c,
 * partition_ahead_begin / _while_waiting; log_append_sync's waiting hook).
 *
 * Take A fills a whole take (PARTITION_TAKE_EVENTS events with ids); part B
 * is queued behind it before A is taken. A's first write is held (the
 * harness's write hook, on the log's helper thread) until B has been
 * admitted ahead, so the writer surely admits B while A's append waits.
 * Checked: B is admitted once, stored right after A, acked after its own
 * sync, its receive time (read at its round) not before A's, its duplicates of
 * A's ids found with A's offsets; when A's sync fails, neither A's ids nor
 * B's stay in the window, and neither take is acked. And no round runs
 * while the take before is pending (its records admitted ahead point at
 * the other set of round suffixes, which the rounds would overwrite): four
 * full takes T0..T3, T1's sync held while T2's append waits behind it.
 * Every test ends with the files read back against the acks
 * (ph_check_acked: each event acked as stored byte for byte at its acked
 * offset, a duplicate at a record with its id, no gap, no id stored
 * twice; in the failure tests nothing of A or B is acked, so there it
 * checks no gap and no id twice). The three tests of A and B
 * share one set-up (ab_open, ab_run, ab_refused).
 */
#include "dedup.h"
#include "event.h"
#include "partharness.h"
#include "partition.h"
#include "partition_internal.h"
#include "pb_errors.h"
#include "reader.h"
#include "wire.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

enum { BIG = MAX_EVENTS, A_PARTS = PARTITION_TAKE_EVENTS / BIG, DUPS = 16, LATER_NS = 5000 };

static uint64_t ahead_now(partition *p)
{
    partition_stats st;
    partition_get_stats(p, &st);
    return st.events_ahead;
}

/* Direct writes and a dedup window; two takes with ids stored (the first
 * in line: it creates the dedup mark; the second pipelined). NULL when the
 * file system refuses O_DIRECT (the test is skipped). Ids from 900000. */
static partition *open_ids(ph_fixture *f, uint64_t *next)
{
    f->opts.log.direct_min_bytes = 1;
    f->opts.dedup_window_ms = 60000;
    f->opts.dedup_max_entries = 100000;
    f->h.check_durable = false; /* a pending take is acked after the next one's writes */
    partition *p = ph_open(f);
    *next = 0;
    for (int i = 0; i < 2; i++) {
        size_t before = f->h.done_count;
        ph_batch *w = ph_batch_new(&f->h, p, BIG, *next);
        ph_give_ids(w, *next, 900000 + *next, 0);
        partition_submit(p, &w->part);
        ph_wait_done(&f->h, before + 1);
        assert_int_equal(w->part.status, 0);
        free(w);
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

/* The write hook (the helper's first write of A): moves the clock on,
 * then holds the write until B is admitted ahead (bounded). */
typedef struct hold {
    ph_fixture *f;
    partition *p;
    uint64_t want; /* events_ahead to wait for */
    size_t after;  /* (hold_t1: its writes come after this many sync calls) */
} hold;

static void hold_until_ahead(void *arg)
{
    hold *w = arg;
    atomic_fetch_add(&w->f->h.clock_ns, LATER_NS);
    for (int i = 0; i < WAIT_LIMITS * 1000 && ahead_now(w->p) < w->want; i++)
        nanosleep(&(struct timespec){.tv_nsec = 1000 * 1000}, NULL);
}

/* Queues A's parts and B at once (the test plays the loop thread), with
 * A's first write held by hook (hold_until_ahead: until B is admitted
 * ahead). */
static void queue_a_then_b(ph_fixture *f, partition *p, ph_batch **a, ph_batch *b, hold *w,
                           void (*hook)(void *))
{
    *w = (hold){.f = f, .p = p, .want = ahead_now(p) + BIG};
    pthread_mutex_lock(&f->h.lock);
    f->h.write_hook = hook;
    f->h.write_hook_arg = w;
    pthread_mutex_unlock(&f->h.lock);
    pub_part *parts[A_PARTS + 1];
    for (size_t i = 0; i <= A_PARTS; i++)
        parts[i] = i < A_PARTS ? &a[i]->part : &b->part;
    ph_queue_parts(p, parts, A_PARTS + 1);
}

static ph_batch **new_a(ph_harness *h, partition *p, uint64_t next)
{
    ph_batch **a = calloc(A_PARTS, sizeof *a);
    assert_non_null(a);
    for (size_t i = 0; i < A_PARTS; i++) {
        a[i] = ph_batch_new(h, p, BIG, next + i * BIG);
        ph_give_ids(a[i], next + i * BIG, i * BIG, 0);
    }
    return a;
}

static void free_a(ph_batch **a)
{
    for (size_t i = 0; i < A_PARTS; i++)
        free(a[i]);
    free(a);
}

/* The set-up of the tests with a take A and a part B queued behind it:
 * the partition (open_ids), A's parts (ids 0..), B (BIG events, ids from
 * 500000, its first ndup repeating A's first ones), the counters before. */
typedef struct ab {
    ph_fixture *f;
    partition *p;
    uint64_t next;  /* A's first offset */
    uint64_t b_at;  /* B's, if all of A is stored */
    uint64_t ahead; /* events_ahead before */
    size_t before;  /* done() calls before */
    ph_batch **a;
    ph_batch *b;
    ph_batch *all[A_PARTS + 1]; /* a[0..A_PARTS), then b: for ph_check_acked */
} ab;

/* false: the file system refuses O_DIRECT (skip the test). */
static bool ab_open(ab *s, ph_fixture *f, uint32_t ndup)
{
    *s = (ab){.f = f};
    s->p = open_ids(f, &s->next);
    if (!s->p)
        return false;
    s->ahead = ahead_now(s->p);
    s->before = f->h.done_count;
    s->a = new_a(&f->h, s->p, s->next);
    s->b_at = s->next + PARTITION_TAKE_EVENTS;
    s->b = ph_batch_new(&f->h, s->p, BIG, s->b_at);
    ph_give_ids(s->b, s->b_at, 500000, ndup);
    for (size_t i = 0; i < A_PARTS; i++)
        s->all[i] = s->a[i];
    s->all[A_PARTS] = s->b;
    return true;
}

/* Queues A and B (A's first write held by hook), waits for all of them,
 * and checks that B was admitted ahead, once. */
static void ab_run(ab *s, hold *w, void (*hook)(void *))
{
    queue_a_then_b(s->f, s->p, s->a, s->b, w, hook);
    ph_wait_done(&s->f->h, s->before + A_PARTS + 1);
    assert_int_equal(ahead_now(s->p), s->ahead + BIG);
}

/* After A and B were refused: nothing stored past A's first offset, none
 * of their ids in the window, the ids stored before kept; the files hold
 * every acked event byte for byte; the partition closed (failed). */
static void ab_refused(ab *s)
{
    for (size_t i = 0; i <= A_PARTS; i++)
        assert_true(s->all[i]->part.status < 0);
    assert_int_equal(partition_end_offset(s->p), s->next);
    for (uint64_t k = 0; k < PARTITION_TAKE_EVENTS; k++)
        assert_int_equal(ph_window_has(s->p, k), UINT64_MAX);
    for (uint64_t k = 0; k < BIG; k++) {
        assert_int_equal(ph_window_has(s->p, 500000 + k), UINT64_MAX);
        assert_int_equal(ph_window_has(s->p, 900000 + k), k); /* stored before: kept */
    }
    ph_harness *h = &s->f->h;
    pthread_mutex_lock(&h->lock);
    h->fail_sync = 0;
    h->fail_write = 0;
    pthread_mutex_unlock(&h->lock);
    assert_true(partition_close(s->p) < 0);
    /* (The files may hold records of A past the acked end, never served.) */
    assert_true(ph_check_acked(s->f, NULL, s->all, A_PARTS + 1) >= s->next);
}

static void ab_free(ab *s)
{
    free_a(s->a);
    free(s->b);
}

/* Reads the partition back: offsets 0..end-1, receive times never going
 * back, each record's server_receive_time its record time; returns the
 * time of offset `at`. */
static int64_t check_times(ph_fixture *f, uint64_t end, uint64_t at)
{
    char dir[96];
    snprintf(dir, sizeof dir, "%s/p", f->root);
    pb_reader *r;
    assert_int_equal(pb_reader_open(&r, dir), 0);
    pb_reader_set_end(r, end);
    int64_t last = 0, t_at = 0;
    for (uint64_t o = 0; o < end; o++) {
        pb_record rec;
        assert_int_equal(pb_reader_next(r, &rec), 0);
        assert_int_equal(rec.offset, o);
        event_view v;
        char err[160];
        assert_int_equal(event_scan(rec.event, rec.event_len, &v, err, sizeof err), 0);
        assert_true(v.server_receive_time.present);
        assert_int_equal(v.server_receive_time.ns, rec.time_ns);
        assert_true(rec.time_ns >= last);
        last = rec.time_ns;
        if (o == at)
            t_at = rec.time_ns;
    }
    pb_reader_close(r);
    return t_at;
}

static void test_admitted_while_append_waits(void **state)
{
    ph_fixture *f = *state;
    ab s;
    if (!ab_open(&s, f, DUPS)) /* B's first DUPS ids repeat A's first ones */
        skip();
    partition *p = s.p;
    ph_batch **a = s.a, *b = s.b;
    uint64_t next = s.next, b_at = s.b_at;
    size_t base = ph_syncs_now(&f->h);
    hold w;
    ab_run(&s, &w, hold_until_ahead);
    assert_true(b->syncs_at_done >= base + 2);
    for (size_t i = 0; i < A_PARTS; i++) {
        assert_true(a[i]->syncs_at_done >= base + 1);
        assert_int_equal(a[i]->part.status, 0);
        for (uint32_t k = 0; k < BIG; k++)
            assert_int_equal(a[i]->ev[k].offset, next + i * BIG + k);
    }
    assert_int_equal(b->part.status, 0);
    assert_true(b->syncs_at_done > a[A_PARTS - 1]->syncs_at_done);
    for (uint32_t k = 0; k < BIG; k++) {
        assert_int_equal(b->ev[k].duplicate, k < DUPS);
        uint64_t want = k < DUPS ? next + k : b_at + k - DUPS;
        assert_int_equal(b->ev[k].offset, want);
        assert_int_equal(ph_window_has(p, k < DUPS ? k : 500000 + k), want);
    }
    uint64_t end = b_at + BIG - DUPS;
    assert_int_equal(partition_end_offset(p), end);
    /* B's round read the clock after A's admission (before or after the
     * hook moved it on): its receive time is its own, never before A's. */
    int64_t t_a = check_times(f, end, next);
    assert_true(check_times(f, end, b_at) >= t_a);
    assert_int_equal(partition_close(p), 0);
    assert_int_equal(ph_check_acked(f, NULL, s.all, A_PARTS + 1), end);
    ab_free(&s);
}

static void test_failed_sync_takes_ahead_ids_out(void **state)
{
    ph_fixture *f = *state;
    ab s;
    if (!ab_open(&s, f, 0))
        skip();
    pthread_mutex_lock(&f->h.lock);
    f->h.fail_sync = EIO;
    pthread_mutex_unlock(&f->h.lock);
    hold w;
    ab_run(&s, &w, hold_until_ahead);
    for (size_t i = 0; i < A_PARTS; i++)
        assert_int_equal(s.a[i]->part.status, -EIO);
    /* B, admitted behind a failed sync: never acked (ab_refused). */
    ab_refused(&s);
    ab_free(&s);
}

/* As hold_until_ahead, then A's later writes fail (EIO). */
static void hold_then_fail(void *arg)
{
    hold *w = arg;
    hold_until_ahead(w);
    pthread_mutex_lock(&w->f->h.lock);
    w->f->h.fail_write = EIO;
    pthread_mutex_unlock(&w->f->h.lock);
}

/* A's append fails after B was admitted ahead during it: B goes back to
 * the queue unadmitted (partition_ahead_discard) and is refused with the
 * failed partition; neither take's ids stay in the window. */
static void test_failed_append_requeues_ahead_parts(void **state)
{
    ph_fixture *f = *state;
    ab s;
    if (!ab_open(&s, f, 0))
        skip();
    hold w;
    ab_run(&s, &w, hold_then_fail);
    ab_refused(&s);
    ab_free(&s);
}

/* Durable callback: counts the records handed on (to live subscribers and
 * replicas) whose suffix is not their own receive time. */
typedef struct live_check {
    _Atomic size_t records, wrong;
} live_check;

static void check_live(void *ctx, partition *p, const live_record *recs, size_t n)
{
    live_check *c = ctx;
    for (size_t i = 0; i < n; i++) {
        uint8_t want[SUFFIX_SLOT];
        size_t len = event_put_receive_time(want, sizeof want, recs[i].time_ns);
        if (recs[i].suffix_len != len || memcmp(recs[i].suffix, want, len) != 0)
            atomic_fetch_add(&c->wrong, 1);
        atomic_fetch_add(&c->records, 1);
    }
}

/* T1's second write (the first after T0's sync began passes: the writer
 * may still see that sync running then, and admits nothing while T0 is
 * pending): the clock moves on, the write waits until T2 is admitted
 * ahead (T0 is acked by then). */
static void hold_t1(void *arg)
{
    hold *w = arg;
    if (w->after > 0) {
        w->after = 0;
        ph_harness *h = &w->f->h;
        pthread_mutex_lock(&h->lock);
        h->write_hook = hold_t1;
        h->write_hook_arg = w;
        pthread_mutex_unlock(&h->lock);
        return;
    }
    atomic_fetch_add(&w->f->h.clock_ns, LATER_NS);
    for (int i = 0; i < WAIT_LIMITS * 1000 && ahead_now(w->p) < w->want; i++)
        nanosleep(&(struct timespec){.tv_nsec = 1000 * 1000}, NULL);
}

/* T0's first write: as hold_until_ahead (T1 admitted ahead), then T1's
 * first write is held by hold_t1 (w[1]). */
static void hold_t0(void *arg)
{
    hold *w = arg;
    hold_until_ahead(&w[0]);
    ph_harness *h = &w->f->h;
    pthread_mutex_lock(&h->lock);
    h->write_hook = hold_t1;
    h->write_hook_arg = &w[1];
    h->write_hook_after = w[1].after;
    pthread_mutex_unlock(&h->lock);
}

/* Events of ~300 B (an Any payload of PAD bytes besides the id): a full
 * take is ~2.4 MB, three staging buffers of the direct write, so its
 * append waits for the helper's writes in the middle too. buf: the
 * batch's bytes (n x BIG_EVENT). */
enum { PAD = 260, BIG_EVENT = 320 };

static void give_big(ph_batch *tb, uint64_t first_seq, uint64_t first_id, uint8_t *buf)
{
    static const uint8_t pad[PAD];
    size_t pos = 0;
    for (uint32_t i = 0; i < tb->b.nevents; i++) {
        char topic[16], id[16];
        uint64_t seq = first_seq + i;
        int tl = snprintf(topic, sizeof topic, "t%llu", (unsigned long long)(seq % 3));
        int il = snprintf(id, sizeof id, "id%08llu", (unsigned long long)(first_id + i));
        uint8_t any[PAD + 16];
        size_t al = wire_put_len_field(any, 1, "x", 1);
        al += wire_put_len_field(any + al, 2, pad, PAD);
        uint8_t *e = buf + pos;
        size_t len = wire_put_len_field(e, 1, topic, (size_t)tl);
        len += wire_put_len_field(e + len, 7, any, al);
        size_t id_at = len + 2;
        len += wire_put_len_field(e + len, 8, id, (size_t)il);
        len += wire_put_varint_field(e + len, 6, seq);
        assert_true(len <= BIG_EVENT);
        tb->ev[i] = (pub_event){.data = e,
                                .len = (uint32_t)len,
                                .topic = e + 2,
                                .topic_len = (uint32_t)tl,
                                .id = e + id_at,
                                .id_len = (uint8_t)il,
                                .offset = UINT64_MAX};
        pos += len;
    }
    tb->b.bytes = buf;
    tb->b.bytes_len = pos;
}

static void test_no_round_while_a_take_is_pending(void **state)
{
    ph_fixture *f = *state;
    ph_harness *h = &f->h;
    live_check live = {0};
    f->opts.durable = check_live;
    f->opts.durable_ctx = &live;
    uint64_t next;
    partition *p = open_ids(f, &next);
    if (!p)
        skip();
    enum { TAKES = 4, PARTS = TAKES * A_PARTS };
    uint64_t ahead = ahead_now(p);
    size_t before = h->done_count, stored = atomic_load(&live.records);
    ph_batch **t = calloc(PARTS, sizeof *t);
    uint8_t *bytes = malloc((size_t)PARTS * BIG * BIG_EVENT);
    assert_true(t && bytes);
    for (size_t i = 0; i < PARTS; i++) {
        t[i] = ph_batch_new(h, p, BIG, next + i * BIG);
        give_big(t[i], next + i * BIG, i * BIG, bytes + i * BIG * BIG_EVENT);
    }
    hold w[2] = {{.f = f, .p = p, .want = ahead + PARTITION_TAKE_EVENTS},
                 {.f = f, .p = p, .want = ahead + 2 * PARTITION_TAKE_EVENTS}};
    pthread_mutex_lock(&h->lock);
    w[1].after = h->sync_calls + 1; /* T0's sync: T1's writes come after it */
    h->gate_at = h->sync_calls + 2; /* T1's sync: held */
    h->write_hook = hold_t0;
    h->write_hook_arg = w;
    h->write_hook_after = 0;
    pthread_mutex_unlock(&h->lock);
    pub_part **parts = calloc(PARTS, sizeof *parts);
    assert_non_null(parts);
    for (size_t i = 0; i < PARTS; i++)
        parts[i] = &t[i]->part;
    ph_queue_parts(p, parts, PARTS);
    free(parts);
    ph_wait_blocked(h); /* T1's sync, held: T2's append waits behind it */
    nanosleep(&(struct timespec){.tv_nsec = 200 * 1000 * 1000}, NULL);
    /* T1 and T2 were admitted ahead; T3 not while T1 is pending (checked
     * once everything is done: a failure leaves no thread at the gate). */
    uint64_t while_pending = ahead_now(p);
    ph_gate(h, false);
    ph_wait_done(h, before + PARTS);
    assert_int_equal(while_pending, ahead + 2 * PARTITION_TAKE_EVENTS);
    for (size_t i = 0; i < PARTS; i++) {
        assert_int_equal(t[i]->part.status, 0);
        for (uint32_t k = 0; k < BIG; k++)
            assert_int_equal(t[i]->ev[k].offset, next + i * BIG + k);
    }
    assert_int_equal(atomic_load(&live.records) - stored, (size_t)PARTS * BIG);
    assert_int_equal(atomic_load(&live.wrong), 0);
    check_times(f, next + PARTS * BIG, next);
    assert_int_equal(partition_close(p), 0);
    assert_int_equal(ph_check_acked(f, NULL, t, PARTS), next + PARTS * BIG);
    for (size_t i = 0; i < PARTS; i++)
        free(t[i]);
    free(t);
    free(bytes);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_admitted_while_append_waits, ph_setup, ph_teardown),
        cmocka_unit_test_setup_teardown(test_failed_sync_takes_ahead_ids_out, ph_setup,
                                        ph_teardown),
        cmocka_unit_test_setup_teardown(test_no_round_while_a_take_is_pending, ph_setup,
                                        ph_teardown),
        cmocka_unit_test_setup_teardown(test_failed_append_requeues_ahead_parts, ph_setup,
                                        ph_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
