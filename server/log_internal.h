/*
 * log_internal - what the two halves of the segment log share: the pb_log
 * struct and the helpers both use. log.c appends, rotates, syncs and closes;
 * recovery.c opens a partition directory and recovers it (log_open). Nothing
 * outside those two files includes this header; everyone else uses log.h.
 *
 * Threads: as log.h: a pb_log belongs to its partition's writer thread.
 */
#ifndef PB_LOG_INTERNAL_H
#define PB_LOG_INTERNAL_H

#include "log.h"
#include "recycle.h"

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#define DEFAULT_SEGMENT_BYTES  (64ull * 1024 * 1024)
#define DEFAULT_INDEX_INTERVAL 4096u
#define FILE_MODE              0644
#define DIR_MODE               0755
/* Closed segments whose newest bytes stay cached (log_cache.c); beyond, the
 * oldest is dropped at once. */
#define LOG_CACHE_BEHIND 8

/* A closed segment as removal.c tracks it. bytes and last_time are read
 * from the files when first needed (known). */
typedef struct closed_seg {
    uint64_t base;
    uint64_t bytes;    /* size of the .log */
    int64_t last_time; /* receive time of its newest record; INT64_MAX: none readable */
    bool known;
} closed_seg;

typedef struct direct_io direct_io; /* log_direct.c */

struct pb_log {
    /* Sized to the directory's name (a partition costs memory while idle:
     * thousands of them must not each hold PATH_MAX buffers). */
    char *dir;
    char *log_path;  /* active segment's .log */
    char *idx_path;  /* active segment's .idx */
    size_t path_cap; /* bytes of log_path and idx_path */
    log_options opt;
    const fileio *io;
    int dir_fd;      /* -1 until needed (it is opened for directory syncs) */
    bool released;   /* log_release closed the files; the next append or sync reopens */
    bool idx_reopen; /* the index was being written when released: reopen it too */

    /* Active (newest) segment. */
    uint64_t base;
    int fd;
    int idx_fd;              /* -1 when indexing this segment has been given up */
    uint64_t size;           /* bytes in the .log */
    uint64_t idx_size;       /* bytes in the .idx */
    uint64_t last_index_pos; /* position named by the last index entry */
    bool has_records;
    bool recycled; /* a spare became this segment: its file may be longer than size (a zero tail) */
    /* log_spare.c: the spares as known without looking (opt.spare_ledger,
     * else own_spares; refs unused), and whether own_spares must be read
     * from the directory again (a recycle that does not tell took a path). */
    spare_ledger own_spares;
    bool spares_stale;
    int64_t period; /* time-rotation period of the segment's first record */

    uint64_t next_offset;
    int64_t last_time; /* INT64_MIN: no record yet */
    int failed;        /* 0, or the error that stopped the log */
    bool failed_sync;  /* ... and it was a sync that failed */
    /* The active segment's first `durable` bytes are what the last
     * fdatasync of it that returned 0 covered (durable_known: set since
     * its creation or recovery). A failed sync of it cuts the file back
     * to there (log_cut_to_durable, once: cut). */
    uint64_t durable;
    bool durable_known;
    bool cut;

    /* log_direct.c: the active segment opened with O_DIRECT (-1: not yet,
     * or closed with it), the aligned staging buffers and their writing
     * thread (NULL until a large append; freed with the other buffers),
     * and whether direct writes were given up for good (refused by the
     * file system, or one failed). crc_later: log_append left the records'
     * CRCs to the copy into the staging buffers (log_seal_record), or to
     * flush when the append goes the ordinary way (log_seal_all). */
    int dfd;
    direct_io *dio;
    bool direct_off;
    bool crc_later;

    /* log_append_sync: the fdatasync begun after an append (sync_job on
     * the direct-write helper; 0: made in line, its outcome sync_inline_rc),
     * covering the segment's first sync_size bytes: sync_pending until
     * collected (log_sync_collect: waited for, its outcome kept in
     * done_rc/done_ns until log_sync_finish hands it over). sync_after:
     * log_append's last write is to queue the sync (dio_sync_seq) right
     * behind it (log_direct.c). */
    bool sync_pending;
    uint64_t sync_job;
    uint64_t sync_size;
    int sync_inline_rc;
    bool sync_done;
    int done_rc;
    uint64_t done_ns;
    bool sync_after;
    bool sync_last; /* ... set for that last write only */
    uint64_t dio_sync_seq;
    void (*sync_hook)(void *ctx);   /* log_append_sync's synced, during the call */
    bool (*wait_hook)(void *ctx);   /* ... its waiting (log_direct.c, settle) */
    void *sync_hook_ctx;            /* ... both hooks' ctx */

