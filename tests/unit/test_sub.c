/*
 * test_sub - subscriptions end to end inside one process: a real store with
 * real partitions (writer threads, segment files in a temp dir) fans out to
 * the registry; the test thread plays the loop thread (partition_submit,
 * sub_start) and the client, reading the subscription's socket (one end of
 * a socketpair) and decoding every frame with protobuf-c.
 *
 * Covered: history then live with no gap and no duplicate while batches keep
 * coming; history merged by receive time; START_OFFSETS / TIME / LAST_N /
 * NEW; pattern and tag filtering; a tiny live queue with a slow reader
 * (overflow) still delivering everything once in order; a partition created
 * after the start; RESOURCE_EXHAUSTED; client close freeing the thread; a
 * stalled client dropped at the write deadline; a corrupt record reported as
 * DATA_LOSS with the rest still delivered; invalid requests; stop. The
 * writers' fan-out cache (topic -> matching subscriptions) answering right
 * while subscriptions come and go, and the live queues' total budget
 * (overflowing to the files, still exactly once).
 *
 * Waits are on conditions (done callbacks, sub_registry_wait, poll on the
 * socket) with generous bounds that are never reached when things work.
 */
#include "testfs.h"
#include "config.h"
#include "fanout.h"
#include "frame.h"
#include "partition.h"
#include "pb_errors.h"
#include "protobus.pb-c.h"
#include "store.h"
#include "sub.h"
#include "subrun.h"
#include "wire.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define WAIT_MS  30000 /* bound on every wait; never reached when it works */
#define MAX_SEQ  8192
#define FRAME_ID 77
#define SEC      1000000000LL

/* ------------------------------------------------------------------ */
/* fixture: store + registry; events are numbered by a global seq */

typedef struct fixture {
    char root[64];
    store *st;
    fanout *live;
    sub_registry *reg;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    _Atomic int64_t clock_ns; /* receive times when use_clock */
    bool use_clock;
    size_t pad;   /* extra payload bytes per event */
    uint64_t seq; /* next event number (payload_size) */
    char part_of[MAX_SEQ][16];
    uint64_t offset_of[MAX_SEQ];
} fixture;

static int64_t t_now(void *ctx)
{
    fixture *f = ctx;
    return atomic_load(&f->clock_ns);
}

static int part_opts(void *ctx, const char *name, partition_options *o)
{
    fixture *f = ctx;
    fanout_writer *w;
    int rc = fanout_writer_get(f->live, name, &w);
    *o = (partition_options){
        .log = {.now_ns = f->use_clock ? t_now : NULL, .clock_ctx = f},
        .fsync = PARTITION_FSYNC_NEVER, /* durability is test_partition's subject */
        .topic_history = 4,
        .durable = fanout_durable,
        .acked = fanout_acked,
        .durable_ctx = w,
    };
    return rc;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    strcpy(f->root, "/tmp/test_sub.XXXXXX");
    if (!mkdtemp(f->root))
        return -1;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    atomic_init(&f->clock_ns, 1000 * SEC);
    if (store_open(&f->st, f->root, part_opts, f) != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    sub_registry_destroy(f->reg);
    assert_int_equal(store_close(f->st), 0);
    fanout_destroy(f->live);
    testfs_rmrf(f->root);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->cond);
    free(f);
    return 0;
}

/* Creates the fan-out (before any partition, which announces into it) and
 * the registry. */
static void start_total(fixture *f, uint32_t threads, uint64_t queue_bytes,
                        uint64_t queue_total_bytes, uint32_t deadline_ms)
{
    fanout_options fo = {.slots = threads, .queue_total_bytes = queue_total_bytes};
    assert_int_equal(fanout_create(&f->live, &fo), 0);
    sub_options o = {.store = f->st,
                     .live = f->live,
                     .threads = threads,
                     .queue_bytes = queue_bytes,
                     .write_deadline_ms = deadline_ms,
                     .topic_history = 4};
    assert_int_equal(sub_registry_create(&f->reg, &o), 0);
}

static void start(fixture *f, uint32_t threads, uint64_t queue_bytes, uint32_t deadline_ms)
{
    start_total(f, threads, queue_bytes, 0, deadline_ms);
}

/* Event seq: topic t<seq%3>, tags env=prod|dev (odd|even), region=us|eu
 * (seq%5==0 or not), payload_size = seq, plus f->pad payload bytes. */
static const char *topic_of(uint64_t seq)
{
    static const char *t[] = {"t0", "t1", "t2"};
    return t[seq % 3];
}

static bool tags_prod_eu(uint64_t seq)
{
    return seq % 2 == 1 && seq % 5 != 0;
}

static size_t put_tag(uint8_t *out, const char *k, const char *v)
{
    uint8_t entry[64];
    size_t n = wire_put_len_field(entry, 1, k, strlen(k));
    n += wire_put_len_field(entry + n, 2, v, strlen(v));
    return wire_put_len_field(out, 2, entry, n);
}

