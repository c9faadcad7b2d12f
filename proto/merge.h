/*
 * merge - k-way merge of several record sources (partition readers, legacy
 * files, ...) into one stream ordered by receive time. Order across
 * partitions is defined by receive time only (DESIGN.md); records with equal
 * times come in the order of their sources' names (then the order the
 * sources were added), and each source's own order is kept.
 *
 * A binary heap holds one pending record per source, so a merge of k
 * sources costs O(log k) per record and no allocation after the sources are
 * added.
 *
 * Sources that have nothing right now (PB_EEOF) are "idle": they are asked
 * again only when no source has a pending record, so a merge over live
 * partitions (the CLI's `cat --follow`) polls each idle reader once per
 * call that finds nothing, not once per record. Records appended to an idle
 * source while others still have older ones pending are therefore merged
 * on the next pass; the order is exact for data that is complete.
 *
 * Threads: a pb_merge and its sources are used by one thread at a time.
 */
#ifndef PB_MERGE_H
#define PB_MERGE_H

#include "reader.h"
#include "record.h"

#include <stddef.h>

/* A source's next(): 0 (rec filled; rec->event must stay valid until the
 * next call to this function with the same source), PB_EEOF (nothing now),
 * PB_ECORRUPT (damage skipped; the source can be called again), PB_EREMOVED
 * (offsets removed by retention skipped; likewise), or another
 * negative code (the source failed and is dropped from the merge). */
typedef int (*pb_merge_next_fn)(void *source, pb_record *rec);

typedef struct pb_merge pb_merge;

/* What pb_merge_next produced. */
typedef struct pb_merge_item {
    size_t source;    /* index of the source (the order of pb_merge_add calls) */
    const char *name; /* its name (owned by the merge) */
    void *ctx;        /* the `source` pointer given to pb_merge_add */
    pb_record rec;    /* set when pb_merge_next returned 0 */
} pb_merge_item;

/* A merge with no sources. 0 or PB_ENOMEM. Free with pb_merge_free. */
int pb_merge_new(pb_merge **out);

/* Adds a source named `name` (copied), read with next(source, ...). The
 * caller keeps ownership of `source` and closes it after pb_merge_free.
 * May be called between pb_merge_next calls (e.g. a partition created while
 * following); the new source is read from the next call on. *index (may be
 * NULL) gets its index. 0 or PB_ENOMEM. */
int pb_merge_add(pb_merge *m, const char *name, pb_merge_next_fn next, void *source, size_t *index);

/* pb_merge_add for a pb_reader (pb_reader_next as the next function). */
int pb_merge_add_reader(pb_merge *m, const char *name, pb_reader *r, size_t *index);

/*
 * The record with the smallest (time, source name, source index) among the
 * sources' pending records.
 *   0            item filled; item->rec.event is valid until the next call.
 *   PB_EEOF      no source has a record right now (every idle source was
 *                asked again first). Without following, the merge is done.
 *   PB_ECORRUPT  source item->source reported damage (ask it for details,
 *                e.g. pb_reader_problem(item->ctx)); call again to go on.
 *   PB_EREMOVED  likewise, for offsets retention removed (not damage).
 *   other        source item->source failed with this code and was dropped;
 *                call again to go on with the others.
 */
int pb_merge_next(pb_merge *m, pb_merge_item *item);

/* Number of sources added. */
size_t pb_merge_count(const pb_merge *m);

/* Frees the merge (not the sources). NULL is allowed. */
void pb_merge_free(pb_merge *m);

#endif
