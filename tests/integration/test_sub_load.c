/*
 * Integration under load, through libprotobus against the real protobusd
 * (issue 3):
 *  - a subscriber joins from the beginning while three publishers keep
 *    publishing to two partitions: it receives every matching event exactly
 *    once, in offset order per partition, with no gap at the history -> live
 *    switch (checked against the positions the publishers' flushes gave);
 *    again with a tiny live queue, so it overflows and falls back to the
 *    files while the publishers go on;
 *  - a stalled subscriber (subscribes, never reads) while 200 MiB are
 *    published: the daemon's RSS stays under idle + 100 MiB throughout, a
 *    second, reading subscriber receives everything within a bound after
 *    publishing ends, and the stalled one is still served afterwards.
 *
 * Under AddressSanitizer the daemon is started with a 16 MiB ASan quarantine
 * instead of the default 256 MiB: freed blocks parked there are ASan's
 * memory, not the daemon's, and would otherwise dominate the RSS check.
 *
 * Threads: cmocka asserts run on the main thread only; publisher and reader
 * threads record what they saw and the main thread checks it after joining.
 */
#include "itest.h"
#include "protobus.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TIMEOUT_MS 30000

typedef struct fixture {
    itest_daemon d;
} fixture;

static int setup(void **state)
{
    return itest_fixture_setup(state, sizeof(fixture));
}

/* Any thread (no asserts): 0 or a PB_E* code with err set. */
static int client_open(uint16_t port, const pb_client_options *o, pb_client **c, char *err,
                       size_t errlen)
{
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)port);
    return pb_client_connect(c, addr, o, err, errlen);
}

static pb_client *subscribe(const fixture *f, const char *const *pats, size_t npats)
{
    char err[256] = "";
    pb_client *c = NULL;
    int rc = client_open(f->d.port, NULL, &c, err, sizeof err);
    if (rc != 0)
        print_error("connect: %s\n", err);
    assert_int_equal(rc, 0);
    pb_subscription s = {.patterns = pats, .npatterns = npats, .start = PB_START_BEGINNING};
    assert_int_equal(pb_client_subscribe(c, &s), 0);
    return c;
}

/* ------------------------------------------------------------------ */
/* A subscriber joins while publishers publish */

#define NPUB         3
#define BATCH        100
#define FULL_BATCHES 167 /* per publisher: 3 * 167 * 100 = 50,100 events */

/* Event i of publisher t: topic "a.skip" (alpha, matches no pattern) when
 * i % 10 == 9, else "a.t<t>" or "b.t<t>" alternately; payload "t<t>-<i>". */
static bool event_matches(size_t i)
{
    return i % 10 != 9;
}

static const char *event_topic(int t, size_t i, char *buf, size_t len)
{
    if (!event_matches(i))
        return "a.skip";
    snprintf(buf, len, "%c.t%d", i % 2 ? 'b' : 'a', t);
    return buf;
}

typedef struct join_shared {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t batches_done; /* mu: flushed batches, all publishers */
    int publishers_left; /* mu */
} join_shared;

typedef struct pub_ctx {
    join_shared *sh;
    uint16_t port;
    int t;
    size_t nevents;
    uint8_t *part;    /* per event: 0 alpha, 1 beta (from the ack) */
    uint64_t *offset; /* per event, from the ack */
    int rc;
    char msg[512];
} pub_ctx;

static void *publisher(void *arg)
{
    pub_ctx *p = arg;
    pb_client_options o;
    pb_client_options_init(&o);
    o.batch_events = BATCH;
    o.name = "test_sub_load publisher";
    pb_client *c = NULL;
    p->rc = client_open(p->port, &o, &c, p->msg, sizeof p->msg);
    for (size_t i = 0; p->rc == 0 && i < p->nevents; i += BATCH) {
        size_t n = p->nevents - i < BATCH ? p->nevents - i : BATCH;
        for (size_t k = 0; p->rc == 0 && k < n; k++) {
            char topic[32], payload[32];
            snprintf(payload, sizeof payload, "t%d-%zu", p->t, i + k);
            pb_event ev = {.topic = event_topic(p->t, i + k, topic, sizeof topic),
                           .payload_type = "type.googleapis.com/test.Text",
                           .payload = payload,
                           .payload_len = strlen(payload)};
            p->rc = pb_client_publish(c, &ev);
        }
        const pb_position *pos = NULL;
        size_t count = 0;
        if (p->rc == 0)
            p->rc = pb_client_flush(c, TIMEOUT_MS, &pos, &count);
        if (p->rc == 0 && count != n)
            p->rc = PB_EPROTO;
        for (size_t k = 0; p->rc == 0 && k < n; k++) {
            if (pos[k].status != 0 || !pos[k].partition) {
                p->rc = pos[k].status ? pos[k].status : PB_EPROTO;
                break;
            }
            p->part[i + k] = strcmp(pos[k].partition, "beta") == 0;
            p->offset[i + k] = pos[k].offset;
        }
        pthread_mutex_lock(&p->sh->mu);
        p->sh->batches_done++;
        pthread_cond_broadcast(&p->sh->cv);
        pthread_mutex_unlock(&p->sh->mu);
    }
    if (p->rc != 0 && c)
        snprintf(p->msg, sizeof p->msg, "publisher %d: %s: %s", p->t, pb_strerror(p->rc),
                 pb_client_message(c));
    pb_client_close(c);
    pthread_mutex_lock(&p->sh->mu);
    p->sh->publishers_left--;
    pthread_cond_broadcast(&p->sh->cv);
    pthread_mutex_unlock(&p->sh->mu);
    return NULL;
}

