/*
 * Isolation, F1 and F2 (issue 10): what one Subscribe request can make the
 * daemon spend, against the real protobusd with its default limits, while an
 * honest publisher (one event per Publish, each ack timed) and a probe (a new
 * connection every 0.5 s) run beside it (tests/lib/hostile).
 *
 * F1, a Subscribe's size: the server Hello announces the caps; a Subscribe
 * with 120,000 tag filters, 60,000 offsets entries, 2,000 patterns or a
 * 4 KiB pattern is refused with RESOURCE_EXHAUSTED naming the cap, and
 * requests at the caps (64 tag filters given twice each, 4,096 offsets with
 * the duplicate last) are answered at once: nothing on the loop thread is
 * quadratic any more (it froze every client for ~20 s). 32 clients sending
 * Subscribes at the caps over and over (each ~50 ms of compiling) no
 * longer hold the loop: they are prepared on libuv's pool.
 *
 * F2, a Subscribe's patterns: 256 patterns that backtrack exponentially in
 * PCRE2 ("(a|aa)+c" and variants; Hyperscan's syntax, so the fan-out's
 * combined matcher runs them in linear time), then topics "a" x 240 + "c1"
 * published: the honest publisher's acks stay under a second (they took
 * ~14 s when every writer ran every subscription's regexes). A pattern
 * outside Hyperscan's syntax that backtracks the same way ("(?:a|aa)+(?=c)c")
 * exceeds its PCRE2 budget on such a topic: that subscription alone ends,
 * with RESOURCE_EXHAUSTED naming the pattern; one with an honest pattern on
 * the same daemon still gets its events.
 *
 * Afterwards: restart, `protobus cat --verify` clean, every acknowledged
 * event read back. Nothing asserts a speed beyond "the honest publisher's
 * slowest ack is under a second" (the condition).
 */
#include "hostile.h"
#include "itest.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define REPLY_TIMEOUT_MS 20000
#define ACK_BUDGET_MS    1000

static itest_daemon dut;
static hostile_honest honest;

static int teardown(void **state)
{
    (void)state;
    hostile_honest_stop(&honest);
    hostile_acked_free(&honest.acked);
    itest_daemon_cleanup(&dut);
    return 0;
}

/* Sends q on a new connection; returns the reply (an Error is expected) and
 * how long it took. */
static Protobus__Frame *subscribe_reply(Protobus__Subscribe *q, uint64_t *ms)
{
    int fd = itest_connect_hello(dut.port);
    assert_true(fd >= 0);
    Protobus__Frame f = PROTOBUS__FRAME__INIT;
    f.id = 5;
    f.body_case = PROTOBUS__FRAME__BODY_SUBSCRIBE;
    f.subscribe = q;
    uint64_t t0 = itest_now_ms();
    assert_int_equal(itest_send_frame(fd, &f), 0);
    Protobus__Frame *r = itest_recv_frame(fd, REPLY_TIMEOUT_MS);
    *ms = itest_now_ms() - t0;
    close(fd);
    assert_non_null(r);
    return r;
}

/* The reply must be an Error with `code` whose message contains `what`. */
static void expect_error(Protobus__Subscribe *q, int code, const char *what, const char *name)
{
    uint64_t ms;
    Protobus__Frame *r = subscribe_reply(q, &ms);
    printf("F1 %s: %s in %llu ms: %s\n", name,
           r->body_case == PROTOBUS__FRAME__BODY_ERROR ? "Error" : "not an Error",
           (unsigned long long)ms,
           r->body_case == PROTOBUS__FRAME__BODY_ERROR ? r->error->message : "");
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_ERROR);
    assert_int_equal(r->error->code, code);
    assert_non_null(strstr(r->error->message, what));
    protobus__frame__free_unpacked(r, NULL);
}