static void on_done(pub_part *part)
{
    fixture *f = part->batch->conn;
    pthread_mutex_lock(&f->lock);
    atomic_fetch_sub(&part->batch->pending, 1);
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

/* Publishes n events to partition `name` as one batch and waits until it is
 * stored. Returns the first seq. */
static uint64_t publish(fixture *f, const char *name, size_t n)
{
    partition *p;
    assert_int_equal(store_get(f->st, name, &p), 0);
    size_t per = 96 + f->pad;
    uint8_t *bytes = malloc(n * per);
    pub_event *ev = calloc(n, sizeof *ev);
    uint32_t *idx = calloc(n, sizeof *idx);
    uint8_t *padding = calloc(1, f->pad + 1);
    assert_non_null(bytes);
    assert_non_null(ev);
    assert_non_null(idx);
    assert_non_null(padding);
    uint64_t first = f->seq;
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t seq = f->seq++;
        assert_true(seq < MAX_SEQ);
        uint8_t *e = bytes + pos;
        const char *topic = topic_of(seq);
        size_t len = wire_put_len_field(e, 1, topic, strlen(topic));
        len += put_tag(e + len, "env", seq % 2 ? "prod" : "dev");
        len += put_tag(e + len, "region", seq % 5 ? "eu" : "us");
        len += wire_put_varint_field(e + len, 6, seq);
        if (f->pad) {
            uint8_t *any = malloc(f->pad + 16);
            assert_non_null(any);
            size_t al = wire_put_len_field(any, 2, padding, f->pad);
            len += wire_put_len_field(e + len, 7, any, al);
            free(any);
        }
        assert_true(len <= per);
        ev[i] = (pub_event){.data = e,
                            .len = (uint32_t)len,
                            .topic = e + 2,
                            .topic_len = (uint32_t)strlen(topic),
                            .offset = UINT64_MAX};
        idx[i] = (uint32_t)i;
        pos += len;
    }
    pub_batch b = {.done = on_done, .conn = f, .nevents = (uint32_t)n, .events = ev, .nparts = 1};
    pub_part part = {.batch = &b, .partition = p, .events = idx, .count = (uint32_t)n};
    b.parts = &part;
    b.bytes = bytes;
    b.bytes_len = pos;
    atomic_init(&b.pending, 1);
    partition_submit(p, &part);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += WAIT_MS / 1000;
    pthread_mutex_lock(&f->lock);
    while (atomic_load(&b.pending) != 0)
        assert_int_equal(pthread_cond_timedwait(&f->cond, &f->lock, &ts), 0);
    pthread_mutex_unlock(&f->lock);
    assert_int_equal(part.status, 0);
    for (size_t i = 0; i < n; i++) {
        snprintf(f->part_of[first + i], sizeof f->part_of[0], "%s", name);
        f->offset_of[first + i] = ev[i].offset;
    }
    free(bytes);
    free(ev);
    free(idx);
    free(padding);
    return first;
}

/* ------------------------------------------------------------------ */
/* the client side */

typedef struct client {
    int fd;
    uint8_t *buf;
    size_t len, cap;
    /* Protocol v1's confirmations, seen on the way (next_item checks their
     * order: Subscribed before anything, CaughtUp at most once). */
    bool subscribed;
    int caught_up;
    uint64_t history_events; /* CaughtUp's count */
    size_t events_before_caught_up;
    size_t events;
} client;

typedef struct item {
    bool is_error;
    char part[32];
    uint64_t offset;
    int64_t seq;
    char topic[16];
    size_t payload_len;
    int code;
    uint64_t first, last;
    char msg[512];
} item;

static client *subscribe_with(fixture *f, const Protobus__Subscribe *req)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    size_t len = protobus__subscribe__get_packed_size(req);
    uint8_t *body = malloc(len + 1);
    assert_non_null(body);
    protobus__subscribe__pack(req, body);
    int code = -1;
    char err[512] = "";
    int rc = sub_start(f->reg, sv[1], FRAME_ID, body, len, NULL, 0, &code, err, sizeof err);
    free(body);
    if (rc != 0)
        fail_msg("sub_start: %d (%s): %s", rc, pb_strerror(rc), err);
    client *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->fd = sv[0];
    c->cap = 1 << 20;
    c->buf = malloc(c->cap);
    assert_non_null(c->buf);
    return c;
}

/* sub_start must refuse: returns its code; err receives the message. */
static int subscribe_refused(fixture *f, const uint8_t *body, size_t len, char *err, size_t errlen)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int code = -1;
    int rc = sub_start(f->reg, sv[1], FRAME_ID, body, len, NULL, 0, &code, err, errlen);
    assert_true(rc < 0);
    /* The fd stays the caller's: still open. */
    assert_true(fcntl(sv[1], F_GETFD) >= 0);
    close(sv[0]);
    close(sv[1]);
    return code;
}

static int refused_req(fixture *f, const Protobus__Subscribe *req, char *err, size_t errlen)
{
    size_t len = protobus__subscribe__get_packed_size(req);
    uint8_t *body = malloc(len + 1);
    assert_non_null(body);
    protobus__subscribe__pack(req, body);
    int code = subscribe_refused(f, body, len, err, errlen);
    free(body);
    return code;
}

static void client_close(client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
    free(c);
}

/* Reads the next frame; false on end of stream. Fails the test on timeout. */
static bool next_item(client *c, item *it)
{
    for (;;) {
        frame_split fs;
        char err[160];
        int rc = frame_split_next(c->buf, c->len, c->cap, &fs, err, sizeof err);
        if (rc == 0) {
            Protobus__Frame *fr = protobus__frame__unpack(NULL, fs.body.len, fs.body.p);
            assert_non_null(fr);
            assert_int_equal(fr->id, FRAME_ID);
            memset(it, 0, sizeof *it);
            bool confirmation = fr->body_case == PROTOBUS__FRAME__BODY_SUBSCRIBED ||
                                fr->body_case == PROTOBUS__FRAME__BODY_CAUGHT_UP;
            /* Subscribed comes first (or an Error that ends it), once. */
            if (fr->body_case == PROTOBUS__FRAME__BODY_SUBSCRIBED)
                assert_false(c->subscribed);
            else if (fr->body_case != PROTOBUS__FRAME__BODY_ERROR)
                assert_true(c->subscribed);
            if (fr->body_case == PROTOBUS__FRAME__BODY_SUBSCRIBED) {
                c->subscribed = true;
            } else if (fr->body_case == PROTOBUS__FRAME__BODY_CAUGHT_UP) {
                assert_int_equal(c->caught_up++, 0);
                c->history_events = fr->caught_up->history_events;
                c->events_before_caught_up = c->events;
                assert_int_equal(c->history_events, c->events);
            } else if (fr->body_case == PROTOBUS__FRAME__BODY_EVENT) {
                c->events++;
                Protobus__Event *e = fr->event;
                snprintf(it->part, sizeof it->part, "%s", e->partition);
                it->offset = e->offset;
                assert_non_null(e->event);
                it->seq = e->event->payload_size;
                snprintf(it->topic, sizeof it->topic, "%s", e->event->topic);
                if (e->event->payload)
                    it->payload_len = e->event->payload->value.len;
            } else {
                assert_int_equal(fr->body_case, PROTOBUS__FRAME__BODY_ERROR);
                it->is_error = true;
                it->code = fr->error->code;
                snprintf(it->part, sizeof it->part, "%s", fr->error->partition);
                it->first = fr->error->first_offset;
                it->last = fr->error->last_offset;
                snprintf(it->msg, sizeof it->msg, "%s", fr->error->message);
            }
            protobus__frame__free_unpacked(fr, NULL);
            memmove(c->buf, c->buf + fs.used, c->len - fs.used);
            c->len -= fs.used;
            if (confirmation)
                continue;
            return true;
        }
        assert_int_equal(rc, PB_EINCOMPLETE);
        struct pollfd pf = {c->fd, POLLIN, 0};
        int pr = poll(&pf, 1, WAIT_MS);
        if (pr == 0)
            fail_msg("no frame from the subscription within %d ms", WAIT_MS);
        ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);
        if (n == 0)
            return false;
        assert_true(n > 0);
        c->len += (size_t)n;
    }
}

