/*
 * partition_ahead - the admission of a partition's next take while this
 * one is written and synced (fsync = always, takes that carry event ids).
 *
 * A take is its admission (expect.c: for events with ids, the dedup
 * window's check and insert of every id, ~20-35 ns an event, most of it
 * cache misses), then the append and the fdatasync, during which the
 * writer thread waits for the device. Once a take with ids has been
 * admitted, a helper thread ("pba:<partition>", started on first use,
 * ended when the writer goes idle) takes the parts queued meanwhile, in up
 * to AHEAD_ROUNDS rounds as they arrive, and admits them into the second
 * set of batch arrays at the offsets that follow this take's, while the
 * writer appends and syncs. The next take starts with them admitted
 * (partition_ahead_take); the writer admits only what was queued after
 * them. Takes without ids never start it (nothing worth moving), nor do
 * takes that partition_write.c could pipeline (may_pipeline: fsync =
 * always, the direct-write helper running, large enough for direct
 * writes, no expectation): takes with ids are then pipelined like plain
 * ones (their sync on the log's helper while the writer goes on). So the
 * helper runs (fsync = always only: partition_ahead_start) for small
 * takes with ids, takes with expectations among them, and every take with
 * ids without direct writes.
 *
 * A pipelined take with ids has the writer admit ahead itself, with the
 * same rounds (partition_ahead_begin, _while_waiting, _end): its append
 * waits for the direct-write helper's writes (the writes queue behind the
 * pending take's sync), and while a write runs the log calls
 * partition_ahead_while_waiting (log_append_sync's waiting hook), which
 * admits what is queued, a round a call. Without it the admission of the
 * next take (the window's check, ~35-50 ns an id) ran between two
 * appends, where the device waited for it (tests/bench/NOTES.md, "the
 * critical path", branch ids9).
 * Only once the take before is acked (not pending): its records may point
 * at the rounds' suffixes of the other slot set, and its failed sync
 * fails everything after it. The parts admitted so are the next take's
 * start like the helper's, and that take may be pipelined too.

 * The rules of expect.h hold as if the writer had admitted those parts
 * itself at the start of its next take:
 *   - Queue order: only a prefix of the queue is admitted ahead, and only
 *     parts without expectations (those are checked against the topic
 *     table, which gets this take's records only once they are stored)
 *     that are not a replica's; the first other part ends the prefix. A
 *     part with an event the log refuses (too large) ends it too: it and
 *     the parts after it go back to the front of the queue.
 *   - The window and the detached parts are the helper's only between
 *     the hand-over (AHEAD_WORK) and its end (AHEAD_DONE), while the writer
 *     is in the append and sync, which touch neither; both hand-overs are
 *     under the partition's lock.
 *   - Each round reads the receive time after it detached its parts (they
 *     were all received by then; never below the round before): a take's
 *     records may carry a few receive times, ascending with the offsets,
 *     each shared by the events of its round (its own suffix slot).
 *   - This take not stored (its append, or its in-line sync, failed):
 *     expect_take_failed takes the ids from this take's first offset on
 *     out of the window, the ahead ones included, and
 *     partition_ahead_discard puts the ahead parts back at the front of
 *     the queue, unadmitted: the next take admits them afresh or refuses
 *     them with the rest. A pipelined take whose sync fails (seen after
 *     its append): its ids and those after them leave the window the same
 *     way (complete_pending), and the take after it, the ahead parts
 *     included, is refused whole: the partition failed (admit_take's
 *     refuse_take, or take_not_stored if it was being appended).
 *   - The next take refused before its admission (a failed partition,
 *     free space, no memory): its ahead ids leave the window the same way
 *     (expect_take_failed from their first offset).
 *
 * Memory: the second set of batch arrays (the size of the largest take
 * admitted ahead), 2 x (AHEAD_ROUNDS + 1) suffix slots and the helper's
 * stack, from the first take with ids until the writer goes idle.
 *
 * Threads: the partition's writer thread; the helper thread between the
 * hand-overs.
 */