/* n tag filters "k<i % keys>" = "v<i>" (keys distinct keys). */
static void with_tags(Protobus__Subscribe *q, size_t n, size_t keys)
{
    q->n_tags = n;
    q->tags = calloc(n, sizeof *q->tags);
    assert_non_null(q->tags);
    for (size_t i = 0; i < n; i++) {
        Protobus__Subscribe__TagsEntry *t = malloc(sizeof *t + 40);
        assert_non_null(t);
        protobus__subscribe__tags_entry__init(t);
        char *kv = (char *)(t + 1);
        snprintf(kv, 20, "k%u", (unsigned)(i % keys));
        snprintf(kv + 20, 20, "v%u", (unsigned)i);
        t->key = kv;
        t->value = kv + 20;
        q->tags[i] = t;
    }
}

/* n offsets entries for partitions "p<i>", the last one naming p0 again
 * when dup. */
static void with_offsets(Protobus__Subscribe *q, size_t n, bool dup)
{
    q->start = PROTOBUS__START_MODE__START_OFFSETS;
    q->n_offsets = n;
    q->offsets = calloc(n, sizeof *q->offsets);
    assert_non_null(q->offsets);
    for (size_t i = 0; i < n; i++) {
        Protobus__PartitionOffset *o = malloc(sizeof *o + 20);
        assert_non_null(o);
        protobus__partition_offset__init(o);
        o->partition = (char *)(o + 1);
        snprintf(o->partition, 20, "p%u", dup && i == n - 1 ? 0u : (unsigned)i);
        q->offsets[i] = o;
    }
}

static void free_request(Protobus__Subscribe *q)
{
    for (size_t i = 0; i < q->n_tags; i++)
        free(q->tags[i]);
    for (size_t i = 0; i < q->n_offsets; i++)
        free(q->offsets[i]);
    free(q->tags);
    free(q->offsets);
}

static void check_hello_caps(void)
{
    int fd = itest_connect(dut.port);
    assert_true(fd >= 0);
    Protobus__Frame *h = itest_hello(fd, 1, 5000);
    close(fd);
    assert_non_null(h);
    assert_int_equal(h->body_case, PROTOBUS__FRAME__BODY_HELLO);
    assert_non_null(h->hello->limits);
    const Protobus__Limits *l = h->hello->limits;
    printf("Hello: max_subscribe_patterns %u, max_pattern_bytes %u, max_subscribe_tags %u, "
           "max_subscribe_offsets %u\n",
           l->max_subscribe_patterns, l->max_pattern_bytes, l->max_subscribe_tags,
           l->max_subscribe_offsets);
    assert_int_equal(l->max_subscribe_patterns, 256);
    assert_int_equal(l->max_pattern_bytes, 1024);
    assert_int_equal(l->max_subscribe_tags, 64);
    assert_int_equal(l->max_subscribe_offsets, 4096);
    protobus__frame__free_unpacked(h, NULL);
}

static void f1_attacks(void)
{
    char *any[1] = {".*"};
    Protobus__Subscribe q = PROTOBUS__SUBSCRIBE__INIT;
    q.n_patterns = 1;
    q.patterns = any;
    with_tags(&q, 120000, 120000);
    expect_error(&q, PROTOBUS__CODE__RESOURCE_EXHAUSTED, "max_subscribe_tags", "120,000 tags");
    free_request(&q);

    q = (Protobus__Subscribe)PROTOBUS__SUBSCRIBE__INIT;
    q.n_patterns = 1;
    q.patterns = any;
    with_offsets(&q, 60000, false);
    expect_error(&q, PROTOBUS__CODE__RESOURCE_EXHAUSTED, "max_subscribe_offsets", "60,000 offsets");
    free_request(&q);

    /* At the caps, the checks that were quadratic: a duplicate partition
     * found by a sort; tag filters given twice collapse (then the
     * request is refused for its partition list). */
    q = (Protobus__Subscribe)PROTOBUS__SUBSCRIBE__INIT;
    q.n_patterns = 1;
    q.patterns = any;
    with_tags(&q, 64, 32);
    with_offsets(&q, 4096, true);
    expect_error(&q, PROTOBUS__CODE__INVALID_ARGUMENT, "partition \"p0\" is listed twice",
                 "4,096 offsets, a duplicate last");
    free_request(&q);

    enum { NPAT = 2000 };
    static char pats[NPAT][24];
    char *pv[NPAT];
    for (int i = 0; i < NPAT; i++) {
        snprintf(pats[i], sizeof pats[i], "t%d\\..*", i);
        pv[i] = pats[i];
    }
    q = (Protobus__Subscribe)PROTOBUS__SUBSCRIBE__INIT;
    q.n_patterns = NPAT;
    q.patterns = pv;
    expect_error(&q, PROTOBUS__CODE__RESOURCE_EXHAUSTED, "max_subscribe_patterns",
                 "2,000 patterns");

    static char big[4097];
    memset(big, 'a', sizeof big - 1);
    char *bp[1] = {big};
    q.n_patterns = 1;
    q.patterns = bp;
    expect_error(&q, PROTOBUS__CODE__RESOURCE_EXHAUSTED, "max_pattern_bytes", "a 4 KiB pattern");
}

