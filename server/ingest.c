/*
 * ingest - a Publish frame into a pub_batch, its parts into the partitions'
 * writers, and its reply (see ingest.h).
 *
 * Threads: the loop thread only. The batch's done() callback (given by the
 * caller) runs on writer threads; nothing here does.
 *
 * One allocation per batch: the ingest_batch header, the ack arrays, the
 * events, the parts' event index lists and a copy of the frame's bytes (the
 * events point into that copy, which lives as long as the batch: the read
 * buffer they came from is reused at once). A frame received alone in its
 * connection's buffer is not copied: the batch takes that buffer (a block
 * of the same cache, ingest_prepare_adopt) and the connection another. The
 * parts (one per partition the batch touches, so few) grow in an array of
 * their own. The ack frame is allocated once the batch is done.
 */
#include "ingest.h"
#include "metrics.h"

#include "dedup.h"
#include "frame.h"
#include "grow.h"
#include "partition.h"
#include "pb_errors.h"
#include "router.h"
#include "store.h"
#include "wire.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A pub_batch plus what only the loop thread uses to build its ack. */
typedef struct ingest_batch {
    pub_batch b;     /* first member: a pub_batch * is an ingest_batch * */
    void *adopted;   /* the block holding b.bytes when not copied (ingest_prepare_adopt) */
    uint32_t *lists; /* the parts' event index lists (nevents entries) */
    uint32_t *ack_index;
    uint64_t *ack_offsets;
    size_t parts_cap; /* of b.parts */
} ingest_batch;

/* Per event: its pub_event, its slot in a part's list, the ack's index and
 * offset, and its share of the PublishAck frame (a partition index and an
 * offset, varints of at most 5 and 10 bytes). */
#define ACK_FRAME_BYTES_PER_EVENT 15
#define BATCH_BYTES_PER_EVENT                                                                      \
    (sizeof(pub_event) + 2 * sizeof(uint32_t) + sizeof(uint64_t) + ACK_FRAME_BYTES_PER_EVENT)

uint64_t ingest_charge(uint32_t nevents, size_t frame_bytes)
{
    return sizeof(ingest_batch) + frame_bytes +
           (uint64_t)nevents * (BATCH_BYTES_PER_EVENT + partition_bytes_per_event());
}

/* Where the previous event of the batch went. Batches are mostly runs of
 * one topic, and a topic already validated and routed in this batch routes
 * to the same partition, so a run costs one compare per event instead of a
 * topic check and a route lookup. */
typedef struct route_memo {
    const uint8_t *topic; /* NULL: no event yet */
    uint32_t topic_len;
    partition *p; /* the partition of the last routed topic */
    uint32_t part;
} route_memo;

