/*
 * Integration: subscribing through libprotobus against the real protobusd
 * (issue 3). Every start mode (beginning, offsets, time, last N per topic
 * also across SIGTERM and kill -9 restarts, new only), the bounded pool's
 * RESOURCE_EXHAUSTED and its freed slot, tag filters with several patterns,
 * and exact resumption from delivered (partition, offset). (Publish acks:
 * test_publish_ack.c.)
 *
 * Method: every published event is recorded in a ledger with the position
 * its ack gave; a subscription's deliveries must be exactly the ledger's
 * entries the test expects (same count, each one expected and with its
 * payload intact, offsets strictly ascending per partition, so none twice).
 * "Nothing more" is shown without waiting for silence: a live sentinel event
 * is published last and must be the very next delivery.
 *
 * Threads: the test's main thread only (cmocka asserts).
 */
#include "itest.h"
#include "protobus.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_MS   10000
#define MAXREC       512
#define PAYLOAD_TYPE "type.googleapis.com/test.Text"

/* Routing used by most tests: a.* -> alpha, b.* -> beta, anything else -> rest. */
#define RULES_ABR                                                                                  \
    "[partition alpha]\nmatch = a\\..*\n[partition beta]\nmatch = b\\..*\n"                        \
    "[partition rest]\nmatch = .*\n"

/* One published event (position from its ack) or one delivered event. */
typedef struct rec {
    char partition[32];
    uint64_t offset;
    char topic[64];
    char payload[64];
    int mark;        /* test-defined property of a published event */
    int64_t time_ns; /* delivered: server receive time */
} rec;

typedef struct fixture {
    itest_daemon d;
    rec led[MAXREC]; /* the ledger: every event published, in publish order */
    size_t nled;
    rec got[MAXREC]; /* deliveries of the subscription under test */
    size_t ngot;
    int sentinels;
} fixture;

static int setup(void **state)
{
    return itest_fixture_setup(state, sizeof(fixture));
}

static void start(fixture *f, const char *server_extra, const char *rules)
{
    assert_int_equal(itest_daemon_start(&f->d, server_extra, rules), 0);
}

static pb_client *client_open(const fixture *f)
{
    char addr[64], err[256] = "";
    snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)f->d.port);
    pb_client_options o;
    pb_client_options_init(&o);
    o.name = "test_subscribe";
    pb_client *c = NULL;
    int rc = pb_client_connect(&c, addr, &o, err, sizeof err);
    if (rc != 0)
        print_error("connect %s: %s\n", addr, err);
    assert_int_equal(rc, 0);
    return c;
}

/* Publishes topics[0..n) (each with tags[0..ntags) and a payload unique in
 * the ledger), flushes, and records each event with the position its ack
 * gave. */
static void publish(fixture *f, pb_client *c, const char *const *topics, size_t n,
                    const pb_tag *tags, size_t ntags, int mark)
{
    assert_true(f->nled + n <= MAXREC);
    for (size_t i = 0; i < n; i++) {
        rec *r = &f->led[f->nled + i];
        memset(r, 0, sizeof *r);
        snprintf(r->topic, sizeof r->topic, "%s", topics[i]);
        snprintf(r->payload, sizeof r->payload, "payload-%zu", f->nled + i);
        r->mark = mark;
        pb_event ev = {.topic = topics[i],
                       .tags = tags,
                       .ntags = ntags,
                       .client_event_time_ns = pb_time_now_ns(),
                       .payload_type = PAYLOAD_TYPE,
                       .payload = r->payload,
                       .payload_len = strlen(r->payload)};
        assert_int_equal(pb_client_publish(c, &ev), 0);
    }
    const pb_position *pos = NULL;
    size_t count = 0;
    int rc = pb_client_flush(c, TIMEOUT_MS, &pos, &count);
    if (rc != 0)
        print_error("flush: %s\n", pb_client_message(c));
    assert_int_equal(rc, 0);
    assert_int_equal(count, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(pos[i].status, 0);
        assert_non_null(pos[i].partition);
        rec *r = &f->led[f->nled + i];
        snprintf(r->partition, sizeof r->partition, "%s", pos[i].partition);
        r->offset = pos[i].offset;
    }
    f->nled += n;
}

