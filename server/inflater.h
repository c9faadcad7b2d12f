/*
 * inflater - the daemon's decompress-ahead thread: while a subscription's
 * replay sends the records of one block of a compressed segment, this
 * thread decompresses the next block (proto/zseg.c asks it through the
 * segment_ahead interface of proto/segment.h; proto/ starts no thread of
 * its own). A replay from compressed segments then uses two cores where a
 * plain one uses one: the decompression (about half of a compressed
 * replay's CPU) no longer adds to the sending.
 *
 * Never a wait for nothing: a task the thread has not begun when its
 * reader needs the block is taken back and the reader decompresses it
 * itself, and at most INFLATER_MAX_QUEUED tasks wait (beyond, start()
 * refuses and the reader works inline). So a busy inflater makes replays no
 * slower than without it. Nor an idle wait: while the thread runs the
 * block a reader needs, the reader takes back a later block it has not
 * begun (steal) and decompresses that one meanwhile; decompression is
 * the larger part of a compressed replay's CPU, so this is what keeps
 * both cores busy (tests/bench/NOTES.md, "Compression on a slower CPU").
 *
 * Threads: start/finish (through the segment_ahead table) from any reader
 * thread; the tasks run on the inflater's own thread. The store starts it
 * (store_open) and stops it after every partition and subscription closed.
 */
#ifndef PB_INFLATER_H
#define PB_INFLATER_H

#include "segment.h"

#define INFLATER_MAX_QUEUED 64

typedef struct inflater inflater;

/* Starts the thread. 0 or a negative code. */
int inflater_start(inflater **out);

/* The table readers use (segment_io.ahead); valid until inflater_stop. */
const segment_ahead *inflater_ahead(inflater *f);

/* Tasks run since the start (tests). */
uint64_t inflater_tasks_run(inflater *f);

/* Stops and joins the thread; no task may be queued or running (every
 * reader closed). NULL is fine. */
void inflater_stop(inflater *f);

#endif