/* The next item must be the event of seq (partition and offset as stored). */
static void expect_seq(fixture *f, client *c, uint64_t seq)
{
    item it;
    assert_true(next_item(c, &it));
    if (it.is_error)
        fail_msg("expected event %llu, got error %d: %s", (unsigned long long)seq, it.code, it.msg);
    assert_int_equal(it.seq, (int64_t)seq);
    assert_string_equal(it.part, f->part_of[seq]);
    assert_int_equal(it.offset, f->offset_of[seq]);
    assert_string_equal(it.topic, topic_of(seq));
}

static void wait_subs(fixture *f, uint32_t active, uint32_t tailing)
{
    assert_int_equal(sub_registry_wait(f->reg, active, tailing, WAIT_MS), 0);
}

static Protobus__Subscribe sub_req(char **patterns, size_t n, Protobus__StartMode start)
{
    Protobus__Subscribe r = PROTOBUS__SUBSCRIBE__INIT;
    r.patterns = patterns;
    r.n_patterns = n;
    r.start = start;
    return r;
}

static char *all_topics[] = {".*"};

/* ------------------------------------------------------------------ */
/* tests */

typedef struct pub_thread {
    fixture *f;
    int batches;
} pub_thread;

static void *publisher(void *arg)
{
    pub_thread *pt = arg;
    for (int i = 0; i < pt->batches; i++)
        publish(pt->f, i % 2 ? "b" : "a", 8);
    return NULL;
}

static void test_history_then_live_no_gap_no_dup(void **state)
{
    fixture *f = *state;
    start(f, 4, 1 << 20, WAIT_MS);
    for (int i = 0; i < 5; i++) {
        publish(f, "a", 8);
        publish(f, "b", 8);
    }
    Protobus__Subscribe req = sub_req(all_topics, 1, PROTOBUS__START_MODE__START_BEGINNING);
    client *c = subscribe_with(f, &req);

    /* Publishers keep going while the subscription replays and switches. */
    pub_thread pt = {f, 300};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, publisher, &pt), 0);
    size_t total = 80 + 300 * 8;
    item *items = calloc(total, sizeof *items);
    assert_non_null(items);
    uint64_t next[2] = {0, 0};
    for (size_t i = 0; i < total; i++) {
        item *it = &items[i];
        assert_true(next_item(c, it));
        assert_false(it->is_error);
        int k = strcmp(it->part, "a") == 0 ? 0 : 1;
        assert_string_equal(it->part, k ? "b" : "a");
        assert_int_equal(it->offset, next[k]); /* no gap, no duplicate, in order */
        next[k]++;
    }
    assert_int_equal(pthread_join(th, NULL), 0);
    /* And each is the event stored there. */
    for (size_t i = 0; i < total; i++) {
        uint64_t seq = (uint64_t)items[i].seq;
        assert_true(seq < f->seq);
        assert_string_equal(items[i].part, f->part_of[seq]);
        assert_int_equal(items[i].offset, f->offset_of[seq]);
        assert_string_equal(items[i].topic, topic_of(seq));
    }
    /* Nothing after the last one but what comes next. */
    uint64_t marker = publish(f, "a", 1);
    expect_seq(f, c, marker);
    free(items);
    client_close(c);
}

static void test_history_merged_by_receive_time(void **state)
{
    fixture *f = *state;
    f->use_clock = true;
    start(f, 2, 1 << 20, WAIT_MS);
    for (int k = 0; k < 5; k++) {
        atomic_store(&f->clock_ns, (2000 + 2 * k) * SEC);
        publish(f, "b", 1);
        atomic_store(&f->clock_ns, (2001 + 2 * k) * SEC);
        publish(f, "a", 1);
    }
    Protobus__Subscribe req = sub_req(all_topics, 1, PROTOBUS__START_MODE__START_BEGINNING);
    client *c = subscribe_with(f, &req);
    for (uint64_t s = 0; s < 10; s++)
        expect_seq(f, c, s); /* b0 a0 b1 a1 ...: by time, not by partition */
    client_close(c);
}

/* F4: a replay over more partitions than SUBRUN_REPLAY_READERS, their
 * events interleaved in time, keeps at most that many readers open (each
 * closed reader reopens at its place when its turn comes): everything is
 * delivered once, in receive-time order, for a plain start and a last-N
 * start (whose readers skip to wanted offsets). */