#include "partition.h"
#include "partition_internal.h"

#include "event.h"
#include "expect.h"
#include "logging.h"
#include "pb_errors.h"
#include "record.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The helper's stack: expect.c and dedup.c keep nothing large on it. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define AHEAD_STACK_BYTES (1024u * 1024u)
#else
#define AHEAD_STACK_BYTES (128u * 1024u)
#endif

/* Puts list (linked, NULL-terminated) back at the front of the queue. */
static void requeue_front(partition *p, pub_part *list)
{
    if (!list)
        return;
    pub_part *last = list;
    while (last->next)
        last = last->next;
    pthread_mutex_lock(&p->lock);
    last->next = p->head;
    p->head = list;
    if (!p->tail)
        p->tail = last;
    pthread_mutex_unlock(&p->lock);
}

/* An event of the part is larger than the log stores (reject_oversized
 * refuses such parts on the writer). */
static bool oversized(const partition *p, const pub_part *part, size_t suffix_len)
{
    uint64_t max = p->opts.log.max_record_bytes;
    if (max == 0 || max > PB_RECORD_MAX_EVENT)
        max = PB_RECORD_MAX_EVENT;
    for (uint32_t k = 0; k < part->count; k++)
        if (part->batch->events[part->events[k]].len + (uint64_t)suffix_len > max)
            return true;
    return false;
}

/* Lock held: detaches the queue's prefix of parts that may be admitted
 * ahead (no expectations, not a replica's), within the next take's
 * PARTITION_TAKE_EVENTS (what earlier rounds admitted counts). NULL when
 * there is none; then *blocked says whether the queue starts with a part
 * that may not (the rounds end: nothing after it may go first, or the
 * next take is full). */
static pub_part *detach_prefix(partition *p, bool *blocked)
{
    pub_part *list = partition_detach_prefix(p, p->ahead.n, true);
    *blocked = !list && p->head;
    return list;
}

/* Helper thread (or the writer itself: by_writer): one round, the parts
 * of list admitted after what earlier rounds admitted, at a receive time
 * read now. Parts from the first one the log would refuse (or all, out of
 * memory) go to a->rest. Returns whether more rounds may follow. */
static bool admit_round(partition *p, take_ahead *a, pub_part *list, int round, bool by_writer)
{
    pub_part **link = &list;
    size_t count = 0;
    int64_t t = partition_wall_ns(p);
    if (t < a->time_ns)
        t = a->time_ns;
    uint8_t *suffix = a->slots[round];
    size_t suffix_len = event_put_receive_time(suffix, SUFFIX_SLOT, t);
    while (*link && !oversized(p, *link, suffix_len)) {
        count += (*link)->count;
        link = &(*link)->next;
    }
    a->rest = *link;
    *link = NULL;
    if (list && partition_reserve(&a->entries, &a->recs, &a->cap, a->n + count) < 0) {
        *link = a->rest;
        a->rest = list;
        return false;
    }
    if (!list)
        return false;
    expect_take x = {
        .topics = p->topics,
        .topics_complete = p->topics_complete,
        .dedup = p->dedup,
        .next = a->next,
        .time_ns = t,
        .suffix = suffix,
        .suffix_len = suffix_len,
        .ids = a->ids,
    };
    dedup_expire(p->dedup, t);
    a->n = expect_admit_more(&x, list, a->entries, a->recs, a->n);
    atomic_fetch_add_explicit(&p->events_ahead, count, memory_order_relaxed);
    if (by_writer)
        atomic_fetch_add_explicit(&p->events_ahead_writer, count, memory_order_relaxed);
    a->ids = x.ids;
    a->time_ns = t;
    if (a->parts_tail)
        a->parts_tail->next = list;
    else
        a->parts = list;
    for (a->parts_tail = list; a->parts_tail->next; a->parts_tail = a->parts_tail->next)
        ;
    return a->rest == NULL;
}

/* Helper thread, lock held, state AHEAD_WORK: rounds until the writer
 * says stop (AHEAD_STOP), the queue starts with a part that must wait for
 * the writer, or AHEAD_ROUNDS rounds were run. */
