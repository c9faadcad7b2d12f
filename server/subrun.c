/*
 * subrun - one subscription on its pool thread (see subrun.h):
 *
 *   register the live queue -> snapshot every partition's end offset ->
 *   Subscribed -> replay [start, end) from the files, partitions merged by
 *   receive time -> CaughtUp -> drain the queue, skipping offsets already
 *   handled -> tail the queue, answering what the client sends meanwhile.
 *
 * Invariant: for every partition, parts[i].next is the first offset not yet
 * handled (sent, filtered out, or reported lost). Records below a snapshot
 * end are in the files; the writers publish every later record to the queue
 * (they move the end offset before the fan-out, see partition.c). Each queue
 * entry carries `since`: the queue saw every batch of that partition from
 * there on. So an entry with since > next means records [next, since) never
 * reached the queue (they were published before we registered, or while the
 * queue was overflowed): they are read from the files first. Nothing is
 * skipped and, since next only grows, nothing is sent twice.
 *
 * The partitions the subscription knows, where each starts and the
 * snapshot of their ends are subrun_parts.c's. The client's connection
 * (output, writes under the deadline, what the client sends) is
 * subconn.c's.
 *
 * Threads: the subscription's pool thread only; it shares the queue with
 * the writers under s->live.mu (livequeue.h explains why reading entries in place
 * needs no lock).
 */
#include "subrun.h"
#include "subrun_internal.h"
#include "metrics.h"

#include "submatch.h"

#include "frame.h"
#include "grow.h"
#include "heap.h"
#include "logging.h"
#include "pb_errors.h"
#include "recrun.h"
#include "sort.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CONSUME_EVERY   (64u * 1024u) /* give queue space back at least this often */
#define LAST_N_SEEK_GAP 64            /* seek rather than read past this many records */

enum { DRAIN_EMPTY = 0, DRAIN_MORE = 1, DRAIN_OVERFLOW = 2 };

static const char *start_name(int start)
{
    switch (start) {
    case PROTOBUS__START_MODE__START_NEW:
        return "START_NEW";
    case PROTOBUS__START_MODE__START_BEGINNING:
        return "START_BEGINNING";
    case PROTOBUS__START_MODE__START_OFFSETS:
        return "START_OFFSETS";
    case PROTOBUS__START_MODE__START_TIME:
        return "START_TIME";
    case PROTOBUS__START_MODE__START_LAST_N:
        return "START_LAST_N";
    }
    return "unknown";
}

static bool stopping(sub *s)
{
    return atomic_load_explicit(&s->stop, memory_order_relaxed);
}

/* The first offset still stored in a partition (retention raises it). */
static uint64_t first_offset(const part_state *st)
{
    return partition_first_offset(st->p);
}

/* Subscribed: per partition known at subscribe time, its first offset,
 * the start the snapshot chose, and its end (the history is [start, end)). */
static int emit_subscribed(sub *s)
{
    frame_position *pos = calloc(s->nparts ? s->nparts : 1, sizeof *pos);
    if (!pos) {
        snprintf(s->why, sizeof s->why, "out of memory for the Subscribed frame");
        return PB_ENOMEM;
    }
    for (size_t i = 0; i < s->nparts; i++) {
        const part_state *st = &s->parts[i];
        pos[i] = (frame_position){.partition = st->name,
                                  .first_offset = first_offset(st),
                                  .start_offset = st->next,
                                  .end_offset = st->end};
    }
    int rc = subconn_subscribed(&s->conn, pos, s->nparts);
    free(pos);
    return rc;
}

/* Reports offsets first..last of st's partition as lost (DATA_LOSS) and
 * moves past them. */
static int report_loss(sub *s, part_state *st, uint64_t first, uint64_t last, const char *what)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "partition %s: events %" PRIu64 "..%" PRIu64 " %s", st->name, first,
             last, what);
    logging_printf(LOG_WARN, "subscriber %s: %s", s->peer, msg);
    if (last + 1 > st->next)
        st->next = last + 1;
    return subconn_error(&s->conn, s->frame_id, PB_CODE_DATA_LOSS, msg, st->name, first, last);
}

/* The notice for offsets first..last removed by retention before the
 * replay got to them (OUT_OF_RANGE, FORMAT.md 7.5); moves past them. */
