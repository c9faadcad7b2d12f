/*
 * mirror - ships chosen partitions, from their segment files, into NATS
 * JetStream streams: one [mirror NAME] section each (config_mirror.c).
 *
 * Data flow: partition files (proto/reader, up to the partition's durable
 * end offset) -> the mirror's thread (one per mirror; never on the publish
 * path) -> one NATS message per event (subject = subject_prefix + mapped
 * topic, Nats-Msg-Id = PARTITION:OFFSET; mirror_nats.c) -> asynchronous
 * JetStream publishes, at most max_pending awaiting their acknowledgement
 * -> per partition, a cursor = the offset below which everything is
 * acknowledged -> the durable cursor file (mirror_cursor.c), a few times a
 * second and at stop.
 *
 * Exactly once, in offset order (FORMAT.md, Part E, has the full
 * argument): messages carry no chain header (nats-server 2.9.10 lets the
 * replicas of a clustered stream drift apart after refused publishes, so
 * the mirror avoids provoking refusals). Any failed publish (error,
 * timeout) stops sending; once nothing is outstanding, the mirror reads the
 * stream's tail from the last stream sequence acknowledged in send order,
 * learns what it holds of each partition, and resends from the first
 * offset the stream lacks, one message alone before pipelining again;
 * Nats-Msg-Id deduplication covers a message still in flight inside NATS
 * meanwhile.
 *
 * Threads: mirror_set_create/start/destroy on the main thread; one thread
 * per mirror; libnats' threads deliver acknowledgements. The lowest-needed
 * and statistics accessors are for any thread.
 */
#ifndef PB_MIRROR_H
#define PB_MIRROR_H

#include "config.h"
#include "store.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mirror_set mirror_set;

/* Partitions whose segment files one mirror holds open at once (a
 * descriptor and a 1 MiB read window each). A mirror of more partitions
 * closes the least recently read one and reopens it at its next offset
 * when its turn comes, so a mirror of thousands of partitions costs a
 * bounded number of descriptors and memory, like a replay (subrun.h). */
#define MIRROR_READERS 8
/* Descriptors one mirror can hold: its readers, its NATS connection's
 * socket, the cursor file and its directory while it is saved, one spare
 * (main.c counts them in the open-files budget). */
#define MIRROR_FDS (MIRROR_READERS + 4)

/* One mirror's numbers: written by its thread (and libnats' ack thread),
 * read by any (e.g. the metrics of issue 15) without a lock. */
typedef struct mirror_counters {
    _Atomic uint64_t published;  /* messages handed to JetStream (resends included) */
    _Atomic uint64_t stored;     /* acknowledged as stored */
    _Atomic uint64_t duplicates; /* acknowledged as duplicates (a resend) */
    _Atomic uint64_t failed;     /* publishes that failed or timed out */
    _Atomic uint64_t skipped;    /* events that cannot be mirrored (named in the log) */
    _Atomic uint64_t resyncs;    /* rounds of "stop, learn what the stream holds, resend" */
    _Atomic bool connected;      /* to the NATS cluster, now */
} mirror_counters;

/* Loads every mirror's cursor file and compiles its partitions pattern;
 * starts nothing. With no [mirror] sections, an empty set. A damaged
 * cursor file leaves that mirror stopped (logged; it then holds back
 * retention for its partitions entirely). 0 or a negative code. */
int mirror_set_create(mirror_set **out, const pb_config *cfg, store *st);

/* Starts one thread per mirror. 0 or a negative code (logged). */
int mirror_set_start(mirror_set *ms);

/* Stops every mirror (waits up to ~2 s for acknowledgements still due,
 * saves the cursors), closes the NATS connections, frees. NULL is fine.
 * Call before the store closes. */
void mirror_set_destroy(mirror_set *ms);

/*
 * For retention: the lowest offset of `partition` that some mirror still
 * needs (not yet acknowledged by JetStream), over the mirrors whose
 * `partitions` pattern matches it and which hold retention
 * (hold_retention = yes, the default). UINT64_MAX when no mirror needs
 * anything of it. Segments whose every offset is below this may be
 * removed; others must be kept. A partition a mirror has not picked up yet
 * counts as needed from its cursor file's offset, or from 0. Any thread;
 * takes each mirror's partition lock briefly and runs one regex per mirror.
 */
uint64_t mirror_set_lowest_needed(mirror_set *ms, const char *part_name);

/* Number of mirrors, their names and counters (index < count). */
size_t mirror_set_count(const mirror_set *ms);
const char *mirror_set_name(const mirror_set *ms, size_t i);
const mirror_counters *mirror_set_counters(const mirror_set *ms, size_t i);

/* Calls fn for every partition of every mirror: `shipped` (every offset
 * below is acknowledged), the partition's end offset when last looked at,
 * and the receive time of the oldest event not yet acknowledged (0: none).
 * Lag in events = end - shipped; in seconds = now - oldest_ns. Any thread. */
typedef void (*mirror_lag_fn)(void *ctx, const char *mirror_name, const char *part_name,
                              uint64_t shipped, uint64_t end, int64_t oldest_ns);
void mirror_set_foreach_lag(mirror_set *ms, mirror_lag_fn fn, void *ctx);

#endif
