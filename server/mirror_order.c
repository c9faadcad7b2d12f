/*
 * mirror_order - what keeps a partition in offset order in the stream
 * after NATS lost a publish while later ones of it were stored (FORMAT.md
 * E.4 item 4): the scan's out-of-order messages ("strays") are deleted,
 * nothing is resent until the stream's duplicate window has forgotten
 * their ids, and an acknowledgement "duplicate" is believed only if the
 * stream still holds the message it names.
 *
 * Threads: the mirror's thread (mirror.c's resync and collect).
 */
#include "mirror_internal.h"
#include "mirror_nats.h"
#include "pb_errors.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A slot acknowledged as a duplicate of the message at s->seq: is that
 * message still in the stream? JetStream keeps the id of a message deleted
 * (FORMAT.md E.4) for its duplicate window and answers "duplicate" with
 * the deleted message's sequence, though the stream no longer holds the
 * event. If it is gone (or the stream cannot say), the slot fails: the
 * partition is resent from it, once the window has passed. Called with
 * m->lock held, which it drops during the request. */
bool mirror_dup_still_stored(mirror *m, slot *s)
{
    char want[MIRROR_MSG_ID_MAX], id[MIRROR_MSG_ID_MAX] = "", why[300] = "";
    mpart *p = m->parts[s->part];
    uint64_t seq = s->seq;
    snprintf(want, sizeof want, "%s:%" PRIu64, p->name, s->offset);
    pthread_mutex_unlock(&m->lock);
    int r = mirror_nats_id_at(m->nats, seq, id, sizeof id, why, sizeof why);
    pthread_mutex_lock(&m->lock);
    if (r == 0 && strcmp(id, want) == 0) {
        s->dup = false;
        return true;
    }
    s->state = SLOT_FAILED;
    atomic_fetch_add(&m->counters.failed, 1);
    if (r == 0 || r == PB_ENOTFOUND)
        m->dup_gone = true;
    if (!m->failed) {
        m->failed = true;
        snprintf(m->fail_why, sizeof m->fail_why,
                 r < 0 && r != PB_ENOTFOUND
                     ? "acknowledged as a duplicate of sequence %" PRIu64 ", which cannot be read"
                     : "acknowledged as a duplicate of sequence %" PRIu64
                       ", which no longer holds it: a deleted copy's id is still in the "
                       "stream's duplicate window",
                 seq);
        m->fail_part = s->part;
        m->fail_offset = s->offset;
    }
    return false;
}

bool mirror_gap_is_loss(const mirror *m, const mpart *p, uint64_t offset)
{
    if (!m->lost_valid)
        return false;
    for (size_t i = 0; i < m->n_lost; i++)
        if (m->lost[i].p == p && m->lost[i].offset == offset)
            return true;
    return false;
}

void mirror_stray_add(mirror *m, mpart *p, uint64_t offset, uint64_t seq)
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
    m->strays[m->n_strays++] = (mstray){.p = p, .offset = offset, .seq = seq};
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
        char want[MIRROR_MSG_ID_MAX], id[MIRROR_MSG_ID_MAX] = "";
        snprintf(want, sizeof want, "%s:%" PRIu64, st->p->name, st->offset);
        int r = mirror_nats_id_at(m->nats, st->seq, id, sizeof id, why, whylen);
        if (r == PB_ENOTFOUND || (r == 0 && strcmp(id, want) != 0)) {
            snprintf(why, whylen,
                     "its replicas disagree: a consumer read %s at sequence %" PRIu64
                     ", the leader has %s there",
                     want, st->seq, r == 0 ? (*id ? id : "a message without id") : "nothing");
            rc = -1;
            continue;
        }
        if (r == 0)
            r = mirror_nats_delete(m->nats, st->seq, why, whylen);
        if (r < 0 && r != PB_ENOTFOUND)
            return -1;
        st->p->scan_deleted++;
        /* Whatever happens next, nothing is resent before the ids of the
         * deleted copies have left the duplicate window. */
        m->hold_until_ms = mirror_mono_ms() + mirror_nats_dup_window_ms(m->nats) + HOLD_MARGIN_MS;
    }
    return rc;
}
