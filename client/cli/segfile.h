/*
 * segfile - reads ONE segment file (.log) on its own, for `protobus cat`
 * given a file rather than a partition directory (a copy, a backup, a file
 * with another name). Checks the file header and every record (length, CRC,
 * consecutive offsets) and reports damage with the byte position; skips to
 * the next record that verifies.
 *
 * The partition reader (proto/reader.h) is the tool for directories: it
 * follows rotation and uses the .idx files. This one knows nothing about
 * neighbouring segments.
 *
 * Threads: a segfile is used by one thread at a time (the CLI's main thread).
 */
#ifndef PB_CLI_SEGFILE_H
#define PB_CLI_SEGFILE_H

#include "reader.h"
#include "record.h"

#include <stdbool.h>

typedef struct segfile segfile;

/* Opens path. follow: the file may still be growing, so a record cut short
 * at its end is "not written yet" (PB_EEOF) rather than damage.
 * 0, PB_EINVAL (path too long), PB_ENOMEM or a negated errno. */
int segfile_open(segfile **out, const char *path, bool follow);

/* Same contract as pb_reader_next: 0 (rec valid until the next call),
 * PB_EEOF, PB_ECORRUPT (segfile_problem says what; call again to go on),
 * or a negated errno / PB_ENOMEM. */
int segfile_next(segfile *f, pb_record *rec);

const struct pb_reader_problem *segfile_problem(const segfile *f);

/* NULL is allowed. */
void segfile_close(segfile *f);

#endif