/* Same topic n times. */
static void publish_same(fixture *f, pb_client *c, const char *topic, size_t n, int mark)
{
    const char *topics[64];
    assert_true(n <= 64);
    for (size_t i = 0; i < n; i++)
        topics[i] = topic;
    publish(f, c, topics, n, NULL, 0, mark);
}

static pb_client *subscribe(const fixture *f, const pb_subscription *s)
{
    pb_client *c = client_open(f);
    assert_int_equal(pb_client_subscribe(c, s), 0);
    return c;
}

static pb_client *subscribe_simple(const fixture *f, const char *pattern, pb_start_mode mode)
{
    const char *pats[1] = {pattern};
    pb_subscription s = {.patterns = pats, .npatterns = 1, .start = mode};
    return subscribe(f, &s);
}

/* A subscription the server refuses: the answer to pb_client_subscribe
 * (protocol v1). The client is returned for its pb_client_server_error. */
static pb_client *subscribe_refused(const fixture *f, const char *pattern, pb_start_mode mode)
{
    const char *pats[1] = {pattern};
    pb_subscription s = {.patterns = pats, .npatterns = 1, .start = mode};
    pb_client *c = client_open(f);
    assert_int_equal(pb_client_subscribe(c, &s), PB_ESERVER);
    return c;
}

static void copy_event(rec *r, const pb_received_event *e)
{
    memset(r, 0, sizeof *r);
    snprintf(r->partition, sizeof r->partition, "%s", e->partition);
    r->offset = e->offset;
    snprintf(r->topic, sizeof r->topic, "%s", e->topic);
    size_t n = e->payload_len < sizeof r->payload - 1 ? e->payload_len : sizeof r->payload - 1;
    memcpy(r->payload, e->payload, n);
    r->time_ns = e->has_server_receive_time ? e->server_receive_time_ns : -1;
}

/* The next delivery, which must be an event (the caught-up marker between
 * history and live events is skipped: test_connection checks where it is). */
static void next_event(pb_client *c, rec *r, pb_item *raw)
{
    pb_item item;
    int rc;
    while ((rc = pb_client_next(c, &item, TIMEOUT_MS)) == 0 && item.kind == PB_ITEM_CAUGHT_UP)
        ;
    if (rc != 0)
        print_error("pb_client_next: %s (%s)\n", pb_strerror(rc), pb_client_message(c));
    assert_int_equal(rc, 0);
    assert_int_equal(item.kind, PB_ITEM_EVENT);
    /* Every delivered event names where it is stored. */
    assert_non_null(item.event.partition);
    assert_true(item.event.partition_len > 0);
    copy_event(r, &item.event);
    if (raw)
        *raw = item;
}

static void receive(fixture *f, pb_client *c, size_t n)
{
    assert_true(f->ngot + n <= MAXREC);
    for (size_t i = 0; i < n; i++)
        next_event(c, &f->got[f->ngot++], NULL);
}

static const rec *ledger_find(const fixture *f, const char *partition, uint64_t offset)
{
    for (size_t i = 0; i < f->nled; i++)
        if (f->led[i].offset == offset && strcmp(f->led[i].partition, partition) == 0)
            return &f->led[i];
    return NULL;
}

typedef bool (*want_fn)(const fixture *f, const rec *r, const void *ctx);

static size_t count_wanted(const fixture *f, want_fn want, const void *ctx)
{
    size_t n = 0;
    for (size_t i = 0; i < f->nled; i++)
        n += want(f, &f->led[i], ctx);
    return n;
}