static void run_rounds(partition *p, take_ahead *a)
{
    for (int round = 0; round < AHEAD_ROUNDS && a->state == AHEAD_WORK;) {
        bool blocked;
        pub_part *list = detach_prefix(p, &blocked);
        if (!list) {
            if (blocked)
                return;
            pthread_cond_wait(&a->cv, &p->lock); /* a submit, or the writer's stop */
            continue;
        }
        pthread_mutex_unlock(&p->lock);
        bool more = admit_round(p, a, list, round++, false);
        pthread_mutex_lock(&p->lock);
        if (!more)
            return;
    }
}

static void *ahead_main(void *arg)
{
    partition *p = arg;
    take_ahead *a = &p->ahead;
    char tname[16];
    snprintf(tname, sizeof tname, "pba:%s", partition_name(p));
    (void)pthread_setname_np(pthread_self(), tname);
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (a->state != AHEAD_WORK && a->state != AHEAD_STOP && a->state != AHEAD_EXIT)
            pthread_cond_wait(&a->cv, &p->lock);
        if (a->state == AHEAD_EXIT)
            break;
        run_rounds(p, a);
        a->state = AHEAD_DONE;
        pthread_cond_broadcast(&a->cv);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* The rounds' suffixes, two sets, if not there yet: p->slots is used
 * from the first swap on (the take in flight keeps suffix_own until
 * then). 0 or PB_ENOMEM. */
static int alloc_slots(partition *p)
{
    take_ahead *a = &p->ahead;
    if (!a->slot_block) {
        a->slot_block = calloc(2 * (AHEAD_ROUNDS + 1), SUFFIX_SLOT);
        if (!a->slot_block)
            return PB_ENOMEM;
        p->slots = a->slot_block;
        a->slots = a->slot_block + AHEAD_ROUNDS + 1;
    }
    return 0;
}

static int start_helper(partition *p)
{
    take_ahead *a = &p->ahead;
    if (alloc_slots(p) < 0)
        return PB_ENOMEM;
    int e = -partition_start_thread(&a->thread, AHEAD_STACK_BYTES, ahead_main, p);
    if (e != 0) {
        if (!a->start_warned)
            logging_printf(LOG_WARN,
                           "partition %s: cannot start the thread that admits takes ahead: %s; "
                           "the writer admits them itself",
                           p->name, pb_strerror(-e));
        a->start_warned = true;
        return -e;
    }
    a->started = true;
    a->start_warned = false; /* the next failure is news again */
    return 0;
}

bool partition_ahead_start(partition *p, const expect_take *x, size_t n)
{
    take_ahead *a = &p->ahead;
    if (!p->dedup || x->ids == 0 || p->opts.fsync != PARTITION_FSYNC_ALWAYS || a->parts)
        return false;
    if (!a->started && start_helper(p) < 0)
        return false;
    a->parts = a->parts_tail = a->rest = NULL;
    a->n = 0;
    a->ids = 0;
    a->next = x->next + n;
    a->time_ns = x->time_ns; /* the floor of its receive times */
    pthread_mutex_lock(&p->lock);
    a->state = AHEAD_WORK;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&p->lock);
    return true;
}

bool partition_ahead_begin(partition *p, const expect_take *x, size_t n)
{
    take_ahead *a = &p->ahead;
    if (!p->dedup || x->ids == 0 || a->parts || alloc_slots(p) < 0)
        return false;
    a->parts = a->parts_tail = a->rest = NULL;
    a->n = 0;
    a->ids = 0;
    a->next = x->next + n;
    a->time_ns = x->time_ns; /* the floor of its receive times */
    a->rounds = 0;
    a->waiting = true;
    return true;
}

