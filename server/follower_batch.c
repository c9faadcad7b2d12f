/*
 * follower_batch - a hot standby's records into its partitions: each Event
 * frame from the primary is checked against what this standby holds (the
 * next offset, or the same bytes at an offset it has), dropped (a stopped
 * partition) or gathered into the next batch, which follower_write.c
 * hands to the partition writers.
 */
#include "follower_internal.h"

#include "event.h"
#include "frame.h"
#include "logging.h"
#include "metrics.h"
#include "partition.h"
#include "pb_errors.h"
#include "protobus_reader.h"
#include "record.h"
#include "recrun.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The index of partition name[0..len), adding it (and creating it in the
 * store when create) if unknown; -1 if it cannot be. */
static long find_part(follower *f, const char *name, size_t len, bool create)
{
    if (f->last_part < f->nparts && strlen(f->parts[f->last_part].name) == len &&
        memcmp(f->parts[f->last_part].name, name, len) == 0)
        return (long)f->last_part;
    for (size_t i = 0; i < f->nparts; i++)
        if (strlen(f->parts[i].name) == len && memcmp(f->parts[i].name, name, len) == 0)
            return (long)(f->last_part = i);
    if (!create || !partname_valid(name, len))
        return -1;
    if (f->nparts == f->partcap) {
        size_t cap = f->partcap ? f->partcap * 2 : 16;
        fpart *p = realloc(f->parts, cap * sizeof *p);
        if (!p)
            return -1;
        f->parts = p;
        f->partcap = cap;
    }
    fpart *fp = &f->parts[f->nparts];
    memset(fp, 0, sizeof *fp);
    memcpy(fp->name, name, len);
    int rc = store_get(f->o.store, fp->name, &fp->p);
    if (rc < 0) {
        logging_printf(LOG_ERROR, "standby of %s: cannot create partition %s: %s", f->o.primary,
                       fp->name, pb_strerror(rc));
        fp->p = NULL;
        fp->stopped = true;
    } else {
        fp->next = partition_end_offset(fp->p);
    }
    return (long)(f->last_part = f->nparts++);
}

int follower_load_parts(follower *f)
{
    partition **list;
    size_t n;
    int rc = store_list(f->o.store, &list, &n);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        const char *name = partition_name(list[i]);
        long k = find_part(f, name, strlen(name), true);
        if (k >= 0 && f->parts[k].p)
            f->parts[k].next = partition_end_offset(f->parts[k].p);
    }
    free(list);
    return 0;
}

void follower_stop_part(follower *f, const char *name, const char *fmt, ...)
{
    long k = name ? find_part(f, name, strlen(name), false) : -1;
    if (k < 0 || f->parts[k].stopped)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    f->parts[k].stopped = true;
    metrics_follower_partition_stopped();
    logging_printf(LOG_ERROR,
                   "standby of %s: partition %s: %s; replication of %s stopped (nothing is "
                   "overwritten; compare the two data directories, or rebuild this standby's "
                   "copy of %s)",
                   f->o.primary, name, msg, name, name);
}

void follower_check_position(follower *f, const char *name, uint64_t first, uint64_t end)
{
    long k = find_part(f, name, strlen(name), false);
    if (k < 0 || f->parts[k].stopped)
        return;
    uint64_t next = f->parts[k].next;
    if (next > end)
        follower_stop_part(f, name,
                           "this standby holds offsets %llu..%llu, the primary ends at %llu "
                           "(records the primary does not have)",
                           (unsigned long long)end, (unsigned long long)(next - 1),
                           (unsigned long long)end);
    else if (first > next)
        follower_stop_part(f, name,
                           "the primary no longer has offsets %llu..%llu (removed by its "
                           "retention before this standby had them)",
                           (unsigned long long)next, (unsigned long long)(first - 1));
}

/* An offset this standby has: the primary's record must be the same. */
static void compare_local(follower *f, fpart *fp, uint64_t offset, wire_slice ev, int64_t t)
{
    pb_reader *r = NULL;
    pb_record rec;
    int rc = pb_reader_open(&r, partition_dir(fp->p));
    if (rc == 0 && (rc = pb_reader_seek_offset(r, offset)) == 0) {
        pb_reader_set_end(r, fp->next);
        rc = pb_reader_next(r, &rec);
    }
    if (rc < 0 || rec.offset != offset)
        follower_stop_part(f, fp->name, "cannot read this standby's own record at offset %llu: %s",
                           (unsigned long long)offset, rc < 0 ? pb_strerror(rc) : "missing");
    else if (rec.event_len != ev.len || memcmp(rec.event, ev.p, ev.len) != 0 || rec.time_ns != t)
        follower_stop_part(f, fp->name,
                           "the primary's record at offset %llu differs from this standby's "
                           "(%zu bytes at %lld ns there, %u bytes at %lld ns here)",
                           (unsigned long long)offset, ev.len, (long long)t, rec.event_len,
                           (long long)rec.time_ns);
    pb_reader_close(r);
}