typedef struct delivery {
    uint8_t part;
    uint8_t t;
    uint32_t i;
    uint64_t offset;
} delivery;

static void join_while_publishing(fixture *f, const char *server_extra)
{
    assert_int_equal(itest_daemon_start(&f->d, server_extra,
                                        "[partition alpha]\nmatch = a\\..*\n"
                                        "[partition beta]\nmatch = b\\..*\n"),
                     0);
    size_t per_pub = FULL_BATCHES * BATCH;
    size_t total = NPUB * per_pub, matching = 0;
    for (size_t i = 0; i < per_pub; i++)
        matching += NPUB * event_matches(i);

    join_shared sh = {.publishers_left = NPUB};
    pthread_mutex_init(&sh.mu, NULL);
    pthread_cond_init(&sh.cv, NULL);
    pub_ctx pubs[NPUB];
    pthread_t th[NPUB];
    delivery *got = calloc(matching + 1, sizeof *got);
    assert_non_null(got);
    for (int t = 0; t < NPUB; t++) {
        pubs[t] = (pub_ctx){.sh = &sh, .port = f->d.port, .t = t, .nevents = per_pub};
        pubs[t].part = calloc(per_pub, 1);
        pubs[t].offset = calloc(per_pub, sizeof(uint64_t));
        assert_non_null(pubs[t].part);
        assert_non_null(pubs[t].offset);
    }
    /* From here until the joins nothing asserts: the threads use sh. */
    for (int t = 0; t < NPUB; t++)
        if (pthread_create(&th[t], NULL, publisher, &pubs[t]) != 0)
            abort();

    /* Join once about a third of the batches are stored: the replay then
     * runs while the publishers go on, and the switch to live happens under
     * load. */
    size_t join_at = NPUB * (per_pub / BATCH) / 3;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 60;
    pthread_mutex_lock(&sh.mu);
    while (sh.batches_done < join_at && sh.publishers_left > 0)
        if (pthread_cond_timedwait(&sh.cv, &sh.mu, &dl) == ETIMEDOUT)
            break;
    size_t done_at_join = sh.batches_done;
    pthread_mutex_unlock(&sh.mu);

    const char *pats[2] = {"a\\.t[0-9]+", "b\\..*"};
    pb_subscription s = {.patterns = pats, .npatterns = 2, .start = PB_START_BEGINNING};
    char err[256] = "";
    pb_client *sub = NULL;
    int rc = client_open(f->d.port, NULL, &sub, err, sizeof err);
    if (rc == 0)
        rc = pb_client_subscribe(sub, &s);
    size_t ngot = 0;
    char bad_payload[32] = "";
    uint64_t deadline = itest_now_ms() + 120000;
    while (rc == 0 && ngot < matching && itest_now_ms() < deadline) {
        pb_item item;
        rc = pb_client_next(sub, &item, 1000);
        if (rc == PB_ETIMEDOUT) {
            rc = 0;
            continue;
        }
        if (rc == 0 && item.kind == PB_ITEM_CAUGHT_UP)
            continue; /* history done; live events follow */
        if (rc != 0 || item.kind != PB_ITEM_EVENT)
            break;
        delivery *d = &got[ngot++];
        unsigned t, i;
        char pl[32];
        size_t n = item.event.payload_len < sizeof pl - 1 ? item.event.payload_len : sizeof pl - 1;
        memcpy(pl, item.event.payload, n);
        pl[n] = '\0';
        if (sscanf(pl, "t%u-%u", &t, &i) != 2 || t >= NPUB || i >= per_pub) {
            memcpy(bad_payload, pl, sizeof bad_payload);
            break;
        }
        d->part = strcmp(item.event.partition, "beta") == 0;
        d->t = (uint8_t)t;
        d->i = i;
        d->offset = item.event.offset;
    }
    /* The publishers end on their own (each step bounded by TIMEOUT_MS). */
    for (int t = 0; t < NPUB; t++)
        if (pthread_join(th[t], NULL) != 0)
            abort();
    for (int t = 0; t < NPUB; t++) {
        if (pubs[t].rc != 0)
            print_error("%s\n", pubs[t].msg);
        assert_int_equal(pubs[t].rc, 0);
    }
    if (rc != 0)
        print_error("subscriber: %s (%s)\n", pb_strerror(rc), sub ? pb_client_message(sub) : err);
    assert_int_equal(rc, 0);
    if (bad_payload[0])
        print_error("delivery %zu: unexpected payload \"%s\"\n", ngot - 1, bad_payload);
    assert_string_equal(bad_payload, "");
    print_message("joined after %zu of %zu batches; %zu of %zu events delivered\n", done_at_join,
                  total / BATCH, ngot, matching);
    assert_true(done_at_join < total / BATCH); /* publishers were still going */
    assert_int_equal(ngot, matching);

    /* Each partition's offsets, from the acks: dense, each given once. */
    size_t count[2] = {0, 0};
    for (int t = 0; t < NPUB; t++)
        for (size_t i = 0; i < per_pub; i++)
            count[pubs[t].part[i]]++;
    uint32_t *owner[2];
    for (int p = 0; p < 2; p++) {
        owner[p] = malloc((count[p] ? count[p] : 1) * sizeof(uint32_t));
        assert_non_null(owner[p]);
        memset(owner[p], 0xff, (count[p] ? count[p] : 1) * sizeof(uint32_t));
    }
    for (int t = 0; t < NPUB; t++)
        for (size_t i = 0; i < per_pub; i++) {
            int p = pubs[t].part[i];
            uint64_t off = pubs[t].offset[i];
            assert_true(off < count[p]);
            assert_int_equal(owner[p][off], UINT32_MAX);
            owner[p][off] = (uint32_t)(t * per_pub + i);
            /* Routed by the rules: "b." to beta, every other to alpha. */
            assert_int_equal(p, event_matches(i) && i % 2);
        }

    /* The deliveries: ascending per partition, each the event the ack
     * placed there, each matching; with the count, exactly every one. */
    int64_t last[2] = {-1, -1};
    for (size_t k = 0; k < ngot; k++) {
        const delivery *d = &got[k];
        assert_true((int64_t)d->offset > last[d->part]);
        last[d->part] = (int64_t)d->offset;
        assert_true(d->offset < count[d->part]);
        assert_int_equal(owner[d->part][d->offset], d->t * per_pub + d->i);
        assert_true(event_matches(d->i));
    }

    /* And nothing more is pending: a live sentinel is the next delivery. */
    pb_client *pub = NULL;
    assert_int_equal(client_open(f->d.port, NULL, &pub, err, sizeof err), 0);
    pb_event ev = {.topic = "b.sentinel", .payload = "s", .payload_len = 1};
    assert_int_equal(pb_client_publish(pub, &ev), 0);
    const pb_position *pos;
    size_t n;
    assert_int_equal(pb_client_flush(pub, TIMEOUT_MS, &pos, &n), 0);
    assert_int_equal(n, 1);
    pb_item item;
    while ((rc = pb_client_next(sub, &item, TIMEOUT_MS)) == 0 && item.kind == PB_ITEM_CAUGHT_UP)
        ;
    assert_int_equal(rc, 0);
    assert_string_equal(item.event.topic, "b.sentinel");
    assert_int_equal(item.event.offset, pos[0].offset);
    pb_client_close(pub);
    pb_client_close(sub);

    for (int p = 0; p < 2; p++)
        free(owner[p]);
    for (int t = 0; t < NPUB; t++) {
        free(pubs[t].part);
        free(pubs[t].offset);
    }
    free(got);
    pthread_cond_destroy(&sh.cv);
    pthread_mutex_destroy(&sh.mu);
}

