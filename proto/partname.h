/*
 * partname - what a partition name is, and so which directories of a data
 * directory are partitions. One rule, applied by every side:
 *
 *   the daemon's config check  a [partition NAME] template (its literal
 *                              characters; a static name as a whole),
 *   the router                 a name a capture-group template produced,
 *   the store at start-up      which subdirectories of data_dir it opens,
 *   pb_partition_list and      which subdirectories of a data directory
 *   `protobus cat`             they read.
 *
 * A partition name is 1..PB_PARTITION_NAME_MAX bytes of A-Z a-z 0-9 . _ -
 * that does not start with '.'. A partition directory is a subdirectory of
 * a data directory whose name is a partition name. So a name the daemon
 * may create is a name every reader lists, and no other: "." and "..",
 * and names a directory listing hides, cannot be partitions.
 *
 * Threads: pure functions.
 */
#ifndef PB_PARTNAME_H
#define PB_PARTNAME_H

#include <stdbool.h>
#include <stddef.h>

#define PB_PARTITION_NAME_MAX 100

/* The rule in words, for messages (keep in step with partname_valid). */
#define PARTNAME_RULE "1..100 characters of A-Z a-z 0-9 . _ -, not starting with \".\""

/* True if ch may appear in a partition name. */
bool partname_char_ok(char ch);

/* True if name[0..len) is a partition name (need not be NUL-terminated;
 * a NUL inside makes it invalid). */
bool partname_valid(const char *name, size_t len);

#endif
