/*
 * test_ingest - a Publish frame into a batch and back into its reply, with
 * a real router and a real store (partitions in a temp dir): events grouped
 * by partition in batch order, the PublishAck naming each event's partition
 * and offset, a failed part answered with an Error naming it, and every
 * refusal (malformed frame, oversized event, invalid event or topic, no
 * route) with the event at fault and nothing queued.
 *
 * An empty Publish is answered at once: with an empty PublishAck, with
 * nothing under no_ack, and with an Error (not silence) when there is no
 * memory for the ack. That last case needs a failing malloc: this program
 * is linked with -Wl,--wrap=malloc (see the Makefile), so every malloc of
 * the code under test goes through __wrap_malloc below, which fails on
 * request.
 */
#include "testfs.h"
#include "config.h"
#include "frame.h"
#include "ingest.h"
#include "logging.h"
#include "partition.h"
#include "pb_errors.h"
#include "protobus.pb-c.h"
#include "router.h"
#include "store.h"
#include "wire.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- a malloc that fails on request ------------------------------------ */

void *__real_malloc(size_t n);
void *__wrap_malloc(size_t n);

static int fail_mallocs; /* the next this many mallocs return NULL */

static int large_mallocs; /* mallocs of 64 KiB or more so far */

void *__wrap_malloc(size_t n)
{
    if (n >= 64 * 1024)
        large_mallocs++;
    if (fail_mallocs > 0) {
        fail_mallocs--;
        return NULL;
    }
    return __real_malloc(n);
}

/* ---- fixture ------------------------------------------------------------ */

typedef struct fixture {
    char root[64];
    pb_config cfg;
    router *router;
    store *store;
    ingest_options opts;
    int conn; /* a stand-in for net's connection */
} fixture;

static int part_options(void *ctx, const char *name, partition_options *o)
{
    o->fsync = PARTITION_FSYNC_NEVER; /* ingest is under test, not the disk */
    o->topic_history = 2;
    return 0;
}

static void never_done(pub_part *part)
{
    fail_msg("a part was submitted: nothing should reach a writer here");
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    strcpy(f->root, "/tmp/test_ingest.XXXXXX");
    if (!mkdtemp(f->root))
        return -1;
    char err[512];
    const char *conf = "[partition a]\nmatch = a\\..*\n"
                       "[partition b]\nmatch = b\\..*\n";
    if (config_load_string("test_ingest", conf, &f->cfg, err, sizeof err) < 0 ||
        router_create(&f->cfg, &f->router, err, sizeof err) < 0 ||
        store_open(&f->store, f->root, part_options, f) < 0)
        return -1;
    f->opts = (ingest_options){.max_event_bytes = 200, .router = f->router, .store = f->store};
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    assert_int_equal(store_close(f->store), 0);
    router_free(f->router);
    config_free(&f->cfg);
    testfs_rmrf(f->root);
    free(f);
    return 0;
}

/* ---- building Publish bodies --------------------------------------------- */

typedef struct body {
    uint8_t b[4096];
    size_t n;
} body;

/* Appends an EncapsulatedEvent with `topic` and a payload_size field. */
static void add_event(body *p, const char *topic)
{
    uint8_t ev[512];
    size_t n = wire_put_len_field(ev, 1, topic, strlen(topic));
    n += wire_put_varint_field(ev + n, 6, 7);
    p->n += wire_put_len_field(p->b + p->n, 1, ev, n);
}

/* Appends an event whose bytes are `raw` as they are. */
static void add_raw_event(body *p, const void *raw, size_t len)
{
    p->n += wire_put_len_field(p->b + p->n, 1, raw, len);
}

static void set_no_ack(body *p)
{
    p->n += wire_put_varint_field(p->b + p->n, 2, 1);
}

static int prepare(fixture *f, const body *p, pub_batch **b, ingest_error *err)
{
    return ingest_prepare(&f->opts, NULL, 42, p->b, p->n, never_done, &f->conn, b, err);
}

