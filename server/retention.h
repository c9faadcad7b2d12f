/*
 * retention - which closed segments of a partition go, and when: by age
 * (retain_age: the receive time of a segment's newest record, never a
 * client's clock) and by size (retain_bytes: every segment of the
 * partition, the active one included), oldest first, never the active
 * segment, never one holding an offset a mirror still needs. The removal
 * itself is the log's (log_remove_oldest, removal.c).
 *
 * Threads: retention_run is called on the partition's writer thread (it
 * owns the log): after a take that rotated, and when the daemon's timer
 * finds the partition due (partition_retention_tick).
 */
#ifndef PB_RETENTION_H
#define PB_RETENTION_H

#include "log.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct retention_policy {
    int64_t age_s;  /* 0: no age limit */
    uint64_t bytes; /* 0: no size limit */
    /* Not removal, but the other thing done to closed segments: compress
     * them at this zstd level (the compressor thread, partition_compress.c;
     * compress.c); 0: they stay plain. */
    int compress_level;
} retention_policy;

/* What one run did. */
typedef struct retention_result {
    size_t removed;       /* segments */
    uint64_t first, end;  /* offsets first..end-1 were removed (removed > 0) */
    uint64_t bytes;       /* their bytes */
    bool by_age, by_size; /* why */
    bool held;            /* a segment that would go is kept for a mirror (floor) */
    int64_t next_due_ns;  /* when the oldest segment left ages out; INT64_MAX: never */
} retention_result;

/* Decides and removes. now_ns: the wall clock (injected in tests); floor:
 * the lowest offset a mirror still needs (UINT64_MAX: none). 0 or a
 * negative code (the log's I/O error); *out says what was removed, also
 * on an error after some removals. */
int retention_run(pb_log *log, const retention_policy *pol, int64_t now_ns, uint64_t floor,
                  retention_result *out);

/* True if the policy removes anything ever. */
bool retention_enabled(const retention_policy *pol);

#endif
