/*
 * bench_tcpfile - the durable receiver of `protobus bench tcp --to-file
 * DIR` (bench_tcpfile.c): the socket-to-disk baseline of the publish rows.
 * What it receives from a socket it writes into a temp file in DIR and
 * makes durable the way protobusd does, with none of its work per event:
 * the reading thread fills 1 MiB buffers; a writer thread takes every
 * filled buffer queued, writes each (one write(2) per MiB; with O_DIRECT if
 * asked, as protobusd's direct_write_bytes) and fdatasyncs
 * them together (group commit), lets the synced pages leave the page cache
 * (as protobusd does past page_cache_bytes), then gives the buffers back. At most
 * commit_bytes of buffers exist (what protobusd lets be in flight to its
 * writers), so a slow disk stops the reader as it stops the daemon's loop.
 * No framing, no CRC, no index. The file is removed at the end.
 *
 * Threads: the caller's (reading) thread and one writer thread, sharing
 * the queue under a mutex.
 */
#ifndef PB_CLI_BENCH_TCPFILE_H
#define PB_CLI_BENCH_TCPFILE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct tcpfile tcpfile;

/* Creates the temp file in dir, the buffers and the writer thread. direct:
 * whole blocks are written with O_DIRECT (the buffers are aligned; a last
 * partial block goes through an ordinary descriptor), as protobusd's
 * direct_write_bytes does. 0 with *out, or a negative code after reporting
 * it. */
int tcpfile_open(const char *dir, uint64_t commit_bytes, bool direct, tcpfile **out);

/* Reads exactly bytes from rfd into the file. 0 once every byte is written
 * and durable; else a negative code, with *file_failed true when the file
 * failed (reported here; a socket error is the caller's to report). */
int tcpfile_receive(tcpfile *f, int rfd, uint64_t bytes, bool *file_failed);

/* The fdatasyncs done; the file's path. */
uint64_t tcpfile_syncs(const tcpfile *f);
const char *tcpfile_path(const tcpfile *f);

/* Stops the writer, removes the file, frees f. NULL-safe. 0, or the error
 * of the file's close. */
int tcpfile_close(tcpfile *f);

#endif
