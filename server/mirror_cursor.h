/*
 * mirror_cursor - a mirror's durable cursor file: per partition, the offset
 * below which JetStream has acknowledged every event, so a restarted
 * mirror goes on from there (proto/FORMAT.md, Part E, gives the layout).
 *
 *   <data_dir>/mirror@<NAME>.cursor
 *
 * ('@' is not allowed in partition names, so the file can never be taken
 * for a partition's directory; `protobus cat` ignores it too.)
 *
 * Saving writes a temp file beside it, fdatasyncs it, renames it over the
 * old one and fsyncs the directory: after a crash or a power loss the file
 * is the old one or the new one, whole; never a mix. All I/O goes through
 * a fileio table (server/fileio.h), so the power-loss simulation
 * (tests/lib/simio) covers it.
 *
 * Threads: no state of its own; the mirror's thread saves, the main thread
 * loads at start-up.
 */
#ifndef PB_MIRROR_CURSOR_H
#define PB_MIRROR_CURSOR_H

#include "fileio.h"

#include <stddef.h>
#include <stdint.h>

/* What a cursor file holds. */
typedef struct mirror_cursors {
    char *stream;       /* the stream the offsets were shipped to */
    uint64_t acked_seq; /* the stream sequence of the last message acknowledged in send
                           order: whatever was sent later was stored after it, if at all
                           (the scan after a restart starts there) */
    /* Where the scan after a restart reads from when below acked_seq + 1:
     * a copy found stored out of offset order (0: none). */
    uint64_t order_from;
    char **partitions; /* sorted by name */
    uint64_t *offsets; /* offsets[i]: next offset of partitions[i] to ship */
    /* Optional (NULL: none known): the stream sequence of partitions[i]'s
     * newest offset acknowledged in order, and that offset (seqs[i] = 0:
     * not known). */
    uint64_t *seqs, *seq_offsets;
    size_t count;
} mirror_cursors;

/* data_dir/mirror@name.cursor into out. 0, or PB_ETOOBIG. */
int mirror_cursor_path(char *out, size_t cap, const char *data_dir, const char *name);

/* Reads and checks the file at path. 0; PB_ENOTFOUND if there is none;
 * PB_EFORMAT (why names the line and the problem) if it is damaged or not
 * a cursor file of this mirror; PB_ENOMEM; a negated errno. On success the
 * caller frees *out with mirror_cursors_free. */
int mirror_cursor_load(const fileio *io, const char *path, const char *name, mirror_cursors *out,
                       char *why, size_t whylen);

/* Writes c to path durably (temp file, fdatasync, rename, directory
 * fsync; dir is path's directory). Partitions must be sorted by name and
 * valid partition names. 0, or a negative code with why naming the step. */
int mirror_cursor_save(const fileio *io, const char *dir, const char *path, const char *name,
                       const mirror_cursors *c, char *why, size_t whylen);

void mirror_cursors_free(mirror_cursors *c);

#endif
