/*
 * expect - expected-offset checks and the dedup window over a writer's take
 * (see expect.h for the rules).
 *
 * Threads: the partition's writer thread.
 */
#include "expect.h"

#include "metrics.h"

#include "pb_errors.h"

#include <string.h>

/* The last offset of topic: the newest among recs[0..n) (this take so far),
 * else the topic table's. 1 with *last, 0 when the topic has no event, or
 * a negative code (the cold store could not be read). */
static int last_offset(const expect_take *x, const live_record *recs, size_t n,
                       const uint8_t *topic, uint32_t len, uint64_t *last)
{
    for (size_t i = n; i-- > 0;)
        if (recs[i].topic_len == len && memcmp(recs[i].topic, topic, len) == 0) {
            *last = recs[i].offset;
            return 1;
        }
    int rc = topics_last(x->topics, topic, len, last);
    if (rc == 0)
        return 1;
    return rc == PB_ENOTFOUND ? 0 : rc;
}

/* Every event of the part carries an id that is in the window. */
static bool all_duplicates(const expect_take *x, const pub_part *part)
{
    if (!x->dedup || part->count == 0)
        return false;
    for (uint32_t k = 0; k < part->count; k++) {
        const pub_event *ev = &part->batch->events[part->events[k]];
        uint64_t off;
        if (ev->id_len == 0 || !dedup_find(x->dedup, ev->id, ev->id_len, &off))
            return false;
    }
    return true;
}

/* Checks the part's expectations against recs[0..n) and the table: 0 when
 * they all hold, else the refusal (the part's fields set). */
static int check_expectations(const expect_take *x, pub_part *part, const live_record *recs,
                              size_t n)
{
    const pub_batch *b = part->batch;
    if (b->nexpect == 0)
        return 0;
    if (!x->topics_complete)
        return part->refused = PUB_EXPECT_UNKNOWN;
    for (uint32_t j = 0; j < b->nexpect; j++) {
        const pub_expect *e = &b->expect[j];
        uint64_t last = 0;
        int rc = last_offset(x, recs, n, e->topic, e->topic_len, &last);
        if (rc < 0)
            return part->refused = PUB_EXPECT_UNKNOWN;
        bool holds = e->none ? rc == 0 : (rc == 1 && last == e->offset);
        if (!holds) {
            part->expect_failed = j;
            part->actual_none = rc == 0;
            part->actual = last;
            return part->refused = PUB_EXPECT_FAILED;
        }
    }
    return 0;
}

size_t expect_admit(expect_take *x, pub_part *taken, log_entry *entries, live_record *recs)
{
    x->ids = 0;
    if (x->dedup)
        dedup_expire(x->dedup, x->time_ns);
    return expect_admit_more(x, taken, entries, recs, 0);
}

/* Fills entries[n] and recs[n] with ev as the take's n-th record (offset
 * x->next + n). */
static inline void fill_record(const expect_take *x, const pub_event *ev, log_entry *entries,
                               live_record *recs, size_t n)
{
    entries[n] = (log_entry){
        .data = ev->data,
        .len = ev->len,
        .suffix = x->suffix,
        .suffix_len = x->suffix_len,
        .time_ns = x->time_ns,
    };
    recs[n] = (live_record){
        .offset = x->next + n,
        .time_ns = x->time_ns,
        .topic = ev->topic,
        .topic_len = ev->topic_len,
        .data = ev->data,
        .len = ev->len,
        .suffix = x->suffix,
        .suffix_len = (uint32_t)x->suffix_len,
    };
}

/* dedup_admit_events' callback: an event just checked. */
typedef struct admit_fill {
    expect_take *x;
    log_entry *entries;
    live_record *recs;
    size_t n;
} admit_fill;

/* Also expect_admit_more's fill of every event of a partition without a
 * window: no event is marked duplicate there (only dedup_admit_events sets
 * the flag, and a partition's window, or its absence, is fixed while it is
 * open), so the test passes each one. always_inline for that direct call:
 * dedup.c calls it through its address, a copy compiled as before. */
static inline __attribute__((always_inline)) void fill_one(void *ctx, pub_event *ev)
{
    admit_fill *f = ctx;
    ev->time_ns = f->x->time_ns;
    if (ev->duplicate)
        return;
    f->x->ids += ev->id_len > 0;
    fill_record(f->x, ev, f->entries, f->recs, f->n++);
}

size_t expect_admit_more(expect_take *x, pub_part *parts, log_entry *entries, live_record *recs,
                         size_t n)
{
    for (pub_part *part = parts; part; part = part->next) {
        pub_batch *b = part->batch;
        bool retry = b->nexpect > 0 && all_duplicates(x, part);
        if (!retry && check_expectations(x, part, recs, n) < 0)
            continue;
        admit_fill f = {.x = x, .entries = entries, .recs = recs, .n = n};
        if (x->dedup)
            /* dedup.c checks each event and calls fill_one on it in the
             * same pass (its prefetches ahead): each event is read once. */
            (void)dedup_admit_events(x->dedup, b->events, part->events, part->count, x->next + n,
                                     x->time_ns, fill_one, &f);
        else
            for (uint32_t k = 0; k < part->count; k++)
                fill_one(&f, &b->events[part->events[k]]);
        n = f.n;
    }
    return n;
}

void expect_commit(const expect_take *x, pub_part *taken)
{
    uint64_t next = x->next;
    uint32_t dups = 0;
    for (pub_part *part = taken; part; part = part->next) {
        if (part->refused)
            continue;
        pub_batch *b = part->batch;
        for (uint32_t k = 0; k < part->count; k++) {
            pub_event *ev = &b->events[part->events[k]];
            if (!ev->duplicate)
                ev->offset = next++;
            else
                dups++;
        }
    }
    /* Counted here, once per acknowledged duplicate: a part admitted ahead
     * and then admitted again (the take before it was not stored) passed
     * the window twice. */
    if (dups)
        metrics_dedup_hits(dups);
    if (x->dedup && x->ids > 0)
        dedup_commit(x->dedup, next);
}

void expect_take_failed(const expect_take *x)
{
    if (x->dedup)
        dedup_truncate(x->dedup, x->next);
}
