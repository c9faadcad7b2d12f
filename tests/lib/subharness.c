/* subharness - see subharness.h. */
#include "subharness.h"

#include "config.h"
#include "frame.h"
#include "partition.h"
#include "pb_errors.h"
#include "testfs.h"
#include "wire.h"

#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static int64_t t_now(void *ctx)
{
    sh_fixture *f = ctx;
    return atomic_load(&f->clock_ns);
}

static int part_opts(void *ctx, const char *name, partition_options *o)
{
    sh_fixture *f = ctx;
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

int sh_setup(void **state)
{
    sh_fixture *f = calloc(1, sizeof *f);
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

int sh_teardown(void **state)
{
    sh_fixture *f = *state;
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
void sh_start_total(sh_fixture *f, uint32_t threads, uint64_t queue_bytes,
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

void sh_start(sh_fixture *f, uint32_t threads, uint64_t queue_bytes, uint32_t deadline_ms)
{
    sh_start_total(f, threads, queue_bytes, 0, deadline_ms);
}

/* Event seq: topic t<seq%3>, tags env=prod|dev (odd|even), region=us|eu
 * (seq%5==0 or not), payload_size = seq, plus f->pad payload bytes. */
const char *sh_topic_of(uint64_t seq)
{
    static const char *t[] = {"t0", "t1", "t2"};
    return t[seq % 3];
}

bool sh_tags_prod_eu(uint64_t seq)
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
    sh_fixture *f = part->batch->conn;
    pthread_mutex_lock(&f->lock);
    atomic_fetch_sub(&part->batch->pending, 1);
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

/* Publishes n events to partition `name` as one batch and waits until it is
 * stored. Returns the first seq. */
uint64_t sh_publish(sh_fixture *f, const char *name, size_t n)
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
        const char *topic = sh_topic_of(seq);
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

sh_client *sh_subscribe(sh_fixture *f, const Protobus__Subscribe *req)
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
    sh_client *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->fd = sv[0];
    c->cap = 1 << 20;
    c->buf = malloc(c->cap);
    assert_non_null(c->buf);
    return c;
}

/* sub_start must refuse: returns its code; err receives the message. */
int sh_subscribe_refused(sh_fixture *f, const uint8_t *body, size_t len, char *err, size_t errlen)
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

int sh_refused_req(sh_fixture *f, const Protobus__Subscribe *req, char *err, size_t errlen)
{
    size_t len = protobus__subscribe__get_packed_size(req);
    uint8_t *body = malloc(len + 1);
    assert_non_null(body);
    protobus__subscribe__pack(req, body);
    int code = sh_subscribe_refused(f, body, len, err, errlen);
    free(body);
    return code;
}

void sh_client_close(sh_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
    free(c);
}

/* Reads the next frame; false on end of stream. Fails the test on timeout. */
bool sh_next_item(sh_client *c, sh_item *it)
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
void sh_expect_seq(sh_fixture *f, sh_client *c, uint64_t seq)
{
    sh_item it;
    assert_true(sh_next_item(c, &it));
    if (it.is_error)
        fail_msg("expected event %llu, got error %d: %s", (unsigned long long)seq, it.code, it.msg);
    assert_int_equal(it.seq, (int64_t)seq);
    assert_string_equal(it.part, f->part_of[seq]);
    assert_int_equal(it.offset, f->offset_of[seq]);
    assert_string_equal(it.topic, sh_topic_of(seq));
}

void sh_wait_subs(sh_fixture *f, uint32_t active, uint32_t tailing)
{
    assert_int_equal(sub_registry_wait(f->reg, active, tailing, WAIT_MS), 0);
}

Protobus__Subscribe sh_sub_req(char **patterns, size_t n, Protobus__StartMode start)
{
    Protobus__Subscribe r = PROTOBUS__SUBSCRIBE__INIT;
    r.patterns = patterns;
    r.n_patterns = n;
    r.start = start;
    return r;
}

char *sh_all_topics[1] = {".*"};