static int refuse(ingest_error *e, int code, uint32_t index_plus_one, const char *part_name,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Fills *e; returns PB_EINVAL for the caller to pass on. */
static int refuse(ingest_error *e, int code, uint32_t index_plus_one, const char *part_name,
                  const char *fmt, ...)
{
    e->code = code;
    e->event_index_plus_one = index_plus_one;
    e->limit = 0;
    e->has_expect = 0;
    snprintf(e->partition, sizeof e->partition, "%s", part_name ? part_name : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return PB_EINVAL;
}

/* Blocks of batches just acked, kept for the next batches: a batch of
 * 1,000 events is 0.2-1.2 MiB, above malloc's mmap threshold (main.c), so
 * without this every batch was a fresh mmap whose pages the kernel faulted
 * in and zeroed one by one, and a munmap: a quarter of the daemon's CPU
 * when publishing 1 KiB events (perf). A writer's take acks many batches at
 * once, so the cache holds about what is in flight (main.c's
 * MAX_INFLIGHT_BYTES, 16 MiB): memory the publish path used at full speed
 * anyway. Per thread (the loop thread is the only one here). */
#define BLOCK_CACHE       24
#define BLOCK_CACHE_BYTES (16u << 20)
#define BLOCK_ROUND       (64u << 10)

typedef struct block {
    size_t cap; /* usable bytes after this header */
    max_align_t align[];
} block;

static _Thread_local struct {
    block *b[BLOCK_CACHE];
    size_t n, bytes;
} cache;

/* A thread's cached blocks are freed when it ends (the daemon's loop runs
 * on the main thread, whose cache stays reachable until exit; a loop run
 * on a thread of its own, as in tests, ends with it): a pthread key's
 * destructor runs in the ending thread, its _Thread_local cache still
 * there. */
static pthread_key_t cache_key;
static bool cache_key_ok;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

static void cache_drain(void *unused)
{
    (void)unused;
    while (cache.n > 0)
        free(cache.b[--cache.n]);
    cache.bytes = 0;
}

static void cache_key_make(void)
{
    cache_key_ok = pthread_key_create(&cache_key, cache_drain) == 0;
}

void *ingest_block_get(size_t sz)
{
    for (size_t i = 0; i < cache.n; i++) {
        block *k = cache.b[i];
        if (k->cap >= sz && k->cap / 2 <= sz) { /* not a large block for a small batch */
            cache.b[i] = cache.b[--cache.n];
            cache.bytes -= k->cap;
            return k->align;
        }
    }
    /* Large blocks rounded up, so that the next batches fit them. */
    size_t cap = sz < BLOCK_ROUND ? sz
                                  : (sz + sizeof(block) + BLOCK_ROUND - 1) / BLOCK_ROUND *
                                            BLOCK_ROUND -
                                        sizeof(block);
    block *k = malloc(sizeof(block) + cap);
    if (!k)
        return NULL;
    k->cap = cap;
    return k->align;
}

void *ingest_block_resize(void *p, size_t sz)
{
    block *k = (block *)((char *)p - offsetof(block, align));
    block *r = realloc(k, sizeof(block) + sz); /* large ones: mremap, no copy */
    if (!r)
        return NULL;
    r->cap = sz;
    return r->align;
}

size_t ingest_block_cap(const void *p)
{
    const block *k = (const block *)((const char *)p - offsetof(block, align));
    return k->cap;
}

void ingest_block_put(void *p)
{
    block *k = (block *)((char *)p - offsetof(block, align));
    if (k->cap < BLOCK_ROUND || k->cap > BLOCK_CACHE_BYTES / 2) {
        free(k); /* small ones come from malloc's heap anyway; huge ones are rare */
        return;
    }
    while (cache.n > 0 && (cache.n == BLOCK_CACHE || cache.bytes + k->cap > BLOCK_CACHE_BYTES)) {
        block *old = cache.b[0]; /* the oldest goes */
        cache.bytes -= old->cap;
        memmove(cache.b, cache.b + 1, --cache.n * sizeof cache.b[0]);
        free(old);
    }
    if (cache.n == 0) {
        /* Registered while the cache holds blocks, so the destructor runs. */
        (void)pthread_once(&cache_once, cache_key_make);
        if (cache_key_ok)
            (void)pthread_setspecific(cache_key, &cache);
    }
    cache.b[cache.n++] = k;
    cache.bytes += k->cap;
}

/* The batch for nevents events, nexpect expectations and a copy of the
 * frame body (or, given the block it lies in, the body where it is),
 * laid out in one allocation: 8-byte aligned arrays first, then 4-byte
 * ones, then the bytes. */
static ingest_batch *batch_new(uint32_t nevents, uint32_t nexpect, const uint8_t *body, size_t len,
                               void *adopt)
{
    size_t sz = sizeof(ingest_batch) + (size_t)nevents * sizeof(pub_event) +
                (size_t)nexpect * sizeof(pub_expect) +
                (size_t)nevents * (2 * sizeof(uint32_t) + sizeof(uint64_t)) + (adopt ? 0 : len);
    ingest_batch *ib = ingest_block_get(sz);
    if (!ib)
        return NULL;
    memset(ib, 0, sizeof *ib);
    pub_batch *b = &ib->b;
    ib->ack_offsets = (uint64_t *)(ib + 1);
    b->events = (pub_event *)(ib->ack_offsets + nevents);
    b->expect = nexpect ? (pub_expect *)(b->events + nevents) : NULL;
    ib->lists = (uint32_t *)((pub_expect *)(b->events + nevents) + nexpect);
    ib->ack_index = ib->lists + nevents;
    b->bytes_len = len;
    b->received_ns = metrics_now_ns();
    if (adopt) {
        b->bytes = (uint8_t *)body; /* the block's; ib->adopted is set on success */
        return ib;
    }
    b->bytes = (uint8_t *)(ib->ack_index + nevents);
    memcpy(b->bytes, body, len);
    return ib;
}

static void batch_free(ingest_batch *ib)
{
    free(ib->b.parts);
    if (ib->adopted)
        ingest_block_put(ib->adopted);
    ingest_block_put(ib);
}

/* Routes event i's topic to a partition (opening it if new) and returns the
 * index of the batch's part for it in *part. */
static int route_event(const ingest_options *o, pub_batch *b, uint32_t i, route_memo *m,
                       uint32_t *part, ingest_error *err)
{
    const pub_event *e = &b->events[i];
    router_result route;
    int rc = router_route(o->router, (const char *)e->topic, e->topic_len, &route);
    if (rc < 0) {
        char msg[512];
        router_format_error(o->router, rc, (const char *)e->topic, e->topic_len, &route, msg,
                            sizeof msg);
        return refuse(err, rc == PB_ENOTFOUND ? PB_CODE_NOT_FOUND : PB_CODE_INVALID_ARGUMENT, i + 1,
                      NULL, "%s", msg);
    }
    partition *p = NULL;
    if (m->p && strcmp(partition_name(m->p), route.partition) == 0) {
        p = m->p;
    } else if ((rc = store_get(o->store, route.partition, &p)) == STORE_EFULL) {
        refuse(err, PB_CODE_RESOURCE_EXHAUSTED, i + 1, route.partition,
               "partition %s not created: the daemon holds %zu partitions, its limit "
               "(max_partitions = %zu)",
               route.partition, store_count(o->store), store_max_partitions(o->store));
        err->limit = INGEST_LIMIT_PARTITIONS;
        return PB_EINVAL;
    } else if (rc < 0) {
        return refuse(err, PB_CODE_UNAVAILABLE, i + 1, route.partition,
                      "partition %s cannot be opened: %s", route.partition, pb_strerror(rc));
    }
    /* Find or add this batch's part for p (batches touch few partitions). */
    uint32_t k;
    if (p == m->p) {
        k = m->part;
    } else {
        for (k = 0; k < b->nparts; k++)
            if (b->parts[k].partition == p)
                break;
        if (k == b->nparts) {
            /* A disk short of space refuses up front, before any write can
             * fail (min_free_bytes; the writer probes, this reads its
             * verdict). */
            uint64_t avail, margin;
            if (partition_space_low(p, &avail, &margin))
                return refuse(err, PB_CODE_RESOURCE_EXHAUSTED, i + 1, route.partition,
                              "partition %s: %llu bytes free on its file system, below "
                              "min_free_bytes (%llu); publishes are refused until space is freed",
                              route.partition, (unsigned long long)avail,
                              (unsigned long long)margin);
            ingest_batch *ib = (ingest_batch *)b;
            if (grow_reserve(&b->parts, &ib->parts_cap, (size_t)k + 1, sizeof *b->parts) < 0)
                return refuse(err, PB_CODE_RESOURCE_EXHAUSTED, i + 1, NULL,
                              "out of memory for this batch");
            b->parts[k] = (pub_part){.partition = p, .batch = b};
            b->nparts++;
        }
        m->p = p;
        m->part = k;
    }
    *part = k;
    return 0;
}

/* Validates event i (bytes ev) and counts it into its partition's part. */
static int add_event(const ingest_options *o, const ingest_rights *who, pub_batch *b, uint32_t i,
                     wire_slice ev, route_memo *m, ingest_error *err)
{
    pub_event *e = &b->events[i];
    e->data = ev.p;
    e->len = (uint32_t)ev.len;
    e->duplicate = 0;
    if (ev.len > o->max_event_bytes)
        return refuse(err, PB_CODE_INVALID_ARGUMENT, i + 1, NULL,
                      "event %u is %zu bytes, over the maximum of %llu bytes (max_event_bytes)", i,
                      ev.len, (unsigned long long)o->max_event_bytes);
    event_view v;
    char why[300];
    if (event_scan(ev.p, ev.len, &v, why, sizeof why) < 0)
        return refuse(err, PB_CODE_INVALID_ARGUMENT, i + 1, NULL,
                      "event %u is not a valid EncapsulatedEvent: %s", i, why);
    e->topic = v.topic.p;
    e->topic_len = (uint32_t)v.topic.len;
    e->id = v.id.len ? v.id.p : NULL;
    e->id_len = (uint8_t)v.id.len; /* event_scan: at most EVENT_ID_MAX_BYTES */
    /* Hashed here, on the loop thread, while the bytes are in its cache:
     * the writer's dedup check then reads only the window. */
    e->id_hash = v.id.len ? dedup_id_hash(v.id.p, v.id.len) : 0;
    uint32_t k = 0;
    if (m->topic && e->topic_len == m->topic_len && memcmp(e->topic, m->topic, m->topic_len) == 0) {
        k = m->part; /* same bytes as the previous topic: valid, and routed there */
        /* And the same pointer (the run's first event's bytes, in the same
         * batch): the writer's topic table then knows the topic by its
         * pointer (topics_add) instead of reading each event's bytes, which
         * are no longer in its cache by then. */
        e->topic = m->topic;
    } else {
        if (topic_validate(v.topic.p, v.topic.len, why, sizeof why) < 0)
            return refuse(err, PB_CODE_INVALID_ARGUMENT, i + 1, NULL, "event %u: invalid topic: %s",
                          i, why);
        /* Rights before routing: a refused topic creates no partition. */
        if (who && !patterns_match(who->may_publish, (const char *)e->topic, e->topic_len))
            return refuse(err, PB_CODE_PERMISSION_DENIED, i + 1, NULL,
                          "event %u: user \"%s\" may not publish to topic \"%.*s\"; nothing of "
                          "the batch was stored",
                          i, who->user, (int)e->topic_len, (const char *)e->topic);
        int rc = route_event(o, b, i, m, &k, err);
        if (rc < 0)
            return rc;
        m->topic = e->topic;
        m->topic_len = e->topic_len;
    }
    e->part = k;
    b->parts[k].count++;
    return 0;
}

/* Lays the parts' event index lists out in `lists`, in batch order. */
static void lay_out_parts(pub_batch *b, uint32_t *lists)
{
    uint32_t at = 0;
    for (uint32_t k = 0; k < b->nparts; k++) {
        b->parts[k].events = lists + at;
        at += b->parts[k].count;
        b->parts[k].count = 0;
    }
    for (uint32_t j = 0; j < b->nevents; j++) {
        pub_part *p = &b->parts[b->events[j].part];
        p->events[p->count++] = j;
    }
}

/* Reads the Publish's expectations into b->expect and checks the rule that
 * makes them atomic: the batch's events and every expected topic are in
 * one partition (whose writer alone decides them). A Publish of
 * expectations only gets an empty part for that partition. */
static int add_expectations(const ingest_options *o, const ingest_rights *who, pub_batch *b,
                            publish_iter *it, route_memo *m, ingest_error *err)
{
    char why[300];
    publish_expect pe;
    uint32_t j = 0;
    while (publish_next_expect(it, &pe) == 0) {
        pub_expect *x = &b->expect[j];
        *x = (pub_expect){.topic = pe.topic.p,
                          .topic_len = (uint32_t)pe.topic.len,
                          .none = pe.none,
                          .offset = pe.offset};
        if (topic_validate(pe.topic.p, pe.topic.len, why, sizeof why) < 0)
            return refuse(err, PB_CODE_INVALID_ARGUMENT, 0, NULL,
                          "Publish.expect entry %u: invalid topic: %s; nothing of the batch was "
                          "stored",
                          j, why);
        /* An expectation reads the topic's last offset (a mismatch names
         * it): the same right as publishing to the topic. */
        if (who && !patterns_match(who->may_publish, (const char *)x->topic, x->topic_len))
            return refuse(err, PB_CODE_PERMISSION_DENIED, 0, NULL,
                          "Publish.expect entry %u: user \"%s\" may not publish to topic "
                          "\"%.*s\"; nothing of the batch was stored",
                          j, who->user, (int)x->topic_len, (const char *)x->topic);
        router_result route;
        int rc = router_route(o->router, (const char *)x->topic, x->topic_len, &route);
        if (rc < 0) {
            char msg[512];
            router_format_error(o->router, rc, (const char *)x->topic, x->topic_len, &route, msg,
                                sizeof msg);
            return refuse(err, PB_CODE_INVALID_ARGUMENT, 0, NULL, "Publish.expect entry %u: %s", j,
                          msg);
        }
        if (b->nparts == 0) {
            /* No events: the expectation's partition becomes the batch's. */
            m->p = NULL;
            b->nevents = 0;
            pub_event tmp = {.topic = x->topic, .topic_len = x->topic_len};
            pub_event *saved = b->events;
            b->events = &tmp;
            uint32_t k;
            rc = route_event(o, b, 0, m, &k, err);
            b->events = saved;
            if (rc < 0) {
                err->event_index_plus_one = 0; /* about the expectation, not an event */
                return rc;
            }
        }
        if (b->nparts > 1)
            return refuse(err, PB_CODE_INVALID_ARGUMENT, 0, NULL,
                          "Publish with expectations must stay in one partition: its events go "
                          "to %u partitions (%s, %s, ...); nothing of the batch was stored",
                          b->nparts, partition_name(b->parts[0].partition),
                          partition_name(b->parts[1].partition));
        const char *have = partition_name(b->parts[0].partition);
        if (strcmp(have, route.partition) != 0)
            return refuse(err, PB_CODE_INVALID_ARGUMENT, 0, route.partition,
                          "Publish with expectations must stay in one partition: expected topic "
                          "%.*s routes to partition %s, the batch's events to %s; nothing of the "
                          "batch was stored",
                          (int)x->topic_len, (const char *)x->topic, route.partition, have);
        j++;
    }
    b->nexpect = j;
    return 0;
}

int ingest_prepare(const ingest_options *o, const ingest_rights *who, uint64_t id,
                   const uint8_t *body, size_t len, void (*done)(pub_part *part), void *conn,
                   pub_batch **out, ingest_error *err)
{
    return ingest_prepare_adopt(o, who, id, body, len, NULL, done, conn, out, err);
}

int ingest_prepare_adopt(const ingest_options *o, const ingest_rights *who, uint64_t id,
                         const uint8_t *body, size_t len, void *adopt,
                         void (*done)(pub_part *part), void *conn, pub_batch **out,
                         ingest_error *err)
{
    *out = NULL;
    char why[512];
    publish_iter it;
    if (publish_open(body, len, &it, why, sizeof why) < 0)
        return refuse(err, PB_CODE_INVALID_ARGUMENT, 0, NULL, "malformed Publish frame: %s", why);
    if (it.n_expect > INGEST_MAX_EXPECTATIONS)
        return refuse(err, PB_CODE_INVALID_ARGUMENT, 0, NULL,
                      "Publish with %zu expect entries refused: the maximum is %u "
                      "(Limits.max_expectations); nothing of the batch was stored",
                      it.n_expect, INGEST_MAX_EXPECTATIONS);
    if (it.n_events > UINT32_MAX / 2)
        return refuse(err, PB_CODE_INVALID_ARGUMENT, 0, NULL,
                      "malformed Publish frame: too many events");
    if (o->max_batch_events && it.n_events > o->max_batch_events) {
        /* Refused before anything per event exists: the cost of a batch
         * grows with its events, not its bytes (3-byte events fill 16 MiB
         * with 3 million of them). */
        refuse(err, PB_CODE_RESOURCE_EXHAUSTED, 0, NULL,
               "Publish of %zu events refused: the maximum is %u events per Publish "
               "(max_batch_events)",
               it.n_events, o->max_batch_events);
        err->limit = INGEST_LIMIT_BATCH_EVENTS;
        return PB_EINVAL;
    }
    uint32_t nevents = (uint32_t)it.n_events;
    ingest_batch *ib = batch_new(nevents, (uint32_t)it.n_expect, body, len, adopt);
    if (!ib)
        return refuse(err, PB_CODE_RESOURCE_EXHAUSTED, 0, NULL, "out of memory for this batch");
    pub_batch *b = &ib->b;
    b->frame_id = id;
    b->no_ack = it.no_ack;
    b->done = done;
    b->conn = conn;

    /* Walk the copy: the events must point into the batch's own bytes. It
     * is byte for byte what publish_open checked, so it is not checked again. */
    publish_restart(&it, b->bytes);
    wire_slice ev;
    uint32_t i = 0;
    route_memo memo = {0};
    while (i < nevents && publish_next(&it, &ev) == 0) {
        int rc = add_event(o, who, b, i, ev, &memo, err);
        if (rc < 0) {
            batch_free(ib);
            return rc;
        }
        i++;
    }
    if (i != nevents) {
        batch_free(ib);
        return refuse(err, PB_CODE_INVALID_ARGUMENT, 0, NULL,
                      "malformed Publish frame: events changed while read");
    }
    b->nevents = nevents;
    if (it.n_expect > 0 && add_expectations(o, who, b, &it, &memo, err) < 0) {
        batch_free(ib);
        return PB_EINVAL;
    }
    lay_out_parts(b, ib->lists);
    b->charge = ingest_charge(nevents, adopt ? ingest_block_cap(adopt) : len);
    ib->adopted = adopt; /* now the batch's */
    *out = b;
    return 0;
}

void ingest_submit(pub_batch *b)
{
    /* Count every part before submitting any: a fast writer may finish a part
     * while the others are still being submitted. */
    atomic_store(&b->pending, b->nparts);
    uint32_t nparts = b->nparts;
    pub_part *parts = b->parts;
    for (uint32_t k = 0; k < nparts; k++)
        partition_submit(parts[k].partition, &parts[k]);
}

/* The Error for a part its writer refused without storing it (expect.h). */
static int refuse_part(const pub_batch *b, const pub_part *p, ingest_error *err)
{
    const char *name = partition_name(p->partition);
    if (p->status == PUB_EXPECT_UNKNOWN)
        return refuse(err, PB_CODE_UNAVAILABLE, 0, name,
                      "partition %s cannot check Publish.expect: its topic table is incomplete "
                      "(see the daemon's log); nothing of the batch was stored",
                      name);
    const pub_expect *x = &b->expect[p->expect_failed];
    char want[48], have[48];
    if (x->none)
        snprintf(want, sizeof want, "no events");
    else
        snprintf(want, sizeof want, "last offset %llu", (unsigned long long)x->offset);
    if (p->actual_none)
        snprintf(have, sizeof have, "has no events");
    else
        snprintf(have, sizeof have, "ends at offset %llu", (unsigned long long)p->actual);
    refuse(err, PB_CODE_FAILED_PRECONDITION, 0, name,
           "expected topic %.*s to have %s, but it %s (partition %s); nothing of the batch was "
           "stored",
           (int)x->topic_len, (const char *)x->topic, want, have, name);
    err->has_expect = 1;
    err->expect_topic_len =
        x->topic_len < sizeof err->expect_topic ? x->topic_len : sizeof err->expect_topic - 1;
    memcpy(err->expect_topic, x->topic, err->expect_topic_len);
    err->expected_none = x->none;
    err->expected_offset = x->none ? 0 : x->offset;
    err->actual_none = p->actual_none;
    err->actual_offset = p->actual_none ? 0 : p->actual;
    return PB_EINVAL;
}

uint8_t *ingest_error_frame(const ingest_error *e, uint64_t id, size_t *len)
{
    frame_expect want = {.topic = e->expect_topic,
                         .topic_len = e->expect_topic_len,
                         .none = e->expected_none,
                         .offset = e->expected_offset};
    frame_expect have = {.topic = e->expect_topic,
                         .topic_len = e->expect_topic_len,
                         .none = e->actual_none,
                         .offset = e->actual_offset};
    frame_error fe = {
        .code = e->code,
        .message = e->message,
        .partition = e->partition[0] ? e->partition : NULL,
        .event_index_plus_one = e->event_index_plus_one,
        .expected = e->has_expect ? &want : NULL,
        .actual = e->has_expect ? &have : NULL,
    };
    size_t need = frame_put_error(NULL, 0, id, &fe);
    uint8_t *buf = malloc(need);
    if (buf)
        *len = frame_put_error(buf, need, id, &fe);
    return buf;
}

int ingest_reply(pub_batch *b, uint8_t **frame, size_t *len, ingest_error *err)
{
    ingest_batch *ib = (ingest_batch *)b; /* b is its first member */
    *frame = NULL;
    *len = 0;
    for (uint32_t i = 0; i < b->nparts; i++) {
        const pub_part *p = &b->parts[i];
        if (p->status == 0)
            continue;
        if (p->status == PUB_EXPECT_FAILED || p->status == PUB_EXPECT_UNKNOWN)
            return refuse_part(b, p, err);
        const char *name = partition_name(p->partition);
        if (p->status == PUB_STANDBY_TIMEOUT)
            return refuse(err, PB_CODE_UNAVAILABLE, 0, name,
                          "partition %s: the standby did not confirm %u event(s) of this batch "
                          "within standby_timeout_ms; they are stored here but not acknowledged "
                          "(standby_timeout = refuse)",
                          name, p->count);
        uint64_t avail, margin;
        if (p->status == -ENOSPC || p->status == -EDQUOT) {
            bool low = partition_space_low(p->partition, &avail, &margin);
            return refuse(
                err, PB_CODE_RESOURCE_EXHAUSTED, p->count == 1 ? p->events[0] + 1 : 0, name,
                "partition %s could not store %u event(s) of this batch: %s (%llu bytes "
                "free%s); they are not acknowledged; publishing resumes by itself once space "
                "is freed",
                name, p->count, pb_strerror(p->status), (unsigned long long)avail,
                low ? ", below min_free_bytes" : "");
        }
        return refuse(err, PB_CODE_UNAVAILABLE, p->count == 1 ? p->events[0] + 1 : 0, name,
                      "partition %s could not store %u event(s) of this batch: %s; they are not "
                      "acknowledged",
                      name, p->count, pb_strerror(p->status));
    }
    if (b->no_ack)
        return 0;
    const char *names[b->nparts ? b->nparts : 1];
    for (uint32_t i = 0; i < b->nparts; i++)
        names[i] = partition_name(b->parts[i].partition);
    uint32_t ndups = 0;
    for (uint32_t i = 0; i < b->nevents; i++) {
        ib->ack_index[i] = b->events[i].part;
        ib->ack_offsets[i] = b->events[i].offset;
        ndups += b->events[i].duplicate;
    }
    /* Only a batch with duplicates pays for their list. */
    uint32_t *dups = NULL;
    if (ndups > 0 && !(dups = malloc((size_t)ndups * sizeof *dups)))
        return refuse(err, PB_CODE_RESOURCE_EXHAUSTED, 0, NULL,
                      "out of memory for the PublishAck of %u event(s); they are stored but "
                      "not acknowledged",
                      b->nevents);
    for (uint32_t i = 0, k = 0; i < b->nevents && k < ndups; i++)
        if (b->events[i].duplicate)
            dups[k++] = i;
    size_t need = frame_put_publish_ack_dups(NULL, 0, b->frame_id, names, b->nparts, ib->ack_index,
                                             ib->ack_offsets, b->nevents, dups, ndups);
    uint8_t *buf = malloc(need);
    if (!buf) {
        free(dups);
        return refuse(err, PB_CODE_RESOURCE_EXHAUSTED, 0, NULL,
                      "out of memory for the PublishAck of %u event(s); they are stored but "
                      "not acknowledged",
                      b->nevents);
    }
    *len = frame_put_publish_ack_dups(buf, need, b->frame_id, names, b->nparts, ib->ack_index,
                                      ib->ack_offsets, b->nevents, dups, ndups);
    free(dups);
    *frame = buf;
    return 0;
}

void ingest_free(pub_batch *b)
{
    if (b)
        batch_free((ingest_batch *)b); /* b is its first member */
}