/* got[0..ngot) must be exactly the ledger entries `want` accepts: as many,
 * each one of them with its topic and payload, and strictly ascending
 * offsets within each partition (so none is delivered twice). */
static void check_delivered(const fixture *f, want_fn want, const void *ctx)
{
    size_t expected = count_wanted(f, want, ctx);
    for (size_t i = 0; i < f->ngot; i++) {
        const rec *g = &f->got[i];
        const rec *l = ledger_find(f, g->partition, g->offset);
        if (!l || !want(f, l, ctx))
            print_error("unexpected delivery %zu: %s:%llu %s\n", i, g->partition,
                        (unsigned long long)g->offset, g->topic);
        assert_non_null(l);
        assert_true(want(f, l, ctx));
        assert_string_equal(g->topic, l->topic);
        assert_string_equal(g->payload, l->payload);
        for (size_t j = 0; j < i; j++)
            if (strcmp(f->got[j].partition, g->partition) == 0)
                assert_true(f->got[j].offset < g->offset);
    }
    assert_int_equal(f->ngot, expected);
}

/* Publishes one matching event and requires it to be the next delivery:
 * proves the subscription follows the live stream and that nothing else
 * was pending before it. */
static void expect_live_mark(fixture *f, pb_client *pub, pb_client *sub, const char *topic,
                             const pb_tag *tags, size_t ntags, int mark)
{
    const char *topics[1] = {topic};
    publish(f, pub, topics, 1, tags, ntags, mark);
    const rec *l = &f->led[f->nled - 1];
    rec r;
    next_event(sub, &r, NULL);
    if (strcmp(r.partition, l->partition) != 0 || r.offset != l->offset)
        print_error("expected the live event %s:%llu, got %s:%llu %s\n", l->partition,
                    (unsigned long long)l->offset, r.partition, (unsigned long long)r.offset,
                    r.topic);
    assert_string_equal(r.partition, l->partition);
    assert_int_equal(r.offset, l->offset);
    assert_string_equal(r.payload, l->payload);
}

/* The sentinel has mark -1, which the tests' want functions leave out. */
static void expect_live(fixture *f, pb_client *pub, pb_client *sub, const char *topic,
                        const pb_tag *tags, size_t ntags)
{
    expect_live_mark(f, pub, sub, topic, tags, ntags, -1);
}

static bool topic_has_prefix(const rec *r, const char *const *prefixes)
{
    for (size_t i = 0; prefixes[i]; i++)
        if (strncmp(r->topic, prefixes[i], strlen(prefixes[i])) == 0)
            return true;
    return false;
}

/* ctx: NULL-terminated list of topic prefixes; sentinels (mark -1) excluded. */
static bool want_prefix(const fixture *f, const rec *r, const void *ctx)
{
    return r->mark >= 0 && topic_has_prefix(r, ctx);
}

/* ------------------------------------------------------------------ */

/* START_BEGINNING: everything stored that matches, then live. */
static void test_start_beginning(void **state)
{
    fixture *f = *state;
    start(f, NULL, RULES_ABR);
    pb_client *pub = client_open(f);
    const char *topics[] = {"a.one", "b.one", "c.one", "a.two", "b.two", "c.two", "a.one"};
    publish(f, pub, topics, 7, NULL, 0, 0);
    publish(f, pub, topics, 7, NULL, 0, 0);

    pb_client *sub = subscribe_simple(f, "[ab]\\..*", PB_START_BEGINNING);
    static const char *const ab[] = {"a.", "b.", NULL};
    receive(f, sub, 10);
    check_delivered(f, want_prefix, ab);
    expect_live(f, pub, sub, "b.live", NULL, 0);
    pb_client_close(sub);
    pb_client_close(pub);
}

/* START_OFFSETS: listed partitions from their offset, a partition not listed
 * from its beginning (protobus.proto: "partitions not listed: beginning"). */
