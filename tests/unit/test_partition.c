/*
 * test_partition - the partition writer: offsets, receive times and stored
 * bytes; group commit; acks only after the covering fdatasync; failure
 * handling; close draining the queue; reopen continuing the offsets; the
 * interval and never policies.
 *
 * The harness (tests/lib/partharness.h): the test thread plays the loop
 * thread; an instrumented fileio counts and holds syncs and injects errors.
 */
#include "partharness.h"
#include "testfs.h"
#include "fileio.h"
#include "frame.h"
#include "partition.h"
#include "pb_errors.h"
#include "reader.h"
#include "record.h"
#include "wire.h"

#include <errno.h>
#include <limits.h>
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
    ph_fixture *f = *state;
    partition *p = ph_open(f);
    assert_string_equal(partition_name(p), "p");
    assert_int_equal(partition_end_offset(p), 0);

    ph_batch *b1 = ph_publish(f, p, 3, 0);
    assert_int_equal(b1->part.status, 0);
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(b1->ev[i].offset, i);
        assert_int_equal(b1->ev[i].time_ns, 1700000000123456789ll);
    }
    assert_int_equal(partition_end_offset(p), 3);

    /* The clock goes back: receive times do not. */
    atomic_store(&f->h.clock_ns, 1600000000000000000ll);
    ph_batch *b2 = ph_publish(f, p, 5, 3);
    for (uint32_t i = 0; i < 5; i++) {
        assert_int_equal(b2->ev[i].offset, 3 + i);
        assert_int_equal(b2->ev[i].time_ns, 1700000000123456789ll);
    }
    atomic_store(&f->h.clock_ns, 1800000000000000001ll);
    ph_batch *b3 = ph_publish(f, p, 1, 8);
    assert_int_equal(b3->ev[0].offset, 8);
    assert_int_equal(b3->ev[0].time_ns, 1800000000000000001ll);
    assert_int_equal(partition_end_offset(p), 9);
    assert_int_equal(partition_status(p), 0);

    ph_check_files(f, 9);

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
    ph_fixture *f = *state;
    ph_harness *h = &f->h;
    partition *p = ph_open(f);
    /* The first append creates the segment; count syncs from after it. */
    free(ph_publish(f, p, 1, 0));
    size_t base = ph_syncs_now(h);

    /* A slow disk: the fdatasync covering batch A is held ... */
    ph_batch *a = ph_batch_new(h, p, 2, 1);
    ph_submit_held(h, p, a);
    /* ... while 50 more batches arrive. */
    enum { N = 50 };
    ph_batch *more[N];
    for (size_t i = 0; i < N; i++) {
        more[i] = ph_batch_new(h, p, 1 + i % 4, 0);
        partition_submit(p, &more[i]->part);
    }
    /* Nothing is acknowledged while the sync covering it has not returned. */
    pthread_mutex_lock(&h->lock);
    size_t done_while_held = h->done_count;
    pthread_mutex_unlock(&h->lock);
    assert_int_equal(done_while_held, 1);
    assert_int_equal(a->part.status, 1);

    ph_gate(h, false);
    ph_wait_done(h, 2 + N);
    /* One sync for A, one for everything that queued up behind it. */
    assert_int_equal(ph_syncs_now(h) - base, 2);
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
    ph_fixture *f = *state;
    ph_harness *h = &f->h;
    partition *p = ph_open(f);
    free(ph_publish(f, p, 2, 0));
    f->h.check_durable = false; /* the failed take leaves unsynced bytes behind */

    pthread_mutex_lock(&h->lock);
    h->fail_sync = EIO;
    size_t calls = h->sync_calls;
    pthread_mutex_unlock(&h->lock);
    ph_batch *x = ph_publish(f, p, 3, 2);
    assert_int_equal(x->part.status, -EIO);
    assert_int_equal(partition_status(p), -EIO);
    assert_int_equal(partition_end_offset(p), 2); /* nothing of x became visible */
    for (uint32_t i = 0; i < 3; i++)
        assert_int_equal(x->ev[i].offset, UINT64_MAX);

    /* The disk "recovers": the partition must not retry and then ack. */
    pthread_mutex_lock(&h->lock);
    h->fail_sync = 0;
    pthread_mutex_unlock(&h->lock);
    ph_batch *y = ph_publish(f, p, 1, 2);
    assert_int_equal(y->part.status, PB_EFAILED);
    ph_batch *z = ph_publish(f, p, 4, 2);
    assert_int_equal(z->part.status, PB_EFAILED);
    pthread_mutex_lock(&h->lock);
    /* x's failed sync and the log's sync of its cut back to the durable
     * end (server/log_cut.c), never one more. */
    assert_int_equal(h->sync_calls, calls + 2);
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
    ph_fixture *f = *state;
    ph_harness *h = &f->h;
    partition *p = ph_open(f);
    free(ph_publish(f, p, 1, 0));
    pthread_mutex_lock(&h->lock);
    h->fail_write = ENOSPC;
    size_t calls = h->sync_calls;
    pthread_mutex_unlock(&h->lock);
    ph_batch *x = ph_publish(f, p, 2, 1);
    assert_int_equal(x->part.status, -ENOSPC);
    assert_int_equal(partition_status(p), -ENOSPC);
    pthread_mutex_lock(&h->lock);
    h->fail_write = 0;
    assert_int_equal(h->sync_calls, calls); /* no sync after a failed write */
    pthread_mutex_unlock(&h->lock);
    ph_batch *y = ph_publish(f, p, 2, 1);
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
    ph_fixture *f = *state;
    ph_harness *h = &f->h;
    partition *p = ph_open(f);
    free(ph_publish(f, p, 1, 0));

    /* Hold the writer in a sync so that the next batches are surely queued
     * when the close begins. */
    ph_batch *a = ph_batch_new(h, p, 1, 1);
    ph_submit_held(h, p, a);
    enum { N = 10 };
    ph_batch *queued[N];
    uint64_t seq = 2;
    for (size_t i = 0; i < N; i++) {
        queued[i] = ph_batch_new(h, p, 3, seq);
        seq += 3;
        partition_submit(p, &queued[i]->part);
    }
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, closer, p), 0);
    ph_gate(h, false);
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
    p = ph_open(f);
    assert_int_equal(partition_end_offset(p), seq);
    topic_probe t1 = {.name = "t1"};
    assert_int_equal(partition_foreach_topic(p, 0, probe_topic, &t1), 3);
    uint64_t want_t1[] = {22, 25, 28, 31}; /* the last 4 offsets = 1 (mod 3) below 32 */
    assert_int_equal(t1.count, 4);
    assert_memory_equal(t1.offsets, want_t1, sizeof want_t1);
    ph_batch *b = ph_publish(f, p, 2, seq);
    assert_int_equal(b->ev[0].offset, seq);
    assert_int_equal(b->ev[1].offset, seq + 1);
    assert_int_equal(partition_close(p), 0);
    ph_check_files(f, seq + 2);
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
    ph_fixture *f = *state;
    f->opts.idle_ms = 1000;
    partition *p = ph_open(f);
    assert_false(partition_writer_running(p));
    assert_int_equal(fds_under(f->root), 0);

    ph_batch *a = ph_batch_new(&f->h, p, 3, 0);
    partition_submit(p, &a->part);
    /* Set by the submit itself; cleared only idle_ms after the work. */
    assert_true(partition_writer_running(p));
    ph_wait_done(&f->h, 1);
    assert_int_equal(a->part.status, 0);
    wait_dormant(p);
    assert_int_equal(fds_under(f->root), 0);

    /* Woken again: the files reopen, offsets continue. */
    ph_batch *b = ph_publish(f, p, 2, 3);
    assert_int_equal(b->part.status, 0);
    assert_int_equal(b->ev[0].offset, 3);
    wait_dormant(p);
    assert_int_equal(fds_under(f->root), 0);
    for (uint64_t seq = 5; seq < 8; seq++)
        free(ph_publish(f, p, 1, seq));
    assert_int_equal(ph_early_acks(&f->h), 0);
    assert_int_equal(partition_close(p), 0);
    ph_check_files(f, 8);
    free(a);
    free(b);

    /* Closing a dormant partition saves its topics; reopening finds all. */
    f->opts.idle_ms = 1;
    p = ph_open(f);
    assert_int_equal(partition_end_offset(p), 8);
    free(ph_publish(f, p, 1, 8));
    wait_dormant(p);
    assert_int_equal(partition_close(p), 0);
    ph_check_files(f, 9);
}

