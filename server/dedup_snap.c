/*
 * dedup_snap - a partition's dedup window saved at a clean stop and loaded
 * at the next start (see dedup.h), so that start-up reads only the records
 * appended after it instead of every record of the last dedup_window_ms.
 *
 * File DEDUP_SNAPSHOT_NAME in the partition's directory (FORMAT.md Part B,
 * "Dedup window snapshot"),
 * little-endian:
 *   header   "PBDEDUP2" | covered u64 | window_ns i64 | max_entries u32 | count u32
 *            | anchor_ns i64 (the receive time of the log's record covered - 1)
 *   entries  count x (offset u64 | time_ns i64 | len u8 | id[len]), oldest first
 *   trailer  CRC-32C of everything before it, u32
 * `covered` is the log's end offset when it was written: the window then
 * holds the ids of the records below it, and the records from it on are
 * read from the log (dedup_rebuild from `covered`).
 *
 * Why a stale or foreign snapshot never hides an id nor admits a duplicate:
 * it is written after the log's final sync (every record below `covered` is
 * durable, and records below the end never change), through a temporary
 * file, fdatasync, rename and a directory fsync; it is used only when its
 * CRC holds, `covered` is at most the log's end after recovery, the log's
 * record at covered - 1 has the receive time `anchor_ns` (a snapshot with
 * no entry is tied to its log by that alone), and the log's record at the
 * newest entry's offset carries that entry's id and receive time (a log
 * that lost records it covers, or another log, fails that); anything else is logged and the window
 * is rebuilt from the log as without a snapshot. A crash after more records were appended leaves
 * the old snapshot, whose `covered` is then below the end: those records are read from the log.
 *
 * Threads: whichever thread opens or closes the partition.
 */
#include "dedup.h"

#include "crc32c.h"
#include "event.h"
#include "logging.h"
#include "pb_errors.h"
#include "reader.h"
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAGIC        "PBDEDUP2"
#define HEADER_BYTES (8 + 8 + 8 + 4 + 4 + 8)
#define ENTRY_FIXED  (8 + 8 + 1)
#define MAX_BYTES    ((size_t)HEADER_BYTES + (size_t)(1u << 24) * (ENTRY_FIXED + 64) + 4)

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int snap_paths(const char *dir, char *path, char *tmp, size_t size)
{
    int n1 = snprintf(path, size, "%s/%s", dir, DEDUP_SNAPSHOT_NAME);
    int n2 = snprintf(tmp, size, "%s/%s.tmp", dir, DEDUP_SNAPSHOT_NAME);
    return n1 < 0 || n2 < 0 || (size_t)n2 >= size ? PB_EINVAL : 0;
}

/* The window's bytes in the file's layout (malloc'd, *len bytes). */
static uint8_t *encode(const dedup *d, uint64_t covered, int64_t anchor_ns, size_t *len)
{
    size_t count = dedup_count(d), bytes = HEADER_BYTES + 4;
    for (size_t k = 0; k < count; k++) {
        uint8_t id[EVENT_ID_MAX_BYTES];
        size_t idlen;
        uint64_t off;
        int64_t t;
        dedup_entry(d, k, id, &idlen, &off, &t);
        bytes += ENTRY_FIXED + idlen;
    }
    uint8_t *buf = malloc(bytes), *p = buf;
    if (!buf)
        return NULL;
    memcpy(p, MAGIC, 8);
    put_u64(p + 8, covered);
    put_u64(p + 16, (uint64_t)dedup_window_ns(d));
    put_u32(p + 24, dedup_max_entries(d));
    put_u32(p + 28, (uint32_t)count);
    put_u64(p + 32, (uint64_t)anchor_ns);
    p += HEADER_BYTES;
    for (size_t k = 0; k < count; k++) {
        uint8_t id[EVENT_ID_MAX_BYTES];
        size_t idlen;
        uint64_t off;
        int64_t t;
        dedup_entry(d, k, id, &idlen, &off, &t);
        put_u64(p, off);
        put_u64(p + 8, (uint64_t)t);
        p[16] = (uint8_t)idlen;
        memcpy(p + ENTRY_FIXED, id, idlen);
        p += ENTRY_FIXED + idlen;
    }
    put_u32(p, crc32c(0, buf, (size_t)(p - buf)));
    *len = bytes;
    return buf;
}

/* Reads the log's record at offset: fn(ctx, rec) decides (0 or
 * PB_ECORRUPT with why set); a record that cannot be read says so in why
 * (PB_ECORRUPT). */