/* Default settings: the subscriber's 4 MiB live queue. */
static void test_join_while_publishing(void **state)
{
    join_while_publishing(*state, NULL);
}

/* A live queue of 8 KiB overflows while the publishers go on: the
 * subscription falls back to the files and must still deliver exactly
 * once, in order. */
static void test_join_while_publishing_tiny_queue(void **state)
{
    fixture *f = *state;
    join_while_publishing(f, "max_event_bytes = 4K\nsubscriber_queue_bytes = 8K");
    assert_true(itest_log_contains(&f->d, "live queue full"));
}

/* ------------------------------------------------------------------ */
/* A stalled subscriber while 200 MiB are published */

#define STALL_EVENT_BYTES 1024
#define STALL_EVENTS      (200u * 1024u) /* 200 MiB of payload */
#define RSS_SLACK_KB      (100L * 1024L)

typedef struct reader_ctx {
    uint16_t port;
    size_t expect;
    size_t got;
    uint64_t done_ms; /* monotonic ms when the last event arrived */
    int rc;
    char msg[512];
} reader_ctx;

/* Reads r->expect events from c: offsets 0, 1, 2, ... of "events", each
 * carrying its index in the payload. Any thread (no asserts). */
static void read_all(pb_client *c, reader_ctx *r)
{
    uint64_t deadline = itest_now_ms() + 300000;
    while (r->rc == 0 && r->got < r->expect) {
        pb_item item;
        r->rc = pb_client_next(c, &item, TIMEOUT_MS);
        if (r->rc != 0)
            break;
        if (item.kind == PB_ITEM_CAUGHT_UP)
            continue; /* history done; live events follow */
        uint64_t idx = UINT64_MAX;
        if (item.kind == PB_ITEM_EVENT && item.event.payload_len == STALL_EVENT_BYTES)
            memcpy(&idx, item.event.payload, sizeof idx);
        if (item.kind != PB_ITEM_EVENT || item.event.offset != r->got || idx != r->got) {
            snprintf(r->msg, sizeof r->msg,
                     "delivery %zu: kind %d, offset %llu, payload %zu bytes, index %llu", r->got,
                     (int)item.kind, (unsigned long long)item.event.offset, item.event.payload_len,
                     (unsigned long long)idx);
            r->rc = PB_EPROTO;
            break;
        }
        r->got++;
        if (itest_now_ms() > deadline) {
            r->rc = PB_ETIMEDOUT;
            break;
        }
    }
    r->done_ms = itest_now_ms();
    if (r->rc != 0 && !r->msg[0])
        snprintf(r->msg, sizeof r->msg, "after %zu events: %s: %s", r->got, pb_strerror(r->rc),
                 pb_client_message(c));
}

