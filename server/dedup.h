/*
 * dedup - one partition's dedup window: the publisher-chosen ids
 * (EncapsulatedEvent.id) of the events it stored recently, each with its
 * offset, so that a retried event is acknowledged with its original
 * position instead of being stored again (FORMAT.md 4.3, 5).
 *
 * An id is remembered from its record's receive time t until t + window
 * (dedup_window_ms), and at most max_entries ids are kept (dedup_max_entries):
 * beyond that the oldest is forgotten early, so the window is the shorter of
 * the two bounds (a publisher retrying later than that may store twice).
 * Times come from the caller (the partition's clock, injected in tests):
 * nothing here reads a clock.
 *
 * Memory: entries are fixed slots of DEDUP_SLOT_BYTES (the id's first 36
 * bytes: a UUID's text; once the window has held a longer id, DEDUP_LONG_ID_BYTES more per
 * slot for the rest of such ids, up to 64 bytes) in a ring that grows by doubling, as ids arrive,
 * up to max_entries and an eighth more (room for the ids a take that is not stored pushed out:
 * dedup_truncate puts them back; while takes not yet stored push out more
 * than that, it grows further, up to twice max_entries, and keeps that
 * size until the window empties), plus the offset that pushed each slot
 * out (8 bytes), a hash index of two to four 8-byte cells per slot (up to
 * max_entries slots: the ids held never exceed it, so the ring's growth
 * past the bound neither enlarges nor rebuilds the index) in buckets of
 * one cache line, and a 4-byte count per bucket: ~90-107 bytes per slot
 * below the bound (122-139 with long ids), the slots at most twice the ids
 * held (and the slack; 64 at least). Forgetting an id (expiry, the bound)
 * costs nothing in the index (dedup.c). Nothing is
 * allocated until the first id, so a partition whose events carry no id
 * pays nothing.
 *
 * Start-up: dedup_rebuild reads the log's records newer than now - window
 * (through the partition's fileio, like every other read of its files), so
 * the window holds across kill -9 and power loss: what the log holds after
 * recovery is exactly what the window holds. Only partitions that ever
 * stored an id (DEDUP_MARK_NAME) pay for that scan, and after a clean stop
 * only for the records after the window's snapshot (dedup_save, dedup_load).
 *
 * Threads: no lock; whichever thread owns the partition's window: its
 * writer thread, or the ahead helper between AHEAD_WORK and AHEAD_DONE
 * (partition_ahead.c, which hands it back through the helper's state), or
 * the thread that opens or closes the partition. dedup_id_hash on any
 * thread (a hash of its own, under the process's random secrets: cheap for
 * ids of up to 32 bytes).
 */
#ifndef PB_DEDUP_H
#define PB_DEDUP_H

#include "event.h"
#include "fileio.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Memory per remembered id: its slot (64 bytes: the id's first 36 bytes;
 * 32 more per slot once the window has held a longer id) and two to four
 * 8-byte index cells (with a 4-byte count per 8 cells). */
#define DEDUP_SLOT_BYTES    64u
#define DEDUP_LONG_ID_BYTES 32u

typedef struct dedup dedup;

/* The largest max_entries (the config's bound on dedup_max_entries). */
#define DEDUP_MAX_ENTRIES (1u << 24)

/* A window remembering ids for window_ns, at most max_entries (1 to
 * DEDUP_MAX_ENTRIES) of them. 0, PB_EINVAL or PB_ENOMEM. */
int dedup_create(dedup **out, int64_t window_ns, uint32_t max_entries);
void dedup_destroy(dedup *d);

/* The offset of the record that stored id[0..len) while it is in the window:
 * 1 with *offset set, or 0. */
int dedup_find(const dedup *d, const uint8_t *id, size_t len, uint64_t *offset);

/* Remembers id[0..len) (1..64 bytes, not already present) as stored at
 * offset at time_ns (offsets and times ascending from call to call). At
 * max_entries, forgets the oldest first. 0 or PB_ENOMEM (then not
 * remembered: the window degrades, the record is stored all the same). */
int dedup_add(dedup *d, const uint8_t *id, size_t len, uint64_t offset, int64_t time_ns);

/* The ids added below offset `next` are stored (their take was acked): the
 * slots they pushed out of a full window need not be kept for
 * dedup_truncate any more. */
void dedup_commit(dedup *d, uint64_t next);

/* Any thread. The hash of an id (under a random seed of the process): what
 * dedup_check takes. Ingest computes it on the loop
 * thread while it has the event's bytes in its cache (pub_event.id_hash). */
uint64_t dedup_id_hash(const uint8_t *id, size_t len);

/* dedup_find, and dedup_add when absent, with one probe run (the writer's
 * path); h = dedup_id_hash(id, len). 1 with *original set when id is in
 * the window, 0 when it was added as stored at offset, or PB_ENOMEM /
 * PB_EINVAL. */
int dedup_check(dedup *d, uint64_t h, const uint8_t *id, size_t len, uint64_t offset,
                int64_t time_ns, uint64_t *original);