/* Refused (the connection stays open), naming event index_plus_one - 1. */
static void expect_refused(fixture *f, const body *p, int code, uint32_t index_plus_one,
                           const char *text)
{
    pub_batch *b = (pub_batch *)1;
    ingest_error err;
    assert_true(prepare(f, p, &b, &err) < 0);
    assert_null(b);
    assert_int_equal(err.code, code);
    assert_int_equal(err.event_index_plus_one, index_plus_one);
    if (!strstr(err.message, text))
        fail_msg("message \"%s\" does not say \"%s\"", err.message, text);
}

/* ---- checking replies -------------------------------------------------- */

/* The reply frame's body must be a PublishAck answering frame 42. */
static void open_ack(const uint8_t *frame, size_t len, publish_ack_iter *it)
{
    frame_split sp;
    frame_view fv;
    char err[256];
    assert_int_equal(frame_split_next(frame, len, 1 << 20, &sp, err, sizeof err), 0);
    assert_int_equal(sp.used, len);
    assert_int_equal(frame_parse(sp.body.p, sp.body.len, &fv, err, sizeof err), 0);
    assert_int_equal(fv.id, 42);
    assert_int_equal(fv.kind, FRAME_PUBLISH_ACK);
    assert_int_equal(publish_ack_open(fv.body.p, fv.body.len, it, err, sizeof err), 0);
}

/* ---- tests ---------------------------------------------------------------- */

/* Events go to their partitions' parts in batch order; runs of one topic
 * share the part; the ack names each event's partition and offset. */
static void test_batch_grouped_by_partition_and_acked(void **state)
{
    fixture *f = *state;
    body p = {0};
    const char *topics[] = {"a.x", "a.x", "b.y", "a.z", "b.y"};
    for (size_t i = 0; i < 5; i++)
        add_event(&p, topics[i]);
    pub_batch *b;
    ingest_error err;
    assert_int_equal(prepare(f, &p, &b, &err), 0);
    assert_ptr_equal(b->conn, &f->conn);
    assert_int_equal(b->frame_id, 42);
    assert_int_equal(b->nevents, 5);
    assert_int_equal(b->nparts, 2);
    assert_string_equal(partition_name(b->parts[0].partition), "a");
    assert_string_equal(partition_name(b->parts[1].partition), "b");
    assert_int_equal(b->parts[0].count, 3);
    assert_int_equal(b->parts[0].events[0], 0);
    assert_int_equal(b->parts[0].events[1], 1);
    assert_int_equal(b->parts[0].events[2], 3);
    assert_int_equal(b->parts[1].count, 2);
    assert_int_equal(b->parts[1].events[0], 2);
    assert_int_equal(b->parts[1].events[1], 4);
    for (uint32_t i = 0; i < 5; i++) {
        assert_int_equal(b->events[i].topic_len, strlen(topics[i]));
        assert_memory_equal(b->events[i].topic, topics[i], strlen(topics[i]));
        /* The events point into the batch's own copy of the frame. */
        assert_true(b->events[i].data >= b->bytes && b->events[i].data < b->bytes + b->bytes_len);
    }

    /* What the writers would fill in: offsets, status 0. */
    for (uint32_t i = 0; i < 5; i++)
        b->events[i].offset = 100 + i;
    uint8_t *frame;
    size_t len;
    assert_int_equal(ingest_reply(b, &frame, &len, &err), 0);
    assert_non_null(frame);
    publish_ack_iter it;
    open_ack(frame, len, &it);
    wire_slice name;
    assert_int_equal(publish_ack_next_partition(&it, &name), 0);
    assert_memory_equal(name.p, "a", 1);
    assert_int_equal(publish_ack_next_partition(&it, &name), 0);
    assert_memory_equal(name.p, "b", 1);
    uint32_t want_part[] = {0, 0, 1, 0, 1};
    for (uint32_t i = 0; i < 5; i++) {
        uint32_t pi;
        uint64_t off;
        assert_int_equal(publish_ack_next(&it, &pi, &off), 0);
        assert_int_equal(pi, want_part[i]);
        assert_int_equal(off, 100 + i);
    }
    free(frame);
    ingest_free(b);
}

/* A part the writer could not store: an Error naming its partition (and
 * its event, when it held one); no ack. */