/* One record of the primary's (an Event frame's, or a run's: sealed, its
 * header the 24 bytes before ev): into the batch, compared (an offset this
 * standby has), or a reason to stop the partition. 0, or a negative code
 * ending the session. */
static int take_record(follower *f, long k, uint64_t offset, wire_slice ev, const uint8_t *hdr,
                       char *why, size_t n)
{
    fpart *fp = &f->parts[k];
    if (fp->stopped)
        return 0;
    event_view v;
    char err[256]; /* (not cleared per record: only a refusal writes it) */
    /* The primary accepted it with event_scan before storing it: what the
     * standby needs is its topic, id and receive time (and that it is an
     * event at all); the CRC of its record here covers what it writes. A
     * sealed record's time is its header's: only the topic and id are
     * looked for. */
    if (hdr && event_scan_keys(ev.p, ev.len, &v.topic, &v.id) == 0) {
        v.server_receive_time.present = true;
    } else if (event_scan_stored(ev.p, ev.len, &v, err, sizeof err) < 0 ||
               (!v.server_receive_time.present &&
                snprintf(err, sizeof err, "no server_receive_time") > 0)) {
        follower_stop_part(f, fp->name,
                           "the primary's record at offset %llu is not a stored event: %s",
                           (unsigned long long)offset, err);
        return 0;
    }
    /* A sealed record keeps the primary's header, time included. */
    int64_t t = hdr ? (int64_t)pb_load_le64(hdr + 16) : v.server_receive_time.ns;
    if (offset < fp->next) {
        /* An offset this standby has (the session's first): on disk once
         * the batch with the writers is done. */
        int rc = follower_batch_finish(f, why, n);
        if (rc < 0)
            return rc;
        compare_local(f, fp, offset, ev, t);
        return 0;
    }
    if (offset > fp->next) {
        follower_stop_part(f, fp->name,
                           "the primary sent offset %llu, the next here is %llu (offsets missing "
                           "on the primary)",
                           (unsigned long long)offset, (unsigned long long)fp->next);
        return 0;
    }
    if (f->nrecs == f->reccap) {
        size_t cap = f->reccap ? f->reccap * 2 : 1024;
        frec *r = realloc(f->recs, cap * sizeof *r);
        if (!r)
            return PB_ENOMEM;
        f->recs = r;
        f->reccap = cap;
    }
    f->recs[f->nrecs++] = (frec){.part = (uint32_t)k,
                                 .offset = offset,
                                 .time_ns = t,
                                 .data = ev.p,
                                 .len = (uint32_t)ev.len,
                                 .topic = v.topic.p,
                                 .topic_len = (uint32_t)v.topic.len,
                                 .id = v.id.len ? v.id.p : NULL,
                                 .id_len = (uint8_t)v.id.len,
                                 .sealed = hdr != NULL};
    fp->next++;
    return 0;
}

/* The index of the frame's partition (created if new), or PB_EINVAL (why
 * set) when it cannot be kept. */
static long frame_part(follower *f, wire_slice name, char *why, size_t n)
{
    long k = find_part(f, (const char *)name.p, name.len, true);
    if (k < 0)
        snprintf(why, n, "the primary sent an event of partition \"%.*s\", which cannot be kept",
                 (int)(name.len > 100 ? 100 : name.len), name.p);
    return k;
}

int follower_on_event(follower *f, const uint8_t *body, size_t len, char *why, size_t n)
{
    event_frame_view ev;
    if (event_frame_parse(body, len, &ev, why, n) < 0)
        return PB_EPROTO;
    long k = frame_part(f, ev.partition, why, n);
    if (k < 0)
        return PB_EINVAL;
    return take_record(f, k, ev.offset, ev.event, NULL, why, n);
}

int follower_on_records(follower *f, const uint8_t *body, size_t len, char *why, size_t n)
{
    recrun_view rv;
    if (recrun_parse(body, len, &rv, why, n) < 0)
        return PB_EPROTO;
    long k = frame_part(f, rv.partition, why, n);
    if (k < 0)
        return PB_EINVAL;
    if (f->parts[k].stopped)
        return 0;
    /* The whole run is checked before any record of it is taken: a damaged
     * one ends the session (nothing of it, nor of the records gathered and
     * not yet submitted, is written; the next session resumes from the
     * files). */
    uint64_t first;
    size_t count;
    char err[256];
    if (recrun_check(rv.records.p, rv.records.len, PB_RECORD_MAX_EVENT, &first, &count, err,
                     sizeof err) < 0) {
        snprintf(why, n, "partition %s: the primary's run of records is damaged: %s",
                 f->parts[k].name, err);
        return PB_ECORRUPT;
    }
    const uint8_t *r = rv.records.p;
    for (size_t i = 0; i < count; i++) {
        uint32_t ev_len = pb_load_le32(r + 4) - PB_RECORD_FIXED_LEN;
        wire_slice ev = {.p = r + PB_RECORD_HEADER_SIZE, .len = ev_len};
        int rc = take_record(f, k, first + i, ev, r, why, n);
        if (rc < 0)
            return rc;
        r += PB_RECORD_HEADER_SIZE + ev_len;
    }
    return 0;
}