/* The writer's check of a part of a take (expect.c): dedup_check of the
 * events events[idx[0]], .., events[idx[n - 1]] in that order, the next
 * ones' index buckets, slots and ids prefetched meanwhile (a window is
 * larger than the cache: the misses overlap). An event with an id in the
 * window (or earlier among them) gets duplicate = 1 and its original's
 * offset; every other one duplicate = 0, and if it has an id, the id is
 * remembered as stored at the next offset from `first` on (the events that
 * are not duplicates, with an id or without, take first, first + 1, ...).
 * Right after each event's check, fill(ctx, ev) (not NULL: the writer
 * fills its records in the same pass, each event read once). Returns the
 * number of events not duplicates. The hash is the event's id_hash when set
 * (ingest's), else computed here. Out of memory, an id is stored without
 * being remembered (the window degrades). */
struct pub_event;
typedef void dedup_fill_fn(void *ctx, struct pub_event *ev);
uint32_t dedup_admit_events(dedup *d, struct pub_event *events, const uint32_t *idx, uint32_t n,
                            uint64_t first, int64_t time_ns, dedup_fill_fn *fill, void *ctx);

/* Forgets the ids stored before now_ns - window. */
void dedup_expire(dedup *d, int64_t now_ns);

/* Forgets the ids stored at offset >= from (a take that was not stored
 * after all: its ids must not block a retry), and puts back the stored ids
 * they pushed out of a full window (those not expired since, as far as the
 * ring's slack of an eighth of max_entries, at least 64, still holds them). */
void dedup_truncate(dedup *d, uint64_t from);

/* Ids remembered now; ids forgotten early because of max_entries (since
 * creation); bytes allocated. */
size_t dedup_count(const dedup *d);
uint64_t dedup_evicted(const dedup *d);
size_t dedup_memory(const dedup *d);
int64_t dedup_window_ns(const dedup *d);
uint32_t dedup_max_entries(const dedup *d);

/* Fills the window from the partition's files in dir: the records from
 * from_offset (0: the whole log) below end_offset with a receive time >=
 * now_ns - window, read through io (after dedup_load, from its `covered`).
 * Damaged records are skipped (they were not stored, as far as a reader can
 * tell). `name` names the partition in log lines. Returns 0 or a negative
 * code (an I/O error; logged). */
int dedup_rebuild(dedup *d, const fileio *io, const char *dir, const char *name, int64_t now_ns,
                  uint64_t from_offset, uint64_t end_offset);

/* The k-th id from the oldest (k < dedup_count(d)): its bytes (copied
 * into id), length, offset and receive time. */
void dedup_entry(const dedup *d, size_t k, uint8_t id[EVENT_ID_MAX_BYTES], size_t *len,
                 uint64_t *offset, int64_t *time_ns);

/* The window saved at a clean stop (dedup_snap.c, FORMAT.md Part B): start-up
 * then reads only the records appended after it. */
#define DEDUP_SNAPSHOT_NAME "dedup.snap"

/* Whether d remembered every id it was given (false once an id could not
 * be added for lack of memory, or a refused take had pushed out a stored
 * id beyond twice max_entries: then no snapshot is saved of it). */
bool dedup_complete(const dedup *d);

/* Writes d's ids to DIR/DEDUP_SNAPSHOT_NAME (temporary file, fdatasync,
 * rename, directory fsync), covering the log's records below `covered`,
 * which must all be durable. 0 or a negative code (logged). */
int dedup_save(const dedup *d, const fileio *io, const char *dir, uint64_t covered);

/* Fills the (empty) window from DIR's snapshot when it is sound and fits
 * the log (CRC, covered <= end_offset, the newest entry's record found in
 * the log with its id and time): 0 with *covered set (read the records
 * from there on with dedup_rebuild); PB_ENOTFOUND when there is none;
 * PB_ECORRUPT when it is not used (logged, the window left empty: rebuild
 * it from the whole log); PB_ENOMEM. */
int dedup_load(dedup *d, const fileio *io, const char *dir, const char *name, uint64_t end_offset,
               uint64_t *covered);

/* DIR/DEDUP_MARK_NAME exists once the partition has stored an event with
 * an id: a partition without one (most) skips dedup_rebuild's scan at
 * start-up. It is made durable before the first such record is appended,
 * so a partition whose log holds ids always has it. */
#define DEDUP_MARK_NAME "dedup.ids"

/* Whether DIR's mark exists (read through io). */
bool dedup_marked(const fileio *io, const char *dir);

/* Creates DIR's mark and syncs DIR, through io: 0 or a negative code. */
int dedup_mark(const fileio *io, const char *dir);

/* The id (EncapsulatedEvent field 8, the last occurrence) of an encoded
 * event: its length (0 if none) with *id pointing into ev. Pure; for stored
 * events, which were checked when published. */
size_t dedup_event_id(const uint8_t *ev, size_t n, const uint8_t **id);

#endif
