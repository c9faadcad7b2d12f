/*
 * topics_snap - the topic table's snapshot file (DIR/topics.snapshot) and
 * the rebuild of the table from the log: topics_save and topics_load.
 * The format is in proto/FORMAT.md, Part B ("Topic snapshot"); the
 * crash-safety rules are described at the top of topics.c. Writer thread.
 */
#include "topics.h"
#include "topics_internal.h"

#include "crc32c.h"
#include "event.h"
#include "logging.h"
#include "pb_errors.h"
#include "reader.h"
#include "record.h"
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SNAP_MAGIC     "PBTOPICS"
#define SNAP_VERSION   2u
#define SNAP_HEADER_V1 32u
#define SNAP_HEADER    40u
#define SNAP_TOPIC_HDR 8u
#define SNAP_NAME_MAX  65535u
#define SNAP_BUF       (64u * 1024u)

/* --- snapshot writing --- */

typedef struct snap_out {
    const fileio *io;
    int fd;
    uint64_t pos; /* file position of buf[0] */
    uint8_t *buf; /* SNAP_BUF bytes */
    size_t used;
    uint32_t crc;
    int err; /* first error, sticky */
} snap_out;

static void snap_flush(snap_out *o)
{
    if (o->err == 0 && o->used > 0) {
        struct iovec v = {.iov_base = o->buf, .iov_len = o->used};
        o->err = fileio_write_all(o->io, o->fd, &v, 1, (off_t)o->pos);
    }
    o->pos += o->used;
    o->used = 0;
}

static void snap_put(snap_out *o, const void *p, size_t n)
{
    const uint8_t *b = p;
    o->crc = crc32c(o->crc, b, n);
    while (n > 0 && o->err == 0) {
        size_t k = SNAP_BUF - o->used < n ? SNAP_BUF - o->used : n;
        memcpy(o->buf + o->used, b, k);
        o->used += k;
        b += k;
        n -= k;
        if (o->used == SNAP_BUF)
            snap_flush(o);
    }
}

static void snap_put32(snap_out *o, uint32_t v)
{
    uint8_t b[4];
    pb_store_le32(b, v);
    snap_put(o, b, 4);
}

static void snap_put64(snap_out *o, uint64_t v)
{
    uint8_t b[8];
    pb_store_le64(b, v);
    snap_put(o, b, 8);
}

/* The table's bytes, CRC last (read lock held meanwhile). */
static void snap_write_table(snap_out *o, topic_table *t, uint64_t covered_offset)
{
    pthread_rwlock_rdlock(&t->lock);
    snap_put(o, SNAP_MAGIC, 8);
    snap_put32(o, SNAP_VERSION);
    snap_put32(o, t->history);
    snap_put64(o, covered_offset);
    snap_put64(o, t->count);
    snap_put64(o, cold_count(t->cold));
    for (size_t i = 0; i < t->nslots; i++) {
        const topic_entry *e = t->slots[i];
        if (!e)
            continue;
        snap_put32(o, e->name_len);
        snap_put32(o, e->count);
        snap_put(o, e->name, e->name_len);
        for (uint32_t k = 0; k < e->count; k++)
            snap_put64(o, topic_ring(e)[(e->start + k) % e->cap]);
    }
    pthread_rwlock_unlock(&t->lock);
    uint8_t crc[4];
    pb_store_le32(crc, o->crc);
    snap_put(o, crc, 4);
    snap_flush(o);
}

int topics_save(topic_table *t, const fileio *io, const char *dir, uint64_t covered_offset)
{
    char path[4096], tmp[4096];
    int n1 = snprintf(path, sizeof path, "%s/%s", dir, TOPICS_SNAPSHOT_NAME);
    int n2 = snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, TOPICS_SNAPSHOT_NAME);
    if (n1 < 0 || n2 < 0 || (size_t)n2 >= sizeof tmp)
        return PB_EINVAL;
    snap_out o = {.io = io, .fd = -1};
    int rc = 0;
    o.buf = malloc(SNAP_BUF);
    if (!o.buf)
        return PB_ENOMEM;
    o.fd = io->open(io, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o.fd < 0) {
        rc = o.fd;
        goto fail;
    }
    snap_write_table(&o, t, covered_offset);
    if (o.err < 0) {
        rc = o.err;
        goto fail;
    }
    /* The data must be durable before the rename makes it the snapshot,
     * or a crash could leave a complete-looking name over missing bytes. */
    if ((rc = io->fdatasync(io, o.fd)) < 0)
        goto fail;
    int fd = o.fd;
    o.fd = -1;
    if ((rc = io->close(io, fd)) < 0)
        goto fail;
    if ((rc = io->rename(io, tmp, path)) < 0)
        goto fail;
    rc = fileio_sync_dir(io, dir);
    if (rc < 0)
        logging_printf(LOG_ERROR, "%s: fsync of the directory after writing %s failed: %s", dir,
                       TOPICS_SNAPSHOT_NAME, pb_strerror(rc));
    free(o.buf);
    return rc;