/* A subscription on a new connection; its Subscribed read. */
static int subscribe_patterns(char **pats, size_t n)
{
    int fd = itest_connect_hello(dut.port);
    assert_true(fd >= 0);
    Protobus__Subscribe q = PROTOBUS__SUBSCRIBE__INIT;
    q.n_patterns = n;
    q.patterns = pats;
    Protobus__Frame f = PROTOBUS__FRAME__INIT;
    f.id = 9;
    f.body_case = PROTOBUS__FRAME__BODY_SUBSCRIBE;
    f.subscribe = &q;
    assert_int_equal(itest_send_frame(fd, &f), 0);
    Protobus__Frame *r = itest_recv_frame(fd, REPLY_TIMEOUT_MS);
    assert_non_null(r);
    if (r->body_case == PROTOBUS__FRAME__BODY_ERROR)
        printf("subscribe refused: %s\n", r->error->message);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_SUBSCRIBED);
    protobus__frame__free_unpacked(r, NULL);
    return fd;
}

static size_t attack_acked; /* events of the attack acknowledged (in the final count) */

/* Publishes the attack topics ("a" x 240 + "c<i>") on a connection of its
 * own; each must be acknowledged. */
static void publish_attack_topics(int n)
{
    int fd = itest_connect_hello(dut.port);
    assert_true(fd >= 0);
    for (int i = 0; i < n; i++) {
        char topic[256];
        memset(topic, 'a', 240);
        snprintf(topic + 240, sizeof topic - 240, "c%d", i + 1);
        const char *t[1] = {topic}, *pl[1] = {"x"};
        uint64_t t0 = itest_now_ms();
        Protobus__Frame *r = itest_publish(fd, 100 + (uint64_t)i, t, pl, 1, REPLY_TIMEOUT_MS);
        printf("F2 attack topic %d: %s in %llu ms\n", i + 1,
               r && r->body_case == PROTOBUS__FRAME__BODY_PUBLISH_ACK ? "acked" : "NOT acked",
               (unsigned long long)(itest_now_ms() - t0));
        assert_non_null(r);
        assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_PUBLISH_ACK);
        attack_acked++;
        protobus__frame__free_unpacked(r, NULL);
    }
    close(fd);
}

/* 256 such patterns from START_BEGINNING: the subscription's own thread
 * matches the stored topics (under the partition's topic-table lock) with
 * PCRE2, under the same limits: it ends at the first topic over them,
 * RESOURCE_EXHAUSTED naming the pattern, after Subscribed. */
