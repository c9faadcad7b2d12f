/*
 * topics - one partition's topic table: for every topic stored in the
 * partition, its most recent offsets (up to `history` of them), so that a
 * subscription can start with "the last N events of each matching topic"
 * without scanning the partition.
 *
 * Threads: the partition's writer thread updates the table (topics_add, one
 * write lock per append batch) and loads/saves it (at open and close);
 * subscription threads read it through topics_foreach (read lock). The lock
 * is the table's own rwlock.
 *
 * Memory: per topic in memory, one entry of about 48 bytes + the topic's
 * name, plus a ring of 8-byte offsets that starts at 4 slots and doubles up
 * to `history` slots as the topic receives events, plus two 8-byte hash
 * slots (the hash table is kept at most half full). So a topic costs at
 * most about 8 * history + name length + 80 bytes (plus malloc overhead).
 * The tables of all partitions share a topics_budget (max_topics_in_memory):
 * beyond it, a table holding more than its share moves its least recently
 * used topics to DIR/topics.cold (topics_cold.h), which keeps ~2 bytes per
 * topic in memory (index and Bloom filter), and reads them back from there
 * (a --last N start, or the topic being published again).
 *
 * Persistence: topics_save writes DIR/topics.snapshot (format in
 * proto/FORMAT.md, Part B) recording the table in memory, the log offset it
 * covers and how many topics topics.cold held;
 * topics_load reads it and catches up from the log past that offset, or
 * rebuilds the table from the whole partition when the snapshot is missing
 * or damaged. Both go through the partition's fileio, like the log.
 */
#ifndef PB_TOPICS_H
#define PB_TOPICS_H

#include "fileio.h"
#include "live.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define TOPICS_SNAPSHOT_NAME "topics.snapshot"
/* The largest history a table keeps (offsets per topic). */
#define TOPICS_HISTORY_MAX 4096

typedef struct topic_table topic_table;

/* What the topic tables of all partitions may keep in memory together
 * (max_topics_in_memory). Shared by every table given it; counted with
 * atomics (writer threads of different partitions). */
typedef struct topics_budget {
    size_t max;               /* topics in memory, all tables */
    _Atomic size_t in_memory; /* now */
    _Atomic size_t tables;    /* tables holding at least one topic in memory */
} topics_budget;

void topics_budget_init(topics_budget *b, size_t max);

/* Before topics_load: t counts its topics in memory in b and, when b is
 * exceeded and t holds more than its share (max / tables), moves its least
 * recently used topics to DIR/topics.cold (topics_cold.h), whence
 * topics_foreach still reads them. NULL (the default): no bound. */
void topics_set_budget(topic_table *t, topics_budget *b);

/* Creates an empty table keeping up to `history` (1..TOPICS_HISTORY_MAX)
 * offsets per topic. Returns 0, PB_EINVAL or PB_ENOMEM. */
int topics_create(topic_table **out, uint32_t history);

/* Frees the table. No other thread may be using it. NULL-safe. */
void topics_destroy(topic_table *t);

/* Writer thread. Records recs[0..n) (offsets ascending) under one write
 * lock. Uses only offset, topic and topic_len of each record. Allocates only
 * for a topic seen for the first time or whose ring grows. Returns 0, or
 * PB_ENOMEM if some records could not be recorded (the others are). */
int topics_add(topic_table *t, const live_record *recs, size_t n);

/* Any thread. Calls fn for every topic with up to n of its most recent
 * offsets in ascending order (n = 0: all kept): first the topics of the
 * cold store that are not in memory (read from DIR/topics.cold), then those
 * in memory, under the table's read lock, so fn must be quick and must not
 * call back into the table or the partition's writer. A topic that comes
 * back into memory during the walk may be visited twice (both visits true).
 * A walk holds off evictions (the writer waits for one only after having
 * put it off for several batches).
 * Returns the number of topics visited, the first negative value fn
 * returned, or PB_ENOMEM / an I/O error reading the cold store. */
typedef int (*topics_fn)(void *ctx, const char *topic, size_t topic_len, const uint64_t *offsets,
                         size_t count);
int topics_foreach(topic_table *t, uint32_t n, topics_fn fn, void *ctx);

/* Writer thread. The newest offset recorded for topic[0..len), from memory
 * or else from the cold store (one pread): 0 with *last set, PB_ENOTFOUND
 * when the table has no event of it, or an I/O error of the cold store.
 * The expected-offset check (expect.h). */
int topics_last(topic_table *t, const uint8_t *topic, size_t len, uint64_t *last);

/* Any thread. Topics in memory, and in the cold store (a topic that came
 * back into memory may be counted in both). */
size_t topics_count(topic_table *t);
size_t topics_cold_count(topic_table *t);

/* Writer thread. Atomically replaces DIR/topics.snapshot with the table,
 * recording that it reflects every record below covered_offset (write to a
 * temporary file, fdatasync it, rename, fsync the directory), all through
 * io. Returns 0 or a negative code (the old snapshot, if any, is then left
 * in place). */
int topics_save(topic_table *t, const fileio *io, const char *dir, uint64_t covered_offset);

/* Writer thread, at open, on an empty table. Loads DIR/topics.snapshot and
 * then reads the partition's records from the offset it covers up to
 * end_offset (the log's next offset) with pb_reader, all through io (the
 * log's file layer), so records written after
 * the snapshot (e.g. before a crash) are reflected. A missing, damaged or
 * inconsistent snapshot is ignored (with a log line naming the file and the
 * reason) and the table is rebuilt from the whole partition. Damaged records
 * met while scanning are logged and skipped (their topics cannot be known).
 * `name` names the partition in log lines. Returns 0, or a negative code for
 * an I/O error that stops the scan. */
int topics_load(topic_table *t, const fileio *io, const char *dir, const char *name,
                uint64_t end_offset);

/* Any thread; pure. Finds the topic (field 1 of an encoded
 * EncapsulatedEvent; the last occurrence wins, as protobuf says). Returns 0
 * with *topic and *len set (a slice of ev), PB_ENOTFOUND if the event has no
 * topic, PB_EPROTO if the bytes are not well-formed protobuf. */
int topics_event_topic(const uint8_t *ev, size_t n, const uint8_t **topic, size_t *len);

#endif