static void test_replay_more_partitions_than_readers(void **state)
{
    fixture *f = *state;
    f->use_clock = true;
    start(f, 2, 1 << 20, WAIT_MS);
    enum { P = 3 * SUBRUN_REPLAY_READERS + 1, ROUNDS = 4 };
    char name[16];
    uint64_t first = f->seq;
    for (int k = 0; k < ROUNDS; k++) {
        for (int i = 0; i < P; i++) {
            atomic_store(&f->clock_ns, (3000 + (int64_t)(k * P + i)) * SEC);
            snprintf(name, sizeof name, "p%02d", i);
            publish(f, name, 1);
        }
    }
    Protobus__Subscribe req = sub_req(all_topics, 1, PROTOBUS__START_MODE__START_BEGINNING);
    client *c = subscribe_with(f, &req);
    for (uint64_t sq = first; sq < first + P * ROUNDS; sq++)
        expect_seq(f, c, sq);
    client_close(c);

    /* Last 1 of each topic of each partition, in time (= seq) order: seq
     * is the last of its topic (seq % 3) in its partition (seq % P) if no
     * later round put the same topic there. */
    req = sub_req(all_topics, 1, PROTOBUS__START_MODE__START_LAST_N);
    req.last_n = 1;
    c = subscribe_with(f, &req);
    for (uint64_t sq = first; sq < first + P * ROUNDS; sq++) {
        bool last = true;
        for (uint64_t later = sq + P; later < first + P * ROUNDS; later += P)
            if (later % 3 == sq % 3)
                last = false;
        if (last)
            expect_seq(f, c, sq);
    }
    client_close(c);
}

static void test_start_offsets_and_late_partition(void **state)
{
    fixture *f = *state;
    start(f, 2, 1 << 20, WAIT_MS);
    uint64_t a0 = publish(f, "a", 10);
    uint64_t b0 = publish(f, "b", 10);
    Protobus__PartitionOffset oa = PROTOBUS__PARTITION_OFFSET__INIT, oc = oa;
    oa.partition = "a";
    oa.offset = 7;
    oc.partition = "c"; /* does not exist yet */
    oc.offset = 2;
    Protobus__PartitionOffset *offs[] = {&oa, &oc};
    Protobus__Subscribe req = sub_req(all_topics, 1, PROTOBUS__START_MODE__START_OFFSETS);
    req.offsets = offs;
    req.n_offsets = 2;
    client *c = subscribe_with(f, &req);
    for (uint64_t s = a0 + 7; s < a0 + 10; s++)
        expect_seq(f, c, s);
    for (uint64_t s = b0; s < b0 + 10; s++)
        expect_seq(f, c, s);
    wait_subs(f, 1, 1);
    /* A partition created after the start: from its listed offset. */
    uint64_t c0 = publish(f, "c", 5);
    for (uint64_t s = c0 + 2; s < c0 + 5; s++)
        expect_seq(f, c, s);
    /* One not listed: from its beginning. */
    uint64_t d0 = publish(f, "d", 2);
    expect_seq(f, c, d0);
    expect_seq(f, c, d0 + 1);
    uint64_t a10 = publish(f, "a", 1);
    expect_seq(f, c, a10);
    client_close(c);
}

static void test_start_time(void **state)
{
    fixture *f = *state;
    f->use_clock = true;
    start(f, 2, 1 << 20, WAIT_MS);
    atomic_store(&f->clock_ns, 1000 * SEC);
    publish(f, "a", 5);
    atomic_store(&f->clock_ns, 2000 * SEC);
    uint64_t late = publish(f, "a", 5);

    Google__Protobuf__Timestamp from = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    from.seconds = 1500;
    Protobus__Subscribe req = sub_req(all_topics, 1, PROTOBUS__START_MODE__START_TIME);
    req.from_time = &from;
    client *c1 = subscribe_with(f, &req);
    for (uint64_t s = late; s < late + 5; s++)
        expect_seq(f, c1, s);

    /* A start in the future: older live events are not delivered either. */
    Google__Protobuf__Timestamp future = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    future.seconds = 5000;
    req.from_time = &future;
    client *c2 = subscribe_with(f, &req);
    wait_subs(f, 2, 2);
    atomic_store(&f->clock_ns, 3000 * SEC);
    uint64_t at3000 = publish(f, "a", 1);
    atomic_store(&f->clock_ns, 6000 * SEC);
    uint64_t at6000 = publish(f, "a", 1);
    expect_seq(f, c1, at3000);
    expect_seq(f, c1, at6000);
    expect_seq(f, c2, at6000);
    client_close(c1);
    client_close(c2);
}

static void test_start_last_n(void **state)
{
    fixture *f = *state;
    start(f, 2, 1 << 20, WAIT_MS);
    publish(f, "a", 16);
    publish(f, "a", 14); /* seq = offset 0..29; topics t0 t1 t2 t0 ... */
    char *pats[] = {"t[01]"};
    Protobus__Subscribe req = sub_req(pats, 1, PROTOBUS__START_MODE__START_LAST_N);
    req.last_n = 2;
    client *c = subscribe_with(f, &req);
    /* t0: ... 24 27; t1: ... 25 28; in offset (= time) order. */
    expect_seq(f, c, 24);
    expect_seq(f, c, 25);
    expect_seq(f, c, 27);
    expect_seq(f, c, 28);
    wait_subs(f, 1, 1);
    publish(f, "a", 3); /* 30 (t0), 31 (t1), 32 (t2) */
    expect_seq(f, c, 30);
    expect_seq(f, c, 31);
    uint64_t s = publish(f, "a", 1); /* 33: t0 */
    expect_seq(f, c, s);
    client_close(c);
}

static void test_start_new(void **state)
{
    fixture *f = *state;
    start(f, 2, 1 << 20, WAIT_MS);
    publish(f, "a", 10);
    Protobus__Subscribe req = sub_req(all_topics, 1, PROTOBUS__START_MODE__START_NEW);
    client *c = subscribe_with(f, &req);
    wait_subs(f, 1, 1);
    uint64_t s = publish(f, "a", 3);
    expect_seq(f, c, s);
    expect_seq(f, c, s + 1);
    expect_seq(f, c, s + 2);
    client_close(c);
}

/* Events bigger than the output buffer go out whole, from the files and
 * from the live queue. */