static int report_removed(sub *s, part_state *st, uint64_t first, uint64_t last)
{
    char msg[256];
    snprintf(msg, sizeof msg,
             "offsets %" PRIu64 "..%" PRIu64 " of partition %s were removed by retention", first,
             last, st->name);
    logging_printf(LOG_INFO, "subscriber %s: %s", s->peer, msg);
    if (last + 1 > st->next)
        st->next = last + 1;
    return subconn_error(&s->conn, s->frame_id, PB_CODE_OUT_OF_RANGE, msg, st->name, first, last);
}

/* ------------------------------------------------------------------ */
/* replay from the files */

/* Replay order (heap_less_fn over s->parts): receive time, then the
 * partition's place in s->parts. */
static bool heap_less(const void *ctx, size_t a, size_t b)
{
    const sub *s = ctx;
    int64_t ta = s->parts[a].rec.time_ns, tb = s->parts[b].rec.time_ns;
    return ta < tb || (ta == tb && a < b);
}

/* Closes the reader of the least recently used partition of [lo, hi)
 * that has one, but `keep`; its current record (a heap member) is read
 * again when it is reopened (unpark). */
static void park_one(sub *s, size_t lo, size_t hi, size_t keep)
{
    size_t victim = SIZE_MAX;
    for (size_t i = lo; i < hi; i++)
        if (i != keep && s->parts[i].rd &&
            (victim == SIZE_MAX || s->parts[i].used < s->parts[victim].used))
            victim = i;
    if (victim == SIZE_MAX)
        return;
    part_state *st = &s->parts[victim];
    pb_reader_close(st->rd);
    st->rd = NULL;
    st->parked = true;
    s->nopen--;
    if (st->want)
        st->iwant--; /* advance took this record's want entry: it is wanted again */
}

/* Opens st's reader at offset `at` (a START_TIME replay's start offset
 * was found by time_start), within SUBRUN_REPLAY_READERS. */
static int open_reader(sub *s, part_state *st, uint64_t at, size_t lo, size_t hi)
{
    if (s->nopen >= SUBRUN_REPLAY_READERS)
        park_one(s, lo, hi, (size_t)(st - s->parts));
    const char *dir = partition_dir(st->p);
    int rc = pb_reader_open_io(&st->rd, dir, store_segment_io(s->store));
    if (rc == 0)
        s->nopen++;
    st->used = ++s->use_clock;
    if (rc == 0)
        rc = pb_reader_seek_offset(st->rd, at);
    if (rc < 0) {
        snprintf(s->why, sizeof s->why, "partition %s: cannot read its files in %s: %s", st->name,
                 dir, pb_strerror(rc));
        if (st->rd)
            s->nopen--;
        pb_reader_close(st->rd);
        st->rd = NULL;
        return rc;
    }
    pb_reader_set_end(st->rd, st->end);
    return 0;
}

/* Done with st's replay: everything below its end has been handled. */
static void finish(sub *s, part_state *st)
{
    if (st->rd)
        s->nopen--;
    pb_reader_close(st->rd);
    st->rd = NULL;
    st->parked = false;
    free(st->want);
    st->want = NULL;
    st->nwant = st->iwant = 0;
    if (st->next < st->end)
        st->next = st->end;
}

/* Moves st's reader to the next record to consider: 1 (st->rec set), 0 (no
 * more below the end), or a negative code. Damage is reported on the way. */