static void test_failed_part_answered_with_error(void **state)
{
    fixture *f = *state;
    body p = {0};
    add_event(&p, "a.x");
    add_event(&p, "b.y");
    pub_batch *b;
    ingest_error err;
    assert_int_equal(prepare(f, &p, &b, &err), 0);
    b->parts[1].status = PB_EFAILED;
    uint8_t *frame = (uint8_t *)1;
    size_t len;
    assert_true(ingest_reply(b, &frame, &len, &err) < 0);
    assert_null(frame);
    assert_int_equal(err.code, PROTOBUS__CODE__UNAVAILABLE);
    assert_string_equal(err.partition, "b");
    assert_int_equal(err.event_index_plus_one, 2);
    assert_non_null(strstr(err.message, "partition b could not store 1 event(s)"));
    ingest_free(b);
}

static void test_refusals_name_the_event(void **state)
{
    fixture *f = *state;
    body p = {0};
    add_event(&p, "a.x");
    add_event(&p, "c.nowhere");
    expect_refused(f, &p, PROTOBUS__CODE__NOT_FOUND, 2, "c.nowhere");

    body big = {0};
    add_event(&big, "a.x");
    char payload[300];
    memset(payload, 'x', sizeof payload);
    uint8_t ev[400];
    size_t n = wire_put_len_field(ev, 1, "a.x", 3);
    n += wire_put_len_field(ev + n, 7, payload, sizeof payload);
    add_raw_event(&big, ev, n);
    expect_refused(f, &big, PROTOBUS__CODE__INVALID_ARGUMENT, 2, "max_event_bytes");

    body bad = {0};
    add_raw_event(&bad,
                  "\x0a\x05"
                  "ab",
                  4); /* topic says 5 bytes, has 2 */
    expect_refused(f, &bad, PROTOBUS__CODE__INVALID_ARGUMENT, 1, "not a valid EncapsulatedEvent");

    body topic = {0};
    add_event(&topic, "a.x");
    add_event(&topic, "");
    expect_refused(f, &topic, PROTOBUS__CODE__INVALID_ARGUMENT, 2, "invalid topic");
}

/* A malformed Publish body is refused like a bad event: its length was
 * valid, so the connection goes on (protocol v1; it used to close). */
static void test_malformed_publish_refused(void **state)
{
    fixture *f = *state;
    body p = {0};
    p.n = wire_put_varint_field(p.b, 1, 5); /* events must be length-delimited */
    expect_refused(f, &p, PROTOBUS__CODE__INVALID_ARGUMENT, 0, "malformed Publish frame");
}

/* Appends a Publish.expect entry (ExpectLast). */
static void add_expect(body *p, const char *topic, bool none, uint64_t offset)
{
    uint8_t x[300];
    size_t n = wire_put_len_field(x, 1, topic, strlen(topic));
    if (none)
        n += wire_put_varint_field(x + n, 2, 1);
    if (offset)
        n += wire_put_varint_field(x + n, 3, offset);
    p->n += wire_put_len_field(p->b + p->n, 3, x, n);
}

/* Expectations are read into the batch for its writer; they must keep the
 * batch in one partition (the writer alone decides them atomically). */