static int with_record(const fileio *io, const char *dir, uint64_t offset,
                       int (*fn)(void *ctx, const pb_record *rec, char *why, size_t whylen),
                       void *ctx, char *why, size_t whylen)
{
    segment_io sio;
    fileio_segment_io(io, &sio);
    pb_reader *r = NULL;
    int rc = pb_reader_open_io(&r, dir, &sio);
    if (rc == 0)
        rc = pb_reader_seek_offset(r, offset);
    pb_record rec;
    if (rc == 0)
        rc = pb_reader_next(r, &rec);
    if (rc == 0 && rec.offset != offset)
        rc = PB_ENOTFOUND;
    if (rc == 0)
        rc = fn(ctx, &rec, why, whylen);
    else
        snprintf(why, whylen, "the log's record at offset %llu cannot be read: %s",
                 (unsigned long long)offset, pb_strerror(rc));
    pb_reader_close(r);
    return rc < 0 ? PB_ECORRUPT : 0;
}

static int record_time(void *ctx, const pb_record *rec, char *why, size_t whylen)
{
    *(int64_t *)ctx = rec->time_ns;
    return 0;
}

int dedup_save(const dedup *d, const fileio *io, const char *dir, uint64_t covered)
{
    char path[4096], tmp[4096], why[256] = "";
    if (snap_paths(dir, path, tmp, sizeof path) < 0)
        return PB_EINVAL;
    size_t len = 0;
    int64_t anchor_ns = 0;
    uint8_t *buf = NULL;
    int rc = 0, fd = -1;
    /* What ties the snapshot to this log: the receive time of the last
     * record it covers. */
    if (covered > 0 &&
        with_record(io, dir, covered - 1, record_time, &anchor_ns, why, sizeof why) < 0) {
        logging_printf(LOG_ERROR, "%s: no %s written: %s", dir, DEDUP_SNAPSHOT_NAME, why);
        (void)io->unlink(io, path); /* an older one would not fit the log any more */
        return PB_ECORRUPT;
    }
    buf = encode(d, covered, anchor_ns, &len);
    if (!buf) {
        rc = PB_ENOMEM;
        goto fail;
    }
    fd = io->open(io, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        rc = fd;
        goto fail;
    }
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    /* Durable before the rename makes it the snapshot: a crash must not
     * leave the name over missing bytes. */
    if ((rc = fileio_write_all(io, fd, &iov, 1, 0)) < 0 || (rc = io->fdatasync(io, fd)) < 0)
        goto fail;
    rc = io->close(io, fd);
    fd = -1;
    if (rc < 0 || (rc = io->rename(io, tmp, path)) < 0)
        goto fail;
    free(buf);
    rc = fileio_sync_dir(io, dir);
    if (rc < 0)
        logging_printf(LOG_ERROR, "%s: fsync of the directory after writing %s failed: %s", dir,
                       DEDUP_SNAPSHOT_NAME, pb_strerror(rc));
    return rc;
fail:
    logging_printf(LOG_ERROR, "%s: cannot write %s: %s (the next start-up reads the log instead)",
                   dir, tmp, pb_strerror(rc));
    if (fd >= 0)
        (void)io->close(io, fd); /* already failing: rc is the error that matters */
    (void)io->unlink(io, tmp);
    free(buf);
    return rc;
}

/* Checks the layout and the CRC; sets *covered and *count. */
static int check_layout(const uint8_t *buf, size_t len, uint64_t *covered, uint32_t *count,
                        char *why, size_t whylen)
{
    if (memcmp(buf, MAGIC, 8) != 0) {
        snprintf(why, whylen, "not a dedup snapshot (magic)");
        return PB_ECORRUPT;
    }
    if (crc32c(0, buf, len - 4) != get_u32(buf + len - 4)) {
        snprintf(why, whylen, "CRC-32C mismatch");
        return PB_ECORRUPT;
    }
    *covered = get_u64(buf + 8);
    *count = get_u32(buf + 28);
    size_t at = HEADER_BYTES;
    for (uint32_t k = 0; k < *count; k++) {
        if (len - 4 - at < ENTRY_FIXED || buf[at + 16] == 0 || buf[at + 16] > EVENT_ID_MAX_BYTES ||
            len - 4 - at - ENTRY_FIXED < buf[at + 16]) {
            snprintf(why, whylen, "entry %u at byte %zu is cut or has a bad length", k, at);
            return PB_ECORRUPT;
        }
        at += ENTRY_FIXED + buf[at + 16];
    }
    if (at != len - 4) {
        snprintf(why, whylen, "%zu bytes after the last entry", len - 4 - at);
        return PB_ECORRUPT;
    }
    return 0;
}

