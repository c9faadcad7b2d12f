/*
 * Integration: the event-store writes of issue 13 against the real
 * protobusd, through libprotobus as a user would.
 *
 *  - The writer race (Lokad's word counter as a test): 2 and then 8
 *    writers extend one topic each (alone in its partition), 10,000 rounds
 *    each (the 10,000 rounds, for 2 writers and for 8).
 *    Each writer appends "the count so far" with an expectation on the
 *    topic's last offset; a loser learns the real last offset from the
 *    FAILED_PRECONDITION and tries again. Every offset is written exactly
 *    once, by one winner, holding the value its writer computed from the
 *    state it saw: no gap, no interleaving.
 *  - Retry across kill -9 (100 cycles): a publisher gives every
 *    event a unique id and republishes, on a new connection, every event
 *    whose ack it did not see, while the daemon is killed with SIGKILL at
 *    random moments and restarted. The stored log holds every event exactly
 *    once (zero loss, zero duplicates), at the offset its ack named.
 *
 * Threads: the writers and the publisher run on threads of their own, each
 * with its own pb_client; cmocka asserts stay on the main thread (the
 * threads record what they saw).
 */
#include "itest.h"
#include "protobus.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_MS  20000
#define MAX_WRITERS 8
/* Rounds per race (2 writers, then 8) and kill -9 + restart cycles: ~10 s
 * and ~15 s on this machine; a tenth and a fifth of them under
 * ThreadSanitizer (tests/run-tsan sets PB_SANITIZER), which is ~10x slower. */
static uint32_t rounds_per_race = 10000;
static int kill_cycles = 100;
#define BATCH        50 /* events per publish in the retry test */
#define MAX_RETRY_EV 4000000

typedef struct fixture {
    itest_daemon d;
} fixture;

static int setup(void **state)
{
    return itest_fixture_setup(state, sizeof(fixture));
}

static pb_client *connect_port(uint16_t port, char *err, size_t errlen)
{
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)port);
    pb_client_options o;
    pb_client_options_init(&o);
    o.connect_timeout_ms = 2000;
    o.io_timeout_ms = 5000;
    pb_client *c = NULL;
    if (pb_client_connect(&c, addr, &o, err, errlen) != 0)
        return NULL;
    return c;
}

/* ---- the writer race --------------------------------------------------- */

typedef struct race {
    uint16_t port;
    const char *topic;
    uint32_t rounds;
    _Atomic uint32_t wins, losses;
    char problem[256]; /* first inconsistency a writer saw (under lock) */
    pthread_mutex_t lock;
} race;

typedef struct writer {
    race *r;
    int id;
} writer;