static void test_expectations_stay_in_one_partition(void **state)
{
    fixture *f = *state;
    body p = {0};
    add_event(&p, "a.x");
    add_expect(&p, "a.x", false, 41);
    add_expect(&p, "a.y", true, 0);
    pub_batch *b;
    ingest_error err;
    assert_int_equal(prepare(f, &p, &b, &err), 0);
    assert_int_equal(b->nparts, 1);
    assert_int_equal(b->nexpect, 2);
    assert_int_equal(b->expect[0].topic_len, 3);
    assert_memory_equal(b->expect[0].topic, "a.x", 3);
    assert_false(b->expect[0].none);
    assert_int_equal(b->expect[0].offset, 41);
    assert_true(b->expect[1].none);

    /* The writer refused it: FAILED_PRECONDITION with expected and actual. */
    b->parts[0].status = PUB_EXPECT_FAILED;
    b->parts[0].expect_failed = 0;
    b->parts[0].actual = 45;
    uint8_t *frame;
    size_t len;
    assert_true(ingest_reply(b, &frame, &len, &err) < 0);
    assert_int_equal(err.code, PROTOBUS__CODE__FAILED_PRECONDITION);
    assert_non_null(strstr(err.message, "expected topic a.x to have last offset 41, but it ends "
                                        "at offset 45"));
    uint8_t *ef = ingest_error_frame(&err, 42, &len);
    assert_non_null(ef);
    uint64_t flen;
    int pre = wire_varint_decode(ef, len, &flen);
    assert_true(pre > 0);
    assert_int_equal(flen, len - (size_t)pre);
    Protobus__Frame *fr = protobus__frame__unpack(NULL, (size_t)flen, ef + pre);
    assert_non_null(fr);
    assert_non_null(fr->error->expected);
    assert_string_equal(fr->error->expected->topic, "a.x");
    assert_int_equal(fr->error->expected->offset, 41);
    assert_int_equal(fr->error->actual->offset, 45);
    assert_false(fr->error->actual->none);
    protobus__frame__free_unpacked(fr, NULL);
    free(ef);
    ingest_free(b);

    body q = {0};
    add_event(&q, "a.x");
    add_expect(&q, "b.x", false, 1);
    expect_refused(f, &q, PROTOBUS__CODE__INVALID_ARGUMENT, 0, "must stay in one partition");
    body r = {0};
    add_event(&r, "a.x");
    add_event(&r, "b.x");
    add_expect(&r, "a.x", false, 1);
    expect_refused(f, &r, PROTOBUS__CODE__INVALID_ARGUMENT, 0, "must stay in one partition");
    /* Expectations only: a part with no events for the writer to check. */
    body e = {0};
    add_expect(&e, "b.z", true, 0);
    assert_int_equal(prepare(f, &e, &b, &err), 0);
    assert_int_equal(b->nparts, 1);
    assert_int_equal(b->parts[0].count, 0);
    assert_string_equal(partition_name(b->parts[0].partition), "b");
    ingest_free(b);
}

/* An empty Publish: a batch with no parts, answered at once with an empty
 * PublishAck, or nothing under no_ack. */
static void test_empty_publish_acked_at_once(void **state)
{
    fixture *f = *state;
    body p = {0};
    pub_batch *b;
    ingest_error err;
    assert_int_equal(prepare(f, &p, &b, &err), 0);
    assert_int_equal(b->nparts, 0);
    assert_int_equal(b->nevents, 0);
    uint8_t *frame;
    size_t len;
    assert_int_equal(ingest_reply(b, &frame, &len, &err), 0);
    assert_non_null(frame);
    uint8_t want[64];
    size_t wn = frame_put_publish_ack(want, sizeof want, 42, NULL, 0, NULL, NULL, 0);
    assert_int_equal(len, wn);
    assert_memory_equal(frame, want, wn);
    free(frame);
    ingest_free(b);

    set_no_ack(&p);
    assert_int_equal(prepare(f, &p, &b, &err), 0);
    assert_int_equal(ingest_reply(b, &frame, &len, &err), 0);
    assert_null(frame);
    ingest_free(b);
}

/* No memory for the ack of an empty Publish: an Error, not silence (the
 * publisher would wait for a reply forever). */
static void test_empty_publish_without_memory_gets_an_error(void **state)
{
    fixture *f = *state;
    body p = {0};
    pub_batch *b;
    ingest_error err;
    assert_int_equal(prepare(f, &p, &b, &err), 0);
    uint8_t *frame = (uint8_t *)1;
    size_t len;
    fail_mallocs = 1;
    int rc = ingest_reply(b, &frame, &len, &err);
    fail_mallocs = 0;
    assert_true(rc < 0);
    assert_null(frame);
    assert_int_equal(err.code, PROTOBUS__CODE__RESOURCE_EXHAUSTED);
    assert_non_null(strstr(err.message, "out of memory for the PublishAck"));
    ingest_free(b);

    /* No memory for the batch itself: an Error too. */
    fail_mallocs = 1;
    b = (pub_batch *)1;
    rc = prepare(f, &p, &b, &err);
    fail_mallocs = 0;
    assert_true(rc < 0);
    assert_null(b);
    assert_int_equal(err.code, PROTOBUS__CODE__RESOURCE_EXHAUSTED);
}

