/*
 * subrun_internal - what subrun.c (the subscription's run: Subscribed, the
 * replay from the files, the live queue) and subrun_parts.c (the partitions
 * it knows, where each starts, the snapshot of their ends) share. Not for
 * other modules: sub.c uses subrun.h.
 *
 * Threads: the subscription's pool thread only.
 */
#ifndef PB_SUBRUN_INTERNAL_H
#define PB_SUBRUN_INTERNAL_H

#include "subrun.h"

#include <stdbool.h>
#include <stddef.h>

/* The index in s->parts of partition p, added when seen for the first
 * time (next: its offset in the Subscribe's list, else the partition's
 * first offset): 0, or PB_ENOMEM. */
int subrun_part_of(sub *s, partition *p, size_t *idx);
/* The index in s->parts of partition p, or SIZE_MAX if not seen yet (no
 * allocation: the waker's fast path uses it). */
size_t subrun_find_part(const sub *s, const partition *p);
/*
 * fanout_member.fast for a tailing subscription on plain TCP (see
 * fanout.h): on the fan-out's waker thread, while the subscription's
 * thread sleeps, the Event frames of the queued records in span, as the
 * thread's drain would send them (same filters, same `next` bookkeeping),
 * encoded into scratch (cap bytes) and written with one non-blocking send
 * (subconn_send_now). It stops before a record the thread must handle: a
 * partition the subscription has not seen yet, a gap to read from the
 * files (since > next), or one that does not fit in scratch.
 */
int subrun_fast(void *ctx, lq_span *span, uint8_t *scratch, size_t cap, size_t *used);
/*
 * START_TIME: the offset of the first record received at or after
 * min_time_ns below st->end (st->end if none), found with a reader of its
 * own, so that Subscribed can tell the start before anything is sent; the
 * replay then starts there by offset. Damage where the search lands makes
 * the start the first offset lost: the replay reports it.
 */
int subrun_time_start(sub *s, part_state *st);
/*
 * Takes the end offset of every partition in the store as the bound of the
 * next replay. Called after the queue is (re-)enabled: every record below
 * these ends is in the files, every later one will come through the queue.
 */
int subrun_snapshot(sub *s, bool initial);
/* False only if no topic stored in the partition matches the patterns: then
 * its files need not be opened. The writer records topics before it moves
 * the end offset, so the table covers every record below a snapshot end. */
int subrun_may_match(sub *s, part_state *st);

#endif