    /* Reusable append buffers: grow to the largest batch, then stay. */
    uint8_t *hdrs;
    size_t hdrs_cap; /* records */
    struct iovec *iov;
    size_t iov_cap;
    uint8_t *idx_buf;
    size_t idx_cap; /* entries */

    /* Closed (rotated) segments, oldest first: the one list of which
     * closed segments exist (removal.c keeps it; rotation adds to it,
     * retention takes from its front). stale: an addition failed (no
     * memory); the next user lists the directory again. */
    closed_seg *closed;
    size_t nclosed, closed_cap;
    bool closed_stale;
    /* removal.c: the last removal's rename, not yet made durable by a
     * directory sync; the next sync, whoever makes it (a rotation, an
     * install, the next removal, log_removal_flush, release, close), does,
     * and then hands its unlinks over. At most one: a removal first syncs
     * the one before it. */
    bool rm_pending;
    bool rm_has_del; /* its .log.del exists (a refused rename unlinked the .log) */
    uint64_t rm_base;

    /* log_cache.c: which durable bytes have left the page cache. Positions
     * count the bytes of every segment written since open (the active
     * segment's byte x is at cache_origin + x). */
    uint64_t cache_origin; /* position of the active segment's byte 0 */
    uint64_t cache_from;   /* active segment: pages below this were dropped */
    struct log_cache_seg {
        uint64_t base; /* a closed segment with pages still cached */
        uint64_t end;  /* position of its end */
    } cache_behind[LOG_CACHE_BEHIND];
    size_t cache_nbehind;
};

/* removal.c: unlinks path (a file no reader lists: a removed segment's
 * .log.del, a compressed copy no longer needed), through opts.discard (the
 * daemon's unlinker thread) when it takes it, else here. A failure leaves
 * a file the next open removes. An empty path: nothing. */
void log_discard_file(pb_log *log, const char *path);

/* removal.c, from log_sync_dir once the directory is synced: the pending
 * removal (if any) is durable; its .log.del and .idx are handed over. */
void log_removal_synced(pb_log *log);

/* removal.c: closes fd (read-only, of a file whose name is gone) through
 * opts.discard_fd when it takes it, else here. fd < 0: nothing. */
void log_discard_fd(pb_log *log, int fd);

