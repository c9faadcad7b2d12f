/*
 * sub - subscriptions: the registry the writers fan out to, and the bounded
 * pool of subscription threads that replay history from the segment files
 * and then tail a live queue.
 *
 * Threads: sub_start() runs on the loop thread; sub_registry_publish() on
 * partition writer threads; each subscription then runs on its own pool
 * thread, which owns the client socket (blocking writes with a deadline).
 */
#ifndef PB_SUB_H
#define PB_SUB_H

#include <stddef.h>
#include <stdint.h>

struct store;
struct partition;
typedef struct sub_registry sub_registry;

typedef struct sub_fanout sub_fanout;

/* Defaults for the sub_options fields left 0. */
#define SUB_QUEUE_TOTAL_DEFAULT (32ull * 1024 * 1024)
#define SUB_MATCH_CACHE_DEFAULT (8ull * 1024 * 1024)
#define SUB_THREADS_MAX         65535u /* subscription ids are 16 bits in the fan-out cache */

typedef struct sub_options {
    struct store *store;        /* the partitions (for history and end offsets) */
    uint32_t threads;           /* pool size = max concurrent subscriptions, <= SUB_THREADS_MAX */
    uint64_t queue_bytes;       /* bound of each live queue */
    uint64_t queue_total_bytes; /* bound of all live queues together (0: the default) */
    uint64_t
        match_cache_bytes; /* bound of each writer's topic -> subscriptions cache (0: default) */
    uint32_t write_deadline_ms; /* a subscriber that accepts nothing this long is dropped */
    uint32_t topic_history;     /* what the partitions keep per topic (for START_LAST_N) */
} sub_options;

/* PB_EINVAL if an option is out of range (threads 0 or above SUB_THREADS_MAX,
 * queue_bytes < 64, queue_total_bytes < 4096, match_cache_bytes < 16384). */
int sub_registry_create(sub_registry **out, const sub_options *opts);

/* Sets the store after creation (main thread, before any sub_start): the
 * store's partitions are opened with the registry as their fan-out target,
 * so the registry is created first, with opts->store NULL. */
void sub_registry_set_store(sub_registry *r, struct store *s);

/* One durable record, as the writer hands it to the fan-out. The stored
 * event bytes are data followed by suffix (the server-set fields). */
typedef struct live_record {
    uint64_t offset;
    int64_t time_ns;
    const uint8_t *topic;
    uint32_t topic_len;
    const uint8_t *data;
    uint32_t len;
    const uint8_t *suffix;
    uint32_t suffix_len;
} live_record;

/* Writer thread of partition p, after the records are durable, in offset
 * order. Copies what each matching subscription needs into its bounded live
 * queue (a full queue, or the queues' total budget reached, marks that
 * subscription as overflowed: it goes back to the files; the writer never
 * waits for a subscriber). Cheap when there are no subscriptions.
 *
 * *fanout is the writer's own state (start with NULL; created on first use,
 * when there are subscriptions; free it with sub_fanout_free after the last
 * publish): a bounded cache of topic -> subscriptions whose patterns match,
 * so an event costs one lookup, not one regex per subscription. Patterns
 * run once per topic and again only after a subscription starts or ends.
 * Subscriptions whose patterns match every topic (".*") skip the lookup. */
void sub_registry_publish(sub_registry *r, sub_fanout **fanout, struct partition *p,
                          const live_record *recs, size_t n);

/* The writer's fan-out state, after its last sub_registry_publish. NULL-safe. */
void sub_fanout_free(sub_fanout *f);

/* Counters for tests and diagnostics (any thread; approximate while writers
 * publish). */
typedef struct sub_stats {
    uint64_t match_hits;   /* events whose subscriptions came from a writer's cache */
    uint64_t match_misses; /* events whose topic ran the subscriptions' patterns */
    uint64_t queued_bytes; /* bytes all live queues hold now (<= queue_budget) */
    uint64_t queue_budget; /* queue_total_bytes in effect */
    uint64_t queue_resets; /* live queues reset after an overflow, since creation */
} sub_stats;
void sub_registry_stats(sub_registry *r, sub_stats *out);

/* Loop thread. Validates the Subscribe frame body (patterns compile, start
 * mode valid) and hands the connection to a pool thread, which takes
 * ownership of fd (a blocking-capable dup the caller no longer uses) and
 * sends Event frames answering frame_id. On failure returns a negative code,
 * sets *grpc_code (protobus.Code) and writes a message naming the problem
 * into err; fd stays the caller's. RESOURCE_EXHAUSTED when the pool is full. */
int sub_start(sub_registry *r, int fd, uint64_t frame_id, const uint8_t *subscribe, size_t len,
              int *grpc_code, char *err, size_t errlen);

/* Number of subscriptions running (any thread). */
uint32_t sub_registry_active(sub_registry *r);

/* Any thread; for tests and diagnostics. Waits until exactly `active`
 * subscriptions are running and `tailing` of them have replayed their
 * history and written it to their socket (they follow the live stream now),
 * or timeout_ms passes.
 * Returns 0 or PB_ETIMEDOUT. */
int sub_registry_wait(sub_registry *r, uint32_t active, uint32_t tailing, uint32_t timeout_ms);

/* Ends every subscription (closing their sockets) and joins the pool
 * threads; sub_start refuses from then on (UNAVAILABLE) and
 * sub_registry_publish stays safe to call (it finds nothing to do). Call it
 * before store_close, since subscriptions read the partitions; then close
 * the store (its writers may still publish), then sub_registry_destroy. */
void sub_registry_stop(sub_registry *r);

/* sub_registry_stop if not done yet, then frees the registry. Writers must
 * have stopped publishing to it. NULL-safe. */
void sub_registry_destroy(sub_registry *r);

#endif
