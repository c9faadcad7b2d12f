/*
 * log - one partition's segment files on disk: append (one pwritev per batch
 * and segment), sync, size- and time-based rotation, the sparse index
 * (log.c), and crash recovery at open (recovery.c). File layout:
 * proto/FORMAT.md, Part B.
 *
 * Threads: a pb_log is owned by its partition's writer thread; no function
 * here is thread-safe, the accessors included (the partition publishes what
 * other threads need, e.g. its durable end offset, itself). Readers use
 * proto/reader.h on the same files concurrently; they need nothing from here.
 *
 * Durability: log_append only writes; log_sync makes everything appended so
 * far durable (the ack point). Rotation syncs the old segment and makes the
 * new file's directory entry durable before writing to it. After any failed
 * write or sync the log is failed for good (PB_EFAILED): a retried fsync can
 * report success after the kernel has dropped the dirty pages.
 */
#ifndef PB_LOG_H
#define PB_LOG_H

#include "fileio.h"
#include "live.h" /* record_crc */
#include "logging.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Zero fields take the defaults noted. */
typedef struct log_options {
    uint64_t segment_bytes;        /* rotate before a record would take the segment (header
                                      included) above this; default 64 MiB. A record larger than
                                      this gets a segment of its own. */
    int64_t rotate_every_s;        /* 0 = no time rotation; e.g. 3600, 86400 */
    int64_t utc_offset_s;          /* boundary shift: daily at 00:00 in UTC+02:00 =>
                                      rotate_every_s=86400, utc_offset_s=7200 */
    uint32_t index_interval_bytes; /* default 4096 */
    uint32_t max_record_bytes;     /* largest event (data + suffix); default and cap 64 MiB */
    uint64_t cache_bytes;          /* the newest bytes left in the page cache once durable;
                                      older ones are dropped (log_cache.c). 0 = leave all
                                      to the kernel */
    uint64_t direct_min_bytes;     /* an append of at least this many bytes to one segment
                                      is written around the page cache (O_DIRECT, from an
                                      aligned copy: log_direct.c); 0 = never */
    uint32_t direct_align;         /* its alignment, a power of two up to 1 MiB; 0 = 4096
                                      (tests over the simulated disk use less) */
    const fileio *io;              /* NULL = fileio_posix() */
    int64_t (*now_ns)(void *ctx);  /* wall clock for created_ns; NULL = CLOCK_REALTIME */
    void *clock_ctx;
    /* Recovery, rotation and failure messages (each names the file, byte
     * position and reason) at a logging.h level (LOG_ERROR, LOG_WARN,
     * LOG_INFO); called on the writer thread; may be NULL. */
    void (*logf)(void *ctx, enum log_level level, const char *msg);
    void *log_ctx;
    /* Retention's removal renames a segment out of the readers' sight
     * (<base>.log -> <base>.log.del) and makes that durable on the writer
     * thread; the unlinks of the renamed file, which frees its space and can
     * take milliseconds, and of its .idx are handed to discard (server/unlinker.h), which
     * returns 0 if it took the path. NULL, or a refusal: unlinked here. */
    int (*discard)(void *ctx, const fileio *io, const char *path);
    /* The same for a descriptor: a compressed copy's install holds the
     * plain segment open across the rename that replaces it, so that the
     * rename does not free its extents on the writer; discard_fd closes it
     * (the unlinker thread), returning 0 if it took it. NULL, or a
     * refusal: closed here. Shares discard_ctx. */
    int (*discard_fd)(void *ctx, const fileio *io, int fd);
    void *discard_ctx;
    /* Recycling (recycle_segments; server/recycle.h): a removed segment's
     * .log.del goes to recycle (the unlinker thread: unlinker_take_recycle)
     * instead of discard, to become a zeroed spare of the directory while
     * fewer than recycle_spares (at most RECYCLE_MAX_SPARES) exist; a
     * rotation then takes a spare when one is there. recycle returns 0 if
     * it took the path. 0 or NULL: off (spares left from before, and
     * those beyond recycle_spares, are unlinked at open through discard).
     * Shares discard_ctx. */
    uint32_t recycle_spares;
    int (*recycle)(void *ctx, const fileio *io, const char *path, uint32_t spares);
    /* Where recycle enters the spares it makes (recycle.h), so that
     * rotations and retain_bytes need not look at the directory; the
     * caller keeps it alive while the log is open. NULL only with a
     * recycle done in line (it has made the spare when it returns): the
     * log's own, read from the directory again after each path recycle
     * took. */
    struct spare_ledger *spare_ledger;
    /* Every ack follows the fdatasync of what it covers (fsync = always):
     * zeros after the last record at recovery were never acked, and are
     * cut with an INFO line; otherwise (interval, never) they may have
     * held acked events and the line is a WARN. */
    bool synced_acks;
} log_options;

