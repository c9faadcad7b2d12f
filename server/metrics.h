/*
 * metrics - the daemon's process-wide counters and histograms, read by the
 * /metrics endpoint (metrics_http.c) and written from the hot paths.
 *
 * Threads: every function may be called from any thread. Each is one or a
 * few relaxed atomic additions (no lock, no allocation, no system call), so
 * a hook costs a few nanoseconds whether or not anything scrapes. The
 * per-partition counters live in the partition (partition_get_stats);
 * sizes on disk, process RSS, threads and descriptors are read at scrape
 * time.
 */
#ifndef PB_METRICS_H
#define PB_METRICS_H

#include <stdint.h>
#include <stdio.h>

/* Why a connection was refused or closed before it could be used. */
enum metrics_refusal {
    METRICS_REFUSED_MAX_CONNECTIONS,   /* over max_connections */
    METRICS_REFUSED_HANDSHAKE_ROOM,    /* closed for a newer one (max_handshaking) */
    METRICS_REFUSED_HANDSHAKE_TIMEOUT, /* no Hello within handshake_timeout_ms */
    METRICS_REFUSED_AUTH,              /* wrong user or password (auth = required) */
    METRICS_REFUSED_COUNT
};

/* Connections: accepted, closed (gauge = accepted - closed), refused. */
void metrics_conn_opened(void);
void metrics_conn_closed(void);
void metrics_conn_refused(enum metrics_refusal why);
/* An Error frame sent, by its protobus.Code (0..16; others counted as 2). */
void metrics_error_sent(int code);
/* One fdatasync of a partition's log, in nanoseconds. */
void metrics_fsync_ns(uint64_t ns);
/* Publish frame received -> its PublishAck queued, in nanoseconds. */
void metrics_ack_ns(uint64_t ns);
/* Events in one Publish batch. */
void metrics_batch_events(uint32_t n);
/* Events the writer found stored already (Publish with ids, dedup.h). */
void metrics_dedup_hits(uint32_t n);
/* Segments (and their bytes) retention removed (upkeep.c). */
void metrics_retention_removed(uint64_t segments, uint64_t bytes);
/* Subscriptions: started, ended, switched to following the live stream
 * (live = 1) or back (0), fell back to the files after their queue
 * overflowed, dropped for not reading (write_deadline_ms). */
void metrics_sub_started(void);
void metrics_sub_ended(void);
void metrics_sub_live(int live);
void metrics_sub_fallback(void);
void metrics_sub_dropped_slow(void);
/* The fan-out's waker, per wake-up of a tailing subscription (fanout.c):
 * its records delivered by the waker alone (0), delivered in part then
 * handed to the subscription's thread (1), or the thread signalled, the
 * subscription not being eligible (2: busy, TLS, replication, overflow). */
void metrics_fanout_wakeup(int how);

/* Hot standby. On the primary, min_standby_acks = 1: a stored publish
 * batch acknowledged once the standby confirmed it (0), on the local copy
 * after the timeout (1, standby_timeout = local) or refused (2). On a
 * follower: connected to the primary or not, records stored, partitions
 * stopped because they differ from the primary's. */
void metrics_standby_outcome(int how);
void metrics_follower_connected(int up);
void metrics_follower_records(uint64_t n);
void metrics_follower_partition_stopped(void);

/* CLOCK_MONOTONIC in nanoseconds (for the latency hooks). */
uint64_t metrics_now_ns(void);

/* Writes every process-wide metric (the families above, then process RSS,
 * threads and open descriptors from /proc/self) in the Prometheus text
 * format 0.0.4. Returns 0, or -1 if writing to f failed. */
int metrics_write_process(FILE *f);

#endif