bool partition_ahead_while_waiting(void *arg)
{
    partition *p = arg;
    take_ahead *a = &p->ahead;
    /* Not while the take before is pending: its records may point at the
     * rounds' suffixes of a->slots (and its failed sync fails this one). */
    if (!a->waiting || a->rounds >= AHEAD_ROUNDS || p->pend.on || atomic_load(&p->status) < 0)
        return false;
    bool blocked;
    pthread_mutex_lock(&p->lock);
    pub_part *list = detach_prefix(p, &blocked);
    pthread_mutex_unlock(&p->lock);
    if (!list)
        return false;
    if (!admit_round(p, a, list, a->rounds++, true))
        a->waiting = false; /* a part the log refuses, or no memory: the writer's */
    requeue_front(p, a->rest);
    a->rest = NULL;
    return true;
}

void partition_ahead_end(partition *p)
{
    p->ahead.waiting = false;
}

void partition_ahead_wait(partition *p)
{
    take_ahead *a = &p->ahead;
    pthread_mutex_lock(&p->lock);
    if (a->state == AHEAD_WORK)
        a->state = AHEAD_STOP;
    pthread_cond_broadcast(&a->cv);
    while (a->state != AHEAD_DONE)
        pthread_cond_wait(&a->cv, &p->lock);
    a->state = AHEAD_IDLE;
    pthread_mutex_unlock(&p->lock);
    requeue_front(p, a->rest);
    a->rest = NULL;
}

void partition_ahead_discard(partition *p)
{
    take_ahead *a = &p->ahead;
    requeue_front(p, a->parts);
    a->parts = a->parts_tail = NULL;
    a->n = 0;
    a->ids = 0;
}

pub_part *partition_ahead_take(partition *p, expect_take *x, size_t *n)
{
    take_ahead *a = &p->ahead;
    *n = 0;
    if (!a->parts)
        return NULL;
    if (a->next != log_next_offset(p->log)) {
        /* Cannot happen: only the writer appends, and a take that was not
         * stored discards what was admitted after it. Admit them afresh. */
        logging_printf(LOG_ERROR,
                       "partition %s: events admitted ahead at offset %llu, the log is at %llu; "
                       "admitting them again",
                       p->name, (unsigned long long)a->next,
                       (unsigned long long)log_next_offset(p->log));
        dedup_truncate(p->dedup, a->next);
        partition_ahead_discard(p);
        return NULL;
    }
    log_entry *e = p->entries;
    live_record *r = p->recs;
    size_t cap = p->cap;
    uint8_t(*slots)[SUFFIX_SLOT] = p->slots;
    p->entries = a->entries;
    p->recs = a->recs;
    p->cap = a->cap;
    p->slots = a->slots;
    p->suffix = p->slots[AHEAD_ROUNDS];
    a->entries = e;
    a->recs = r;
    a->cap = cap;
    a->slots = slots;
    /* The writer's own admission continues at a receive time of its own
     * (its suffix is the slot after the rounds'). */
    *x = (expect_take){
        .topics = p->topics,
        .topics_complete = p->topics_complete,
        .dedup = p->dedup,
        .next = a->next,
        .time_ns = a->time_ns,
        .suffix = p->suffix,
        .ids = a->ids,
    };
    *n = a->n;
    pub_part *list = a->parts;
    a->parts = a->parts_tail = NULL;
    a->n = 0;
    a->ids = 0;
    return list;
}

void partition_ahead_stop(partition *p)
{
    take_ahead *a = &p->ahead;
    if (a->started) {
        pthread_mutex_lock(&p->lock);
        a->state = AHEAD_EXIT;
        pthread_cond_broadcast(&a->cv);
        pthread_mutex_unlock(&p->lock);
        pthread_join(a->thread, NULL);
        a->started = false;
        pthread_mutex_lock(&p->lock);
        a->state = AHEAD_IDLE;
        pthread_mutex_unlock(&p->lock);
    }
    free(a->entries);
    free(a->recs);
    a->entries = NULL;
    a->recs = NULL;
    a->cap = 0;
    /* No take in flight: the writer's suffix goes back to its own. */
    free(a->slot_block);
    a->slot_block = NULL;
    a->slots = p->slots = NULL;
    p->suffix = p->suffix_own;
}