static void test_large_events(void **state)
{
    fixture *f = *state;
    start(f, 1, 4 << 20, WAIT_MS);
    f->pad = 600000;
    uint64_t s = publish(f, "a", 2);
    Protobus__Subscribe req = sub_req(all_topics, 1, PROTOBUS__START_MODE__START_BEGINNING);
    client *c = subscribe_with(f, &req);
    item it;
    for (uint64_t k = 0; k < 2; k++) {
        assert_true(next_item(c, &it));
        assert_int_equal(it.seq, (int64_t)(s + k));
        assert_int_equal(it.payload_len, 600000);
    }
    wait_subs(f, 1, 1);
    s = publish(f, "a", 1);
    assert_true(next_item(c, &it));
    assert_int_equal(it.seq, (int64_t)s);
    assert_int_equal(it.payload_len, 600000);
    client_close(c);
}

static void test_pattern_and_tag_filter(void **state)
{
    fixture *f = *state;
    start(f, 2, 1 << 20, WAIT_MS);
    publish(f, "a", 30);
    publish(f, "b", 30);
    char *pats[] = {"t1", "t2"};
    Protobus__Subscribe req = sub_req(pats, 2, PROTOBUS__START_MODE__START_BEGINNING);
    Protobus__Subscribe__TagsEntry t1 = PROTOBUS__SUBSCRIBE__TAGS_ENTRY__INIT, t2 = t1;
    t1.key = "env";
    t1.value = "prod";
    t2.key = "region";
    t2.value = "eu";
    Protobus__Subscribe__TagsEntry *tags[] = {&t1, &t2};
    req.tags = tags;
    req.n_tags = 2;
    client *c = subscribe_with(f, &req);
    for (uint64_t s = 0; s < 60; s++)
        if (s % 3 != 0 && tags_prod_eu(s))
            expect_seq(f, c, s);
    wait_subs(f, 1, 1);
    uint64_t first = publish(f, "a", 30);
    for (uint64_t s = first; s < first + 30; s++)
        if (s % 3 != 0 && tags_prod_eu(s))
            expect_seq(f, c, s);
    client_close(c);
}

/* ".*" with tag filters: the match-everything shortcuts (no topic lookup in
 * the fan-out, no pattern run in the history) must still apply the tags,
 * from the files and live. */
static void test_match_all_with_tags_still_filters(void **state)
{
    fixture *f = *state;
    start(f, 2, 1 << 20, WAIT_MS);
    publish(f, "a", 30);
    Protobus__Subscribe req = sub_req(all_topics, 1, PROTOBUS__START_MODE__START_BEGINNING);
    Protobus__Subscribe__TagsEntry t1 = PROTOBUS__SUBSCRIBE__TAGS_ENTRY__INIT, t2 = t1;
    t1.key = "env";
    t1.value = "prod";
    t2.key = "region";
    t2.value = "eu";
    Protobus__Subscribe__TagsEntry *tags[] = {&t1, &t2};
    req.tags = tags;
    req.n_tags = 2;
    client *c = subscribe_with(f, &req);
    for (uint64_t s = 0; s < 30; s++)
        if (tags_prod_eu(s))
            expect_seq(f, c, s);
    wait_subs(f, 1, 1);
    uint64_t first = publish(f, "a", 30);
    for (uint64_t s = first; s < first + 30; s++)
        if (tags_prod_eu(s))
            expect_seq(f, c, s);
    uint64_t marker = publish(f, "a", 2); /* seq 60 (dev), 61 (prod, eu) */
    expect_seq(f, c, marker + 1);
    client_close(c);
}

/* A live queue that holds a few events and a client reading a little at a
 * time: the subscription keeps overflowing and catching up from the files,
 * yet every event arrives once, in offset order per partition. */
static void test_overflow_slow_reader_exactly_once(void **state)
{
    fixture *f = *state;
    start(f, 2, 512, WAIT_MS);
    publish(f, "a", 20);
    publish(f, "b", 20);
    Protobus__Subscribe req = sub_req(all_topics, 1, PROTOBUS__START_MODE__START_BEGINNING);
    client *c = subscribe_with(f, &req);
    uint64_t next[2] = {0, 0};
    size_t got = 0;
    item it;
    for (int i = 0; i < 120; i++) {
        publish(f, i % 3 ? "a" : "b", 8);
        for (int k = 0; k < 3; k++) {
            assert_true(next_item(c, &it));
            assert_false(it.is_error);
            int p = strcmp(it.part, "a") == 0 ? 0 : 1;
            assert_int_equal(it.offset, next[p]);
            next[p]++;
            got++;
        }
    }
    while (got < f->seq) {
        assert_true(next_item(c, &it));
        assert_false(it.is_error);
        int p = strcmp(it.part, "a") == 0 ? 0 : 1;
        assert_int_equal(it.offset, next[p]);
        next[p]++;
        got++;
    }
    assert_int_equal(next[0], 20 + 80 * 8);
    assert_int_equal(next[1], 20 + 40 * 8);
    uint64_t marker = publish(f, "b", 1);
    expect_seq(f, c, marker);
    client_close(c);
}

/* Expects, for each client, the events of [first, first + n) its pattern
 * selects (by topic number: bit t of want[i] set = client i wants tN). */
static void expect_topics(fixture *f, client **c, const unsigned *want, size_t nc, uint64_t first,
                          size_t n)
{
    for (size_t i = 0; i < nc; i++)
        for (uint64_t s = first; s < first + n; s++)
            if (want[i] & (1u << (s % 3)))
                expect_seq(f, c[i], s);
}

static fanout_stats stats(fixture *f)
{
    fanout_stats st;
    fanout_get_stats(f->live, &st);
    return st;
}

/* The waker's fast path (fanout_fast): records for a sleeping subscription
 * are written by the waker itself; when the reader does not keep up, what
 * the socket refused (a partial frame included) and everything after it is
 * its own thread's, and the reader still gets every event once, in order. */
