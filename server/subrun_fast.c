/*
 * subrun_fast - the waker's fast path for one tailing subscription (see
 * subrun_internal.h and fanout_fast, fanout.h): a take's records reach a
 * subscription whose thread sleeps with an empty output; the fan-out's
 * waker writes their Event frames to its socket itself, one non-blocking
 * send, so a take of records for 1,000 subscriptions costs ~1,000 sends on
 * one thread instead of ~1,000 thread switches. Whatever the socket does
 * not take, and every record the fast path does not handle, stays for the
 * subscription's own thread (signalled then): replay, gaps, overflow,
 * slow consumers, TLS and replication remain its work alone.
 *
 * Threads: the fan-out's waker thread, while fanout_member.fast_busy keeps
 * the subscription's thread out of its connection and partitions (it
 * waits for fast_busy after it wakes: wait_live, subrun.c).
 */
#include "subrun_internal.h"

#include "frame.h"

#include <poll.h>
#include <string.h>

int subrun_fast(void *ctx, lq_span *span, uint8_t *scratch, size_t cap, size_t *used)
{
    sub *s = ctx;
    subconn *c = &s->conn;
    *used = 0;
    /* Every hand-over to the thread below clears fast_room: the thread
     * may fill the socket before the next fast delivery (its own writes
     * clear it too: send_raw). */
    if (c->out_len || c->fast_error) {
        c->fast_room = false;
        return FANOUT_FAST_THREAD; /* output of its own waits: the thread's */
    }
    /* Asked to stop (server stopping, the user's read rights revoked:
     * sub_registry_end_users): not one more event; the thread ends it. */
    if (atomic_load_explicit(&s->stop, memory_order_relaxed)) {
        c->fast_room = false;
        return FANOUT_FAST_THREAD;
    }
    /* A full socket (a slow reader): encoding 64 KiB only to copy it all
     * into the thread's output would cost two copies for nothing; the
     * thread takes the records as they are and waits for room itself.
     * Asked only after a send the socket did not take whole: a reader
     * that keeps up costs one system call a delivery, not two (the poll
     * was ~10% of the waker's CPU in the fan-out bench); one that falls
     * behind costs one copy into the thread's output, then polls again. */
    if (!c->fast_room) {
        struct pollfd pf = {c->fd, POLLOUT, 0};
        if (poll(&pf, 1, 0) != 1 || !(pf.revents & POLLOUT))
            return FANOUT_FAST_THREAD;
    }
    size_t len = 0;
    bool rest = false;
    lq_entry e;
    for (;;) {
        lq_span at = *span;
        if (livequeue_read(s->live.q, span, &e) < 0)
            break;
        size_t i = subrun_find_part(s, (partition *)e.key);
        part_state *st = i == SIZE_MAX ? NULL : &s->parts[i];
        bool deliver = st && e.offset >= st->next && e.time_ns >= s->min_time_ns;
        if (!st || (e.offset >= st->next && e.since > st->next) ||
            (deliver && len + FRAME_EVENT_HEADER_MAX(st->name_len) + e.len > cap)) {
            *span = at; /* the thread takes it from here */
            rest = true;
            break;
        }
        if (deliver) {
            len += frame_put_event_header_n(scratch + len, cap - len, c->frame_id, st->name,
                                            st->name_len, e.offset, e.len);
            memcpy(scratch + len, e.data, e.len);
            len += e.len;
            c->events_sent++;
        }
        if (e.offset >= st->next)
            st->next = e.offset + 1;
    }
    *used = len;
    int rc = subconn_send_now(c, scratch, len);
    c->fast_room = rc == 0 && !rest;
    return rest || rc != 0 ? FANOUT_FAST_THREAD : FANOUT_FAST_DONE;
}