static int advance(sub *s, part_state *st)
{
    for (;;) {
        int rc = pb_reader_next(st->rd, &st->rec);
        if (rc == 0) {
            if (st->rec.offset < st->next)
                continue;
            if (!st->want)
                return 1;
            while (st->iwant < st->nwant && st->want[st->iwant] < st->rec.offset)
                st->iwant++;
            if (st->iwant == st->nwant)
                return 0;
            uint64_t w = st->want[st->iwant];
            if (w == st->rec.offset) {
                st->iwant++;
                return 1;
            }
            if (w - st->rec.offset > LAST_N_SEEK_GAP && (rc = pb_reader_seek_offset(st->rd, w)) < 0)
                goto io_error;
            continue;
        }
        if (rc == PB_EEOF) {
            /* Every record below a snapshot end is durable in the files; if
             * the files end early, say so rather than skip silently. */
            if (!st->want && st->next < st->end)
                return report_loss(s, st, st->next, st->end - 1,
                                   "are below the partition's end offset but missing from its "
                                   "files");
            return 0;
        }
        if (rc == PB_EREMOVED) {
            /* A last-N replay asked for the topics' recent offsets; those
             * retention took are simply no longer among them. */
            const struct pb_reader_problem *pr = pb_reader_problem(st->rd);
            if (st->want)
                continue;
            if ((rc = report_removed(s, st, pr->first_offset, pr->last_offset)) < 0)
                return rc;
            continue;
        }
        if (rc == PB_ECORRUPT) {
            const struct pb_reader_problem *pr = pb_reader_problem(st->rd);
            if (pr->last_offset + 1 == pr->first_offset) {
                logging_printf(LOG_WARN,
                               "subscriber %s: partition %s: unreadable bytes at byte %" PRIu64
                               " of %s skipped (%s); no event lost",
                               s->peer, st->name, pr->position, pr->file, pr->reason);
                continue;
            }
            char what[768];
            snprintf(what, sizeof what, "could not be read: %s at byte %" PRIu64 " of %s",
                     pr->reason, pr->position, pr->file);
            rc = report_loss(s, st, pr->first_offset, pr->last_offset, what);
            if (rc < 0)
                return rc;
            continue;
        }
    io_error:
        snprintf(s->why, sizeof s->why, "partition %s: reading %s: %s", st->name,
                 partition_dir(st->p), pb_strerror(rc));
        return rc;
    }
}

/* Sends one record from the files if it passes the filters. */
static int deliver(sub *s, part_state *st)
{
    const pb_record *rec = &st->rec;
    if (rec->time_ns < s->min_time_ns)
        return 0;
    /* Nothing to filter (".*", no tags): the record's CRC says these are the
     * bytes the writer stored, which net.c validated on the way in, so they
     * go out without being walked at all. */
    if (s->ntags == 0 && patterns_match_all(s->ps))
        return subconn_event(&s->conn, st->name, st->name_len, rec->offset, rec->event,
                             rec->event_len);
    wire_slice topic;
    if (event_filter_scan(rec->event, rec->event_len, s->tags, s->ntags, s->tag_state, &topic) < 0)
        return report_loss(s, st, rec->offset, rec->offset,
                           "could not be read: the stored bytes are not a well-formed "
                           "EncapsulatedEvent");
    int m = submatch_topic(s->ps, (const char *const *)s->req->patterns, (const char *)topic.p,
                           topic.len, s->why, sizeof s->why);
    if (m <= 0)
        return m; /* no match, or PB_ETOOBIG: a pattern over its budget */
    if (s->ntags && !event_filter_ok(s->tag_state, s->ntags))
        return 0;
    return subconn_event(&s->conn, st->name, st->name_len, rec->offset, rec->event, rec->event_len);
}

/*
 * Replays [next, end) of partition `only`, or of every known partition
 * (only == SIZE_MAX; partitions no stored topic of which matches are
 * skipped), merged by receive time: a heap holds each partition's next
 * record.
 */