static void test_interval_policy(void **state)
{
    ph_fixture *f = *state;
    ph_harness *h = &f->h;
    h->check_durable = false; /* acks do not wait for the sync under this policy */
    f->opts.fsync = PARTITION_FSYNC_INTERVAL;
    f->opts.fsync_interval_ms = 3600 * 1000;
    partition *p = ph_open(f);
    free(ph_publish(f, p, 1, 0));
    size_t base = ph_syncs_now(h);
    for (uint64_t i = 1; i < 10; i += 3)
        free(ph_publish(f, p, 3, i));
    /* Acknowledged without a sync: the interval has not passed. */
    assert_int_equal(ph_syncs_now(h), base);
    assert_int_equal(partition_end_offset(p), 10);
    /* Close syncs what is pending. */
    assert_int_equal(partition_close(p), 0);
    assert_true(ph_syncs_now(h) > base);
    ph_check_files(f, 10);

    /* A short interval: the writer syncs on its own once idle. */
    f->opts.fsync_interval_ms = 1;
    p = ph_open(f);
    base = ph_syncs_now(h);
    free(ph_publish(f, p, 2, 10));
    ph_wait_syncs(h, base + 1);
    assert_int_equal(partition_close(p), 0);
    ph_check_files(f, 12);
}

/* A standby's take is synced before it completes whatever the fsync
 * policy: its completion becomes a ReplicaAck, which says "durable here"
 * (FORMAT.md 4.9) and which a synchronous primary acks its publishers on. */