typedef struct offsets_ctx {
    uint64_t alpha, beta;
} offsets_ctx;

static bool want_offsets(const fixture *f, const rec *r, const void *ctx)
{
    const offsets_ctx *o = ctx;
    if (r->mark < 0)
        return false;
    if (strcmp(r->partition, "alpha") == 0)
        return r->offset >= o->alpha;
    if (strcmp(r->partition, "beta") == 0)
        return r->offset >= o->beta;
    return true;
}

static void test_start_offsets(void **state)
{
    fixture *f = *state;
    start(f, NULL, RULES_ABR);
    pb_client *pub = client_open(f);
    publish_same(f, pub, "a.x", 10, 0);
    publish_same(f, pub, "b.x", 8, 0);
    publish_same(f, pub, "c.x", 5, 0);
    publish_same(f, pub, "a.y", 2, 0);

    const char *pats[1] = {".*"};
    pb_partition_offset offs[2] = {{"alpha", 6}, {"beta", 3}};
    pb_subscription s = {.patterns = pats,
                         .npatterns = 1,
                         .start = PB_START_OFFSETS,
                         .offsets = offs,
                         .noffsets = 2};
    pb_client *sub = subscribe(f, &s);
    offsets_ctx o = {6, 3};
    receive(f, sub, (12 - 6) + (8 - 3) + 5);
    check_delivered(f, want_offsets, &o);
    expect_live(f, pub, sub, "c.live", NULL, 0);
    pb_client_close(sub);
    pb_client_close(pub);
}

/* START_TIME: only events received at or after the time, then live. */
static bool want_mark(const fixture *f, const rec *r, const void *ctx)
{
    return r->mark == *(const int *)ctx;
}

static void test_start_time(void **state)
{
    fixture *f = *state;
    start(f, NULL, RULES_ABR);
    pb_client *pub = client_open(f);
    const char *topics[] = {"a.t", "b.t", "c.t", "a.u"};
    publish(f, pub, topics, 4, NULL, 0, 1);
    publish(f, pub, topics, 4, NULL, 0, 1);
    /* Every event above was acked, so stamped, before this instant; every
     * event below is sent, so stamped, after it (one machine, one clock). */
    int64_t t = pb_time_now_ns();
    publish(f, pub, topics, 4, NULL, 0, 2);
    publish(f, pub, topics + 1, 3, NULL, 0, 2);

    const char *pats[1] = {".*"};
    pb_subscription s = {
        .patterns = pats, .npatterns = 1, .start = PB_START_TIME, .from_time_ns = t};
    pb_client *sub = subscribe(f, &s);
    receive(f, sub, 7);
    int later = 2;
    check_delivered(f, want_mark, &later);
    for (size_t i = 0; i < f->ngot; i++) {
        assert_true(f->got[i].time_ns >= t);
        /* Partitions are merged by receive time. */
        if (i > 0)
            assert_true(f->got[i].time_ns >= f->got[i - 1].time_ns);
    }
    expect_live(f, pub, sub, "a.live", NULL, 0);
    pb_client_close(sub);
    pb_client_close(pub);
}

/* START_LAST_N: the last n ledger events of each topic matching [ab]\..* */
typedef struct last_n_ctx {
    size_t n;
} last_n_ctx;

static bool want_last_n(const fixture *f, const rec *r, const void *ctx)
{
    const last_n_ctx *c = ctx;
    if (r->topic[0] != 'a' && r->topic[0] != 'b')
        return false;
    size_t later = 0;
    for (const rec *x = r + 1; x < f->led + f->nled; x++)
        later += strcmp(x->topic, r->topic) == 0;
    return later < c->n;
}