/* The reading subscriber's thread: subscribes from the beginning. */
static void *reader(void *arg)
{
    reader_ctx *r = arg;
    pb_client *c = NULL;
    r->rc = client_open(r->port, NULL, &c, r->msg, sizeof r->msg);
    const char *pats[1] = {".*"};
    pb_subscription s = {.patterns = pats, .npatterns = 1, .start = PB_START_BEGINNING};
    if (r->rc == 0)
        r->rc = pb_client_subscribe(c, &s);
    if (r->rc == 0)
        read_all(c, r);
    pb_client_close(c);
    return NULL;
}

/* Starts the daemon; in a sanitized build with a small ASan quarantine (see
 * the top of the file), the test's own ASAN_OPTIONS extended for it only. */
static int start_small_quarantine(itest_daemon *d, const char *server_extra)
{
#if defined(__SANITIZE_ADDRESS__)
    const char *old = getenv("ASAN_OPTIONS");
    char *saved = old ? strdup(old) : NULL;
    char opts[1024];
    snprintf(opts, sizeof opts, "%s%squarantine_size_mb=16", old ? old : "",
             old && *old ? ":" : "");
    if ((old && !saved) || setenv("ASAN_OPTIONS", opts, 1) != 0) {
        free(saved);
        return -1;
    }
    int rc = itest_daemon_start(d, server_extra, NULL);
    int rs = saved ? setenv("ASAN_OPTIONS", saved, 1) : unsetenv("ASAN_OPTIONS");
    free(saved);
    return rc == 0 && rs == 0 ? 0 : -1;
#else
    return itest_daemon_start(d, server_extra, NULL);
#endif
}

/*
 * write_deadline_ms is set to 10 minutes, far beyond the test, so the
 * stalled subscriber is NOT dropped: the test shows the daemon holds it at
 * bounded memory (its live queue overflows and it will catch up from the
 * files), and afterwards it still gets its events from offset 0.
 */