static void test_fast_path_then_thread_exactly_once(void **state)
{
    fixture *f = *state;
    start(f, 2, 1 << 22, WAIT_MS);
    publish(f, "a", 1); /* "a" is known at subscribe time: its records take the fast path */
    Protobus__Subscribe req = sub_req(all_topics, 1, PROTOBUS__START_MODE__START_BEGINNING);
    client *c = subscribe_with(f, &req);
    wait_subs(f, 1, 1);
    expect_seq(f, c, 0);
    /* The thread counts as tailing just before it sleeps: a batch may
     * still find it awake (signalled); some batch soon takes the fast path. */
    fanout_stats s0 = stats(f);
    for (int i = 0; i < 200 && stats(f).fast_done == s0.fast_done; i++) {
        uint64_t first = publish(f, "a", 3);
        for (uint64_t k = 0; k < 3; k++)
            expect_seq(f, c, first + k);
    }
    fanout_stats s1 = stats(f);
    assert_true(s1.fast_done > s0.fast_done);

    /* A reader that stops reading: ~1.3 MB of events of ~8 KB fill the
     * socket; nothing is lost, duplicated or reordered. Meanwhile another
     * subscriber gets every batch as it comes: the stalled one costs the
     * waker a refused send, never a wait. */
    Protobus__Subscribe req_new = sub_req(all_topics, 1, PROTOBUS__START_MODE__START_NEW);
    client *other = subscribe_with(f, &req_new);
    wait_subs(f, 2, 2);
    f->pad = 8000;
    uint64_t from = f->seq;
    for (int i = 0; i < 40; i++) {
        uint64_t first = publish(f, "a", 4);
        for (uint64_t k = 0; k < 4; k++)
            expect_seq(f, other, first + k);
    }
    for (uint64_t s = from; s < f->seq; s++)
        expect_seq(f, c, s);
    fanout_stats s2 = stats(f);
    assert_true(s2.fast_thread > s1.fast_thread);
    f->pad = 0;
    uint64_t marker = publish(f, "a", 1);
    expect_seq(f, c, marker);
    expect_seq(f, other, marker);
    client_close(other);
    client_close(c);
}

/* The writers cache topic -> matching subscriptions; every answer stays
 * right when subscriptions end and start (the cache of the old set is not
 * used), repeated topics are answered from the cache, and a subscription
 * to everything needs no lookup at all. ("t0|t1": a top-level alternation
 * has no key, so the set is not keyed-only and the cache is used.) */
static void test_fanout_cache_as_subscriptions_come_and_go(void **state)
{
    fixture *f = *state;
    start(f, 4, 1 << 20, WAIT_MS);
    char *p_t0[] = {"t0"}, *p_t01[] = {"t0|t1"}, *p_t20[] = {"t2", "t0"};
    Protobus__Subscribe r_t0 = sub_req(p_t0, 1, PROTOBUS__START_MODE__START_NEW);
    Protobus__Subscribe r_t01 = sub_req(p_t01, 1, PROTOBUS__START_MODE__START_NEW);
    Protobus__Subscribe r_t20 = sub_req(p_t20, 2, PROTOBUS__START_MODE__START_NEW);
    Protobus__Subscribe r_all = sub_req(all_topics, 1, PROTOBUS__START_MODE__START_NEW);
    client *c[3] = {subscribe_with(f, &r_t0), subscribe_with(f, &r_t01), subscribe_with(f, &r_all)};
    wait_subs(f, 3, 3);

    /* First sight of t0..t2: the patterns run (misses); the same topics
     * again: answered from the cache, no miss added. */
    fanout_stats s0 = stats(f);
    uint64_t first = publish(f, "a", 30);
    unsigned want[3] = {1, 3, 7};
    expect_topics(f, c, want, 3, first, 30);
    fanout_stats s1 = stats(f);
    assert_int_equal(s1.match_misses - s0.match_misses, 30);
    assert_int_equal(s1.match_hits, s0.match_hits);
    first = publish(f, "a", 30);
    expect_topics(f, c, want, 3, first, 30);
    fanout_stats s2 = stats(f);
    assert_int_equal(s2.match_hits - s1.match_hits, 30);
    assert_int_equal(s2.match_misses, s1.match_misses);

    /* t0's subscriber leaves, one for t2|t0 arrives: the cached answers
     * (t0 -> {first, second}) are stale and must not be used. */
    client_close(c[0]);
    wait_subs(f, 2, 2);
    c[0] = subscribe_with(f, &r_t20);
    wait_subs(f, 3, 3);
    first = publish(f, "a", 30);
    want[0] = 5;
    expect_topics(f, c, want, 3, first, 30);
    fanout_stats s3 = stats(f);
    assert_int_equal(s3.match_misses - s2.match_misses, 30);
    /* Another partition has its own writer and cache: right answers too. */
    first = publish(f, "b", 30);
    expect_topics(f, c, want, 3, first, 30);
    first = publish(f, "a", 30);
    expect_topics(f, c, want, 3, first, 30);
    fanout_stats s4 = stats(f);
    assert_int_equal(s4.match_hits - s3.match_hits, 30);
    assert_int_equal(s4.match_misses - s3.match_misses, 30); /* b's first sight */

    /* Only the ".*" subscription left: it gets everything, without any
     * lookup. */
    client_close(c[0]);
    client_close(c[1]);
    wait_subs(f, 1, 1);
    fanout_stats s5 = stats(f);
    first = publish(f, "a", 30);
    unsigned all = 7;
    expect_topics(f, &c[2], &all, 1, first, 30);
    fanout_stats s6 = stats(f);
    assert_int_equal(s6.match_hits, s5.match_hits);
    assert_int_equal(s6.match_misses, s5.match_misses);
    client_close(c[2]);
}

/* Subscriptions whose patterns all have keys (matcher.h, keyed_only): the
 * writers do not fill the match cache (its memory, for lookups no cheaper
 * than the matcher's), every record asks the matcher, and the answers are
 * the same as with the cache. A subscription without keys brings the cache
 * back. */