/* Subscribes with last_n = n and checks the deliveries, then a live one. */
static void check_last_n(fixture *f, size_t n)
{
    pb_client *pub = client_open(f);
    const char *pats[2] = {"a\\..*", "b\\..*"};
    pb_subscription s = {
        .patterns = pats, .npatterns = 2, .start = PB_START_LAST_N, .last_n = (uint32_t)n};
    pb_client *sub = subscribe(f, &s);
    last_n_ctx c = {n};
    f->ngot = 0;
    receive(f, sub, count_wanted(f, want_last_n, &c));
    check_delivered(f, want_last_n, &c);
    /* The live event is then one of the last n of its topic: fine for the
     * next check, which recomputes from the ledger. */
    expect_live(f, pub, sub, "b.live", NULL, 0);
    pb_client_close(sub);
    pb_client_close(pub);
}

static void check_last_1_and_3(fixture *f)
{
    check_last_n(f, 1);
    check_last_n(f, 3);
}

static void test_start_last_n_across_restarts(void **state)
{
    fixture *f = *state;
    /* Small segments: a topic's last events end up in older, rotated files. */
    start(f, NULL,
          "[partition alpha]\nmatch = a\\..*\nsegment_bytes = 4K\n"
          "[partition beta]\nmatch = b\\..*\nsegment_bytes = 4K\n"
          "[partition rest]\nmatch = .*\n");
    pb_client *pub = client_open(f);
    /* Different counts per topic, interleaved, in two partitions. */
    const char *round[] = {"a.five", "b.three", "a.five", "c.other", "b.two", "a.one"};
    publish(f, pub, round, 6, NULL, 0, 0);
    publish_same(f, pub, "a.five", 3, 0);
    const char *more[] = {"b.three", "b.two", "c.other", "b.three"};
    publish(f, pub, more, 4, NULL, 0, 0);
    publish_same(f, pub, "a.many", 40, 0); /* rotates alpha */
    publish_same(f, pub, "b.many", 40, 0); /* rotates beta */
    pb_client_close(pub);
    check_last_1_and_3(f);

    /* kill -9: no topic snapshot was ever written; the table is rebuilt by
     * scanning the partition's files. */
    itest_daemon_kill(&f->d);
    assert_int_equal(itest_daemon_restart(&f->d), 0);
    assert_true(itest_log_contains(&f->d, "rebuilding the topic table"));
    check_last_1_and_3(f);

    /* More events, then SIGTERM: the snapshot is saved and loaded. */
    pub = client_open(f);
    const char *after[] = {"a.one", "b.two", "a.new"};
    publish(f, pub, after, 3, NULL, 0, 0);
    pb_client_close(pub);
    assert_int_equal(itest_daemon_stop(&f->d), 0);
    assert_int_equal(itest_daemon_restart(&f->d), 0);
    check_last_1_and_3(f);

    /* Events past the snapshot, then kill -9: snapshot plus catch-up from the
     * log. Offsets continue across every restart. */
    pub = client_open(f);
    const char *late[] = {"a.five", "b.late", "a.one"};
    publish(f, pub, late, 3, NULL, 0, 0);
    pb_client_close(pub);
    itest_daemon_kill(&f->d);
    assert_int_equal(itest_daemon_restart(&f->d), 0);
    check_last_1_and_3(f);
    for (size_t i = 0; i < f->nled; i++)
        for (size_t j = i + 1; j < f->nled; j++)
            if (strcmp(f->led[i].partition, f->led[j].partition) == 0)
                assert_true(f->led[i].offset < f->led[j].offset);
}

/* START_NEW: nothing stored before, then the live stream. Once the
 * subscription is confirmed it is live (protocol v1): the caught-up marker
 * comes first, with no history, and an event published then is the next
 * delivery (this test used to publish markers until one arrived). */
