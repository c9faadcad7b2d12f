/*
 * mirror_order - what keeps a partition in offset order in the stream
 * after NATS lost a publish while later ones of it were stored (FORMAT.md
 * E.4 item 4): the scan's out-of-order messages ("strays": after a gap,
 * or before the partition's newest acknowledged message) are deleted,
 * nothing is resent until the stream's duplicate window has forgotten
 * their ids, and an acknowledgement "duplicate" is believed only if the
 * stream still holds the message it names.
 *
 * Also the scan of the tail at a resync: what the stream already holds of
 * each partition, and which of its messages are out of offset order.
 *
 * Threads: the mirror's thread (mirror.c's resync and collect).
 */
#include "logging.h"
#include "mirror_internal.h"
#include "mirror_nats.h"
#include "mirror_subject.h"
#include "partition.h"
#include "pb_errors.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Whether the stream's leader holds part:offset at seq: 1 yes; 0 no
 * (nothing there, another message, or another writer's message with any
 * id: why then says which, as the replicas disagreeing unless *foreign is
 * set: another writer's); or a negative code (why says it cannot tell). */
static int leader_holds_at(mirror *m, const char *part, uint64_t offset, uint64_t seq,
                           bool *foreign, char *why, size_t whylen)
{
    *foreign = false;
    char want[MIRROR_MSG_ID_MAX], id[MIRROR_MSG_ID_MAX] = "";
    char subject[MIRROR_SUBJECT_MAX(256, 256)] = "";
    snprintf(want, sizeof want, "%s:%" PRIu64, part, offset);
    int r = m->id_at(m->nats, seq, id, sizeof id, subject, sizeof subject, why, whylen);
    if (r < 0 && r != PB_ENOTFOUND)
        return r;
    /* A message outside subject_prefix is no copy of ours, whatever its
     * id says (the scan skips them too: mirror_nats.c). */
    if (r == 0 && !mirror_subject_under(m->cfg->subject_prefix, subject)) {
        *foreign = true;
        snprintf(why, whylen,
                 "sequence %" PRIu64 " holds another writer's message with id \"%s\" (subject "
                 "%.200s, outside %s), not %s",
                 seq, id, subject, m->cfg->subject_prefix, want);
        return 0;
    }
    if (r == 0 && strcmp(id, want) == 0)
        return 1;
    snprintf(why, whylen,
             "its replicas disagree: a consumer read %s at sequence %" PRIu64
             ", the leader has %s there",
             want, seq, r == 0 ? (*id ? id : "a message without id") : "nothing");
    return 0;
}

static int leader_holds(mirror *m, const char *part, uint64_t offset, uint64_t seq, char *why,
                        size_t whylen)
{
    bool foreign;
    return leader_holds_at(m, part, offset, seq, &foreign, why, whylen);
}

/* A slot acknowledged as a duplicate of the message at s->seq: is that
 * message still in the stream? JetStream keeps the id of a message deleted
 * (FORMAT.md E.4) for its duplicate window and answers "duplicate" with
 * the deleted message's sequence, though the stream no longer holds the
 * event. It also answers "duplicate" for another writer's message that
 * carries the same id (on a subject outside subject_prefix), which is no
 * copy of the event either. If it is gone or not ours (or the stream
 * cannot say), the slot fails: the partition is resent from it, once the
 * window has passed. Called with m->lock held, which it drops during the
 * request. */
bool mirror_dup_still_stored(mirror *m, slot *s)
{
    char why[300] = "";
    mpart *p = m->parts[s->part];
    uint64_t seq = s->seq;
    bool foreign = false;
    pthread_mutex_unlock(&m->lock);
    int h = leader_holds_at(m, p->name, s->offset, seq, &foreign, why, sizeof why);
    pthread_mutex_lock(&m->lock);
    if (h == 1) {
        s->dup = false;
        return true;
    }
    s->state = SLOT_FAILED;
    atomic_fetch_add(&m->counters.failed, 1);
    if (h == 0)
        m->dup_gone = true;
    if (!m->failed) {
        m->failed = true;
        if (foreign)
            snprintf(m->fail_why, sizeof m->fail_why,
                     "acknowledged as a duplicate: %.200s; the id stays in the stream's duplicate "
                     "window",
                     why);
        else
            snprintf(m->fail_why, sizeof m->fail_why,
                     h < 0 ? "acknowledged as a duplicate of sequence %" PRIu64
                             ", which cannot be read"
                           : "acknowledged as a duplicate of sequence %" PRIu64
                             ", which no longer holds it: a deleted copy's id is still in the "
                             "stream's duplicate window",
                     seq);
        m->fail_part = s->part;
        m->fail_offset = s->offset;
    }
    return false;
}

bool mirror_ack_in_order(mirror *m, slot *s)
{
    mpart *p = m->parts[s->part];
    if (s->seq > p->seq_last) {
        p->seq_last = s->seq;
        p->off_last = s->offset;
        return true;
    }
    /* A copy stored before the partition's previous offset (a publish
     * still inside NATS when the tail was read, stored after it; or the
     * scan read a leader that had not applied everything) - if the stream
     * still holds that previous offset where it was acknowledged. */
    char why[300] = "";
    uint64_t seq_last = p->seq_last, off_last = p->off_last;
    pthread_mutex_unlock(&m->lock);
    int h = leader_holds(m, p->name, off_last, seq_last, why, sizeof why);
    pthread_mutex_lock(&m->lock);
    if (h == 0) {
        logging_printf(LOG_WARN,
                       "mirror %s: stream %s no longer holds %s:%" PRIu64 " at sequence %" PRIu64
                       " (created again, or its limits removed it): %s's offset order is "
                       "checked from sequence %" PRIu64 " on",
                       m->cfg->name, m->cfg->stream, p->name, off_last, seq_last, p->name, s->seq);
        p->seq_last = s->seq;
        p->off_last = s->offset;
        if (m->acked_seq >= s->seq)
            m->acked_seq = s->seq - 1; /* collect moves it to s->seq */
        return true;
    }
    s->state = SLOT_FAILED;
    atomic_fetch_add(&m->counters.failed, 1);
    if (!m->order_from || s->seq < m->order_from) {
        m->order_from = s->seq;
        m->dirty = true; /* saved even if nothing else moves before a stop */
    }
    if (h == 1 && m->n_order_strays < sizeof m->order_strays / sizeof *m->order_strays)
        m->order_strays[m->n_order_strays++] =
            (mstray){.p = p, .offset = s->offset, .seq = s->seq, .order = true};
    if (!m->failed) {
        m->failed = true;
        if (h == 1)
            snprintf(m->fail_why, sizeof m->fail_why,
                     "its copy at sequence %" PRIu64 " comes before %s:%" PRIu64
                     " at sequence %" PRIu64 ": out of offset order",
                     s->seq, p->name, off_last, seq_last);
        else
            snprintf(m->fail_why, sizeof m->fail_why,
                     "its copy at sequence %" PRIu64 " comes before sequence %" PRIu64
                     ", which cannot be read to check it (%.200s)",
                     s->seq, seq_last, why);
        m->fail_part = s->part;
        m->fail_offset = s->offset;
    }
    return false;
}

void mirror_add_order_strays(mirror *m)
{
    for (size_t i = 0; i < m->n_order_strays; i++) {
        mstray *o = &m->order_strays[i];
        bool found = false;
        for (size_t k = 0; k < m->n_strays && !found; k++)
            found = m->strays[k].seq == o->seq;
        if (!found) {
            mirror_stray_add(m, o->p, o->offset, o->seq, true);
            o->p->scan_order++;
        }
    }
    /* Kept until a resync has acted on them (mirror.c). */
}

bool mirror_gap_is_loss(const mirror *m, const mpart *p, uint64_t offset)
{
    /* No failed window of this run (a restart; FORMAT.md E.4 item 4): the
     * gap is repaired like a loss as long as the partition still holds
     * the missing offset, so that it and everything after it can be sent
     * again. Resending from the gap and counting on the stream's duplicate
     * window to drop the later copies stores them twice once the window
     * has passed since they were stored (a restart after a NATS outage). */
    if (!m->lost_valid)
        return !p->p || offset >= partition_first_offset(p->p);
    for (size_t i = 0; i < m->n_lost; i++)
        if (m->lost[i].p == p && m->lost[i].offset == offset)
            return true;
    return false;
}

void mirror_stray_add(mirror *m, mpart *p, uint64_t offset, uint64_t seq, bool order)
{
    if (m->n_strays == m->strays_cap) {
        size_t cap = m->strays_cap ? m->strays_cap * 2 : 64;
        mstray *n = cap <= SCAN_LIMIT ? realloc(m->strays, cap * sizeof *n) : NULL;
        if (!n) {
            m->strays_lost = true;
            return;
        }
        m->strays = n;
        m->strays_cap = cap;
    }
    m->strays[m->n_strays++] = (mstray){.p = p, .offset = offset, .seq = seq, .order = order};
}

/* Deletes the scan's strays, each after checking with the leader that its
 * sequence holds that event. The scan may have read a replica that is
 * behind or ahead: a stray the leader does not confirm is left alone and
 * makes this fail, so that nothing is resent while the stream may still
 * hold a copy out of order (the scan is repeated with backoff). 0, or -1
 * with why. */
int mirror_delete_strays(mirror *m, char *why, size_t whylen)
{
    int rc = 0;
    for (size_t i = 0; i < m->n_strays; i++) {
        mstray *st = &m->strays[i];
        int h = leader_holds(m, st->p->name, st->offset, st->seq, why, whylen);
        if (h < 0)
            return -1;
        if (h == 0 && st->order)
            continue; /* the leader no longer holds that copy there: gone already */
        if (h == 0) {
            rc = -1; /* why says how the replicas disagree */
            continue;
        }
        int r = mirror_nats_delete(m->nats, st->seq, why, whylen);
        if (r < 0 && r != PB_ENOTFOUND)
            return -1;
        st->p->scan_deleted++;
        /* Whatever happens next, nothing is resent before the ids of the
         * deleted copies have left the duplicate window. */
        m->hold_until_ms = mirror_mono_ms() + mirror_nats_dup_window_ms(m->nats) + HOLD_MARGIN_MS;
    }
    return rc;
}

/* --- resync: what the stream's tail holds ---------------------------------- */

/* Forward over the stream's tail, in stream order: each partition's run of
 * consecutive offsets from its cursor on (what the stream holds of it
 * that the mirror never saw acknowledged), and whether a later offset of
 * it came before the run ended (a gap: a publish lost while a later one
 * was stored). Every message of the partition after the gap is out of
 * offset order: a stray, deleted before the partition is resent. */
void mirror_scan_hit(void *ctx, const char *part_name, uint64_t offset, uint64_t seq)
{
    mirror *m = ctx;
    mpart *p = m->scan_last && strcmp(m->scan_last->name, part_name) == 0
                   ? m->scan_last
                   : mirror_find_part(m, part_name);
    m->scan_last = p;
    if (!p)
        return;
    if (offset >= p->cursor && seq < p->seq_last) {
        /* Stored before an offset of it acknowledged in order. */
        mirror_stray_add(m, p, offset, seq, true);
        p->scan_order++;
        return;
    }
    if (offset == p->scan_next && !p->scan_stray) {
        p->scan_next++;
        p->scan_seq = seq;
    } else if (offset > p->scan_next || (p->scan_stray && offset == p->scan_next)) {
        if (!p->scan_gap) {
            p->scan_gap = true;
            p->scan_gap_at = offset;
            /* Only a publish of the failed window that NATS lost makes the
             * rest strays; a gap of offsets never sent (skipped on purpose)
             * or seen after a restart keeps the earlier rule: the run ends,
             * the partition is resent from it (duplicates dropped). */
            p->scan_stray = mirror_gap_is_loss(m, p, p->scan_next);
        }
        if (p->scan_stray)
            mirror_stray_add(m, p, offset, seq, false);
    }
}

/* What the scan found. The scan's consumer may have read a replica that is
 * not the leader, so each finding that moves a cursor is first checked
 * with the leader. 0; 1 when messages out of offset order were deleted
 * (resend after the hold, FORMAT.md E.4); or -1 (why says what) to scan
 * again later. */
/* Before order strays of p are deleted: does the stream still hold
 * p:off_last at seq_last? If not (deleted and created again, or its limits
 * removed it) the sequences say nothing about order: p's order strays are
 * dropped and its check starts over. 0, or -1 (why) when the stream
 * cannot say. */
static int confirm_order_base(mirror *m, mpart *p, char *why, size_t whylen)
{
    int h = leader_holds(m, p->name, p->off_last, p->seq_last, why, whylen);
    if (h != 0)
        return h < 0 ? -1 : 0;
    logging_printf(LOG_WARN,
                   "mirror %s: stream %s no longer holds %s:%" PRIu64 " at sequence %" PRIu64
                   " (created again, or its limits removed it): nothing of %s is taken for out "
                   "of offset order by it",
                   m->cfg->name, m->cfg->stream, p->name, p->off_last, p->seq_last, p->name);
    size_t kept = 0;
    for (size_t i = 0; i < m->n_strays; i++)
        if (!(m->strays[i].order && m->strays[i].p == p))
            m->strays[kept++] = m->strays[i];
    m->n_strays = kept;
    kept = 0;
    for (size_t i = 0; i < m->n_order_strays; i++)
        if (m->order_strays[i].p != p)
            m->order_strays[kept++] = m->order_strays[i];
    m->n_order_strays = kept;
    p->scan_order = 0;
    p->seq_last = p->off_last = 0;
    m->dirty = true;
    return 0;
}

int mirror_apply_scan(mirror *m, char *why, size_t whylen)
{
    int rc = m->strays_lost ? -1 : 0;
    if (rc < 0)
        snprintf(why, whylen, "no memory for the list of messages out of order");
    for (size_t i = 0; i < m->n_parts && rc == 0; i++)
        if (m->parts[i]->scan_order && confirm_order_base(m, m->parts[i], why, whylen) < 0)
            rc = -1;
    for (size_t i = 0; i < m->n_parts && rc == 0; i++) {
        mpart *p = m->parts[i];
        if (p->scan_next == p->cursor)
            continue;
        if (leader_holds(m, p->name, p->scan_next - 1, p->scan_seq, why, whylen) != 1)
            rc = -1; /* why says how the replicas disagree, or why the leader cannot say */
    }
    if (rc == 0 && m->n_strays && mirror_delete_strays(m, why, whylen) < 0)
        rc = -1;
    bool deleted = false;
    for (size_t i = 0; i < m->n_parts; i++) {
        mpart *p = m->parts[i];
        if (rc == 0 && p->scan_next > p->cursor) {
            logging_printf(LOG_INFO,
                           "mirror %s: stream %s already holds %s up to offset %" PRIu64
                           " (acknowledgements were lost): going on from %" PRIu64,
                           m->cfg->name, m->cfg->stream, p->name, p->scan_next - 1, p->scan_next);
            p->cursor = p->next_read = p->scan_next;
            if (p->scan_seq > p->seq_last) {
                p->seq_last = p->scan_seq;
                p->off_last = p->scan_next - 1;
            }
            p->fresh = false;
            atomic_store(&p->lag.shipped, p->cursor);
            m->dirty = true;
        }
        if (rc == 0 && p->scan_gap && p->scan_stray)
            logging_printf(LOG_WARN,
                           "mirror %s: stream %s holds %s:%" PRIu64 " but not %s:%" PRIu64
                           ": %s; deleted the %" PRIu64 " message(s) of %s stored after the gap, "
                           "resending from %" PRIu64 " once the stream's duplicate window "
                           "(%" PRId64 " s) has forgotten their ids",
                           m->cfg->name, m->cfg->stream, p->name, p->scan_gap_at, p->name,
                           p->cursor,
                           m->lost_valid ? "a publish was lost inside NATS while a later one "
                                           "was stored"
                                         : "a gap found after a restart (a publish lost inside "
                                           "NATS before it)",
                           p->scan_deleted, p->name, p->cursor,
                           (mirror_nats_dup_window_ms(m->nats) + HOLD_MARGIN_MS) / 1000);
        else if (rc == 0 && p->scan_gap)
            logging_printf(LOG_INFO,
                           "mirror %s: stream %s holds %s:%" PRIu64 " but not %s:%" PRIu64
                           ", which was not lost in the last window (skipped, removed by "
                           "retention, or beyond the tail read): resending from %" PRIu64
                           " (offsets already in the stream come again as duplicates)",
                           m->cfg->name, m->cfg->stream, p->name, p->scan_gap_at, p->name,
                           p->cursor, p->cursor);
        if (rc == 0 && p->scan_order && p->scan_deleted)
            logging_printf(
                LOG_WARN,
                "mirror %s: stream %s holds %" PRIu64 " message(s) of %s at or after "
                "offset %" PRIu64 " stored before sequence %" PRIu64
                ", out of offset order (publishes still inside NATS when its tail "
                "was read): deleted them, resending from %" PRIu64
                " once the stream's duplicate window (%" PRId64 " s) has forgotten their ids",
                m->cfg->name, m->cfg->stream, p->scan_order, p->name, p->cursor, p->seq_last,
                p->cursor, (mirror_nats_dup_window_ms(m->nats) + HOLD_MARGIN_MS) / 1000);
        deleted = deleted || (rc == 0 && p->scan_deleted);
        p->scan_next = p->cursor;
        p->scan_gap = false;
        p->scan_stray = false;
        p->scan_deleted = 0;
        p->scan_order = 0;
    }
    m->scan_last = NULL;
    m->n_strays = 0;
    m->strays_lost = false;
    return rc < 0 ? rc : deleted;
}
