/*
 * subrun_parts - the partitions one subscription knows (s->parts, with an
 * index by partition pointer), where each one starts (the listed offsets,
 * the last N of each topic, START_TIME's search, or the end), the snapshot
 * of their end offsets that bounds each replay, and whether a partition
 * may hold a matching topic at all. subrun.c runs the subscription (see
 * its top for the invariant these keep: parts[i].next).
 *
 * Threads: the subscription's pool thread only.
 */
#include "subrun.h"
#include "subrun_internal.h"

#include "submatch.h"

#include "grow.h"
#include "pb_errors.h"
#include "sort.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PARTS_INITIAL 2u /* parts[] and heap[] */
#define INDEX_INITIAL 8u /* index slots: at most half full */

static size_t ptr_slot(const void *p, size_t nslots)
{
    return (size_t)(((uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ull) >> 32) & (nslots - 1);
}

static size_t find_part(const sub *s, const partition *p)
{
    if (!s->index_slots)
        return SIZE_MAX;
    for (size_t i = ptr_slot(p, s->index_slots); s->index[i]; i = (i + 1) & (s->index_slots - 1))
        if (s->parts[s->index[i] - 1].p == p)
            return s->index[i] - 1;
    return SIZE_MAX;
}

static void index_put(sub *s, size_t idx)
{
    size_t i = ptr_slot(s->parts[idx].p, s->index_slots);
    while (s->index[i])
        i = (i + 1) & (s->index_slots - 1);
    s->index[i] = idx + 1;
}

/* The offset a partition first seen now starts at: START_OFFSETS' offset if
 * listed, otherwise 0 (a partition created after the subscription started
 * holds only events stored after it). The initial snapshot adjusts this per
 * start mode. */
/* START_OFFSETS' listed offset (below the first offset too: the replay
 * then says which were removed); otherwise the first offset still stored. */
static uint64_t listed_offset(const sub *s, partition *p, const char *name)
{
    for (size_t i = 0; i < s->noffsets; i++)
        if (strcmp(s->offsets[i].partition, name) == 0)
            return s->offsets[i].offset;
    return partition_first_offset(p);
}

/* Allocates only for a partition seen for the first time. */
static int add_part(sub *s, partition *p, size_t *out)
{
    if (s->nparts == s->partcap) {
        /* parts and heap grow together, under one capacity. They start
         * at 2 (most subscriptions read one partition or two; 16 were
         * 2.4 KB for each of 1,000 subscriptions), then double. */
        size_t cap = grow_capacity(s->partcap ? s->partcap : PARTS_INITIAL, s->nparts + 1,
                                   sizeof *s->parts);
        if (cap == 0 || grow_resize(&s->parts, cap, sizeof *s->parts) < 0 ||
            grow_resize(&s->heap, cap, sizeof *s->heap) < 0)
            return PB_ENOMEM;
        s->partcap = cap;
    }
    if ((s->nparts + 1) * 2 > s->index_slots) {
        size_t slots = s->index_slots ? s->index_slots * 2 : INDEX_INITIAL;
        size_t *index = calloc(slots, sizeof *index);
        if (!index)
            return PB_ENOMEM;
        free(s->index);
        s->index = index;
        s->index_slots = slots;
        for (size_t i = 0; i < s->nparts; i++)
            index_put(s, i);
    }
    part_state *st = &s->parts[s->nparts];
    memset(st, 0, sizeof *st);
    st->p = p;
    st->name = partition_name(p);
    st->name_len = strlen(st->name);
    st->next = listed_offset(s, p, st->name);
    index_put(s, s->nparts);
    *out = s->nparts++;
    return 0;
}

size_t subrun_find_part(const sub *s, const partition *p)
{
    return find_part(s, p);
}

int subrun_part_of(sub *s, partition *p, size_t *idx)
{
    *idx = find_part(s, p);
    return *idx == SIZE_MAX ? add_part(s, p, idx) : 0;
}

typedef struct last_n_ctx {
    sub *s;
    const char *partition;
    submatch_walk walk;
    uint64_t end;
    uint64_t *v;
    size_t n, cap;
} last_n_ctx;

/* Under the topic table's read lock: quick, and no call back into it. */
static int last_n_fn(void *ctx, const char *topic, size_t topic_len, const uint64_t *offsets,
                     size_t count)
{
    last_n_ctx *c = ctx;
    sub *s = c->s;
    int m = submatch_walk_step(&c->walk, c->partition, s->why, sizeof s->why);
    if (m == 0)
        m = submatch_topic(s->ps, (const char *const *)s->req->patterns, topic, topic_len, s->why,
                           sizeof s->why);
    if (m <= 0)
        return m; /* no match, or a budget breach (why says which) */
    for (size_t i = 0; i < count; i++) {
        if (offsets[i] >= c->end)
            continue; /* in the live queue, not history */
        if (grow_reserve(&c->v, &c->cap, c->n + 1, sizeof *c->v) < 0)
            return PB_ENOMEM;
        c->v[c->n++] = offsets[i];
    }
    return 0;
}

/* START_LAST_N: the last last_n offsets of every matching topic below end. */
static int collect_last_n(sub *s, part_state *st)
{
    last_n_ctx c = {.s = s, .partition = st->name, .end = st->end};
    submatch_walk_start(&c.walk);
    int rc = partition_foreach_topic(st->p, s->last_n, last_n_fn, &c);
    if (rc < 0) {
        free(c.v);
        if (rc != PB_ETOOBIG)
            snprintf(s->why, sizeof s->why, "partition %s: reading its topic table: %s", st->name,
                     pb_strerror(rc));
        return rc;
    }
    if (c.n == 0) {
        free(c.v);
        st->next = st->end;
        return 0;
    }
    sort_u64(c.v, c.n);
    st->want = c.v;
    st->nwant = c.n;
    st->iwant = 0;
    st->next = c.v[0];
    return 0;
}

/*
 * START_TIME: the offset of the first record received at or after
 * min_time_ns below st->end (st->end if none), found with a reader of its
 * own, so that Subscribed can tell the start before anything is sent; the
 * replay then starts there by offset. Damage where the search lands makes
 * the start the first offset lost: the replay reports it.
 */
int subrun_time_start(sub *s, part_state *st)
{
    uint64_t start = st->end;
    pb_reader *rd = NULL;
    pb_record rec;
    int rc = 0;
    if (st->end > st->next) {
        const char *dir = partition_dir(st->p);
        rc = pb_reader_open_io(&rd, dir, store_segment_io(s->store));
        if (rc == 0)
            rc = pb_reader_seek_time(rd, s->min_time_ns);
        if (rc == 0) {
            pb_reader_set_end(rd, st->end);
            for (;;) {
                rc = pb_reader_next(rd, &rec);
                if (rc == 0) {
                    start = rec.offset;
                    break;
                }
                if (rc == PB_EREMOVED)
                    continue; /* older than the time sought: nothing to say */
                if (rc == PB_ECORRUPT) {
                    const struct pb_reader_problem *pr = pb_reader_problem(rd);
                    if (pr->last_offset + 1 == pr->first_offset)
                        continue; /* unreadable bytes, no offset lost */
                    start = pr->first_offset;
                    rc = 0;
                    break;
                }
                if (rc == PB_EEOF)
                    rc = 0;
                break;
            }
        }
        if (rc < 0)
            snprintf(s->why, sizeof s->why, "partition %s: cannot read its files in %s: %s",
                     st->name, dir, pb_strerror(rc));
        pb_reader_close(rd);
    }
    st->next = start;
    return rc;
}

/*
 * Takes the end offset of every partition in the store as the bound of the
 * next replay. Called after the queue is (re-)enabled: every record below
 * these ends is in the files, every later one will come through the queue.
 */
int subrun_snapshot(sub *s, bool initial)
{
    partition **list = NULL;
    size_t n = 0;
    int rc = store_list(s->store, &list, &n);
    if (rc < 0) {
        snprintf(s->why, sizeof s->why, "listing the partitions: %s", pb_strerror(rc));
        return rc;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t idx;
        rc = subrun_part_of(s, list[i], &idx);
        if (rc < 0)
            break;
        part_state *st = &s->parts[idx];
        st->end = partition_end_offset(list[i]);
        if (!initial)
            continue;
        switch (s->start) {
        case PROTOBUS__START_MODE__START_NEW:
            st->next = st->end;
            break;
        case PROTOBUS__START_MODE__START_TIME:
            rc = subrun_time_start(s, st);
            break;
        case PROTOBUS__START_MODE__START_LAST_N:
            rc = collect_last_n(s, st);
            break;
        default:
            break; /* BEGINNING: 0; OFFSETS: set by add_part */
        }
    }
    free(list);
    return rc;
}

typedef struct any_match_ctx {
    sub *s;
    const char *partition;
    submatch_walk walk;
    bool found;
} any_match_ctx;

static int any_match_fn(void *ctx, const char *topic, size_t topic_len, const uint64_t *offsets,
                        size_t count)
{
    any_match_ctx *c = ctx;
    sub *s = c->s;
    int m = submatch_walk_step(&c->walk, c->partition, s->why, sizeof s->why);
    if (m == 0)
        m = submatch_topic(s->ps, (const char *const *)s->req->patterns, topic, topic_len, s->why,
                           sizeof s->why);
    if (m <= 0)
        return m; /* no match, or a budget breach (why says which) */
    c->found = true;
    return -1; /* stop the walk */
}

/* False only if no topic stored in the partition matches the patterns: then
 * its files need not be opened. The writer records topics before it moves
 * the end offset, so the table covers every record below a snapshot end. */
int subrun_may_match(sub *s, part_state *st)
{
    any_match_ctx c = {.s = s, .partition = st->name};
    submatch_walk_start(&c.walk);
    int rc = partition_foreach_topic(st->p, 1, any_match_fn, &c);
    if (rc == PB_ETOOBIG && !c.found)
        return rc; /* why is set */
    return c.found || rc < 0;
}