static void test_replica_take_synced_under_interval(void **state)
{
    ph_fixture *f = *state;
    ph_harness *h = &f->h;
    h->check_durable = true; /* a done() before the sync counts as an early ack */
    f->opts.fsync = PARTITION_FSYNC_INTERVAL;
    f->opts.fsync_interval_ms = 3600 * 1000;
    partition *p = ph_open(f);
    size_t base = ph_syncs_now(h);
    for (uint64_t first = 0; first < 6; first += 3) {
        ph_batch *tb = ph_batch_new(h, p, 3, first);
        tb->b.replica = 1;
        for (uint32_t i = 0; i < 3; i++) {
            tb->ev[i].offset = first + i;
            tb->ev[i].time_ns = 1700000000000000000ll + (int64_t)(first + i);
        }
        pthread_mutex_lock(&h->lock);
        size_t done = h->done_count;
        pthread_mutex_unlock(&h->lock);
        partition_submit(p, &tb->part);
        ph_wait_done(h, done + 1);
        assert_int_equal(tb->part.status, 0);
        assert_true(tb->syncs_at_done > base);
        base = tb->syncs_at_done;
        free(tb);
    }
    assert_int_equal(ph_early_acks(h), 0);
    assert_int_equal(partition_end_offset(p), 6);
    assert_int_equal(partition_close(p), 0);
}

/* A standby's sealed record whose header does not fit the log (its offset
 * is not the next) is refused with nothing written, and its far-future time
 * does not count: the next ordinary take is stamped from the clock. */
static void test_refused_sealed_take_leaves_last_time(void **state)
{
    ph_fixture *f = *state;
    ph_harness *h = &f->h;
    h->check_durable = false;
    partition *p = ph_open(f);
    const int64_t far = 4000000000000000000ll; /* year 2096 */
    ph_batch *tb = ph_batch_new(h, p, 1, 0);
    tb->b.replica = 1;
    /* The record: a header claiming offset 5, then the event's bytes. */
    static uint8_t rec[PB_RECORD_HEADER_SIZE + 64];
    memcpy(rec + PB_RECORD_HEADER_SIZE, tb->ev[0].data, tb->ev[0].len);
    assert_int_equal(
        record_encode_header(rec, 5, far, rec + PB_RECORD_HEADER_SIZE, tb->ev[0].len, NULL, 0), 0);
    tb->ev[0].data = rec + PB_RECORD_HEADER_SIZE;
    tb->ev[0].topic = rec + PB_RECORD_HEADER_SIZE + 2;
    tb->ev[0].sealed = 1;
    tb->ev[0].offset = 0;
    tb->ev[0].time_ns = far;
    pthread_mutex_lock(&h->lock);
    size_t done = h->done_count;
    pthread_mutex_unlock(&h->lock);
    partition_submit(p, &tb->part);
    ph_wait_done(h, done + 1);
    assert_int_equal(tb->part.status, PB_EINVAL);
    assert_int_equal(partition_end_offset(p), 0);
    free(tb);
    free(ph_publish(f, p, 1, 0));
    assert_int_equal(partition_end_offset(p), 1);
    assert_int_equal(partition_close(p), 0);
    pb_reader *r;
    pb_record got;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/p", f->root);
    assert_int_equal(pb_reader_open(&r, dir), 0);
    assert_int_equal(pb_reader_next(r, &got), 0);
    assert_true(got.time_ns < far);
    pb_reader_close(r);
}