fail:
    logging_printf(LOG_ERROR, "%s: cannot write %s: %s", dir, tmp, pb_strerror(rc));
    if (o.fd >= 0)
        (void)io->close(io, o.fd); /* already failing; the error that matters is rc */
    (void)io->unlink(io, tmp);
    free(o.buf);
    return rc;
}

/* --- snapshot loading and catching up --- */

/* Adds the snapshot's topic entries, buf[pos .. end), to t. 0,
 * PB_ENOMEM, or PB_ECORRUPT with why[] set. */
static int snap_entries(topic_table *t, const uint8_t *buf, size_t pos, size_t end,
                        uint64_t ntopics, uint32_t history, uint64_t cov, char *why, size_t whylen)
{
    for (uint64_t i = 0; i < ntopics; i++) {
        if (end - pos < SNAP_TOPIC_HDR)
            goto bad;
        uint32_t name_len = pb_load_le32(buf + pos);
        uint32_t count = pb_load_le32(buf + pos + 4);
        pos += SNAP_TOPIC_HDR;
        if (name_len == 0 || name_len > SNAP_NAME_MAX || count == 0 || count > history ||
            end - pos < name_len || (end - pos - name_len) / 8 < count)
            goto bad;
        const uint8_t *name = buf + pos;
        pos += name_len;
        bool created;
        topic_entry *e = topics_entry_get(t, name, name_len, false, &created);
        if (!e)
            goto nomem;
        if (!created)
            goto bad; /* the same topic twice */
        uint64_t prev = 0;
        for (uint32_t k = 0; k < count; k++, pos += 8) {
            uint64_t off = pb_load_le64(buf + pos);
            if (off >= cov || (k > 0 && off <= prev))
                goto bad;
            prev = off;
            /* A smaller configured history keeps the newest. */
            if (count - k <= t->history && topics_ring_push(t, e, off) < 0)
                goto nomem;
        }
    }
    if (pos == end)
        return 0;
bad:
    snprintf(why, whylen, "inconsistent content near byte %zu", pos);
    return PB_ECORRUPT;
nomem:
    snprintf(why, whylen, "out of memory");
    return PB_ENOMEM;
}

/* Reads the snapshot at path into t (which is empty). Returns 0 with
 * *covered and *cold_topics (what it says topics.cold held; 0 for a
 * version 1 file) set, PB_ENOTFOUND if there is none, or another negative
 * code with why[] describing the damage (the table is then left empty). */
static int snap_read(topic_table *t, const fileio *io, const char *path, uint64_t end_offset,
                     uint64_t *covered, uint64_t *cold_topics, char *why, size_t whylen)
{
    uint8_t *buf;
    size_t size = 0;
    /* Far above what any sane table needs: refused before allocating. */
    int rc =
        fileio_read_file(io, path, SNAP_HEADER_V1 + 4, (size_t)1 << 32, &buf, &size, why, whylen);
    if (rc < 0)
        return rc;
    uint32_t version = pb_load_le32(buf + 8);
    uint32_t history = pb_load_le32(buf + 12);
    uint64_t cov = pb_load_le64(buf + 16);
    uint64_t ntopics = pb_load_le64(buf + 24);
    size_t header = version == 1 ? SNAP_HEADER_V1 : SNAP_HEADER;
    *cold_topics = version == 2 && size >= SNAP_HEADER + 4 ? pb_load_le64(buf + 32) : 0;
    if (crc32c(0, buf, size - 4) != pb_load_le32(buf + size - 4)) {
        rc = PB_ECORRUPT;
        snprintf(why, whylen, "CRC mismatch");
    } else if (memcmp(buf, SNAP_MAGIC, 8) != 0 || (version != 1 && version != 2) ||
               size < header + 4) {
        rc = PB_EFORMAT;
        snprintf(why, whylen, "not a version 1 or 2 topics snapshot");
    } else if (history < t->history) {
        rc = PB_ECORRUPT;
        snprintf(why, whylen, "it keeps %u offsets per topic, %u are configured", history,
                 t->history);
    } else if (cov > end_offset) {
        rc = PB_ECORRUPT;
        snprintf(why, whylen, "it covers offsets up to %llu but the log ends at %llu",
                 (unsigned long long)cov, (unsigned long long)end_offset);
    } else {
        rc = snap_entries(t, buf, header, size - 4, ntopics, history, cov, why, whylen);
    }
    if (rc == 0)
        *covered = cov;
    else
        topics_clear_locked(t);
    free(buf);
    return rc;
}

/* Adds the topics of the records in [from, end) read from the partition's
 * files, through io. */