/* A batch above 64 KiB reuses the block of the batch acked before it (the
 * loop thread's cache; before, each such batch was a fresh mmap whose pages
 * the kernel faulted in and zeroed again): after the first of 50 batches,
 * no large malloc; a small batch does not take the large block. */
static void test_large_batches_reuse_their_block(void **state)
{
    fixture *f = *state;
    static uint8_t big[256 * 1024];
    size_t n = 0;
    uint8_t ev[64];
    size_t evn = wire_put_len_field(ev, 1, "a.reuse", 7);
    evn += wire_put_varint_field(ev + evn, 6, 7);
    for (int i = 0; i < 3000; i++)
        n += wire_put_len_field(big + n, 1, ev, evn);
    assert_true(n < sizeof big);
    large_mallocs = 0;
    pub_batch *first = NULL;
    for (int round = 0; round < 50; round++) {
        pub_batch *b;
        ingest_error err;
        assert_int_equal(ingest_prepare(&f->opts, NULL, 42, big, n, never_done, &f->conn, &b,
                                        &err),
                         0);
        assert_int_equal(b->nevents, 3000);
        if (!first)
            first = b;
        assert_ptr_equal(b, first);
        ingest_free(b);
        if (round == 0)
            large_mallocs = 0; /* the first also opened partition a */
    }
    assert_int_equal(large_mallocs, 0);
    body p = {0};
    add_event(&p, "a.small");
    pub_batch *small;
    ingest_error err;
    assert_int_equal(prepare(f, &p, &small, &err), 0);
    assert_ptr_not_equal(small, first);
    ingest_free(small);
}

/* A body received alone in a block (a connection's receive buffer): the
 * batch takes the block, its events point into it (no copy), its charge
 * counts the whole block, and ingest_free gives it back. Refused, the
 * block stays the caller's. */
static void test_adopted_block_holds_the_events(void **state)
{
    fixture *f = *state;
    body p = {0};
    add_event(&p, "a.adopt");
    add_event(&p, "a.adopt");
    uint8_t *blk = ingest_block_get(256 * 1024);
    assert_non_null(blk);
    assert_true(ingest_block_cap(blk) >= 256 * 1024);
    memcpy(blk, p.b, p.n);
    pub_batch *b;
    ingest_error err;
    assert_int_equal(ingest_prepare_adopt(&f->opts, NULL, 42, blk, p.n, blk, never_done, &f->conn,
                                          &b, &err),
                     0);
    assert_int_equal(b->nevents, 2);
    assert_ptr_equal(b->bytes, blk);
    for (uint32_t i = 0; i < b->nevents; i++)
        assert_true(b->events[i].data > blk && b->events[i].data < blk + p.n);
    assert_ptr_equal(b->events[1].topic, b->events[0].topic); /* a run: one topic pointer */
    assert_true(b->charge >= ingest_charge(2, ingest_block_cap(blk)));
    ingest_free(b); /* the block too (ASan: no leak, no double free) */

    body bad = {0};
    add_event(&bad, "c.nowhere"); /* routed nowhere: refused */
    blk = ingest_block_get(256 * 1024);
    memcpy(blk, bad.b, bad.n);
    b = (pub_batch *)1;
    assert_true(ingest_prepare_adopt(&f->opts, NULL, 42, blk, bad.n, blk, never_done, &f->conn, &b,
                                     &err) < 0);
    assert_null(b);
    blk = ingest_block_resize(blk, 512 * 1024); /* still the caller's, contents kept */
    assert_non_null(blk);
    assert_memory_equal(blk, bad.b, bad.n);
    ingest_block_put(blk);
}

int main(void)
{
    logging_set_level(LOG_WARN); /* partitions being opened are not news here */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_batch_grouped_by_partition_and_acked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_part_answered_with_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals_name_the_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_publish_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expectations_stay_in_one_partition, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_publish_acked_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_batches_reuse_their_block, setup, teardown),
        cmocka_unit_test_setup_teardown(test_adopted_block_holds_the_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_publish_without_memory_gets_an_error, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