/* One event to append: `data` then `suffix` form the stored event bytes
 * (the daemon appends server-set fields after the client's bytes; they are
 * never copied together). time_ns is the receive time; the log raises it to
 * the previous record's time if it is earlier, so times never go backwards. */
typedef struct log_entry {
    const void *data;
    size_t len;
    const void *suffix;
    size_t suffix_len;
    int64_t time_ns;
    /* A standby's record as the primary sealed it (its 24-byte header: crc,
     * length, offset, time_ns), or NULL. Given, it is written as it is (no
     * header made, no CRC computed): its offset must be the log's next, its
     * time_ns the entry's and not below the previous record's, its length
     * len's (suffix empty), else the append fails with PB_EINVAL before
     * writing anything. A header followed in memory by its data, and records
     * back to back, go out as one piece of the write. */
    const uint8_t *record;
    /* Where the record's CRC32C goes once the append succeeded (NULL: not
     * wanted; valid only if the record was written with time_ns, live.h):
     * a primary's replication sends it along (FORMAT.md 4.11) instead of
     * computing it again. */
    record_crc *crc_out;
} log_entry;

typedef struct pb_log pb_log;

/* Opens the partition directory `dir`, creating it if missing (and making its
 * entry durable), and recovers: a torn tail of the newest segment is truncated
 * (durably, with a message); damage followed by valid records is reported but
 * kept; missing or stale indexes are rebuilt. Returns 0, or a negative code
 * (PB_EFORMAT for a file that is not a segment, errno values for I/O). */
int log_open(pb_log **out, const char *dir, const log_options *opts);

/* Appends n entries with consecutive offsets; *first_offset (may be NULL)
 * gets the first one. Does not sync. The caller's buffers are only read
 * during the call; no allocation once buffers have grown to the largest
 * batch. PB_ETOOBIG (nothing written, log still usable) if an entry exceeds
 * max_record_bytes; PB_EFAILED if the log has failed; the I/O error itself
 * on the failure that fails the log. */
int log_append(pb_log *log, const log_entry *e, size_t n, uint64_t *first_offset);

/* Makes everything appended so far durable (fdatasync of the active
 * segment; rotation already synced older ones). 0, the error that fails the
 * log, or PB_EFAILED. */
int log_sync(pb_log *log);

/* log_append and log_sync pipelined, so that the writer can prepare its
 * next append while the device syncs this one (fsync = always,
 * partition_write.c): log_append_sync appends as log_append does, then
 * begins the fdatasync of everything appended: on the log's direct-write
 * helper thread, queued right behind the append's last write (without a
 * helper it syncs in line). log_sync_finish hands over the outcome of the
 * oldest sync begun and not yet handed over, waiting for it if need be
 * (none: 0): called after the next log_append_sync, it gives the sync of
 * the append before, already over. The next append's writes queue behind
 * a pending sync; any file call of the writer's own (a rotation, say)
 * waits for it first. 0 from log_sync_finish: everything appended before
 * that sync began is durable. An error: it may not be, and the log is
 * failed (as by log_sync) for good: no later sync is begun, none covers
 * for it. log_append_sync returns the append's result (log_append's; no
 * sync is begun when it fails). *sync_ns (may be NULL) gets how long the
 * fdatasync took (0: none, or in line). synced (may be NULL) is called
 * (writer thread, from inside the append) as soon as a sync begun before
 * this append is seen to be over, at most once, so that the caller can
 * take its outcome (log_sync_finish) and act on it while the append goes
 * on: it may call log_sync_finish and log_status, no other log function.
 * waiting (may be NULL) is called (writer thread, from inside the append)
 * when the append is about to wait for a write of the helper's: work of
 * the caller's own that needs no log function (partition_ahead.c admits
 * the next take's events there); it returns whether it did some (it is
 * called again while the write runs) or has none (the append waits).
 * Both get ctx. */
