/*
 * partition - one partition: its segment log, its writer thread and the
 * queue in front of it, and its per-topic last offsets.
 *
 * Threads: partition_submit() is called on the libuv loop thread and never
 * blocks on I/O (lock, link, signal; start a thread when dormant). The
 * writer thread (one at a time; it ends after idle_ms without work and the
 * next submit starts another) owns the log: it
 * takes everything queued, appends it with one log_append (one writev), syncs
 * per the fsync policy (group commit: while one fdatasync runs the next
 * batches queue up and the next append takes them all), assigns offsets and
 * receive times, updates the topic table, announces the now-durable records
 * through the durable callback it was given (the live fan-out, in the
 * daemon), then calls each part's batch->done(). A partition knows nothing
 * of who listens. Accessors marked "any thread" are safe from subscription
 * threads.
 */
#ifndef PB_PARTITION_H
#define PB_PARTITION_H

#include "broker.h"
#include "live.h"
#include "log.h"
#include "retention.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct topics_budget;

enum partition_fsync { PARTITION_FSYNC_ALWAYS, PARTITION_FSYNC_INTERVAL, PARTITION_FSYNC_NEVER };

/* "These records are durable": called on p's writer thread after recs[0..n)
 * (n >= 1, offsets ascending) are durable under the fsync policy and the end
 * offset has moved past them, before their batches' done() callbacks. The
 * records and their bytes are valid during the call only. It must not block
 * for long (the next group commit waits for it) and must not call back into
 * p's writer (partition_submit is fine, partition_close is not). */
typedef void (*partition_durable_fn)(void *ctx, partition *p, const live_record *recs, size_t n);

/* After a durable callback: called on p's writer thread once the take's
 * done() callbacks have run (the publishers' acks are on their way), or
 * right after the callback when there are none; same ctx. The listener's
 * slow follow-up work goes here, off the acks' path (the live fan-out wakes
 * its subscription threads here: fanout_acked). */
typedef void (*partition_acked_fn)(void *ctx);

typedef struct partition_options {
    log_options log;                     /* segment size, time rotation, fileio, clock */
    int fsync;                           /* enum partition_fsync */
    uint32_t fsync_interval_ms;          /* for PARTITION_FSYNC_INTERVAL */
    uint32_t topic_history;              /* last offsets kept per topic (history depth), >= 1 */
    struct topics_budget *topics_budget; /* shared bound of topics in memory; NULL: none */
    uint32_t dedup_window_ms;            /* ids are remembered this long (dedup.h); 0 = no dedup */
    uint32_t dedup_max_entries;   /* ... and at most this many per partition (>= 1 if used) */
    uint32_t idle_ms;             /* with nothing to do this long, the writer closes the files
                                     and ends (restarted by the next submit); 0 = never */
    partition_durable_fn durable; /* NULL = nobody listens */
    void *durable_ctx;            /* its first argument */
    partition_acked_fn acked;     /* NULL = nothing to do after the acks */
    retention_policy retain;      /* retain_age / retain_bytes; zero: keep everything */
    /* The lowest offset a mirror still needs (UINT64_MAX: none); retention
     * keeps every segment holding it or later ones. Called on the writer
     * thread (and at open); NULL: nobody needs anything. */
    uint64_t (*retain_floor)(void *ctx, const char *name);
    void *retain_floor_ctx;
    /* Refuse publishes while the file system has less free space than
     * this (freespace.h; FREESPACE_AUTO: 1 GiB or 5%, whichever is
     * smaller); 0: no check. Probed (statvfs) before a take, at most every
     * 10 ms, and every second by the upkeep tick. */
    uint64_t min_free_bytes;
    /* The daemon's compressor thread, which compresses closed segments
     * when retain.compress_level is set (required then; NULL otherwise). */
    struct compressor *compressor;
    /* After a compression failed for a reason that may pass (ENOSPC,
     * EMFILE, EIO, ...), the segment is tried again this much later;
     * 0: 30 s. */
    uint32_t compress_retry_ms;
    /* The daemon's unlinker thread, which unlinks the segments retention
     * removed (log_options.discard); NULL: the writer unlinks them. */
    struct unlinker *unlinker;
} partition_options;

/* Descriptors an active partition holds: its active segment's .log (twice
 * once a take was written directly: log_direct.c) and .idx and its
 * directory. An idle one (idle_ms) holds none. */
#define PARTITION_FDS 4

/* Opens (creating if needed) data_dir/name, recovers the log and the topic
 * table, then closes its files: the partition is dormant (no descriptor, no
 * thread) until the first submit starts its writer. Errors are logged with
 * the reason. */
