/*
 * streamcheck - the check of tests/integration/test_mirror: a JetStream
 * stream that protobusd's mirror wrote, read whole with the NATS C client
 * (an ordered consumer on the stream's leader; what its replica lacks,
 * from the leader), against the partitions' files: every event exactly
 * once, in offset order per partition (Nats-Msg-Id = PARTITION:OFFSET),
 * with the subject its topic maps to (and back), the stored event bytes
 * (event format) or the payload with its topic, receive time and tags as
 * headers (payload format). A difference fails the running cmocka test.
 */
#ifndef PB_TEST_STREAMCHECK_H
#define PB_TEST_STREAMCHECK_H

#include <nats/nats.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A partition's events as its files hold them, and what the stream gave. */
typedef struct part_data {
    char name[128];
    uint8_t **ev;
    uint32_t *len;
    int64_t *time;
    uint64_t count;
    uint64_t next;   /* the offset after the last one the stream gave */
    uint64_t unseen; /* the lowest offset the stream has not given yet */
    uint64_t got;    /* offsets the stream gave */
    bool *seen;
} part_data;

/* Loads partition `name` of data_dir (offsets 0.. without a hole); frees
 * with sc_free_part. */
void sc_load_part(const char *data_dir, const char *name, part_data *p);
void sc_free_part(part_data *p);

/* The stream's message count, or -1 if it cannot be had now; its leader's
 * name into leader (when leader_len > 0; "" if none). */
int64_t sc_stream_msgs(jsCtx *js, const char *stream, char *leader, size_t leader_len);

/* Reads `stream` (under subject prefix `prefix`, payload or event format)
 * through nc - once its `nodes` - 1 replicas are current (at most 60 s) -
 * and compares it with parts[0..nparts); a failure names daemon_log.
 * nc's pending limit must be far above what a slow read lets wait. */
void sc_check_stream(natsConnection *nc, int nodes, const char *daemon_log, const char *stream,
                     const char *prefix, bool payload_format, part_data *parts, size_t nparts);

/* sc_check_stream for a stream that also holds `foreign` messages of other
 * writers, on subjects under foreign_prefix (outside prefix): those are
 * counted, whatever their Nats-Msg-Id, and must be exactly `foreign`. */
void sc_check_stream_foreign(natsConnection *nc, int nodes, const char *daemon_log,
                             const char *stream, const char *prefix, bool payload_format,
                             part_data *parts, size_t nparts, const char *foreign_prefix,
                             uint64_t foreign);

#endif