static int replay(sub *s, size_t only)
{
    size_t lo = only == SIZE_MAX ? 0 : only, hi = only == SIZE_MAX ? s->nparts : only + 1;
    int rc = 0;
    s->nheap = 0;
    for (size_t i = lo; i < hi; i++) {
        part_state *st = &s->parts[i];
        int may = st->next >= st->end             ? 0
                  : only == SIZE_MAX && !st->want ? subrun_may_match(s, st)
                                                  : 1;
        if (may < 0) {
            rc = may;
            goto out;
        }
        if (may == 0) {
            finish(s, st);
            continue;
        }
        if ((rc = open_reader(s, st, st->next, lo, hi)) < 0 || (rc = advance(s, st)) < 0)
            goto out;
        if (rc == 1)
            heap_push(s->heap, &s->nheap, i, heap_less, s);
        else
            finish(s, st);
    }
    while (s->nheap > 0) {
        if (stopping(s)) {
            rc = PB_ECLOSED;
            goto out;
        }
        size_t i = heap_pop(s->heap, &s->nheap, heap_less, s);
        part_state *st = &s->parts[i];
        if (st->parked) {
            /* Its turn: reopen where it was and read its record again. */
            st->parked = false;
            if ((rc = open_reader(s, st, st->rec.offset, lo, hi)) < 0 || (rc = advance(s, st)) < 0)
                goto out;
            if (rc == 0) {
                finish(s, st);
                continue;
            }
        }
        st->used = ++s->use_clock;
        if ((rc = deliver(s, st)) < 0)
            goto out;
        if (st->rec.offset + 1 > st->next)
            st->next = st->rec.offset + 1;
        if ((rc = advance(s, st)) < 0)
            goto out;
        if (rc == 1)
            heap_push(s->heap, &s->nheap, i, heap_less, s);
        else
            finish(s, st);
    }
    rc = 0;
out:
    for (size_t i = lo; i < hi; i++) {
        pb_reader_close(s->parts[i].rd);
        s->parts[i].rd = NULL;
        s->parts[i].parked = false;
    }
    s->nopen = 0;
    s->nheap = 0;
    return rc;
}

/* ------------------------------------------------------------------ */
/* live */

/* One live record: an Event frame, or for a standby that asked for them
 * into a Records frame (FORMAT.md 4.11: runs of records as stored, with
 * their headers; history still goes as Event frames). */
static int send_live(sub *s, part_state *st, const lq_entry *e)
{
    if (s->req->replicate && s->req->replicate_records)
        return subconn_record(&s->conn, st->name, st->name_len, e->offset, e->time_ns, e->data,
                              e->len, e->has_crc ? &e->crc : NULL);
    return subconn_event(&s->conn, st->name, st->name_len, e->offset, e->data, e->len);
}

/* A run entry (livequeue_run_begin): the records from st->next on, whole
 * into a Records frame (recrun_skip finds them by their lengths). */
static int send_run(sub *s, part_state *st, const lq_entry *e)
{
    size_t at;
    uint64_t offset;
    uint32_t left;
    if (recrun_skip(e->data, e->len, e->offset, e->count, st->next, &at, &offset, &left) < 0) {
        snprintf(s->why, sizeof s->why,
                 "partition %s: the live queue's run of %u records from offset %" PRIu64
                 " (%u bytes) does not hold whole records",
                 st->name, e->count, e->offset, e->len);
        return PB_ECORRUPT;
    }
    if (left == 0)
        return 0;
    return subconn_records(&s->conn, st->name, st->name_len, offset, e->data + at, e->len - at,
                           left);
}

/* Sends what the queue holds. DRAIN_EMPTY, DRAIN_MORE, DRAIN_OVERFLOW or a
 * negative code. */
static int drain(sub *s)
{
    lq_span sp;
    pthread_mutex_lock(&s->live.mu);
    s->live.sleeping = false; /* awake: the writers need not signal */
    bool over = livequeue_overflowed(s->live.q), breached = s->live.breached;
    if (!over)
        livequeue_peek(s->live.q, &sp);
    if (breached)
        snprintf(s->why, sizeof s->why, "%s", s->live.breach);
    pthread_mutex_unlock(&s->live.mu);
    if (breached)
        return PB_ETOOBIG; /* a pattern over its budget (fanout.h) */
    if (over)
        return DRAIN_OVERFLOW;
    if (sp.pos == sp.end)
        return DRAIN_EMPTY;

    lq_entry e;
    int rc = 0;
    while (livequeue_read(s->live.q, &sp, &e) == 0) {
        if (stopping(s))
            return PB_ECLOSED;
        size_t i;
        if ((rc = subrun_part_of(s, (partition *)e.key, &i)) < 0) {
            snprintf(s->why, sizeof s->why, "out of memory");
            return rc;
        }
        if (e.offset + e.count > s->parts[i].next && e.since > s->parts[i].next) {
            /* [next, since) never reached the queue: read it from the files. */
            s->parts[i].end = e.since;
            if ((rc = replay(s, i)) < 0)
                return rc;
        }
        part_state *st = &s->parts[i];
        if (e.run && e.offset + e.count > st->next) {
            /* (runs: no time bound, fanout_member.runs) */
            if ((rc = send_run(s, st, &e)) < 0)
                return rc;
            st->next = e.offset + e.count;
        } else if (!e.run && e.offset >= st->next) {
            if (e.time_ns >= s->min_time_ns && (rc = send_live(s, st, &e)) < 0)
                return rc;
            st->next = e.offset + 1;
        }
        if (sp.pos - sp.start >= CONSUME_EVERY) {
            pthread_mutex_lock(&s->live.mu);
            livequeue_consume(s->live.q, &sp);
            pthread_mutex_unlock(&s->live.mu);
            sp.start = sp.pos;
        }
    }
    pthread_mutex_lock(&s->live.mu);
    livequeue_consume(s->live.q, &sp);
    pthread_mutex_unlock(&s->live.mu);
    return DRAIN_MORE;
}