static int catch_up(topic_table *t, const fileio *io, const char *dir, const char *name,
                    uint64_t from, uint64_t end)
{
    if (from >= end)
        return 0;
    segment_io sio;
    fileio_segment_io(io, &sio);
    pb_reader *r = NULL;
    int rc = pb_reader_open_io(&r, dir, &sio);
    if (rc < 0) {
        logging_printf(LOG_ERROR, "partition %s: cannot read %s to rebuild its topic table: %s",
                       name, dir, pb_strerror(rc));
        return rc;
    }
    uint64_t seen = 0, untopical = 0;
    rc = pb_reader_seek_offset(r, from);
    if (rc < 0)
        goto out;
    pb_reader_set_end(r, end);
    for (;;) {
        pb_record rec;
        rc = pb_reader_next(r, &rec);
        if (rc == PB_EEOF) {
            rc = 0;
            break;
        }
        if (rc == PB_EREMOVED)
            continue; /* below the first offset: retention took them, nothing to add */
        if (rc == PB_ECORRUPT) {
            const struct pb_reader_problem *pr = pb_reader_problem(r);
            logging_printf(LOG_WARN,
                           "partition %s: topic table misses offsets %llu..%llu: %s at byte %llu "
                           "of %s",
                           name, (unsigned long long)pr->first_offset,
                           (unsigned long long)pr->last_offset, pr->reason,
                           (unsigned long long)pr->position, pr->file);
            continue;
        }
        if (rc < 0)
            break;
        const uint8_t *topic;
        size_t topic_len;
        if (topics_event_topic(rec.event, rec.event_len, &topic, &topic_len) < 0) {
            untopical++;
            continue;
        }
        live_record lr = {.offset = rec.offset, .topic = topic, .topic_len = (uint32_t)topic_len};
        rc = topics_add(t, &lr, 1);
        if (rc < 0)
            break;
        seen++;
    }
out:
    if (rc < 0)
        logging_printf(LOG_ERROR, "partition %s: reading %s for its topic table failed: %s", name,
                       dir, pb_strerror(rc));
    if (untopical > 0)
        logging_printf(LOG_WARN, "partition %s: %llu stored events have no readable topic", name,
                       (unsigned long long)untopical);
    logging_printf(LOG_DEBUG, "partition %s: topic table caught up with %llu records from %llu",
                   name, (unsigned long long)seen, (unsigned long long)from);
    pb_reader_close(r);
    return rc;
}

int topics_load(topic_table *t, const fileio *io, const char *dir, const char *name,
                uint64_t end_offset)
{
    char path[4096];
    char why[256] = "", cwhy[256] = "";
    uint64_t covered = 0, snap_cold = 0;
    int n = snprintf(path, sizeof path, "%s/%s", dir, TOPICS_SNAPSHOT_NAME);
    if (n < 0 || (size_t)n >= sizeof path)
        return PB_EINVAL;
    t->io = io;
    free(t->dir);
    free(t->name);
    t->dir = strdup(dir);
    t->name = strdup(name);
    if (!t->dir || !t->name)
        return PB_ENOMEM;
    /* The topics that left memory. A damaged file is ignored (its store is
     * empty, and the next eviction overwrites it). */
    bool cold_present = false;
    cold_free(t->cold);
    int crc = cold_open(&t->cold, io, dir, t->history, &cold_present, cwhy, sizeof cwhy);
    if (crc == PB_ENOMEM)
        return crc;
    if (crc < 0)
        logging_printf(LOG_WARN, "partition %s: ignoring %s/%s (%s)", name, dir, TOPICS_COLD_NAME,
                       cwhy);
    pthread_rwlock_wrlock(&t->lock);
    int rc = snap_read(t, io, path, end_offset, &covered, &snap_cold, why, sizeof why);
    if (rc == 0 && snap_cold > 0 && (crc < 0 || !cold_present)) {
        /* The table left topics in a file that is gone: only the whole log
         * knows them now. */
        rc = PB_ECORRUPT;
        snprintf(why, sizeof why, "it relies on %s, which is %s", TOPICS_COLD_NAME,
                 cold_present ? "damaged" : "missing");
        topics_clear_locked(t);
    }
    pthread_rwlock_unlock(&t->lock);
    if (rc == PB_ENOMEM)
        return rc;
    if (rc == PB_ENOTFOUND && end_offset > 0)
        logging_printf(LOG_INFO,
                       "partition %s: no %s, rebuilding the topic table from %llu records", name,
                       path, (unsigned long long)end_offset);
    else if (rc < 0 && rc != PB_ENOTFOUND)
        logging_printf(LOG_WARN, "partition %s: ignoring %s (%s), rebuilding the topic table", name,
                       path, why);
    if (rc < 0)
        covered = 0;
    rc = catch_up(t, io, dir, name, covered, end_offset);
    topics_maintain(t); /* a smaller budget than the snapshot's table */
    return rc;
}
