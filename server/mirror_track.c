/*
 * mirror_track - a mirror's partitions: which ones it ships (its pattern,
 * checked again as capture-group rules create partitions), reading each
 * from its files up to the durable end offset, its cursor file, the log of
 * lag, and the lowest offset retention must keep for it.
 *
 * Threads: the mirror's thread, except mirror_needed (any thread: reads
 * the partitions under parts_lock and their atomics).
 */
#include "grow.h"
#include "logging.h"
#include "mirror_internal.h"
#include "pb_errors.h"
#include "partition.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Cursor file: saved at most this often while cursors move. */
#define SAVE_EVERY_MS 200
/* Lag: logged this often while some partition lags by more than LAG_MIN_NS. */
#define LAG_LOG_MS    10000
#define LAG_MIN_NS    1000000000LL
#define LAG_LOG_PARTS 8

/* The index of `name` in the cursor file, or -1. */
static int64_t loaded_index(const mirror *m, const char *name)
{
    size_t lo = 0, hi = m->loaded.count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(m->loaded.partitions[mid], name);
        if (c == 0)
            return (int64_t)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* The offset the cursor file gives `name`, or -1. */
static int64_t loaded_offset(const mirror *m, const char *name)
{
    int64_t i = loaded_index(m, name);
    return i < 0 ? -1 : (int64_t)m->loaded.offsets[i];
}

int mirror_load_cursors(mirror *m)
{
    char why[600];
    if (mirror_cursor_path(m->cursor_path, sizeof m->cursor_path, m->data_dir, m->cfg->name) < 0) {
        logging_printf(LOG_ERROR, "mirror %s: data directory path too long", m->cfg->name);
        return PB_ETOOBIG;
    }
    int rc = mirror_cursor_load(fileio_posix(), m->cursor_path, m->cfg->name, &m->loaded, why,
                                sizeof why);
    /* Whatever the file says, the stream's tail is read before the first
     * send: after the file's acked-seq, or (no file) as far back as the
     * scan goes, for events a previous run sent and never saw acked. */
    m->scan_needed = true;
    m->acked_seq = 0;
    if (rc == PB_ENOTFOUND) {
        logging_printf(LOG_INFO,
                       "mirror %s: no cursor file (%s): starting from each partition's first "
                       "event",
                       m->cfg->name, m->cursor_path);
        return 0;
    }
    if (rc < 0) {
        /* Starting over could put events in the stream twice: stop this
         * mirror and say how to go on. */
        logging_printf(LOG_ERROR,
                       "mirror %s: %s; this mirror stays stopped (and keeps retention from "
                       "removing its partitions): move the file away to ship again from each "
                       "partition's first event",
                       m->cfg->name, why);
        m->broken = true;
        return 0;
    }
    if (strcmp(m->loaded.stream, m->cfg->stream) != 0) {
        logging_printf(LOG_INFO,
                       "mirror %s: the cursor file is for stream %s, the mirror now ships to %s: "
                       "starting from each partition's first event",
                       m->cfg->name, m->loaded.stream, m->cfg->stream);
        mirror_cursors_free(&m->loaded);
        return 0;
    }
    m->acked_seq = m->loaded.acked_seq;
    m->order_from = m->loaded.order_from;
    logging_printf(LOG_INFO, "mirror %s: cursor file %s: %zu partition(s)", m->cfg->name,
                   m->cursor_path, m->loaded.count);
    return 0;
}

mpart *mirror_find_part(mirror *m, const char *name)
{
    for (size_t i = 0; i < m->n_parts; i++)
        if (strcmp(m->parts[i]->name, name) == 0)
            return m->parts[i];
    return NULL;
}

static int add_part(mirror *m, partition *pt)
{
    mpart *p = calloc(1, sizeof *p);
    if (!p)
        return PB_ENOMEM;
    snprintf(p->name, sizeof p->name, "%s", partition_name(pt));
    p->p = pt;
    int64_t li = loaded_index(m, p->name);
    p->fresh = li < 0;
    p->cursor = p->next_read = li < 0 ? 0 : m->loaded.offsets[li];
    if (li >= 0 && m->loaded.seqs) {
        p->seq_last = m->loaded.seqs[li];
        p->off_last = m->loaded.seq_offsets[li];
    }
    p->first_slot = p->last_slot = NO_SLOT;
    atomic_store(&p->lag.shipped, p->cursor);
    pthread_mutex_lock(&m->parts_lock);
    if (grow_reserve(&m->parts, &m->parts_cap, m->n_parts + 1, sizeof *m->parts) < 0) {
        pthread_mutex_unlock(&m->parts_lock);
        free(p);
        return PB_ENOMEM;
    }
    m->parts[m->n_parts++] = p;
    pthread_mutex_unlock(&m->parts_lock);
    if (m->refreshed)
        logging_printf(LOG_INFO, "mirror %s: picked up new partition %s", m->cfg->name, p->name);
    return 0;
}

static bool name_matches(const mirror *m, const char *name, pcre2_match_data *md)
{
    return pcre2_match(m->re, (PCRE2_SPTR)name, strlen(name), 0, 0, md, NULL) >= 0;
}

/* The oldest waiting event's receive time, when nothing of p is in flight
 * (after a start or an outage): read it from the file, with p's reader, or
 * when it has none (NATS down since the start: nothing was read yet) with
 * one opened for this look only (once per wait: oldest_ns stays set). */
static void peek_oldest(mirror *m, mpart *p)
{
    pb_record rec;
    pb_reader *r = p->r;
    if (!r && pb_reader_open(&r, partition_dir(p->p)) < 0)
        return;
    if (pb_reader_seek_offset(r, p->cursor) == 0) {
        pb_reader_set_end(r, atomic_load(&p->lag.end));
        if (pb_reader_next(r, &rec) == 0)
            atomic_store(&p->lag.oldest_ns, rec.time_ns);
    }
    if (r != p->r)
        pb_reader_close(r);
    else
        mirror_part_seek(m, p);
}

void mirror_refresh_parts(mirror *m)
{
    partition **list = NULL;
    size_t n = 0;
    if (!m->md && !(m->md = pcre2_match_data_create_from_pattern(m->re, NULL)))
        return;
    if (store_list(m->store, &list, &n) == 0) {
        for (size_t i = 0; i < n; i++) {
            const char *name = partition_name(list[i]);
            if (!mirror_find_part(m, name) && name_matches(m, name, m->md) &&
                add_part(m, list[i]) < 0)
                logging_printf(LOG_ERROR, "mirror %s: out of memory adding partition %s",
                               m->cfg->name, name);
        }
        free(list);
    }
    m->refreshed = true;
    for (size_t i = 0; i < m->n_parts; i++) {
        mpart *p = m->parts[i];
        uint64_t end = partition_end_offset(p->p);
        atomic_store(&p->lag.end, end);
        if (p->inflight == 0 && end > p->cursor && atomic_load(&p->lag.oldest_ns) == 0)
            peek_oldest(m, p);
        else if (p->inflight == 0 && end <= p->cursor)
            atomic_store(&p->lag.oldest_ns, 0);
    }
}

void mirror_part_close(mirror *m, mpart *p)
{
    if (!p->r)
        return;
    pb_reader_close(p->r);
    p->r = NULL;
    m->nreaders--;
}

void mirror_part_seek(mirror *m, mpart *p)
{
    if (p->r && pb_reader_seek_offset(p->r, p->next_read) < 0)
        mirror_part_close(m, p); /* reopened on the next read */
}

/* Before p opens a reader: at MIRROR_READERS, close the one read least
 * recently. Its place is next_read, where the next read reopens it; an
 * idle partition's files (closed by its writer) then stay closed here too. */
static void make_room(mirror *m, const mpart *p)
{
    if (m->nreaders < MIRROR_READERS)
        return;
    mpart *victim = NULL;
    for (size_t i = 0; i < m->n_parts; i++) {
        mpart *q = m->parts[i];
        if (q != p && q->r && (!victim || q->used < victim->used))
            victim = q;
    }
    if (victim)
        mirror_part_close(m, victim);
}

/* Offsets next_read..to-1 will never be read: say why, move on. */
static void skip_to(mirror *m, mpart *p, uint64_t to, const char *why)
{
    if (!p->fresh)
        logging_printf(LOG_WARN,
                       "mirror %s: partition %s: offsets %" PRIu64 "..%" PRIu64
                       " cannot be shipped: %s",
                       m->cfg->name, p->name, p->next_read, to - 1, why);
    p->next_read = to;
    if (p->inflight == 0 && p->cursor < to) {
        p->cursor = to;
        atomic_store(&p->lag.shipped, to);
        m->dirty = true;
    }
}

int mirror_part_next(mirror *m, mpart *p, pb_record *rec)
{
    /* Only what is durable: a record past the end offset may still be
     * lost (fsync = always acks after it is synced, and so ships after).
     * Nothing new: no reader is opened for it (most partitions of a large
     * mirror are caught up most of the time). */
    uint64_t end = partition_end_offset(p->p);
    if (p->next_read >= end)
        return PB_EEOF;
    p->used = ++m->read_clock;
    if (!p->r) {
        make_room(m, p);
        int rc = pb_reader_open(&p->r, partition_dir(p->p));
        if (rc < 0) {
            if (!p->read_error_logged)
                logging_printf(LOG_ERROR, "mirror %s: partition %s: cannot read %s: %s",
                               m->cfg->name, p->name, partition_dir(p->p), pb_strerror(rc));
            p->read_error_logged = true;
            return rc;
        }
        m->nreaders++;
        mirror_part_seek(m, p);
        if (!p->r)
            return PB_EEOF;
    }
    pb_reader_set_end(p->r, end);
    for (int tries = 0; tries < 64; tries++) {
        int rc = pb_reader_next(p->r, rec);
        if (rc == PB_EREMOVED) {
            /* Below the partition's first offset (a mirror configured after
             * retention ran, or hold_retention = no): reported, skipped. */
            const struct pb_reader_problem *pr = pb_reader_problem(p->r);
            if (pr->last_offset + 1 > p->next_read)
                skip_to(m, p, pr->last_offset + 1,
                        "they were removed by retention before the mirror shipped them");
            continue;
        }
        if (rc == PB_ECORRUPT) {
            const struct pb_reader_problem *pr = pb_reader_problem(p->r);
            char why[600];
            snprintf(why, sizeof why, "damaged in %s at byte %" PRIu64 ": %s", pr->file,
                     pr->position, pr->reason);
            if (pr->last_offset + 1 != pr->first_offset && pr->last_offset + 1 > p->next_read)
                skip_to(m, p, pr->last_offset + 1, why);
            continue;
        }
        if (rc < 0) {
            if (rc != PB_EEOF && !p->read_error_logged)
                logging_printf(LOG_ERROR, "mirror %s: partition %s: read error: %s", m->cfg->name,
                               p->name, pb_strerror(rc));
            p->read_error_logged = rc != PB_EEOF;
            return rc;
        }
        p->read_error_logged = false;
        if (rec->offset < p->next_read)
            continue;
        if (rec->offset > p->next_read)
            skip_to(m, p, rec->offset,
                    m->cfg->hold_retention
                        ? "they are no longer in the partition's files"
                        : "they were removed (hold_retention = no) before the mirror shipped them");
        p->fresh = false;
        p->next_read = rec->offset + 1;
        return 0;
    }
    return PB_EEOF;
}

static int by_name(const void *a, const void *b)
{
    const mpart *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

void mirror_save(mirror *m, bool force)
{
    int64_t now = mirror_mono_ms();
    if (!m->dirty || (!force && now - m->saved_at_ms < SAVE_EVERY_MS))
        return;
    size_t n = m->n_parts;
    mpart **sorted = malloc((n ? n : 1) * sizeof *sorted);
    char **names = malloc((n ? n : 1) * sizeof *names);
    uint64_t *offsets = malloc((n ? n : 1) * 3 * sizeof *offsets);
    char why[600] = "out of memory";
    int rc = PB_ENOMEM;
    if (sorted && names && offsets) {
        uint64_t *seqs = offsets + (n ? n : 1), *seq_offsets = seqs + (n ? n : 1);
        memcpy(sorted, m->parts, n * sizeof *sorted);
        qsort(sorted, n, sizeof *sorted, by_name);
        for (size_t i = 0; i < n; i++) {
            names[i] = sorted[i]->name;
            offsets[i] = sorted[i]->cursor;
            seqs[i] = sorted[i]->seq_last;
            seq_offsets[i] = sorted[i]->off_last;
        }
        mirror_cursors c = {.stream = (char *)m->cfg->stream,
                            .acked_seq = m->acked_seq,
                            .order_from = m->order_from,
                            .partitions = names,
                            .offsets = offsets,
                            .seqs = seqs,
                            .seq_offsets = seq_offsets,
                            .count = n};
        rc = mirror_cursor_save(fileio_posix(), m->data_dir, m->cursor_path, m->cfg->name, &c, why,
                                sizeof why);
    }
    free(sorted);
    free(names);
    free(offsets);
    m->saved_at_ms = now;
    if (rc < 0) {
        if (!m->save_failing)
            logging_printf(LOG_ERROR,
                           "mirror %s: cannot save the cursor file: %s (retrying; a restart "
                           "would resend from the last saved cursors)",
                           m->cfg->name, why);
        m->save_failing = true;
        return;
    }
    if (m->save_failing)
        logging_printf(LOG_INFO, "mirror %s: cursor file saved again", m->cfg->name);
    m->save_failing = false;
    m->dirty = false;
}

void mirror_log_lag(mirror *m, int64_t now_ms)
{
    if (now_ms - m->lag_logged_at_ms < LAG_LOG_MS)
        return;
    m->lag_logged_at_ms = now_ms;
    int64_t now_ns = mirror_wall_ns();
    size_t lagging = 0;
    for (size_t i = 0; i < m->n_parts; i++) {
        mpart *p = m->parts[i];
        uint64_t end = atomic_load(&p->lag.end), shipped = atomic_load(&p->lag.shipped);
        int64_t oldest = atomic_load(&p->lag.oldest_ns);
        if (end <= shipped || !oldest || now_ns - oldest < LAG_MIN_NS)
            continue;
        if (lagging++ < LAG_LOG_PARTS)
            logging_printf(LOG_INFO,
                           "mirror %s: partition %s lags by %" PRIu64
                           " event(s), %.1f s (acknowledged below offset %" PRIu64 ", end %" PRIu64
                           ")",
                           m->cfg->name, p->name, end - shipped, (double)(now_ns - oldest) / 1e9,
                           shipped, end);
    }
    if (lagging > LAG_LOG_PARTS)
        logging_printf(LOG_INFO, "mirror %s: and %zu more lagging partition(s)", m->cfg->name,
                       lagging - LAG_LOG_PARTS);
}

uint64_t mirror_needed(mirror *m, const char *part_name)
{
    if (!m->cfg->hold_retention)
        return UINT64_MAX;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(m->re, NULL);
    if (!md)
        return 0; /* keep everything rather than guess */
    bool match = name_matches(m, part_name, md);
    pcre2_match_data_free(md);
    if (!match)
        return UINT64_MAX;
    if (m->broken)
        return 0;
    int64_t need = -1;
    pthread_mutex_lock(&m->parts_lock);
    for (size_t i = 0; i < m->n_parts; i++) {
        if (strcmp(m->parts[i]->name, part_name) == 0) {
            need = (int64_t)atomic_load(&m->parts[i]->lag.shipped);
            break;
        }
    }
    pthread_mutex_unlock(&m->parts_lock);
    if (need < 0)
        need = loaded_offset(m, part_name);
    return need < 0 ? 0 : (uint64_t)need;
}