/* The queue overflowed: drop it, re-enable it, then catch up from the files
 * up to the ends taken after re-enabling. */
static int recover(sub *s)
{
    pthread_mutex_lock(&s->live.mu);
    uint64_t cap = livequeue_capacity(s->live.q);
    livequeue_reset(s->live.q);
    pthread_mutex_unlock(&s->live.mu);
    s->overflows++;
    metrics_sub_fallback();
    logging_printf(s->overflows == 1 ? LOG_INFO : LOG_DEBUG,
                   "subscriber %s: live queue full (%" PRIu64
                   " bytes, %u time(s)); catching up from the files",
                   s->peer, cap, s->overflows);
    int rc = subrun_snapshot(s, false);
    return rc < 0 ? rc : replay(s, SIZE_MAX);
}

/* Waits for the writers to queue something, or for the client to leave. */
static int wait_live(sub *s)
{
    for (;;) {
        if (stopping(s))
            return PB_ECLOSED;
        /* Look again under the lock: the writers do not signal an awake
         * thread (fanout_member.sleeping), and a wake-up that came while
         * the output was being flushed has been consumed there. Once the
         * queue is seen empty here and `sleeping` set, the next push
         * signals. */
        pthread_mutex_lock(&s->live.mu);
        bool ready =
            !livequeue_empty(s->live.q) || livequeue_overflowed(s->live.q) || s->live.breached;
        if (!ready)
            s->live.sleeping = s->live.idle = true; /* the waker may deliver (fanout_fast) */
        pthread_mutex_unlock(&s->live.mu);
        if (ready)
            return 0;
        struct pollfd pf[2] = {{s->fd, POLLIN, 0}, {s->live.efd, POLLIN, 0}};
        int pr = poll(pf, 2, -1);
        int perr = errno;
        /* Awake: the connection and the partitions are the thread's again
         * once the waker is done with them. */
        pthread_mutex_lock(&s->live.mu);
        s->live.idle = false;
        while (s->live.fast_busy)
            pthread_cond_wait(&s->live.fast_cv, &s->live.mu);
        pthread_mutex_unlock(&s->live.mu);
        if (s->conn.fast_error) {
            /* Part of a frame went out and the rest could not be kept: no
             * frame can follow on this stream, not even an Error. */
            logging_printf(LOG_ERROR, "subscriber %s: %s; closing its connection", s->peer, s->why);
            return PB_ECLOSED;
        }
        if (pr < 0) {
            if (perr == EINTR)
                continue;
            snprintf(s->why, sizeof s->why, "poll: %s", strerror(perr));
            return -perr;
        }
        if (pf[1].revents & POLLIN) {
            subconn_drain_wake(&s->conn);
            return stopping(s) ? PB_ECLOSED : 0;
        }
        if (pf[0].revents & POLLIN) {
            /* The client said something (a Ping, a Publish that must be
             * refused, or end of stream): answer, then back to the loop,
             * which sends the answers. */
            s->conn.input_woke = true;
            return subconn_read(&s->conn);
        }
        if (pf[0].revents & (POLLHUP | POLLERR | POLLNVAL))
            return PB_ECLOSED;
    }
}