int log_append_sync(pb_log *log, const log_entry *e, size_t n, uint64_t *first_offset,
                    void (*synced)(void *ctx), bool (*waiting)(void *ctx), void *ctx);
int log_sync_finish(pb_log *log, uint64_t *sync_ns);

/* Whether log_append_sync would queue the sync on a helper thread (direct
 * writes are in use and their thread runs), rather than sync in line. */
bool log_sync_async(const pb_log *log);

/* Bytes log_append keeps per entry in its reusable buffers (record
 * header, iovecs, index entry): what a batch of n entries costs it, at
 * most (it gathers 16,384 entries at a time). */
size_t log_bytes_per_entry(void);

/* Gives back the append buffers beyond `keep` entries (they grow to the
 * largest batch; a burst must not pin that memory). Returns the bytes
 * freed. Writer thread only. */
size_t log_shrink_buffers(pb_log *log, size_t keep);

/*
 * Descriptors. An open log holds its active segment's .log and .idx and
 * its directory open. log_release closes them (syncing nothing: call it
 * after log_sync, or under a policy that does not sync) and keeps every
 * other piece of state in memory; the next log_append or log_sync reopens
 * what it needs, by name (the files are the log's own; nothing else renames
 * them). A reopen that fails (say EMFILE) returns the error without failing
 * the log: nothing was written, the caller may try again; a missing active
 * segment fails it. So an idle partition costs no descriptor, and opening
 * thousands of partitions at start-up needs only a few at a time.
 * log_released() says whether the files are closed now.
 */
int log_release(pb_log *log);
bool log_released(const pb_log *log);

/* Offset the next appended record gets. Writer thread only. */
uint64_t log_next_offset(const pb_log *log);

/* Receive time of the last record (after clamping); INT64_MIN if the log is
 * empty. Writer thread only. */
int64_t log_last_time(const pb_log *log);

/* 0, or the sticky error (< 0) that failed the log. */
int log_status(const pb_log *log);

/* True if the log failed on a write (not a sync) with ENOSPC or EDQUOT:
 * the kernel refused the bytes, nothing synced before is in doubt, so the
 * files may be reopened (log_close, log_open) once space is back. */
bool log_failure_heals(const pb_log *log);

/*
 * Closed segments and their removal (removal.c). A partition's closed
 * (rotated) segments are listed here, oldest first; the active one is
 * never among them. Writer thread only, like the rest.
 */
typedef struct log_segment_info {
    uint64_t base;        /* its first offset */
    uint64_t end;         /* offset after its last one (the next segment's base) */
    uint64_t bytes;       /* size of its .log */
    int64_t last_time_ns; /* receive time of its newest record; INT64_MAX if none could be
                             read (then it never ages out) */
} log_segment_info;

/* Number of closed segments. */
size_t log_closed_count(pb_log *log);

/* Fills *out for closed segment i (0 = oldest). Reads the file the first
 * time (its size, then its index's last entry and the records after it);
 * cached after. 0 or a negative code (the file's I/O error). */
int log_closed_info(pb_log *log, size_t i, log_segment_info *out);

/* The oldest offset still stored: the oldest closed segment's base, or
 * the active segment's. */
uint64_t log_first_offset(const pb_log *log);

/* Bytes of the active segment's .log (its records: a recycled one's file
 * may be longer, a zero tail). */
uint64_t log_active_bytes(const pb_log *log);

/* Bytes of the directory's recycled spares (recycle.h): space the
 * partition holds, counted towards retain_bytes. */
uint64_t log_spare_bytes(pb_log *log);