int partition_open(partition **out, const char *data_dir, const char *name,
                   const partition_options *opts);

/* Loop thread. Queues part for the writer, starting the writer thread if
 * the partition is dormant; part->batch->done(part) is called later on the
 * writer thread (also when the partition has failed: then part->status < 0
 * and no event of the part was stored). If no thread can be started,
 * done() is called here, with the error. */
void partition_submit(partition *p, pub_part *part);

/* The most events one take of a partition's queue holds: the writer takes
 * whole parts (a publisher's batch's share) until the next would pass it
 * (always at least one part, however large), and leaves the rest queued
 * for the next take, in order. Bounds what scales with a take: its batch
 * arrays (partition_bytes_per_event) and its records' copies in the live
 * queues of the subscriptions (~150 bytes an event of 100 bytes). A
 * starved writer (a busy machine, a fan-out) otherwise took everything in
 * flight at once (main.c's MAX_INFLIGHT_BYTES): 30-40k events of 100 B.
 * One fdatasync per 8,192 events is ~0.8 MB of 100 B events, 8 MiB of 1 KiB
 * ones; the publish rates measured within this busy machine's noise of
 * main's, the fan-out's perhaps a few percent lower (more waker passes:
 * tests/bench/NOTES.md, "RSS of the fan-out, third round"). Events under
 * ~32 B make takes below direct_write_bytes (256 KiB): page cache, no
 * pipelining. */
#define PARTITION_TAKE_EVENTS 8192u

/* Bytes the writer keeps per event of a take (its own arrays and the
 * log's): what ingest charges a batch for its writers (ingest_charge). */
size_t partition_bytes_per_event(void);

/* Any thread: whether a writer thread runs now (tests, diagnostics). */
int partition_writer_running(partition *p);

/* Any thread. */
const char *partition_name(const partition *p);
const char *partition_dir(const partition *p);
/* Offsets below this are durable under the policy and readable from the
 * files. The writer advances it BEFORE it announces those records (the
 * durable callback), so a listener that starts listening and then reads this
 * value misses nothing: records below it are in the files, records at or
 * above it are announced (the live fan-out skips duplicates by offset). */
uint64_t partition_end_offset(const partition *p);
/* Counters since the daemon started (relaxed reads; any thread). Events
 * and bytes are those stored (ids found stored already are not). */
typedef struct partition_stats {
    uint64_t events_appended, bytes_appended;
    uint64_t write_errors, fsync_errors;
    /* Events admitted while the take before them was written and synced
     * (the dedup window checked off the writer's path: partition_ahead.c);
     * among them, those the writer admitted itself while a pipelined
     * append waited (the rest: the helper thread's rounds). */
    uint64_t events_ahead, events_ahead_writer;
} partition_stats;
void partition_get_stats(partition *p, partition_stats *st);
/* Any thread. The oldest offset still stored (retention raises it).
 * Readers that want offsets below it were overtaken by retention. */
uint64_t partition_first_offset(partition *p);
/* Any thread, cheap (a few atomic loads unless something is due): if age
 * retention (or a retry held back by a mirror) is due at now_ns (wall
 * clock), if free space is below min_free_bytes, or if a full disk stopped
 * the partition, wakes the writer (starting one if the partition is
 * dormant) to remove what aged out, probe the free space, and resume once
 * space is back. The daemon calls it every second from a loop timer, so a
 * partition ages out and heals even when nothing is published. */
void partition_upkeep_tick(partition *p, int64_t now_ns);
/* Any thread: true while publishes are refused because the file system
 * holding the partition has less free space than min_free_bytes; *avail
 * and *margin are the figures of the last probe (for the Error). */
bool partition_space_low(partition *p, uint64_t *avail, uint64_t *margin);
/* 0, or the sticky error that stopped the partition (see log.h). */
int partition_status(const partition *p);

/* Any thread. Calls fn for every topic of the partition with up to `n` of its
 * most recent offsets (ascending). Returns the number of topics visited, or
 * the first negative value fn returned. */
typedef int (*partition_topic_fn)(void *ctx, const char *topic, size_t topic_len,
                                  const uint64_t *offsets, size_t count);
int partition_foreach_topic(partition *p, uint32_t n, partition_topic_fn fn, void *ctx);

/* Stops accepting, finishes and syncs everything queued (calling done() for
 * each part), persists the topic table, joins the thread, closes the log. */
int partition_close(partition *p);

#endif