static void test_fanout_keyed_only_set_skips_the_cache(void **state)
{
    fixture *f = *state;
    start(f, 4, 1 << 20, WAIT_MS);
    char *p_t0[] = {"t0"}, *p_t1[] = {"t1", "t2"}, *p_alt[] = {"t0|t2"};
    Protobus__Subscribe r_t0 = sub_req(p_t0, 1, PROTOBUS__START_MODE__START_NEW);
    Protobus__Subscribe r_t1 = sub_req(p_t1, 2, PROTOBUS__START_MODE__START_NEW);
    Protobus__Subscribe r_alt = sub_req(p_alt, 1, PROTOBUS__START_MODE__START_NEW);
    client *c[3] = {subscribe_with(f, &r_t0), subscribe_with(f, &r_t1), NULL};
    wait_subs(f, 2, 2);
    unsigned want[3] = {1, 6, 5};
    fanout_stats s0 = stats(f);
    uint64_t first = publish(f, "a", 30);
    expect_topics(f, c, want, 2, first, 30);
    first = publish(f, "a", 30);
    expect_topics(f, c, want, 2, first, 30);
    fanout_stats s1 = stats(f);
    assert_int_equal(s1.match_hits, s0.match_hits);
    assert_int_equal(s1.match_misses - s0.match_misses, 60);

    c[2] = subscribe_with(f, &r_alt);
    wait_subs(f, 3, 3);
    first = publish(f, "a", 30);
    expect_topics(f, c, want, 3, first, 30);
    fanout_stats s2 = stats(f);
    first = publish(f, "a", 30);
    expect_topics(f, c, want, 3, first, 30);
    fanout_stats s3 = stats(f);
    /* Once the matcher said the set is not keyed-only (the first chunk
     * after the change), repeated topics are answered from the cache. */
    assert_int_equal(s3.match_hits - s2.match_hits, 30);
    assert_int_equal(s3.match_misses, s2.match_misses);
    for (size_t i = 0; i < 3; i++)
        client_close(c[i]);
}

/* Live queues with room for 1 MiB each but 16 KiB for all of them: clients
 * that do not read make their queues pass the shared budget, which
 * overflows them (never the budget), and they still get every event once,
 * in order, from the files. When they end, the budget is all free again. */
static void test_queue_budget_overflows_to_files_exactly_once(void **state)
{
    fixture *f = *state;
    /* ~16 KB events: 480 of them (7.7 MB) are more than a connection's
     * socket buffers hold while its client reads nothing (the send buffer
     * autotunes up to tcp_wmem's 4 MiB; the receive one stays near its
     * 128 KiB default without reads), so the queues must overflow however
     * fast the subscription threads run. With 1.5 KB events a thread that
     * kept up could push everything into the sockets (a busy machine saw
     * no overflow, twice). */
    f->pad = 16000;
    start_total(f, 3, 1 << 20, 16384, WAIT_MS);
    Protobus__Subscribe req = sub_req(all_topics, 1, PROTOBUS__START_MODE__START_NEW);
    client *c[2] = {subscribe_with(f, &req), subscribe_with(f, &req)};
    wait_subs(f, 2, 2);
    assert_int_equal(stats(f).queue_budget, 16384);
    /* 480 events of ~16 KB: far more than the socket buffers and the
     * budget hold while nobody reads. */
    for (int i = 0; i < 60; i++) {
        publish(f, "a", 8);
        assert_true(stats(f).queued_bytes <= 16384);
    }
    assert_true(stats(f).queue_resets > 0);
    for (int k = 0; k < 2; k++)
        for (uint64_t s = 0; s < 480; s++)
            expect_seq(f, c[k], s);
    uint64_t marker = publish(f, "a", 1);
    expect_seq(f, c[0], marker);
    expect_seq(f, c[1], marker);
    client_close(c[0]);
    client_close(c[1]);
    wait_subs(f, 0, 0);
    assert_int_equal(stats(f).queued_bytes, 0);
}

static void test_pool_full_and_client_close_frees_thread(void **state)
{
    fixture *f = *state;
    start(f, 1, 1 << 20, WAIT_MS);
    Protobus__Subscribe req = sub_req(all_topics, 1, PROTOBUS__START_MODE__START_NEW);
    client *c1 = subscribe_with(f, &req);
    wait_subs(f, 1, 1);
    char err[512];
    assert_int_equal(refused_req(f, &req, err, sizeof err), PROTOBUS__CODE__RESOURCE_EXHAUSTED);
    assert_non_null(
        strstr(err, "all 1 subscriptions are taken (server setting max_subscriptions)"));

    /* The client leaves: the subscription ends and its thread is free. */
    client_close(c1);
    wait_subs(f, 0, 0);
    client *c2 = subscribe_with(f, &req);
    wait_subs(f, 1, 1);
    uint64_t s = publish(f, "a", 1);
    expect_seq(f, c2, s);
    client_close(c2);
}

/* A client that reads nothing: dropped once no byte went out for the
 * deadline, and the thread is free again. */
static void test_stalled_client_dropped_at_deadline(void **state)
{
    fixture *f = *state;
    start(f, 1, 1 << 20, 200);
    f->pad = 16000;
    for (int i = 0; i < 10; i++)
        publish(f, "a", 10); /* 1.6 MB: far more than the socket buffers */
    Protobus__Subscribe req = sub_req(all_topics, 1, PROTOBUS__START_MODE__START_BEGINNING);
    client *c = subscribe_with(f, &req);
    wait_subs(f, 0, 0);
    /* What was written is readable, then end of stream. */
    item it;
    size_t n = 0;
    while (next_item(c, &it)) {
        assert_false(it.is_error);
        assert_int_equal(it.offset, n);
        n++;
    }
    assert_true(n < 100);
    client_close(c);
}

/* Flips one byte inside the event of record `offset` of partition dir/a. */
static void corrupt_record(fixture *f, uint64_t offset)
{
    char path[128];
    snprintf(path, sizeof path, "%s/a/%020d.log", f->root, 0);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint64_t pos = 40; /* segment header */
    for (uint64_t i = 0; i < offset; i++) {
        uint32_t len;
        assert_int_equal(pread(fd, &len, 4, (off_t)pos + 4), 4);
        pos += 8 + len;
    }
    uint8_t b;
    off_t at = (off_t)pos + 24 + 5; /* a byte of the topic field */
    assert_int_equal(pread(fd, &b, 1, at), 1);
    b ^= 0x40;
    assert_int_equal(pwrite(fd, &b, 1, at), 1);
    assert_int_equal(close(fd), 0);
}