static void test_start_new(void **state)
{
    fixture *f = *state;
    start(f, NULL, RULES_ABR);
    pb_client *pub = client_open(f);
    const char *old[] = {"a.old", "b.old", "c.old"};
    publish(f, pub, old, 3, NULL, 0, 0);
    publish(f, pub, old, 3, NULL, 0, 0);

    pb_client *sub = subscribe_simple(f, ".*", PB_START_NEW);
    pb_item item;
    assert_int_equal(pb_client_next(sub, &item, TIMEOUT_MS), 0);
    assert_int_equal(item.kind, PB_ITEM_CAUGHT_UP);
    assert_int_equal(item.caught_up.history_events, 0);
    const char *marker[1] = {"m.marker"};
    publish(f, pub, marker, 1, NULL, 0, 1);
    assert_int_equal(pb_client_next(sub, &item, TIMEOUT_MS), 0);
    assert_int_equal(item.kind, PB_ITEM_EVENT);
    assert_string_equal(item.event.topic, "m.marker");
    const rec *last = &f->led[f->nled - 1];
    /* Every marker before it was published and waited for already; so it is
     * the last one, and no older event came first. */
    assert_string_equal(item.event.partition, last->partition);
    assert_int_equal(item.event.offset, last->offset);

    const char *live[] = {"b.new", "a.new", "c.new", "a.new2"};
    publish(f, pub, live, 4, NULL, 0, 2);
    f->ngot = 0;
    receive(f, sub, 4);
    int want = 2;
    check_delivered(f, want_mark, &want);
    expect_live(f, pub, sub, "c.live", NULL, 0);
    pb_client_close(sub);
    pb_client_close(pub);
}

/* threads = 2: a third subscription is refused with RESOURCE_EXHAUSTED, and
 * once a subscriber disconnects its slot serves a new one. */
