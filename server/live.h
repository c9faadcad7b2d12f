/*
 * live - one durable record, as a partition's writer announces it to whoever
 * listens (partition_options.durable, partition.h) and as its topic table
 * records it (topics.h).
 *
 * The storage side (partition, topics) and the subscription side (fanout)
 * both include this header; neither includes the other for it.
 *
 * Threads: the type only. A live_record and the bytes it points at are valid
 * during the callback that hands it over; a listener copies what it keeps.
 */
#ifndef PB_LIVE_H
#define PB_LIVE_H

#include <stdbool.h>
#include <stdint.h>

/* A record's CRC32C as the log wrote it (log_entry.crc_out). valid only
 * when the record was written with the time_ns its entry gave (the log
 * raises an earlier one): a CRC over another time would not match a
 * record header made from the live_record's fields. */
typedef struct record_crc {
    uint32_t crc;
    bool valid;
} record_crc;

/* One durable record. The stored event bytes are data followed by suffix
 * (the server-set fields the writer appended). */
typedef struct live_record {
    uint64_t offset;
    int64_t time_ns;
    const uint8_t *topic;
    uint32_t topic_len;
    const uint8_t *data;
    uint32_t len;
    const uint8_t *suffix;
    uint32_t suffix_len;
    /* The record's CRC32C as stored (when the writer asked the log for it
     * and the log wrote the record with time_ns), for a replication
     * stream's Records frames. */
    record_crc crc;
} live_record;

#endif