static void test_corrupt_record_data_loss_then_continue(void **state)
{
    fixture *f = *state;
    start(f, 1, 1 << 20, WAIT_MS);
    publish(f, "a", 10);
    corrupt_record(f, 4);
    Protobus__Subscribe req = sub_req(all_topics, 1, PROTOBUS__START_MODE__START_BEGINNING);
    client *c = subscribe_with(f, &req);
    for (uint64_t s = 0; s < 4; s++)
        expect_seq(f, c, s);
    item it;
    assert_true(next_item(c, &it));
    assert_true(it.is_error);
    assert_int_equal(it.code, PROTOBUS__CODE__DATA_LOSS);
    assert_string_equal(it.part, "a");
    assert_int_equal(it.first, 4);
    assert_int_equal(it.last, 4);
    assert_non_null(strstr(it.msg, "00000000000000000000.log"));
    assert_non_null(strstr(it.msg, "byte"));
    for (uint64_t s = 5; s < 10; s++)
        expect_seq(f, c, s);
    wait_subs(f, 1, 1);
    uint64_t s = publish(f, "a", 1);
    expect_seq(f, c, s);
    client_close(c);
}

static void test_invalid_requests(void **state)
{
    fixture *f = *state;
    start(f, 2, 1 << 20, WAIT_MS);
    char err[512];

    static const uint8_t garbage[] = {0x0a, 0x7f, 'x'}; /* length past the end */
    assert_int_equal(subscribe_refused(f, garbage, sizeof garbage, err, sizeof err),
                     PROTOBUS__CODE__INVALID_ARGUMENT);
    assert_non_null(strstr(err, "malformed"));

    Protobus__Subscribe req = sub_req(NULL, 0, PROTOBUS__START_MODE__START_BEGINNING);
    assert_int_equal(refused_req(f, &req, err, sizeof err), PROTOBUS__CODE__INVALID_ARGUMENT);
    assert_non_null(strstr(err, "no patterns"));

    char *bad[] = {"ok", "a(b"};
    req = sub_req(bad, 2, PROTOBUS__START_MODE__START_BEGINNING);
    assert_int_equal(refused_req(f, &req, err, sizeof err), PROTOBUS__CODE__INVALID_ARGUMENT);
    assert_non_null(strstr(err, "a(b"));
    assert_non_null(strstr(err, "offset 3"));

    req = sub_req(all_topics, 1, PROTOBUS__START_MODE__START_LAST_N);
    assert_int_equal(refused_req(f, &req, err, sizeof err), PROTOBUS__CODE__INVALID_ARGUMENT);
    assert_non_null(strstr(err, "last_n"));
    req.last_n = 5; /* the partitions keep 4 per topic */
    assert_int_equal(refused_req(f, &req, err, sizeof err), PROTOBUS__CODE__INVALID_ARGUMENT);
    assert_non_null(strstr(err, "keeps per topic"));

    Protobus__PartitionOffset o1 = PROTOBUS__PARTITION_OFFSET__INIT, o2 = o1;
    o1.partition = "../etc";
    Protobus__PartitionOffset *offs[] = {&o1, &o2};
    req = sub_req(all_topics, 1, PROTOBUS__START_MODE__START_OFFSETS);
    req.offsets = offs;
    req.n_offsets = 1;
    assert_int_equal(refused_req(f, &req, err, sizeof err), PROTOBUS__CODE__INVALID_ARGUMENT);
    assert_non_null(strstr(err, "\"../etc\" is not a valid partition name"));
    o1.partition = "a";
    o2.partition = "a";
    req.n_offsets = 2;
    assert_int_equal(refused_req(f, &req, err, sizeof err), PROTOBUS__CODE__INVALID_ARGUMENT);
    assert_non_null(strstr(err, "listed twice"));

    req = sub_req(all_topics, 1, PROTOBUS__START_MODE__START_TIME);
    assert_int_equal(refused_req(f, &req, err, sizeof err), PROTOBUS__CODE__INVALID_ARGUMENT);
    assert_non_null(strstr(err, "from_time"));

    req = sub_req(all_topics, 1, (Protobus__StartMode)9);
    assert_int_equal(refused_req(f, &req, err, sizeof err), PROTOBUS__CODE__INVALID_ARGUMENT);
    assert_non_null(strstr(err, "start mode 9"));

    assert_int_equal(sub_registry_active(f->reg), 0);
}

static void test_stop_ends_subscriptions(void **state)
{
    fixture *f = *state;
    start(f, 3, 1 << 20, WAIT_MS);
    publish(f, "a", 3);
    Protobus__Subscribe req = sub_req(all_topics, 1, PROTOBUS__START_MODE__START_BEGINNING);
    client *c1 = subscribe_with(f, &req);
    client *c2 = subscribe_with(f, &req);
    wait_subs(f, 2, 2);
    sub_registry_stop(f->reg);
    assert_int_equal(sub_registry_active(f->reg), 0);
    item it;
    for (uint64_t s = 0; s < 3; s++)
        expect_seq(f, c1, s);
    assert_false(next_item(c1, &it));
    for (uint64_t s = 0; s < 3; s++)
        expect_seq(f, c2, s);
    assert_false(next_item(c2, &it));
    char err[512];
    assert_int_equal(refused_req(f, &req, err, sizeof err), PROTOBUS__CODE__UNAVAILABLE);
    /* Publishing after the stop is harmless. */
    publish(f, "a", 1);
    client_close(c1);
    client_close(c2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_history_then_live_no_gap_no_dup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_history_merged_by_receive_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_more_partitions_than_readers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_offsets_and_late_partition, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_last_n, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_new, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pattern_and_tag_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_match_all_with_tags_still_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overflow_slow_reader_exactly_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fast_path_then_thread_exactly_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_full_and_client_close_frees_thread, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stalled_client_dropped_at_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_record_data_loss_then_continue, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_invalid_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_ends_subscriptions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fanout_cache_as_subscriptions_come_and_go, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fanout_keyed_only_set_skips_the_cache, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue_budget_overflows_to_files_exactly_once, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
