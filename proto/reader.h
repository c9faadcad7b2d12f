/*
 * reader - reads a partition's segment files (reader.c). Its API is public,
 * declared in protobus_reader.h; the daemon's and the CLI's readers also use
 * the record codec, which this internal header adds.
 */
#ifndef PB_READER_H
#define PB_READER_H

#include "protobus_reader.h"
#include "record.h"

#include <stddef.h>

/* pb_partition_list, and more: the partition directories of data_dir
 * (subdirectories whose names are partition names, partname.h), sorted by
 * name, in *names; and, if skipped is not NULL, the other subdirectories
 * that hold files named like segments, sorted, in *skipped (free both with
 * pb_partition_list_free). Those hold data no reader lists (say, a
 * directory renamed by hand, or written by a daemon that allowed such
 * names), so the daemon and `protobus cat` report them instead of skipping
 * them silently. PB_ENOTFOUND if data_dir does not exist. */
int partition_dirs_scan(const char *data_dir, char ***names, size_t *count, char ***skipped,
                        size_t *nskipped);

#endif