void subrun_main(sub *s)
{
    int rc;
    s->conn = (subconn){.fd = s->fd,
                        .wake_fd = s->live.efd,
                        .stop = &s->stop,
                        .frame_id = s->frame_id,
                        .write_deadline_ms = s->write_deadline_ms,
                        .max_frame_bytes = s->max_frame_bytes,
                        .peer = s->peer,
                        .why = s->why,
                        .why_len = sizeof s->why,
                        .input = s->input,
                        .input_len = s->input_len,
                        .tls = s->tls,
                        .replicate = s->req->replicate,
                        .standby = s->standby};
    s->input = NULL; /* the connection's now */
    s->input_len = 0;
    if (subconn_open(&s->conn) < 0) {
        logging_printf(LOG_ERROR, "subscriber %s: out of memory", s->peer);
        return;
    }
    logging_printf(LOG_INFO, "subscriber %s: subscribed (%zu pattern(s), %zu tag filter(s), %s)",
                   s->peer, s->req->n_patterns, s->ntags, start_name(s->start));
    s->live.ps = s->ps;
    /* The waker's fast path: plain TCP only (a TLS session is this
     * thread's), and not for a standby's replication stream. */
    if (!s->tls && !s->req->replicate) {
        s->live.fast = subrun_fast;
        s->live.fast_ctx = s;
    }
    rc = fanout_add(s->fo, &s->live, s->why, sizeof s->why);
    if (rc < 0) {
        logging_printf(LOG_INFO, "subscriber %s: refused: %s", s->peer, s->why);
        subconn_end(&s->conn, rc);
        return;
    }
    metrics_sub_started();
    /* Registered first, then the ends: what is below them is history (in
     * the files), everything later reaches the queue. */
    rc = subrun_snapshot(s, true);
    if (rc == 0)
        rc = emit_subscribed(s);
    if (rc == 0)
        rc = replay(s, SIZE_MAX);
    /* Once, here: a later fall-back to the files after an overflow
     * replays live events, not history. */
    if (rc == 0)
        rc = subconn_caught_up(&s->conn);
    bool tailing = false;
    while (rc >= 0) {
        rc = drain(s);
        if (rc == DRAIN_OVERFLOW) {
            rc = recover(s);
        } else if (rc == DRAIN_EMPTY && (rc = subconn_flush(&s->conn)) == 0) {
            if (!tailing) {
                /* History is out on the socket: following the live stream. */
                tailing = true;
                metrics_sub_live(1);
                s->on_tailing(s->tailing_ctx, true);
            }
            /* Asleep, the thread holds no output buffer; it takes one
             * again here, at this depth: allocating from deeper frames
             * (subconn_event) took every sleeping subscription's stack a
             * page deeper (3 touched pages instead of 2: 4 MB more RSS
             * with 1,000 subscriptions, smaps at the fan-out peak). */
            subconn_rest(&s->conn);
            rc = wait_live(s);
            if (rc == 0)
                rc = subconn_ready(&s->conn);
        }
    }
    fanout_remove(s->fo, &s->live);
    metrics_sub_ended();
    if (tailing) {
        metrics_sub_live(0);
        s->on_tailing(s->tailing_ctx, false);
    }

    if (rc == PB_ECLOSED) {
        logging_printf(LOG_INFO, "subscriber %s: ended (%s)", s->peer,
                       stopping(s) ? "server stopping" : "connection closed");
    } else if (s->conn.end_code) {
        /* The client broke the stream (a frame over max_frame_bytes, a bad
         * length prefix). */
        logging_printf(LOG_INFO, "subscriber %s: %s; closing it", s->peer, s->why);
    } else if (rc == PB_ETIMEDOUT) {
        metrics_sub_dropped_slow(); /* no progress for write_deadline_ms (subconn.c) */
    } else {
        if (!s->why[0])
            snprintf(s->why, sizeof s->why, "%s", pb_strerror(rc));
        logging_printf(LOG_ERROR, "subscriber %s: subscription ended: %s", s->peer, s->why);
    }
    /* Best effort: tell the client why before closing. */
    subconn_end(&s->conn, rc);
}

void subrun_free_state(sub *s)
{
    for (size_t i = 0; i < s->nparts; i++) {
        pb_reader_close(s->parts[i].rd);
        free(s->parts[i].want);
    }
    free(s->parts);
    free(s->index);
    free(s->heap);
    subconn_close(&s->conn);
    s->parts = NULL;
    s->index = NULL;
    s->heap = NULL;
    s->nparts = s->partcap = s->index_slots = 0;
}