static void test_never_policy(void **state)
{
    ph_fixture *f = *state;
    ph_harness *h = &f->h;
    h->check_durable = false;
    f->opts.fsync = PARTITION_FSYNC_NEVER;
    partition *p = ph_open(f);
    free(ph_publish(f, p, 1, 0));
    size_t base = ph_syncs_now(h);
    for (uint64_t i = 1; i < 13; i += 4)
        free(ph_publish(f, p, 4, i));
    assert_int_equal(ph_syncs_now(h), base);
    assert_int_equal(partition_end_offset(p), 13);
    assert_int_equal(partition_close(p), 0);
    ph_check_files(f, 13);
}

static void test_oversized_event_refused_alone(void **state)
{
    ph_fixture *f = *state;
    ph_harness *h = &f->h;
    f->opts.log.max_record_bytes = 100;
    partition *p = ph_open(f);
    free(ph_publish(f, p, 1, 0));

    /* Hold the writer so the big and the small batch are taken together. */
    ph_batch *a = ph_batch_new(h, p, 1, 1);
    ph_submit_held(h, p, a);
    ph_batch *big = ph_batch_new(h, p, 2, 2);
    static uint8_t big_event[160];
    size_t len = wire_put_len_field(big_event, 1, "t2", 2);
    len += wire_put_len_field(big_event + len, 15, big_event + 100, 60); /* unknown field */
    assert_true(len < 100);                                              /* fits alone ... */
    len += wire_put_len_field(big_event + len, 15, big_event + 100, 30);
    assert_true(len > 90); /* ... not with the suffix */
    big->ev[1].data = big_event;
    big->ev[1].len = (uint32_t)len;
    partition_submit(p, &big->part);
    ph_batch *small = ph_batch_new(h, p, 2, 2);
    partition_submit(p, &small->part);
    ph_gate(h, false);
    ph_wait_done(h, 4);

    assert_int_equal(a->part.status, 0);
    assert_int_equal(big->part.status, PB_ETOOBIG);
    assert_int_equal(small->part.status, 0);
    assert_int_equal(small->ev[0].offset, 2);
    assert_int_equal(small->ev[1].offset, 3);
    assert_int_equal(partition_status(p), 0);
    assert_int_equal(partition_end_offset(p), 4);
    assert_int_equal(partition_close(p), 0);
    ph_check_files(f, 4);
    free(a);
    free(big);
    free(small);
}

static void test_empty_part_and_bad_options(void **state)
{
    ph_fixture *f = *state;
    partition *p = ph_open(f);
    ph_batch *e = ph_publish(f, p, 0, 0);
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
        cmocka_unit_test_setup_teardown(test_offsets_times_and_stored_bytes, ph_setup, ph_teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_and_ack_after_sync, ph_setup,
                                        ph_teardown),
        cmocka_unit_test_setup_teardown(test_sync_failure_fails_the_partition, ph_setup,
                                        ph_teardown),
        cmocka_unit_test_setup_teardown(test_write_failure_fails_the_partition, ph_setup,
                                        ph_teardown),
        cmocka_unit_test_setup_teardown(test_close_drains_and_reopen_continues, ph_setup,
                                        ph_teardown),
        cmocka_unit_test_setup_teardown(test_idle_partition_holds_no_descriptor_or_thread, ph_setup,
                                        ph_teardown),
        cmocka_unit_test_setup_teardown(test_interval_policy, ph_setup, ph_teardown),
        cmocka_unit_test_setup_teardown(test_never_policy, ph_setup, ph_teardown),
        cmocka_unit_test_setup_teardown(test_replica_take_synced_under_interval, ph_setup,
                                        ph_teardown),
        cmocka_unit_test_setup_teardown(test_refused_sealed_take_leaves_last_time, ph_setup,
                                        ph_teardown),
        cmocka_unit_test_setup_teardown(test_oversized_event_refused_alone, ph_setup, ph_teardown),
        cmocka_unit_test_setup_teardown(test_empty_part_and_bad_options, ph_setup, ph_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
