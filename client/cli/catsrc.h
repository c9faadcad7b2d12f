/*
 * catsrc - the inputs of `protobus cat`: every PATH on the command line
 * becomes one or more sources (a partition directory read with pb_reader, a
 * single segment file read with segfile, a file in the original
 * protobus-server layout read with pb_legacy), each with the range filters
 * applied (--from-offset, --from-time, --to-time), all fed into one
 * pb_merge so the output is ordered by receive time.
 *
 * What a PATH is:
 *   a file starting with "PROTOBUS"     one segment file; partition name =
 *                                       its directory's name
 *   any other file                      original protobus-server layout;
 *                                       partition name = the file's name
 *   a directory holding NNN.log files   a partition directory
 *   any other directory                 a data directory: every
 *                                       subdirectory is a partition, every
 *                                       *.pb file an original-layout file
 *
 * Threads: the CLI's main thread.
 */
#ifndef PB_CLI_CATSRC_H
#define PB_CLI_CATSRC_H

#include "legacy.h"
#include "merge.h"
#include "reader.h"
#include "segfile.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cat_filter {
    bool has_from_offset, has_from_time, has_to_time;
    uint64_t from_offset; /* per partition */
    int64_t from_time_ns;
    int64_t to_time_ns; /* a source stops at its first record after this */
    bool follow;
} cat_filter;

typedef enum cat_kind { CAT_PARTITION, CAT_SEGMENT, CAT_LEGACY } cat_kind;

typedef struct cat_source {
    cat_kind kind;
    char *path; /* the directory or file */
    char *name; /* partition name shown in the output */
    const cat_filter *filter;
    pb_reader *reader;
    segfile *seg;
    pb_legacy *legacy;
    bool done;     /* past --to-time: reads nothing more */
    size_t *ndone; /* the set's count of done sources */
} cat_source;

typedef struct cat_set {
    const cat_filter *filter;
    pb_merge *merge;
    cat_source **v;
    size_t n, cap;
    char **data_dirs; /* rescanned for new partitions while following */
    size_t ndata;
    size_t ndone;
    char **unlisted; /* subdirectories with segments that are not partitions, reported */
    size_t nunlisted;
} cat_set;

/* 0 or PB_ENOMEM. filter must outlive the set. */
int cat_set_init(cat_set *s, const cat_filter *filter);

/* Adds the source(s) for one PATH. On error prints a message naming the
 * path and returns a negative code (-ENOENT, PB_EFORMAT for an index file,
 * ...). */
int cat_set_add_path(cat_set *s, const char *path);

/* Adds partitions created in the data directories since they were last
 * looked at (for --follow). Returns how many were added, or a negative code
 * (already reported). */
int cat_set_rescan(cat_set *s);

/* The damage behind a source's last PB_ECORRUPT. */
const struct pb_reader_problem *cat_source_problem(const cat_source *src);

/* For --verify: checks the header of every segment file of a partition
 * source (the partition reader goes on past a damaged header without a
 * word, since records carry their own checks). Calls report for each bad
 * one; returns how many. */
size_t cat_source_check_headers(const cat_source *src,
                                void (*report)(void *ctx, const char *file, const char *why),
                                void *ctx);

void cat_set_free(cat_set *s);

#endif
