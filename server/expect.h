/*
 * expect - what of a partition writer's take is stored: the expected-offset
 * checks (Publish.expect) and the dedup window (EncapsulatedEvent.id),
 * decided on the writer thread, atomically with the append that follows
 * (no other writer of the partition exists meanwhile).
 *
 * Rules (FORMAT.md 4.2, 4.3):
 *   - Parts are decided in queue order; an expectation sees every event
 *     stored before it, those earlier in the same take included.
 *   - A part whose events all carry ids already in the window is a retry of
 *     a batch that was stored: every event is acknowledged as a duplicate
 *     with its original offset, its expectations are not checked again
 *     (they held when it was stored).
 *   - Otherwise every expectation of the part must hold, or nothing of it
 *     is stored (pub_part.refused = PUB_EXPECT_FAILED, naming the first
 *     expectation that failed and what the topic has).
 *   - An event whose id is in the window (or earlier in the take) is not
 *     stored: pub_event.duplicate, and its offset is the original's. Every
 *     other event with an id is added to the window; a take that is not
 *     stored after all is taken back out (expect_take_failed), so a retry
 *     of an event that was never stored is never refused.
 *
 * Cost: events without an id cost one test; an expectation costs a look-up
 * in the topic table (a pread of the cold store for a cold topic) and a
 * backward scan of the take's records so far.
 *
 * Threads: the partition's writer thread.
 */
#ifndef PB_EXPECT_H
#define PB_EXPECT_H

#include "broker.h"
#include "dedup.h"
#include "live.h"
#include "log.h"
#include "topics.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct expect_take {
    topic_table *topics;
    bool topics_complete;  /* false: expectations are refused (PUB_EXPECT_UNKNOWN) */
    dedup *dedup;          /* NULL: ids are stored, not deduplicated */
    uint64_t next;         /* the offset the take's first stored event gets */
    int64_t time_ns;       /* the take's receive time */
    const uint8_t *suffix; /* the encoded receive time every record gets */
    size_t suffix_len;
    size_t ids; /* out: events with an id among those to append */
} expect_take;

/* Decides the take `taken` (linked parts): fills entries[0..n) and
 * recs[0..n) (room for every event of the take) with what is to be appended,
 * at offsets next, next + 1, ...; sets the duplicates' flag and original
 * offset, the receive time of the events of parts not refused (x->time_ns),
 * the refused parts' fields, and x->ids. Returns n. */
size_t expect_admit(expect_take *x, pub_part *taken, log_entry *entries, live_record *recs);

/* expect_admit's rest: admits `parts` after the n records already in
 * entries and recs (admitted from x->next on, x->ids counting them), as if
 * they had been linked after those in one take. x->time_ns and x->suffix
 * may have moved on since (a later receive time for these: the window is
 * expired at it by the caller). Returns the new n. */
size_t expect_admit_more(expect_take *x, pub_part *parts, log_entry *entries, live_record *recs,
                         size_t n);

/* The take is stored: gives its stored events their offsets (an event's
 * offset is only set once it is durable) and counts its duplicates
 * (protobus_dedup_hits_total: here, not at admission, which a part
 * admitted ahead can pass twice). */
void expect_commit(const expect_take *x, pub_part *taken);

/* The take was not stored (append or sync failed): forget its ids. */
void expect_take_failed(const expect_take *x);

#endif