static void race_problem(race *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void race_problem(race *r, const char *fmt, ...)
{
    pthread_mutex_lock(&r->lock);
    if (!r->problem[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->problem, sizeof r->problem, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&r->lock);
}

/* One writer: append "count = N" (N = the offset it expects to get) after
 * the last offset it believes the topic has, until the topic holds
 * `rounds` events. Bounded: each round either wins or learns a strictly
 * newer last offset. */
static void *writer_main(void *arg)
{
    writer *w = arg;
    race *r = w->r;
    char err[256];
    pb_client *c = connect_port(r->port, err, sizeof err);
    if (!c) {
        race_problem(r, "writer %d: connect: %s", w->id, err);
        return NULL;
    }
    bool none = true;  /* what this writer knows: no event yet ... */
    uint64_t last = 0; /* ... or this last offset */
    for (uint32_t guard = 0; guard < 4 * r->rounds * MAX_WRITERS; guard++) {
        uint64_t next = none ? 0 : last + 1;
        if (next >= r->rounds)
            break;
        char payload[48];
        int plen =
            snprintf(payload, sizeof payload, "count=%llu by %d", (unsigned long long)next, w->id);
        pb_event ev = {.topic = r->topic, .payload = payload, .payload_len = (size_t)plen};
        const pb_position *pos;
        size_t n;
        if (pb_client_expect_last(c, r->topic, none, last) != 0 || pb_client_publish(c, &ev) != 0) {
            race_problem(r, "writer %d: publish: %s", w->id, pb_client_message(c));
            break;
        }
        int rc = pb_client_flush(c, TIMEOUT_MS, &pos, &n);
        if (rc == 0) {
            if (n != 1 || pos[0].offset != next || pos[0].duplicate)
                race_problem(r, "writer %d: won offset %llu, expected %llu", w->id,
                             n ? (unsigned long long)pos[0].offset : 0ull,
                             (unsigned long long)next);
            atomic_fetch_add(&r->wins, 1);
            none = false;
            last = next;
            continue;
        }
        const pb_server_error *se = pb_client_server_error(c);
        if (rc != PB_ESERVER || !se || se->code != PB_CODE_FAILED_PRECONDITION || !se->has_expect) {
            race_problem(r, "writer %d: flush: %s", w->id, pb_client_message(c));
            break;
        }
        /* The loser learns the real last offset: it must be newer than what
         * it expected (offsets only grow), and name the topic. */
        if (se->actual_none || se->actual_offset < next || se->actual_offset >= r->rounds ||
            strcmp(se->expect_topic, r->topic) != 0 || se->expected_none != none ||
            (!none && se->expected_offset != last))
            race_problem(r, "writer %d: refusal says %s %llu (expected %s %llu), wanted > %llu",
                         w->id, se->actual_none ? "none" : "last",
                         (unsigned long long)se->actual_offset, se->expected_none ? "none" : "last",
                         (unsigned long long)se->expected_offset, (unsigned long long)last);
        atomic_fetch_add(&r->losses, 1);
        none = false;
        last = se->actual_offset;
    }
    pb_client_close(c);
    return NULL;
}

/* Reads the topic from the beginning: `rounds` events at offsets 0.. with
 * "count=<offset>" each. */
static void check_counter(uint16_t port, const char *topic, uint32_t rounds)
{
    char err[256];
    pb_client *c = connect_port(port, err, sizeof err);
    assert_non_null(c);
    const char *pat[] = {topic};
    pb_subscription s = {.patterns = pat, .npatterns = 1, .start = PB_START_BEGINNING};
    assert_int_equal(pb_client_subscribe(c, &s), 0);
    uint32_t seen = 0;
    for (;;) {
        pb_item it;
        assert_int_equal(pb_client_next(c, &it, TIMEOUT_MS), 0);
        if (it.kind == PB_ITEM_CAUGHT_UP)
            break;
        assert_int_equal(it.kind, PB_ITEM_EVENT);
        char want[32];
        int wl = snprintf(want, sizeof want, "count=%u by ", seen);
        assert_int_equal(it.event.offset, seen);
        assert_true(it.event.payload_len > (size_t)wl);
        assert_memory_equal(it.event.payload, want, (size_t)wl);
        seen++;
    }
    assert_int_equal(seen, rounds);
    pb_client_close(c);
}

static void run_race(fixture *f, const char *topic, int nwriters)
{
    race r = {.port = f->d.port, .topic = topic, .rounds = rounds_per_race};
    pthread_mutex_init(&r.lock, NULL);
    pthread_t t[MAX_WRITERS];
    writer w[MAX_WRITERS];
    uint64_t t0 = itest_now_ms();
    for (int i = 0; i < nwriters; i++) {
        w[i] = (writer){.r = &r, .id = i};
        assert_int_equal(pthread_create(&t[i], NULL, writer_main, &w[i]), 0);
    }
    for (int i = 0; i < nwriters; i++)
        pthread_join(t[i], NULL);
    printf("race of %d writers on %s: %u rounds won, %u lost (FAILED_PRECONDITION), %llu ms\n",
           nwriters, topic, atomic_load(&r.wins), atomic_load(&r.losses),
           (unsigned long long)(itest_now_ms() - t0));
    pthread_mutex_destroy(&r.lock);
    if (r.problem[0])
        fail_msg("%s", r.problem);
    assert_int_equal(atomic_load(&r.wins), rounds_per_race); /* each offset won exactly once */
    check_counter(f->d.port, topic, rounds_per_race);
}

static void test_writer_race(void **state)
{
    fixture *f = *state;
    /* One partition per counter: the topic's offsets are its partition's,
     * so "no gap" means offsets 0 .. rounds_per_race - 1. */
    assert_int_equal(itest_daemon_start(&f->d, NULL,
                                        "[partition two]\nmatch = counter\\.two\n"
                                        "[partition eight]\nmatch = counter\\.eight\n"
                                        "[partition rest]\nmatch = .*\n"),
                     0);
    run_race(f, "counter.two", 2);
    run_race(f, "counter.eight", 8);
    assert_int_equal(itest_daemon_stop(&f->d), 0);
}

/* ---- retries across kill -9 ------------------------------------------------ */

typedef struct retrier {
    _Atomic uint32_t port;      /* the daemon's port now (0 while it is down) */
    _Atomic uint64_t final_n;   /* publish events [0, final_n) and stop */
    _Atomic uint64_t generated; /* events given an id so far */
    _Atomic bool stop;
    uint64_t *offset; /* per event: the confirmed offset + 1 (0: not confirmed) */
    uint64_t acks, dup_acks;
    _Atomic uint64_t reconnects;
    char problem[256];
} retrier;

/* Publishes events k = 0, 1, ... with id "ev-k", BATCH at a time from the
 * first one not yet confirmed, flushes, marks those confirmed; reconnects
 * (to whatever port the daemon has now) whenever the connection breaks. */
static void *retrier_main(void *arg)
{
    retrier *r = arg;
    pb_client *c = NULL;
    uint64_t lo = 0;
    while (!atomic_load(&r->stop)) {
        uint64_t final_n = atomic_load(&r->final_n);
        while (lo < final_n && r->offset[lo])
            lo++;
        if (lo >= final_n)
            break;
        if (!c) {
            uint32_t port = atomic_load(&r->port);
            char err[256];
            if (port == 0 || !(c = connect_port((uint16_t)port, err, sizeof err))) {
                usleep(2000);
                continue;
            }
            atomic_fetch_add(&r->reconnects, 1);
        }
        uint64_t hi = lo;
        char id[32], payload[32];
        for (uint64_t k = lo; k < final_n && hi - lo < BATCH; k++) {
            if (r->offset[k])
                continue;
            snprintf(id, sizeof id, "ev-%llu", (unsigned long long)k);
            snprintf(payload, sizeof payload, "payload %llu", (unsigned long long)k);
            pb_event ev = {.topic = "retry", .payload = payload, .payload_len = strlen(payload)};
            if (pb_client_publish_id(c, &ev, id) != 0)
                break;
            if (k + 1 > atomic_load(&r->generated))
                atomic_store(&r->generated, k + 1);
            hi = k + 1;
        }
        const pb_position *pos;
        size_t n = 0;
        int rc = pb_client_flush(c, 3000, &pos, &n);
        /* Positions are in publish order: the events of [lo, hi) not yet
         * confirmed, in that order. */
        size_t i = 0;
        for (uint64_t k = lo; k < hi && i < n; k++) {
            if (r->offset[k])
                continue;
            const pb_position *p = &pos[i++];
            if (p->status != 0)
                continue;
            r->offset[k] = p->offset + 1;
            r->acks++;
            r->dup_acks += p->duplicate;
        }
        if (rc != 0) {
            if (rc == PB_ESERVER && !r->problem[0])
                snprintf(r->problem, sizeof r->problem, "server refused: %s", pb_client_message(c));
            pb_client_close(c);
            c = NULL;
        }
    }
    pb_client_close(c);
    return NULL;
}

static void test_retry_across_kill9(void **state)
{
    fixture *f = *state;
    /* The default fsync = always: an ack means durable, and kill -9 may land
     * between the fsync and the ack (the retry's case). */
    assert_int_equal(itest_daemon_start(&f->d, NULL, NULL), 0);
    retrier r = {.final_n = MAX_RETRY_EV};
    r.offset = calloc(MAX_RETRY_EV, sizeof *r.offset);
    assert_non_null(r.offset);
    atomic_store(&r.port, f->d.port);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, retrier_main, &r), 0);
    srand(13);
    uint64_t t0 = itest_now_ms();
    for (int cycle = 0; cycle < kill_cycles; cycle++) {
        /* Each kill lands while the publisher is connected and publishing. */
        for (int i = 0; i < 5000 && atomic_load(&r.reconnects) <= (uint64_t)cycle; i++)
            usleep(1000);
        usleep((useconds_t)(10000 + rand() % 50000));
        atomic_store(&r.port, 0);
        itest_daemon_kill(&f->d);
        assert_int_equal(itest_daemon_restart(&f->d), 0);
        atomic_store(&r.port, f->d.port);
    }
    /* Stop generating: everything given an id so far must get confirmed. */
    atomic_store(&r.final_n, atomic_load(&r.generated));
    uint64_t deadline = itest_now_ms() + 60000;
    bool finished = false;
    while (!finished && itest_now_ms() < deadline) {
        usleep(10000);
        finished = pthread_tryjoin_np(t, NULL) == 0;
    }
    if (!finished) {
        atomic_store(&r.stop, true);
        pthread_join(t, NULL);
        fail_msg("the publisher did not get every event confirmed within 60 s");
    }
    uint64_t total = atomic_load(&r.final_n);
    printf("kill -9: %d cycles, %llu events, %llu acks (%llu duplicates of a stored event), "
           "%llu connections, %llu ms\n",
           kill_cycles, (unsigned long long)total, (unsigned long long)r.acks,
           (unsigned long long)r.dup_acks, (unsigned long long)atomic_load(&r.reconnects),
           (unsigned long long)(itest_now_ms() - t0));
    if (r.problem[0])
        fail_msg("%s", r.problem);
    assert_true(total > 0);

    /* The log: every event exactly once, at the offset its ack named. */
    char err[256];
    pb_client *c = connect_port(f->d.port, err, sizeof err);
    assert_non_null(c);
    const char *pat[] = {"retry"};
    pb_subscription s = {.patterns = pat, .npatterns = 1, .start = PB_START_BEGINNING};
    assert_int_equal(pb_client_subscribe(c, &s), 0);
    uint8_t *seen = calloc(total, 1);
    assert_non_null(seen);
    uint64_t events = 0;
    for (;;) {
        pb_item it;
        assert_int_equal(pb_client_next(c, &it, TIMEOUT_MS), 0);
        if (it.kind == PB_ITEM_CAUGHT_UP)
            break;
        assert_int_equal(it.kind, PB_ITEM_EVENT);
        size_t id_len;
        const char *id = pb_received_event_id(&it.event, &id_len);
        unsigned long long k;
        char idbuf[80];
        assert_true(id && id_len > 0 && id_len < sizeof idbuf);
        memcpy(idbuf, id, id_len);
        idbuf[id_len] = '\0';
        assert_int_equal(sscanf(idbuf, "ev-%llu", &k), 1);
        assert_true(k < total);
        if (seen[k])
            fail_msg("event %s stored twice (again at offset %llu)", idbuf,
                     (unsigned long long)it.event.offset);
        seen[k] = 1;
        if (r.offset[k] != it.event.offset + 1)
            fail_msg("event %s is at offset %llu, its ack said %llu", idbuf,
                     (unsigned long long)it.event.offset, (unsigned long long)(r.offset[k] - 1));
        events++;
    }
    assert_int_equal(events, total); /* none lost */
    pb_client_close(c);
    free(seen);
    free(r.offset);
    assert_int_equal(itest_daemon_stop(&f->d), 0);
}

int main(void)
{
    if (getenv("PB_SANITIZER")) {
        rounds_per_race = 500;
        kill_cycles = 20;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_writer_race, setup, itest_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_retry_across_kill9, setup, itest_fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
