/*
 * test_fanout_wake - how partition writers wake a subscription thread
 * (fanout.h, fanout_member.sleeping): a thread that sleeps gets exactly one
 * signal, however many records and batches come before it runs; a thread
 * that is awake gets none (it looks at its queue before sleeping); every
 * record still reaches the queue, in order; the signal goes with
 * fanout_acked (through the waker thread), after the acks, not with
 * fanout_durable. The writer is
 * driven directly through fanout_durable and fanout_acked, as a partition
 * calls them; the partition is only a key there (a match-all subscription
 * needs nothing else of it).
 */
#include "fanout.h"
#include "livequeue.h"
#include "patterns.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cmocka.h>

/* Wake-ups signalled on efd (reads and clears the counter). The waker
 * thread signals soon after fanout_acked: wait for it (at most 5 s), or,
 * when none is expected, 50 ms for one that should not come. */
static uint64_t take_wakes(int efd, uint64_t expected)
{
    struct pollfd pf = {efd, POLLIN, 0};
    if (poll(&pf, 1, expected ? 5000 : 50) <= 0)
        return 0;
    uint64_t v = 0;
    if (read(efd, &v, sizeof v) < 0)
        return 0;
    return v;
}

static void publish(fanout_writer *w, void *part, uint64_t first, size_t n)
{
    live_record recs[8];
    static const uint8_t topic[] = "t.1", data[] = "payload";
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++)
        recs[i] = (live_record){.offset = first + i,
                                .time_ns = 1,
                                .topic = topic,
                                .topic_len = 3,
                                .data = data,
                                .len = sizeof data - 1};
    fanout_durable(w, part, recs, n);
    fanout_acked(w);
}

static void test_one_wake_per_sleep(void **state)
{
    (void)state;
    fanout *fo;
    fanout_options o = {.slots = 4};
    assert_int_equal(fanout_create(&fo, &o), 0);
    const char *all[] = {".*"};
    pattern_set *ps;
    char err[256];
    assert_int_equal(patterns_compile(all, 1, &ps, err, sizeof err), 0);
    fanout_member m = {.slot = 1,
                       .ps = ps,
                       .patterns = all,
                       .npatterns = 1,
                       .min_time_ns = INT64_MIN,
                       .peer = "test"};
    m.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    assert_true(m.efd >= 0);
    assert_int_equal(pthread_mutex_init(&m.mu, NULL), 0);
    assert_int_equal(livequeue_create(&m.q, 1 << 20, fanout_pool(fo)), 0);
    assert_int_equal(fanout_add(fo, &m, err, sizeof err), 0);
    fanout_writer *w;
    assert_int_equal(fanout_writer_get(fo, "p", &w), 0);
    static int part_key;

    /* Awake (as after registration: replaying): nothing signalled. */
    publish(w, &part_key, 0, 3);
    assert_int_equal(take_wakes(m.efd, 0), 0);

    /* Asleep: one signal for two batches of several records. */
    pthread_mutex_lock(&m.mu);
    m.sleeping = true;
    pthread_mutex_unlock(&m.mu);
    publish(w, &part_key, 3, 4);
    publish(w, &part_key, 7, 2);
    assert_int_equal(take_wakes(m.efd, 1), 1);
    assert_false(m.sleeping);

    /* Asleep again: signalled again, once the acks are out. */
    m.sleeping = true;
    static const uint8_t topic[] = "t.1", data[] = "x";
    live_record one = {
        .offset = 9, .time_ns = 1, .topic = topic, .topic_len = 3, .data = data, .len = 1};
    fanout_durable(w, (void *)&part_key, &one, 1);
    assert_int_equal(take_wakes(m.efd, 0), 0);
    assert_false(m.sleeping); /* the writer took it on: no other writer signals */
    fanout_acked(w);
    assert_int_equal(take_wakes(m.efd, 1), 1);
    fanout_acked(w); /* nothing pending: nothing more */
    assert_int_equal(take_wakes(m.efd, 0), 0);

    /* Every record is queued, in offset order. */
    lq_span sp;
    lq_entry e;
    livequeue_peek(m.q, &sp);
    uint64_t want = 0;
    while (livequeue_read(m.q, &sp, &e) == 0)
        assert_int_equal(e.offset, want++);
    assert_int_equal(want, 10);
    livequeue_consume(m.q, &sp);

    fanout_remove(fo, &m);
    livequeue_destroy(m.q);
    pthread_mutex_destroy(&m.mu);
    close(m.efd);
    patterns_free(ps);
    fanout_destroy(fo);
}

/* The waker's fast path (fanout_fast) never waits for a member's lock: a
 * writer holding it (pushing a take) makes the waker signal the thread
 * instead (-1), at once. Without the trylock the call blocks until the
 * test lets go of the lock, 2 s later. */
static int fast_never(void *ctx, lq_span *sp, uint8_t *scratch, size_t cap, size_t *used)
{
    (void)ctx, (void)sp, (void)scratch, (void)cap;
    *used = 0;
    return FANOUT_FAST_DONE;
}

struct fast_call {
    fanout_member *m;
    int rc;
    atomic_bool done;
};

static void *call_fast(void *arg)
{
    struct fast_call *fc = arg;
    static uint8_t scratch[256];
    size_t used;
    fc->rc = fanout_fast(fc->m, scratch, sizeof scratch, &used);
    atomic_store(&fc->done, true);
    return NULL;
}

