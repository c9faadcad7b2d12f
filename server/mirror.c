/*
 * mirror - the mirrors' threads: partitions -> JetStream, with a durable
 * cursor per partition (the design: mirror.h; the wire: mirror_nats.c; the
 * cursor file: mirror_cursor.c; partition tracking and the log of lag:
 * mirror_track.c; the repair of a gap in a partition's order:
 * mirror_order.c).
 *
 * Threads: one thread per mirror runs everything here except on_ack and
 * on_state, which libnats calls on its threads. The ring of outstanding
 * publishes (slots) and the flags beside it are shared with on_ack under
 * m->lock; everything else of a mirror belongs to its thread, except what
 * mirror_internal.h marks as read by other threads.
 */
#include "mirror.h"

#include "logging.h"
#include "mirror_cursor.h"
#include "mirror_internal.h"
#include "mirror_nats.h"
#include "partition.h"
#include "pb_errors.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How long the thread sleeps when there is nothing to send (acks and stop
 * wake it earlier); new events are noticed within this. */
#define IDLE_WAIT_MS 10
/* Resync retries: 200 ms, doubling, at most 5 s. */
#define RESYNC_FIRST_MS 200
#define RESYNC_MAX_MS   5000
/* At stop, how long to wait for acknowledgements still due. */
#define STOP_WAIT_MS 2000
/* Records taken from one partition before the next one gets a turn. */
#define BATCH 64