static void test_pool_exhausted_then_freed(void **state)
{
    fixture *f = *state;
    start(f, "threads = 2", NULL);
    pb_client *pub = client_open(f);
    publish_same(f, pub, "x.y", 1, 0);

    rec r;
    pb_client *s1 = subscribe_simple(f, ".*", PB_START_BEGINNING);
    next_event(s1, &r, NULL); /* running on a pool thread now */
    pb_client *s2 = subscribe_simple(f, ".*", PB_START_BEGINNING);
    next_event(s2, &r, NULL);

    pb_client *s3 = subscribe_refused(f, ".*", PB_START_BEGINNING);
    pb_item item;
    const pb_server_error *e = pb_client_server_error(s3);
    assert_non_null(e);
    assert_int_equal(e->code, PB_CODE_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(e->message, "max_subscriptions"));
    pb_client_close(s3);

    /* The two running subscriptions are unaffected. */
    publish_same(f, pub, "x.z", 1, 0);
    next_event(s1, &r, NULL);
    assert_int_equal(r.offset, 1);
    next_event(s2, &r, NULL);
    assert_int_equal(r.offset, 1);

    /* s1 leaves. Its thread notices the closed socket asynchronously, and
     * the protocol has no "slot free" notice, so retry (bounded); a refusal
     * is the answer to the Subscribe itself. */
    pb_client_close(s1);
    pb_client *s4 = NULL;
    int rc = PB_ESERVER;
    uint64_t deadline = itest_now_ms() + TIMEOUT_MS;
    while (rc == PB_ESERVER && itest_now_ms() < deadline) {
        const char *all[1] = {".*"};
        pb_subscription sa = {.patterns = all, .npatterns = 1, .start = PB_START_BEGINNING};
        s4 = client_open(f);
        rc = pb_client_subscribe(s4, &sa);
        if (rc == 0)
            rc = pb_client_next(s4, &item, TIMEOUT_MS);
        if (rc == PB_ESERVER) {
            assert_int_equal(pb_client_server_error(s4)->code, PB_CODE_RESOURCE_EXHAUSTED);
            pb_client_close(s4);
            s4 = NULL;
            struct timespec ts = {0, 20 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    assert_int_equal(rc, 0);
    assert_int_equal(item.kind, PB_ITEM_EVENT);
    assert_int_equal(item.event.offset, 0);
    assert_non_null(s4);

    /* Full again: s2 and s4. */
    pb_client *s5 = subscribe_refused(f, ".*", PB_START_BEGINNING);
    assert_int_equal(pb_client_server_error(s5)->code, PB_CODE_RESOURCE_EXHAUSTED);
    pb_client_close(s5);
    pb_client_close(s4);
    pb_client_close(s2);
    pb_client_close(pub);
}

/* Tag filters (all must match) with several patterns, history and live. */
enum { T_KITCHEN = 1, T_CELSIUS = 2 };

typedef struct tags_ctx {
    int need; /* T_* bits that must be set */
} tags_ctx;

static bool want_tags(const fixture *f, const rec *r, const void *ctx)
{
    const tags_ctx *c = ctx;
    if (r->mark < 0)
        return false;
    bool topic_ok = strncmp(r->topic, "a.", 2) == 0 || strcmp(r->topic, "b.x") == 0;
    return topic_ok && (r->mark & c->need) == c->need;
}

static void publish_tagged_round(fixture *f, pb_client *pub)
{
    const pb_tag kc[] = {{"room", "kitchen"}, {"unit", "c"}};
    const pb_tag k[] = {{"room", "kitchen"}};
    const pb_tag hc[] = {{"room", "hall"}, {"unit", "c"}};
    const pb_tag kf_c[] = {{"unit", "c"}, {"room", "kitchenette"}};
    const char *a1[] = {"a.1"}, *a2[] = {"a.2"}, *a3[] = {"a.3"}, *a4[] = {"a.4"}, *a5[] = {"a.5"},
               *bx[] = {"b.x"}, *by[] = {"b.y"}, *cz[] = {"c.z"};
    publish(f, pub, a1, 1, kc, 2, T_KITCHEN | T_CELSIUS);
    publish(f, pub, a2, 1, k, 1, T_KITCHEN);
    publish(f, pub, a3, 1, hc, 2, T_CELSIUS);
    publish(f, pub, bx, 1, kc, 2, T_KITCHEN | T_CELSIUS);
    publish(f, pub, by, 1, kc, 2, T_KITCHEN | T_CELSIUS); /* no pattern matches */
    publish(f, pub, cz, 1, kc, 2, T_KITCHEN | T_CELSIUS); /* no pattern matches */
    publish(f, pub, a4, 1, NULL, 0, 0);
    publish(f, pub, a5, 1, kf_c, 2, T_CELSIUS); /* a value that only starts alike */
}

static void check_tag_subscription(fixture *f, pb_client *pub, const pb_tag *tags, size_t ntags,
                                   int need)
{
    const char *pats[2] = {"a\\..*", "b\\.x"};
    pb_subscription s = {.patterns = pats,
                         .npatterns = 2,
                         .tags = tags,
                         .ntags = ntags,
                         .start = PB_START_BEGINNING};
    pb_client *sub = subscribe(f, &s);
    tags_ctx c = {need};
    f->ngot = 0;
    size_t history = count_wanted(f, want_tags, &c);
    receive(f, sub, history);
    publish_tagged_round(f, pub);
    receive(f, sub, count_wanted(f, want_tags, &c) - history);
    check_delivered(f, want_tags, &c);
    /* A sentinel carrying exactly the filter's tags; later subscriptions see
     * it in their history as an event with those tags. */
    expect_live_mark(f, pub, sub, "a.sentinel", tags, ntags, need);
    pb_client_close(sub);
}

static void test_tag_filters_and_patterns(void **state)
{
    fixture *f = *state;
    start(f, NULL, RULES_ABR);
    pb_client *pub = client_open(f);
    publish_tagged_round(f, pub);

    /* Per round: a.1 a.2 b.x; then a.1 b.x; then (no filter) a.1..a.5 b.x. */
    const pb_tag kitchen[] = {{"room", "kitchen"}};
    check_tag_subscription(f, pub, kitchen, 1, T_KITCHEN);
    assert_int_equal(f->ngot, 2 * 3);
    const pb_tag both[] = {{"room", "kitchen"}, {"unit", "c"}};
    check_tag_subscription(f, pub, both, 2, T_KITCHEN | T_CELSIUS);
    assert_int_equal(f->ngot, 3 * 2); /* the first sentinel lacks unit=c */
    check_tag_subscription(f, pub, NULL, 0, 0);
    assert_int_equal(f->ngot, 4 * 6 + 2); /* + both sentinels */

    /* Tags arrive with the event. */
    const char *pats[1] = {"a\\.1"};
    pb_subscription s = {
        .patterns = pats, .npatterns = 1, .tags = both, .ntags = 2, .start = PB_START_BEGINNING};
    pb_client *sub = subscribe(f, &s);
    pb_item item;
    rec r;
    next_event(sub, &r, &item);
    assert_int_equal(item.event.ntags, 2);
    int seen = 0;
    for (size_t i = 0; i < item.event.ntags; i++) {
        if (!strcmp(item.event.tags[i].key, "room") && !strcmp(item.event.tags[i].value, "kitchen"))
            seen |= 1;
        if (!strcmp(item.event.tags[i].key, "unit") && !strcmp(item.event.tags[i].value, "c"))
            seen |= 2;
    }
    assert_int_equal(seen, 3);
    pb_client_close(sub);
    pb_client_close(pub);
}

/* Every delivery names (partition, offset); a subscriber that disconnects
 * resumes with START_OFFSETS at last + 1 per partition and misses nothing
 * and gets nothing twice, including what was published while it was away. */
static bool want_all(const fixture *f, const rec *r, const void *ctx)
{
    return r->mark >= 0;
}

static void test_resume_from_offsets(void **state)
{
    fixture *f = *state;
    start(f, NULL, RULES_ABR);
    pb_client *pub = client_open(f);
    const char *ab[] = {"a.r", "b.r"};
    for (int i = 0; i < 10; i++)
        publish(f, pub, ab, 2, NULL, 0, 0);

    pb_client *sub = subscribe_simple(f, ".*", PB_START_BEGINNING);
    receive(f, sub, 13);
    pb_client_close(sub);
    /* Where the subscriber stands, from the deliveries alone. */
    pb_partition_offset offs[2];
    size_t noffs = 0;
    for (size_t i = 0; i < f->ngot; i++) {
        size_t k = 0;
        while (k < noffs && strcmp(offs[k].partition, f->got[i].partition) != 0)
            k++;
        if (k == noffs) {
            assert_true(noffs < 2);
            offs[noffs++].partition = f->got[i].partition;
        }
        offs[k].offset = f->got[i].offset + 1;
    }
    assert_int_equal(noffs, 2); /* merged by receive time: both appear */

    const char *more[] = {"b.r", "a.r", "a.r"};
    publish(f, pub, more, 3, NULL, 0, 0);
    publish(f, pub, more, 3, NULL, 0, 0);

    const char *pats[1] = {".*"};
    pb_subscription s = {.patterns = pats,
                         .npatterns = 1,
                         .start = PB_START_OFFSETS,
                         .offsets = offs,
                         .noffsets = noffs};
    sub = subscribe(f, &s);
    receive(f, sub, 20 + 6 - 13);
    check_delivered(f, want_all, NULL); /* both sessions together */
    expect_live(f, pub, sub, "a.live", NULL, 0);
    pb_client_close(sub);
    pb_client_close(pub);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_start_beginning, setup, itest_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_start_offsets, setup, itest_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_start_time, setup, itest_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_start_last_n_across_restarts, setup,
                                        itest_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_start_new, setup, itest_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_pool_exhausted_then_freed, setup,
                                        itest_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_tag_filters_and_patterns, setup,
                                        itest_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_resume_from_offsets, setup, itest_fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