/* The newest entry: its record must carry its id and receive time. */
typedef struct entry_ref {
    int64_t time_ns;
    const uint8_t *id;
    size_t len;
} entry_ref;

static int record_is_entry(void *ctx, const pb_record *rec, char *why, size_t whylen)
{
    const entry_ref *e = ctx;
    const uint8_t *lid = NULL;
    size_t llen = dedup_event_id(rec->event, rec->event_len, &lid);
    if (rec->time_ns == e->time_ns && llen == e->len && memcmp(lid, e->id, e->len) == 0)
        return 0;
    snprintf(why, whylen, "the log's record at offset %llu is not the one it names",
             (unsigned long long)rec->offset);
    return PB_ECORRUPT;
}

/* The record below `covered` must have the anchor's receive time. */
static int record_is_anchor(void *ctx, const pb_record *rec, char *why, size_t whylen)
{
    if (rec->time_ns == *(const int64_t *)ctx)
        return 0;
    snprintf(why, whylen,
             "the log's record at offset %llu has another receive time than the one saved "
             "(another log)",
             (unsigned long long)rec->offset);
    return PB_ECORRUPT;
}

int dedup_load(dedup *d, const fileio *io, const char *dir, const char *name, uint64_t end_offset,
               uint64_t *covered)
{
    char path[4096], tmp[4096], why[256] = "";
    *covered = 0;
    if (snap_paths(dir, path, tmp, sizeof path) < 0)
        return PB_EINVAL;
    (void)io->unlink(io, tmp); /* a save that did not finish */
    uint8_t *buf = NULL;
    size_t len = 0;
    uint32_t count = 0;
    uint64_t cov = 0;
    int rc = fileio_read_file(io, path, HEADER_BYTES + 4, MAX_BYTES, &buf, &len, why, sizeof why);
    if (rc == PB_ENOTFOUND)
        return rc;
    if (rc == PB_ENOMEM)
        rc = PB_ECORRUPT; /* a cache: without memory to read it, the log is read instead */
    if (rc == 0)
        rc = check_layout(buf, len, &cov, &count, why, sizeof why);
    /* Saved under a shorter window or a lower bound: it lacks ids that
     * reading the log finds now. */
    if (rc == 0 && ((int64_t)get_u64(buf + 16) < dedup_window_ns(d) ||
                    get_u32(buf + 24) < dedup_max_entries(d))) {
        snprintf(why, sizeof why, "saved under a smaller dedup_window_ms or dedup_max_entries");
        rc = PB_ECORRUPT;
    }
    if (rc == 0 && cov > end_offset) {
        snprintf(why, sizeof why, "it covers offsets below %llu, the log ends at %llu",
                 (unsigned long long)cov, (unsigned long long)end_offset);
        rc = PB_ECORRUPT;
    }
    /* The newest entry is the last one. */
    size_t at = HEADER_BYTES, last = 0;
    for (uint32_t k = 0; rc == 0 && k < count; k++) {
        last = at;
        at += ENTRY_FIXED + buf[at + 16];
    }
    int64_t anchor_ns = rc == 0 ? (int64_t)get_u64(buf + 32) : 0;
    if (rc == 0 && cov > 0)
        rc = with_record(io, dir, cov - 1, record_is_anchor, &anchor_ns, why, sizeof why);
    if (rc == 0 && count > 0) {
        entry_ref e = {.time_ns = (int64_t)get_u64(buf + last + 8),
                       .id = buf + last + ENTRY_FIXED,
                       .len = buf[last + 16]};
        rc = with_record(io, dir, get_u64(buf + last), record_is_entry, &e, why, sizeof why);
    }
    at = HEADER_BYTES;
    for (uint32_t k = 0; rc == 0 && k < count; k++) {
        uint64_t had;
        const uint8_t *id = buf + at + ENTRY_FIXED;
        if (!dedup_find(d, id, buf[at + 16], &had))
            rc = dedup_add(d, id, buf[at + 16], get_u64(buf + at), (int64_t)get_u64(buf + at + 8));
        at += ENTRY_FIXED + buf[at + 16];
    }
    free(buf);
    if (rc == PB_ENOMEM)
        return rc;
    if (rc < 0) {
        logging_printf(LOG_WARN,
                       "partition %s: %s not used (%s); the dedup window is rebuilt from the log",
                       name, path, why);
        return PB_ECORRUPT;
    }
    *covered = cov;
    logging_printf(LOG_INFO, "partition %s: dedup window loaded from %s: %u ids below offset %llu",
                   name, DEDUP_SNAPSHOT_NAME, count, (unsigned long long)cov);
    return 0;
}