static void history_attack(char **pv, size_t n)
{
    int fd = itest_connect_hello(dut.port);
    assert_true(fd >= 0);
    Protobus__Subscribe q = PROTOBUS__SUBSCRIBE__INIT;
    q.n_patterns = n;
    q.patterns = pv;
    q.start = PROTOBUS__START_MODE__START_BEGINNING;
    Protobus__Frame f = PROTOBUS__FRAME__INIT;
    f.id = 11;
    f.body_case = PROTOBUS__FRAME__BODY_SUBSCRIBE;
    f.subscribe = &q;
    uint64_t t0 = itest_now_ms();
    assert_int_equal(itest_send_frame(fd, &f), 0);
    Protobus__Frame *r = NULL;
    for (int i = 0; i < 1000; i++) { /* Subscribed, maybe Events, then the Error */
        r = itest_recv_frame(fd, REPLY_TIMEOUT_MS);
        if (!r || r->body_case == PROTOBUS__FRAME__BODY_ERROR)
            break;
        protobus__frame__free_unpacked(r, NULL);
        r = NULL;
    }
    assert_non_null(r);
    printf("F2 history with 256 such patterns: Error after %llu ms: %s\n",
           (unsigned long long)(itest_now_ms() - t0), r->error->message);
    assert_int_equal(r->error->code, PROTOBUS__CODE__RESOURCE_EXHAUSTED);
    assert_non_null(strstr(r->error->message, "budget"));
    protobus__frame__free_unpacked(r, NULL);
    close(fd);
}

static void f2_attacks(void)
{
    /* 256 exponential-in-PCRE2 patterns, all in Hyperscan's syntax. */
    enum { NPAT = 256 };
    static char pats[NPAT][32];
    char *pv[NPAT];
    for (int i = 0; i < NPAT; i++) {
        snprintf(pats[i], sizeof pats[i], "(a|aa)+c%s%d?", i % 2 ? "" : "x?", i);
        pv[i] = pats[i];
    }
    int heavy = subscribe_patterns(pv, NPAT);
    /* A pattern PCRE2 alone can run (a lookahead), backtracking the same. */
    char *pcre_only[1] = {"(?:a|aa)+(?=c)c"};
    int breached = subscribe_patterns(pcre_only, 1);
    char *fine[1] = {"a+c[0-9]"};
    int honest_sub = subscribe_patterns(fine, 1);
    publish_attack_topics(3);

    /* The PCRE2-only subscription ends: RESOURCE_EXHAUSTED naming it. */
    Protobus__Frame *r = itest_recv_event(breached, REPLY_TIMEOUT_MS);
    assert_non_null(r);
    printf("F2 PCRE2-only pattern: %s %s\n",
           r->body_case == PROTOBUS__FRAME__BODY_ERROR ? "Error" : "not an Error",
           r->body_case == PROTOBUS__FRAME__BODY_ERROR ? r->error->message : "");
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_ERROR);
    assert_int_equal(r->error->code, PROTOBUS__CODE__RESOURCE_EXHAUSTED);
    assert_non_null(strstr(r->error->message, "(?:a|aa)+(?=c)c"));
    assert_non_null(strstr(r->error->message, "budget"));
    protobus__frame__free_unpacked(r, NULL);
    assert_true(itest_wait_closed(breached, 5000));
    close(breached);

    /* The others go on: each gets its events ("a+c[0-9]": all three). */
    for (int i = 0; i < 3; i++) {
        r = itest_recv_event(honest_sub, REPLY_TIMEOUT_MS);
        assert_non_null(r);
        assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_EVENT);
        protobus__frame__free_unpacked(r, NULL);
    }
    /* "(a|aa)+c1?" matches the first topic, among others. */
    r = itest_recv_event(heavy, REPLY_TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_EVENT);
    protobus__frame__free_unpacked(r, NULL);
    close(heavy);
    close(honest_sub);
    /* Variants that match none of the topics: nothing excuses a breach. */
    for (int i = 0; i < NPAT; i++)
        snprintf(pats[i], sizeof pats[i], "(a|aa)+cx%d", i);
    history_attack(pv, NPAT);
}

/* Stops the honest publisher, checks its figures, restarts the daemon and
 * checks every acknowledged event is there. */