/* Removes the n oldest closed segments, oldest first: each .log renamed
 * out of sight, durable (a directory fsync) before the next one goes; the
 * last one's fsync is left to the next directory sync (log_removal_flush);
 * each .idx is unlinked after its fsync (through opts.discard, like the
 * .log.del). Whatever a crash leaves, the log opens with a contiguous
 * range of offsets from its first segment's base (an orphan .idx below it
 * is removed at the next open).
 * Readers that hold a removed segment open keep reading it (an unlinked
 * file lives on while open). Returns the number removed (>= 0), or a
 * negative code when the first removal failed; a failed unlink leaves the
 * log usable, a failed directory fsync fails it (as for rotation). */
int log_remove_oldest(pb_log *log, size_t n);

/* The last removal's rename is made durable by the next directory sync
 * (rotation, install, the next removal, release, close): this makes it
 * now if it is pending. 0, or the error that failed the log. */
int log_removal_flush(pb_log *log);

/* Base offset of closed segment i (0 = oldest; i < log_closed_count). */
uint64_t log_closed_base(pb_log *log, size_t i);

/*
 * Compression of closed segments (compress.c says how, step by step), in
 * two halves so that the slow one runs off the writer thread:
 *
 * log_compress_prepare, any thread, no pb_log needed: writes the
 * compressed form (proto/zseg.h) of segment `base` of directory `dir` at
 * zstd `level` to <base>.log.ztmp and fdatasyncs it. 1: ready to install
 * (*plain and *packed: the sizes before and after); 0: nothing to do
 * (already compressed, or a record does not verify: why says so); < 0: an
 * I/O error (why says which file and what; the .ztmp is removed), or
 * -ECANCELED once *cancel (NULL: never) is set, checked before each block
 * (a closing partition waits at most one block's compression). why is ""
 * when there is nothing to say.
 */
int log_compress_prepare(const fileio *io, const char *dir, uint64_t base, int level,
                         const atomic_bool *cancel, uint64_t *plain, uint64_t *packed, char *why,
                         size_t whylen);

/* The same, paced while its partition publishes: while *active_mono (the
 * CLOCK_MONOTONIC ns of the partition writer's last take; NULL: never
 * paced) is less than LOG_COMPRESS_PACE_WINDOW_NS old, it rests after each
 * block as long as that block took (at most LOG_COMPRESS_PACE_MAX_NS), so
 * that it reads, compresses and writes at most about half the time while
 * publishes come in, and at full speed once they stop. */
#define LOG_COMPRESS_PACE_WINDOW_NS (100ull * 1000000ull)
#define LOG_COMPRESS_PACE_MAX_NS    (20ull * 1000000ull)
int log_compress_prepare_paced(const fileio *io, const char *dir, uint64_t base, int level,
                               const atomic_bool *cancel, const _Atomic uint64_t *active_mono,
                               uint64_t *plain, uint64_t *packed, char *why, size_t whylen);

/* Writer: puts the prepared <base>.log.ztmp in place of closed segment
 * `base` (rename over the .log, directory fsync). 1: installed; 0: the
 * segment is no longer a closed segment (retention removed it meanwhile):
 * the .ztmp is removed instead; PB_EFAILED if the log has failed (the
 * .ztmp removed); < 0: the rename failed (logged, the plain segment kept)
 * or the directory sync did (which fails the log, as for rotation). */
int log_compress_install(pb_log *log, uint64_t base);

/* Any thread: removes a prepared .ztmp that will not be installed (a
 * leftover is removed at the next open anyway). */
void log_compress_discard(const fileio *io, const char *dir, uint64_t base);

/* Writer: is closed segment i already compressed (one read of its first
 * 72 bytes; false when it cannot be read)? */
bool log_closed_compressed(pb_log *log, size_t i);

/* Both halves on the calling (writer) thread: compresses closed segment i
 * (0 = oldest). 1, 0 or < 0 as above; messages go to the log's logf. */
int log_compress_closed(pb_log *log, size_t i, int level, uint64_t *plain, uint64_t *packed);

/* Syncs (unless failed), closes and frees. Returns the first error. NULL ok. */
int log_close(pb_log *log);

#endif