/* Passes a message to opts.logf (if any), formatted. */
void log_say(pb_log *log, enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The wall clock for file headers (opts.now_ns, else CLOCK_REALTIME). */
int64_t log_now_ns(pb_log *log);

/* Stops the log for good and says why. Returns the error for the caller. */
int log_fail(pb_log *log, int rc, const char *what, const char *path, uint64_t pos);

/* Time-rotation period of a receive time: floor((t + utc_offset) / every). */
int64_t log_period_of(const pb_log *log, int64_t t_ns);

/* Appends n encoded index entries to the active segment's index; a failed
 * write stops indexing this segment (the index is a cache). */
void log_write_index(pb_log *log, const uint8_t *entries, size_t n);

/* Makes the directory's entries durable: a new file is not durable until
 * the directory that names it is synced. */
int log_sync_dir(pb_log *log);

/* Closes the active segment's index, if open (a failure is only logged: the
 * index is a cache). */
void log_close_index(pb_log *log);

/* Closes the active segment's files. Returns the .log's close result. */
int log_close_active(pb_log *log);

/* Opens a new, empty index for the active segment (O_TRUNC: any old one is
 * a stale cache). Failure only disables indexing. */
void log_create_index(pb_log *log, int64_t created);

/* Creates segment `base` as the active one: header written and synced, then
 * the directory synced, so a segment that exists after a crash always has a
 * whole header unless the crash came before that sync (never acked). */
int log_create_segment(pb_log *log, uint64_t base);

/* log_spare.c: makes a spare (recycle.h) segment `base`, the active one:
 * its header written and synced, then renamed to the segment's name
 * (log->fd set, log->recycled); the caller syncs the directory. 0; 1 when
 * there is no spare to take (or a spare refused: it is left): the caller
 * creates the file as before; a negative code when the log failed. */
int log_take_spare(pb_log *log, uint64_t base, int64_t created);

/* log_spare.c, at open: the spares a restart finds are kept for rotations
 * (zeros, at most a header a take writes again); those at or above
 * opt.recycle_spares (all with recycling off) go through log_discard_file
 * (the unlinker thread, when there is one). */
void log_tidy_spares(pb_log *log);

/* log_cache.c: the active segment's first durable_size bytes are durable (a
 * sync succeeded): drops the pages of what lies more than opt.cache_bytes
 * behind that. */
void log_cache_synced(pb_log *log, uint64_t durable_size);

/* A sync of the active segment covering its first `size` bytes returned 0. */
void log_durable_at(pb_log *log, uint64_t size);

/* log_cut.c: a sync (or write-out, what) of the active segment failed with
 * err: the file is cut back to log->durable (once), said at ERROR. */
void log_cut_to_durable(pb_log *log, int err, const char *what);

/* log_direct.c: waits until every job queued on the helper is over (no
 * write of this log runs after it unless the writer queues one). */
void log_direct_quiesce(pb_log *log);

/* log.c: waits for the sync log_append_sync began, if any is pending, and
 * keeps its outcome for log_sync_finish (a failure fails the log, as
 * log_sync's would). The writer calls it before writing to or closing the
 * segment itself while that sync may run on the helper (rotation, an
 * ordinary write, log_sync, a release, the O_DIRECT open), and before
 * queueing the next sync. Returns the outcome kept (0: none). */
int log_sync_collect(pb_log *log);

/* log_direct.c: queues an fdatasync of the active segment on the helper,
 * after every write queued there; its job number, or 0 when there is no
 * helper thread (the caller syncs in line). */
uint64_t log_direct_sync_submit(pb_log *log);

/* log_direct.c: calls log->sync_hook (once, then clears it) if a sync's
 * outcome is collected and not handed over yet. */
void log_sync_hook_fire(pb_log *log);

/* log_direct.c: a helper thread runs this log's direct writes (and would
 * run a sync). */
bool log_direct_async(const pb_log *log);

/* log_direct.c: waits for sync job seq: its fdatasync's result; *ns gets
 * how long that took. One sync job's outcome is kept at a time: the
 * writer collects one before it queues the next. */
int log_direct_sync_wait(pb_log *log, uint64_t seq, uint64_t *ns);

/* log_cache.c, at rotation, once the closed segment (still open as
 * log->fd, log->size bytes) is durable and before it is closed: drops all
 * of it but its newest cache_bytes, remembers what stays cached, and moves
 * the positions on to the next segment. */
void log_cache_rotated(pb_log *log);

/* log_direct.c: writes the cnt iovecs (`bytes` in all: one append's share
 * of the active segment) at log->size around the page cache: the rest of
 * the current block and the last partial block the ordinary way, whole
 * blocks in between through an O_DIRECT descriptor from an aligned staging
 * buffer, so the file's size stays exact and no byte before log->size is
 * written. Does not move log->size. 0 when written; 1 when not taken (no
 * whole block, direct writes unavailable or given up: the caller writes the
 * same bytes the ordinary way, over whatever was written); a negative code
 * when an ordinary write or its write-out failed, or a sync pending before
 * it did (the caller fails the log; the failed sync's error stays first). */
int log_direct_write(pb_log *log, const struct iovec *iov, size_t cnt, uint64_t bytes);

/* log.c: whether v is one of log->hdrs (a record header of this append). */
bool log_is_header(const pb_log *log, const struct iovec *v);

/* log.c: stores the CRC32C of the record whose header (filled by
 * record_encode_fields) is iov[i], over its fields and the event bytes in
 * the iovecs that follow it (of the cnt). */
void log_seal_record(const struct iovec *iov, size_t cnt, size_t i);

/* log.c: log_seal_record for every record header among the cnt iovecs. */
void log_seal_all(const pb_log *log, const struct iovec *iov, size_t cnt);

/* log_direct.c: closes the O_DIRECT descriptor, if open (with the active
 * segment's files). */
void log_direct_close(pb_log *log);

/* log_direct.c: frees the staging buffers (after joining their thread);
 * returns the bytes given back. */
size_t log_direct_free(pb_log *log);

/* removal.c: adds a segment just closed by rotation (or found at open) to
 * the end of the closed list. Never fails the log: without memory the list
 * is marked stale and listed again later. */
void log_closed_add(pb_log *log, uint64_t base, uint64_t bytes, int64_t last_time, bool known);

/* removal.c, at open: unlinks index files left without their segment by a
 * removal that a crash cut short (below the first segment). */
void log_remove_orphans(pb_log *log, uint64_t first_base);

#endif