static void honest_and_durable(void)
{
    hostile_honest_check(&honest, ACK_BUDGET_MS);
    char out[4096];
    hostile_check_durable(&dut, &honest, out, sizeof out);
    char want[128];
    snprintf(want, sizeof want, "verified %zu record(s)", honest.acked.n + attack_acked);
    assert_non_null(strstr(out, want));
}

/* F1, a Subscribe's cost in time: FLOOD_CONNS clients each send, again and
 * again for FLOOD_MS, a Subscribe at the caps (256 patterns of ~1 KiB, the
 * last one malformed, so that all the others are compiled before it is
 * refused): ~50 ms of unpacking and PCRE2/JIT compiling each. Done on the
 * loop thread, every round held every other client for FLOOD_CONNS x that
 * (the honest publisher's acks waited seconds); prepared on libuv's pool,
 * the loop stays free and the honest acks stay under ACK_BUDGET_MS. */
#define FLOOD_CONNS 32
#define FLOOD_MS    4000
static void f1_compile_flood(void)
{
    static char text[256][1024];
    static char *pats[256];
    for (int i = 0; i < 256; i++) {
        int n = snprintf(text[i], sizeof text[i], "flood%d\\.", i);
        while (n < 1000 - 16)
            n += snprintf(text[i] + n, sizeof text[i] - (size_t)n, "(?:a%d|b%d)+", n, n);
        pats[i] = text[i];
    }
    strcpy(text[255], "flood(unbalanced");
    Protobus__Subscribe q = PROTOBUS__SUBSCRIBE__INIT;
    q.n_patterns = 256;
    q.patterns = pats;
    Protobus__Frame f = PROTOBUS__FRAME__INIT;
    f.id = 9;
    f.body_case = PROTOBUS__FRAME__BODY_SUBSCRIBE;
    f.subscribe = &q;
    int fds[FLOOD_CONNS];
    for (int i = 0; i < FLOOD_CONNS; i++) {
        fds[i] = itest_connect_hello(dut.port);
        assert_true(fds[i] >= 0);
    }
    uint64_t t0 = itest_now_ms(), refused = 0, slowest = 0;
    while (itest_now_ms() - t0 < FLOOD_MS) {
        uint64_t r0 = itest_now_ms();
        for (int i = 0; i < FLOOD_CONNS; i++)
            assert_int_equal(itest_send_frame(fds[i], &f), 0);
        for (int i = 0; i < FLOOD_CONNS; i++) {
            Protobus__Frame *r = itest_recv_frame(fds[i], REPLY_TIMEOUT_MS);
            assert_non_null(r);
            assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_ERROR);
            assert_int_equal(r->error->code, PROTOBUS__CODE__INVALID_ARGUMENT);
            assert_non_null(strstr(r->error->message, "flood(unbalanced"));
            protobus__frame__free_unpacked(r, NULL);
            refused++;
        }
        if (itest_now_ms() - r0 > slowest)
            slowest = itest_now_ms() - r0;
    }
    for (int i = 0; i < FLOOD_CONNS; i++)
        close(fds[i]);
    printf("F1 compile flood: %llu Subscribes at the caps refused in %llu ms from %d "
           "connections (slowest round of %d: %llu ms)\n",
           (unsigned long long)refused, (unsigned long long)(itest_now_ms() - t0), FLOOD_CONNS,
           FLOOD_CONNS, (unsigned long long)slowest);
}

static void test_subscribe_caps(void **state)
{
    (void)state;
    assert_int_equal(itest_daemon_start(&dut, NULL, NULL), 0);
    assert_int_equal(hostile_honest_start(&honest, dut.port, "honest.t"), 0);
    itest_sleep_ms(300);
    check_hello_caps();
    f1_attacks();
    f1_compile_flood();
    f2_attacks();
    itest_sleep_ms(500);
    long peak = hostile_peak_kb(dut.pid);
    printf("daemon peak RSS %ld KiB\n", peak);
    if (HOSTILE_RSS_CHECKED)
        assert_true(peak < 256L * 1024);
    honest_and_durable();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_subscribe_caps, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