static void test_fast_path_does_not_wait_for_a_writer(void **state)
{
    (void)state;
    /* breached: not eligible, decided before the queue is looked at */
    fanout_member m = {.slot = 1, .fast = fast_never, .idle = true, .breached = true};
    assert_int_equal(pthread_mutex_init(&m.mu, NULL), 0);
    assert_int_equal(pthread_cond_init(&m.fast_cv, NULL), 0);
    pthread_mutex_lock(&m.mu); /* a writer pushing */
    struct fast_call fc = {.m = &m, .rc = 99};
    atomic_init(&fc.done, false);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, call_fast, &fc), 0);
    for (int i = 0; i < 200 && !atomic_load(&fc.done); i++)
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    bool returned = atomic_load(&fc.done);
    pthread_mutex_unlock(&m.mu);
    pthread_join(t, NULL);
    assert_true(returned);
    assert_int_equal(fc.rc, -1);
    pthread_cond_destroy(&m.fast_cv);
    pthread_mutex_destroy(&m.mu);
}

/* The waker lets go of the list lock after SIGNAL_FAST_BYTES (256 KiB) of
 * fast-path sends, not only every 64 slots: a subscription registering
 * (exclusive hold, which the writers' shared holds queue behind) waits for
 * 4 deliveries of 64 KiB, not 64. Eight idle members each "send" 64 KiB;
 * a ninth registers during the first delivery; by the last one it must be
 * in. Without the budget it waits for all eight (the last one sees it
 * absent after waiting 1 s). */
#define BIG_N 8
static atomic_bool big_added, big_adding;
static atomic_int big_calls, big_finished;
static atomic_bool big_seen_in_time;

static int fast_big(void *ctx, lq_span *sp, uint8_t *scratch, size_t cap, size_t *used)
{
    (void)ctx, (void)sp, (void)scratch, (void)cap;
    *used = 64 * 1024;
    int call = atomic_fetch_add(&big_calls, 1) + 1;
    if (call == 1) { /* give the registering thread time to queue for the lock */
        while (!atomic_load(&big_adding))
            nanosleep(&(struct timespec){0, 1000 * 1000}, NULL);
        nanosleep(&(struct timespec){0, 300 * 1000 * 1000}, NULL);
    }
    if (call == BIG_N) {
        for (int i = 0; i < 100 && !atomic_load(&big_added); i++)
            nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
        atomic_store(&big_seen_in_time, atomic_load(&big_added));
    }
    atomic_fetch_add(&big_finished, 1);
    return FANOUT_FAST_DONE;
}

struct add_call {
    fanout *fo;
    fanout_member *m;
};

static void *add_later(void *arg)
{
    struct add_call *ac = arg;
    while (atomic_load(&big_calls) == 0)
        nanosleep(&(struct timespec){0, 1000 * 1000}, NULL);
    char err[256];
    atomic_store(&big_adding, true);
    assert_int_equal(fanout_add(ac->fo, ac->m, err, sizeof err), 0);
    atomic_store(&big_added, true);
    return NULL;
}

static void member_init(fanout *fo, fanout_member *m, uint32_t slot, pattern_set *ps,
                        const char **all)
{
    *m = (fanout_member){.slot = slot,
                         .ps = ps,
                         .patterns = all,
                         .npatterns = 1,
                         .min_time_ns = INT64_MIN,
                         .peer = "test",
                         .fast = fast_big,
                         .idle = true,
                         .sleeping = true};
    m->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    assert_true(m->efd >= 0);
    assert_int_equal(pthread_mutex_init(&m->mu, NULL), 0);
    assert_int_equal(pthread_cond_init(&m->fast_cv, NULL), 0);
    assert_int_equal(livequeue_create(&m->q, 1 << 20, fanout_pool(fo)), 0);
}

static void test_waker_lets_go_after_byte_budget(void **state)
{
    (void)state;
    fanout *fo;
    fanout_options o = {.slots = BIG_N + 2};
    assert_int_equal(fanout_create(&fo, &o), 0);
    const char *all[] = {".*"};
    pattern_set *ps;
    char err[256];
    assert_int_equal(patterns_compile(all, 1, &ps, err, sizeof err), 0);
    static fanout_member ms[BIG_N + 1];
    for (uint32_t i = 0; i <= BIG_N; i++)
        member_init(fo, &ms[i], i, ps, all);
    for (uint32_t i = 0; i < BIG_N; i++)
        assert_int_equal(fanout_add(fo, &ms[i], err, sizeof err), 0);
    atomic_store(&big_calls, 0);
    atomic_store(&big_added, false);
    atomic_store(&big_adding, false);
    atomic_store(&big_seen_in_time, false);
    atomic_store(&big_finished, 0);
    struct add_call ac = {fo, &ms[BIG_N]};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, add_later, &ac), 0);
    fanout_writer *w;
    assert_int_equal(fanout_writer_get(fo, "p", &w), 0);
    static int part_key;
    publish(w, &part_key, 0, 1);
    pthread_join(t, NULL);
    for (int i = 0; i < 500 && atomic_load(&big_finished) < BIG_N; i++)
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    assert_int_equal(atomic_load(&big_finished), BIG_N);
    assert_true(atomic_load(&big_seen_in_time));
    for (uint32_t i = 0; i <= BIG_N; i++) {
        fanout_remove(fo, &ms[i]);
        livequeue_destroy(ms[i].q);
        pthread_cond_destroy(&ms[i].fast_cv);
        pthread_mutex_destroy(&ms[i].mu);
        close(ms[i].efd);
    }
    patterns_free(ps);
    fanout_destroy(fo);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_wake_per_sleep),
        cmocka_unit_test(test_fast_path_does_not_wait_for_a_writer),
        cmocka_unit_test(test_waker_lets_go_after_byte_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