int64_t mirror_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t mirror_wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* --- acknowledgements (libnats' thread) --------------------------------- */

static void on_ack(void *ctx, const void *token, enum mirror_ack result, uint64_t seq,
                   const char *why)
{
    mirror *m = ctx;
    pthread_mutex_lock(&m->lock);
    for (uint32_t i = 0; i < m->count; i++) {
        slot *s = &m->ring[(m->head + i) % m->cap];
        if (s->state != SLOT_PENDING || s->token != token)
            continue;
        m->pending--;
        if (result == MIRROR_ACK_FAILED) {
            s->state = SLOT_FAILED;
            atomic_fetch_add(&m->counters.failed, 1);
            if (!m->failed) {
                m->failed = true;
                snprintf(m->fail_why, sizeof m->fail_why, "%s", why);
                m->fail_part = s->part;
                m->fail_offset = s->offset;
            }
        } else {
            s->state = SLOT_ACKED;
            atomic_fetch_add(
                result == MIRROR_ACK_DUPLICATE ? &m->counters.duplicates : &m->counters.stored, 1);
            s->seq = seq;
            s->dup = result == MIRROR_ACK_DUPLICATE;
        }
        break;
    }
    pthread_cond_signal(&m->cond);
    pthread_mutex_unlock(&m->lock);
}

static void on_state(void *ctx, bool up)
{
    mirror *m = ctx;
    atomic_store(&m->counters.connected, up);
    pthread_mutex_lock(&m->lock);
    pthread_cond_signal(&m->cond);
    pthread_mutex_unlock(&m->lock);
}

/* --- the ring ---------------------------------------------------------------- */

/* Pops acknowledged slots off the head: their partitions' cursors move up. */
static void collect(mirror *m)
{
    pthread_mutex_lock(&m->lock);
    while (m->count && m->ring[m->head].state == SLOT_ACKED) {
        slot *s = &m->ring[m->head];
        if (s->dup && !mirror_dup_still_stored(m, s))
            break;
        if (!mirror_ack_in_order(m, s))
            break;
        mpart *p = m->parts[s->part];
        p->cursor = s->offset + 1;
        if (s->seq > m->acked_seq)
            m->acked_seq = s->seq;
        p->first_slot = s->next_in_part;
        if (--p->inflight == 0) {
            p->first_slot = p->last_slot = NO_SLOT;
            if (p->next_read > p->cursor)
                p->cursor = p->next_read; /* skipped offsets after it */
        }
        atomic_store(&p->lag.shipped, p->cursor);
        atomic_store(&p->lag.oldest_ns, p->inflight ? m->ring[p->first_slot].time_ns : 0);
        m->head = (m->head + 1) % m->cap;
        m->count--;
        m->dirty = true;
    }
    pthread_mutex_unlock(&m->lock);
}

/* Everything outstanding has been answered and something failed: empty
 * the ring, keep the cursors of what was acknowledged, and rewind each
 * partition with a failure to its first failed offset. A failure may be a
 * lost acknowledgement of a stored message, so the scan of the stream's
 * tail (after acked_seq: everything sent since was stored after it, if at
 * all) settles where each partition really is before anything is resent. */
static void finish_drain(mirror *m)
{
    char why[320];
    uint32_t fpart;
    uint64_t foffset;
    bool in_order = true; /* still before the first slot not acknowledged */
    if (!m->lost)
        m->lost = malloc((size_t)m->cap * sizeof *m->lost);
    m->n_lost = 0;
    m->lost_valid = m->lost != NULL;
    pthread_mutex_lock(&m->lock);
    for (uint32_t i = 0; i < m->count; i++) {
        slot *s = &m->ring[(m->head + i) % m->cap];
        mpart *p = m->parts[s->part];
        /* A duplicate not yet checked (dup_still_stored) counts as not
         * acknowledged: the scan finds it if the stream holds it. */
        bool acked = s->state == SLOT_ACKED && !s->dup;
        if (acked && !p->rewind && s->seq <= p->seq_last) {
            acked = false; /* stored out of order (mirror_ack_in_order) */
            if (!m->order_from || s->seq < m->order_from)
                m->order_from = s->seq;
        }
        if (!acked && m->lost)
            m->lost[m->n_lost++] = (mstray){.p = p, .offset = s->offset};
        if (!acked)
            in_order = false;
        else if (in_order && s->seq > m->acked_seq)
            m->acked_seq = s->seq;
        if (acked && !p->rewind) {
            p->cursor = s->offset + 1;
            p->seq_last = s->seq;
            p->off_last = s->offset;
        } else if (!p->rewind) {
            p->rewind = true;
            p->rewind_to = s->offset;
            p->rewind_time_ns = s->time_ns;
        }
    }
    m->head = m->count = 0;
    m->failed = false;
    snprintf(why, sizeof why, "%s", m->fail_why);
    fpart = m->fail_part;
    foffset = m->fail_offset;
    bool dup_gone = m->dup_gone;
    m->dup_gone = false;
    pthread_mutex_unlock(&m->lock);
    if (dup_gone)
        m->hold_until_ms = mirror_mono_ms() + mirror_nats_dup_window_ms(m->nats) + HOLD_MARGIN_MS;

    for (size_t i = 0; i < m->n_parts; i++) {
        mpart *p = m->parts[i];
        p->inflight = 0;
        p->first_slot = p->last_slot = NO_SLOT;
        if (p->rewind) {
            p->next_read = p->cursor = p->rewind_to;
            p->rewind = false;
            atomic_store(&p->lag.oldest_ns, p->rewind_time_ns);
        } else if (p->next_read > p->cursor) {
            p->cursor = p->next_read;
        }
        atomic_store(&p->lag.shipped, p->cursor);
    }
    m->scan_needed = true;
    m->dirty = true;
    logging_printf(LOG_WARN,
                   "mirror %s: publishing %s:%" PRIu64 " to stream %s failed (%s); resending "
                   "from the last acknowledged offsets once the stream answers",
                   m->cfg->name, fpart < m->n_parts ? m->parts[fpart]->name : "?", foffset,
                   m->cfg->stream, why);
}

/* --- resync: learn what the stream holds ------------------------------------ */

static void resync_failed(mirror *m, int64_t now, const char *why)
{
    if (!m->resync_failing)
        logging_printf(LOG_WARN, "mirror %s: stream %s unavailable: %s; retrying with backoff",
                       m->cfg->name, m->cfg->stream, why);
    m->resync_failing = true;
    m->backoff_ms = m->backoff_ms ? m->backoff_ms * 2 : RESYNC_FIRST_MS;
    if (m->backoff_ms > RESYNC_MAX_MS)
        m->backoff_ms = RESYNC_MAX_MS;
    m->resync_at_ms = now + m->backoff_ms;
}

/* 1 when the mirror may send again, 0 to wait. */
static int resync(mirror *m, int64_t now)
{
    char why[400];
    if (now < m->hold_until_ms) {
        m->resync_at_ms = m->hold_until_ms;
        return 0;
    }
    if (!mirror_nats_connected(m->nats))
        return 0; /* mirror_nats says when the cluster is unreachable */
    if (mirror_nats_ensure_stream(m->nats, why, sizeof why) < 0) {
        resync_failed(m, now, why);
        return 0;
    }
    if (m->scan_needed) {
        uint32_t read = 0;
        bool hit_limit = false;
        for (size_t i = 0; i < m->n_parts; i++) {
            m->parts[i]->scan_next = m->parts[i]->cursor;
            m->parts[i]->scan_gap = false;
            m->parts[i]->scan_stray = false;
            m->parts[i]->scan_deleted = 0;
            m->parts[i]->scan_order = 0;
        }
        m->n_strays = 0;
        m->strays_lost = false;
        uint64_t from = m->acked_seq + 1;
        if (m->order_from && m->order_from < from)
            from = m->order_from;
        if (mirror_nats_scan(m->nats, from, SCAN_LIMIT, mirror_scan_hit, m, &read, &hit_limit, why,
                             sizeof why) < 0) {
            resync_failed(m, now, why);
            return 0;
        }
        logging_printf(LOG_INFO,
                       "mirror %s: read %" PRIu32 " message(s) of stream %s after sequence %" PRIu64
                       " (%zu out of offset order)",
                       m->cfg->name, read, m->cfg->stream, from - 1, m->n_strays);
        if (hit_limit) {
            /* The read began in the middle of the tail: a partition's first
             * message seen there is no gap. Only what lies before an offset
             * acknowledged in order is deleted. */
            size_t kept = 0;
            for (size_t i = 0; i < m->n_parts; i++)
                m->parts[i]->scan_stray = false;
            for (size_t i = 0; i < m->n_strays; i++)
                if (m->strays[i].order)
                    m->strays[kept++] = m->strays[i];
            m->n_strays = kept;
        }
        mirror_add_order_strays(m);
        if (hit_limit)
            logging_printf(LOG_WARN,
                           "mirror %s: stream %s: more than %d messages to read back; read the "
                           "newest %d (events resent beyond them rely on its duplicate window)",
                           m->cfg->name, m->cfg->stream, SCAN_LIMIT, SCAN_LIMIT);
        int applied = mirror_apply_scan(m, why, sizeof why);
        if (applied >= 0)
            m->n_order_strays = 0; /* acted on */
        if (applied < 0) {
            resync_failed(m, now, why);
            return 0;
        }
        if (applied > 0) {
            /* Scan again after the hold (delete_strays set it): anything
             * stored meanwhile (a publish still inside NATS) is checked
             * like the rest. */
            m->resync_at_ms = m->hold_until_ms;
            return 0;
        }
        m->scan_needed = false;
        if (m->order_from) {
            m->order_from = 0;
            m->dirty = true;
        }
        mirror_nats_test_release(m->nats);
    }
    for (size_t i = 0; i < m->n_parts; i++)
        mirror_part_seek(m, m->parts[i]);
    if (m->resync_failing)
        logging_printf(LOG_INFO, "mirror %s: stream %s answers again: shipping", m->cfg->name,
                       m->cfg->stream);
    m->resync_failing = false;
    m->backoff_ms = 0;
    /* One message alone first: pipelining starts once the stream has
     * acknowledged it (after an outage the cluster may still be settling). */
    m->probe = true;
    m->probe_sent = false;
    m->run = RUN_SENDING;
    atomic_fetch_add(&m->counters.resyncs, 1);
    return 1;
}

/* --- sending ---------------------------------------------------------------- */

/* One event into the ring and to JetStream. 1 sent; 0 skipped (cannot be
 * mirrored); -1 the publish failed (the slot is failed: drain follows). */
static int send_one(mirror *m, uint32_t pi, const pb_record *rec)
{
    mpart *p = m->parts[pi];
    void *token;
    char id[MIRROR_MSG_ID_MAX], why[300];
    if (mirror_nats_build(m->nats, p->name, rec, &token, id, why, sizeof why) < 0) {
        logging_printf(LOG_ERROR, "mirror %s: event %s:%" PRIu64 " cannot be mirrored: %s",
                       m->cfg->name, p->name, rec->offset, why);
        atomic_fetch_add(&m->counters.skipped, 1);
        if (p->inflight == 0) {
            p->cursor = p->next_read;
            atomic_store(&p->lag.shipped, p->cursor);
            m->dirty = true;
        }
        return 0;
    }
    pthread_mutex_lock(&m->lock);
    uint32_t idx = (m->head + m->count) % m->cap;
    slot *s = &m->ring[idx];
    *s = (slot){.token = token,
                .part = pi,
                .next_in_part = NO_SLOT,
                .offset = rec->offset,
                .time_ns = rec->time_ns,
                .sent_ns = mirror_wall_ns(),
                .state = SLOT_PENDING};
    if (p->inflight++ == 0) {
        p->first_slot = idx;
        atomic_store(&p->lag.oldest_ns, rec->time_ns);
    } else {
        m->ring[p->last_slot].next_in_part = idx;
    }
    p->last_slot = idx;
    m->count++;
    m->pending++;
    m->probe_sent = m->probe;
    pthread_mutex_unlock(&m->lock);

    int rc = mirror_nats_publish(m->nats, token, why, sizeof why);
    atomic_fetch_add(&m->counters.published, 1);
    if (rc < 0) {
        mirror_nats_drop(token);
        pthread_mutex_lock(&m->lock);
        if (s->state == SLOT_PENDING) {
            s->state = SLOT_FAILED;
            m->pending--;
            atomic_fetch_add(&m->counters.failed, 1);
            if (!m->failed) {
                m->failed = true;
                snprintf(m->fail_why, sizeof m->fail_why, "%s", why);
                m->fail_part = pi;
                m->fail_offset = rec->offset;
            }
        }
        pthread_mutex_unlock(&m->lock);
        return -1;
    }
    return 1;
}

/* Fills the window from the partitions, round robin. Returns the number of
 * events handled (0: nothing to do). */
static int send_some(mirror *m)
{
    if (!mirror_nats_connected(m->nats) || m->n_parts == 0)
        return 0;
    pthread_mutex_lock(&m->lock);
    uint32_t room = m->cap - m->count;
    bool failed = m->failed;
    /* The probe: one message, then nothing until it is acknowledged. Its
     * slot may already be gone (collect pops it on its ack), so "sent and
     * nothing pending" is what ends it, not the slot. */
    if (m->probe && m->pending)
        room = 0;
    else if (m->probe && m->probe_sent)
        m->probe = false; /* acknowledged: pipeline */
    else if (m->probe)
        room = 1;
    pthread_mutex_unlock(&m->lock);
    int handled = 0;
    for (size_t k = 0; k < m->n_parts && room && !failed; k++) {
        uint32_t pi = (uint32_t)((m->rr + k) % m->n_parts);
        for (int j = 0; j < BATCH && room; j++) {
            pb_record rec;
            if (mirror_part_next(m, m->parts[pi], &rec) != 0)
                break;
            int rc = send_one(m, pi, &rec);
            handled++;
            if (rc < 0) {
                failed = true;
                break;
            }
            room -= (uint32_t)rc;
        }
    }
    m->rr = (m->rr + 1) % m->n_parts;
    return handled;
}

/* --- the thread --------------------------------------------------------------- */

static void wait_ms(mirror *m, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    ts.tv_sec += ms / 1000 + ts.tv_nsec / 1000000000;
    ts.tv_nsec %= 1000000000;
    pthread_mutex_lock(&m->lock);
    if (!m->stop)
        pthread_cond_timedwait(&m->cond, &m->lock, &ts);
    pthread_mutex_unlock(&m->lock);
}

/* At stop: no new sends; what is outstanding gets STOP_WAIT_MS to be
 * acknowledged; the cursors are saved. */
static void finish(mirror *m)
{
    int64_t until = mirror_mono_ms() + STOP_WAIT_MS;
    for (;;) {
        collect(m);
        pthread_mutex_lock(&m->lock);
        uint32_t pending = m->pending;
        pthread_mutex_unlock(&m->lock);
        if (pending == 0 || mirror_mono_ms() >= until)
            break;
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    mirror_save(m, true);
    mirror_nats_close(m->nats);
}

static void *mirror_main(void *arg)
{
    mirror *m = arg;
    int64_t parts_at = -1;
    for (;;) {
        int64_t now = mirror_mono_ms();
        pthread_mutex_lock(&m->lock);
        bool stop = m->stop, failed = m->failed;
        uint32_t pending = m->pending;
        pthread_mutex_unlock(&m->lock);
        if (stop)
            break;
        if (parts_at < 0 || now - parts_at >= MIRROR_PARTS_REFRESH_MS) {
            mirror_refresh_parts(m);
            parts_at = now;
        }
        collect(m);
        if (m->run == RUN_SENDING && failed)
            m->run = RUN_DRAIN;
        if (m->run == RUN_DRAIN && pending == 0) {
            finish_drain(m);
            m->run = RUN_RESYNC;
            m->resync_at_ms = now;
        }
        int did = 0;
        if (m->run == RUN_RESYNC && now >= m->resync_at_ms)
            did = resync(m, now);
        else if (m->run == RUN_SENDING)
            did = send_some(m);
        mirror_save(m, false);
        mirror_log_lag(m, now);
        if (!did)
            wait_ms(m, m->run == RUN_SENDING ? IDLE_WAIT_MS : 50);
    }
    finish(m);
    return NULL;
}

/* --- the set ---------------------------------------------------------------- */

struct mirror_set {
    mirror **m;
    size_t n;
    bool nats_used;
};

static int mirror_create(mirror **out, const pb_mirror_config *cfg, store *st, const char *data_dir)
{
    mirror *m = calloc(1, sizeof *m);
    if (!m)
        return PB_ENOMEM;
    m->cfg = cfg;
    m->id_at = mirror_nats_id_at;
    m->store = st;
    m->data_dir = data_dir;
    m->cap = cfg->max_pending;
    m->run = RUN_RESYNC;
    pthread_mutex_init(&m->lock, NULL);
    pthread_mutex_init(&m->parts_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_cond_init(&m->cond, &ca);
    pthread_condattr_destroy(&ca);
    *out = m;
    m->ring = calloc(m->cap, sizeof *m->ring);
    if (!m->ring)
        return PB_ENOMEM;
    char why[400];
    int rc =
        pattern_compile_whole(cfg->partitions, strlen(cfg->partitions), &m->re, why, sizeof why);
    if (rc < 0) {
        logging_printf(LOG_ERROR, "mirror %s: partitions: %s", cfg->name, why);
        return rc;
    }
    return mirror_load_cursors(m);
}

static void mirror_free(mirror *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_parts; i++) {
        mirror_part_close(m, m->parts[i]);
        free(m->parts[i]);
    }
    free(m->parts);
    mirror_cursors_free(&m->loaded);
    if (m->md)
        pcre2_match_data_free(m->md);
    if (m->re)
        pcre2_code_free(m->re);
    mirror_nats_free(m->nats);
    free(m->ring);
    free(m->strays);
    free(m->lost);
    pthread_mutex_destroy(&m->lock);
    pthread_mutex_destroy(&m->parts_lock);
    pthread_cond_destroy(&m->cond);
    free(m);
}

int mirror_set_create(mirror_set **out, const pb_config *cfg, store *st)
{
    *out = NULL;
    mirror_set *ms = calloc(1, sizeof *ms);
    if (!ms)
        return PB_ENOMEM;
    if (cfg->n_mirrors && !(ms->m = calloc(cfg->n_mirrors, sizeof *ms->m))) {
        free(ms);
        return PB_ENOMEM;
    }
    for (size_t i = 0; i < cfg->n_mirrors; i++) {
        int rc = mirror_create(&ms->m[ms->n], &cfg->mirrors[i], st, store_data_dir(st));
        ms->n++;
        if (rc < 0) {
            mirror_set_destroy(ms);
            return rc;
        }
    }
    *out = ms;
    return 0;
}

int mirror_set_start(mirror_set *ms)
{
    for (size_t i = 0; i < ms->n; i++) {
        mirror *m = ms->m[i];
        if (m->broken)
            continue;
        char why[400];
        mirror_nats_hooks h = {.ctx = m, .ack = on_ack, .state = on_state};
        ms->nats_used = true;
        int rc = mirror_nats_open(&m->nats, m->cfg, &h, why, sizeof why);
        if (rc < 0) {
            logging_printf(LOG_ERROR, "mirror %s: %s", m->cfg->name, why);
            return rc;
        }
        atomic_store(&m->counters.connected, mirror_nats_connected(m->nats));
        rc = pthread_create(&m->thread, NULL, mirror_main, m);
        if (rc != 0) {
            logging_printf(LOG_ERROR, "mirror %s: cannot start its thread: %s", m->cfg->name,
                           strerror(rc));
            return -rc;
        }
        m->started = true;
        logging_printf(LOG_INFO,
                       "mirror %s: shipping partitions matching %s to stream %s (format %s, "
                       "subjects %s<topic>, up to %u unacknowledged)",
                       m->cfg->name, m->cfg->partitions, m->cfg->stream,
                       m->cfg->format == PB_MIRROR_PAYLOAD ? "payload" : "event",
                       m->cfg->subject_prefix, m->cfg->max_pending);
    }
    return 0;
}

void mirror_set_destroy(mirror_set *ms)
{
    if (!ms)
        return;
    for (size_t i = 0; i < ms->n; i++) {
        mirror *m = ms->m[i];
        pthread_mutex_lock(&m->lock);
        m->stop = true;
        pthread_cond_signal(&m->cond);
        pthread_mutex_unlock(&m->lock);
    }
    for (size_t i = 0; i < ms->n; i++) {
        mirror *m = ms->m[i];
        if (m->started)
            pthread_join(m->thread, NULL);
        else if (m->nats)
            mirror_nats_close(m->nats);
    }
    /* No libnats callback can run once its threads are gone. */
    if (ms->nats_used)
        mirror_nats_shutdown();
    for (size_t i = 0; i < ms->n; i++)
        mirror_free(ms->m[i]);
    free(ms->m);
    free(ms);
}

size_t mirror_set_count(const mirror_set *ms)
{
    return ms ? ms->n : 0;
}

const char *mirror_set_name(const mirror_set *ms, size_t i)
{
    return ms->m[i]->cfg->name;
}

const mirror_counters *mirror_set_counters(const mirror_set *ms, size_t i)
{
    return &ms->m[i]->counters;
}

uint64_t mirror_set_lowest_needed(mirror_set *ms, const char *part_name)
{
    uint64_t low = UINT64_MAX;
    for (size_t i = 0; ms && i < ms->n; i++) {
        uint64_t need = mirror_needed(ms->m[i], part_name);
        if (need < low)
            low = need;
    }
    return low;
}

void mirror_set_foreach_lag(mirror_set *ms, mirror_lag_fn fn, void *ctx)
{
    for (size_t i = 0; ms && i < ms->n; i++) {
        mirror *m = ms->m[i];
        pthread_mutex_lock(&m->parts_lock);
        for (size_t j = 0; j < m->n_parts; j++) {
            mpart *p = m->parts[j];
            fn(ctx, m->cfg->name, p->name, atomic_load(&p->lag.shipped), atomic_load(&p->lag.end),
               atomic_load(&p->lag.oldest_ns));
        }
        pthread_mutex_unlock(&m->parts_lock);
    }
}