static void test_stalled_subscriber_bounded(void **state)
{
    fixture *f = *state;
    assert_int_equal(start_small_quarantine(&f->d, "write_deadline_ms = 600000"), 0);
    size_t nevents = STALL_EVENTS;

    const char *all[1] = {".*"};
    pb_client *stalled = subscribe(f, all, 1); /* never reads until the end */
    long idle_kb = itest_daemon_rss_kb(&f->d);
    assert_true(idle_kb > 0);

    reader_ctx rd = {.port = f->d.port, .expect = nevents};
    pthread_t rth;
    assert_int_equal(pthread_create(&rth, NULL, reader, &rd), 0);

    pb_client_options o;
    pb_client_options_init(&o);
    o.no_positions = true; /* 200k positions are not the point here */
    o.name = "test_sub_load bulk";
    pb_client *pub = NULL;
    char err[256] = "";
    int rc = client_open(f->d.port, &o, &pub, err, sizeof err);
    static uint8_t payload[STALL_EVENT_BYTES];
    long max_kb = idle_kb;
    uint64_t t0 = itest_now_ms();
    for (size_t i = 0; rc == 0 && i < nevents; i++) {
        uint64_t idx = i;
        memcpy(payload, &idx, sizeof idx);
        memset(payload + sizeof idx, (int)(i & 0xff), sizeof payload - sizeof idx);
        pb_event ev = {.topic = "bulk.data",
                       .payload_type = "type.googleapis.com/test.Bytes",
                       .payload = payload,
                       .payload_len = sizeof payload};
        rc = pb_client_publish(pub, &ev);
        if (rc == 0 && (i + 1) % 16384 == 0)
            rc = pb_client_flush(pub, TIMEOUT_MS, NULL, NULL);
        if (i % 512 == 0) {
            long kb = itest_daemon_rss_kb(&f->d);
            if (kb > max_kb)
                max_kb = kb;
        }
    }
    if (rc == 0)
        rc = pb_client_flush(pub, TIMEOUT_MS, NULL, NULL);
    uint64_t published_ms = itest_now_ms();
    if (rc != 0)
        print_error("publishing: %s: %s\n", pb_strerror(rc), pub ? pb_client_message(pub) : err);
    /* The reader ends on its own: every pb_client_next is bounded. */
    if (pthread_join(rth, NULL) != 0)
        abort();
    long kb = itest_daemon_rss_kb(&f->d);
    if (kb > max_kb)
        max_kb = kb;
    print_message("%zu events of %d bytes published in %llu ms; reader done %lld ms after the "
                  "last ack; daemon RSS idle %ld KiB, max %ld KiB\n",
                  nevents, STALL_EVENT_BYTES, (unsigned long long)(published_ms - t0),
                  (long long)rd.done_ms - (long long)published_ms, idle_kb, max_kb);
    assert_int_equal(rc, 0);
    if (rd.rc != 0)
        print_error("%s\n", rd.msg);
    assert_int_equal(rd.rc, 0);
    assert_int_equal(rd.got, nevents);
    /* The reading subscriber kept up: done within 20 s of the last ack. */
    assert_true(rd.done_ms < published_ms + 20000);
    /* Under ThreadSanitizer (tests/run-tsan sets PB_SANITIZER=thread) every
     * heap byte the daemon touches also costs shadow memory in its RSS. */
    const char *san = getenv("PB_SANITIZER");
    long slack_kb = RSS_SLACK_KB * (san && strcmp(san, "thread") == 0 ? 4 : 1);
    assert_true(max_kb - idle_kb < slack_kb);

    /* The stalled subscriber was held, not dropped. 200 MiB cannot have fit
     * in its socket buffers and 4 MiB live queue, so it overflowed (it logs
     * that when it sees it, perhaps only now that it reads); yet it gets
     * everything from offset 0, in order, none twice. */
    assert_false(itest_log_contains(&f->d, "dropped"));
    reader_ctx st = {.expect = nevents};
    uint64_t t1 = itest_now_ms();
    read_all(stalled, &st);
    if (st.rc != 0)
        print_error("stalled subscriber: %s\n", st.msg);
    assert_int_equal(st.rc, 0);
    assert_int_equal(st.got, nevents);
    assert_true(itest_log_contains(&f->d, "live queue full"));
    print_message("the stalled subscriber then read all in %llu ms\n",
                  (unsigned long long)(st.done_ms - t1));
    pb_client_close(stalled);
    pb_client_close(pub);
    assert_int_equal(itest_daemon_stop(&f->d), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_join_while_publishing, setup, itest_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_join_while_publishing_tiny_queue, setup,
                                        itest_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_stalled_subscriber_bounded, setup,
                                        itest_fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
