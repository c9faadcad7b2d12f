/*
 * follower - the hot standby's side of replication (`protobusd --follow
 * HOST:PORT`, `[server] follow`): one thread connects to the primary
 * (plain TCP, or TLS with follow_tls; with follow_user's credentials),
 * subscribes with Subscribe.replicate from this data directory's next
 * offsets (each partition from its last record, to compare the overlap),
 * and writes the records it receives through the partition writers as the
 * primary stored them: same offsets, same receive times, same bytes
 * (pub_batch.replica), synced per this daemon's fsync policy. After each
 * batch is durable it sends a ReplicaAck with the partitions' next offsets.
 * Partitions are created as they appear. Any disconnect: reconnect with
 * backoff (100 ms doubling to 5 s), resuming from the files. A primary
 * silent for 10 s gets a Ping; silent for 20 s, the connection is dropped
 * and made again (a vanished host sends no FIN).
 *
 * A partition whose content differs from the primary's (a record at the
 * same offset with other bytes or another time; the primary holding fewer
 * records than this standby; offsets the primary no longer has) stops
 * replicating, with an error in the log naming the partition and the
 * offset; nothing is ever overwritten. The other partitions go on.
 *
 * Threads: follower_start/stop on the main thread; the rest on the
 * follower's own thread.
 */
#ifndef PB_FOLLOWER_H
#define PB_FOLLOWER_H

#include "store.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct follower follower;

typedef struct follower_options {
    const char *primary;       /* HOST:PORT as configured (for messages) */
    const char *user;          /* Hello.user when the primary requires auth; NULL: none */
    const char *password;      /* its password; NULL: none */
    const char *password_file; /* or: read the password from this file's first line */
    bool tls;                  /* TLS to the primary (follow_tls) */
    const char *tls_ca;        /* PEM CA(s) for the primary's certificate; NULL: the system's */
    const char *tls_cert;      /* client certificate and key (mutual TLS); NULL: none */
    const char *tls_key;
    store *store;             /* where the records go */
    uint64_t max_frame_bytes; /* the largest frame accepted from the primary */
} follower_options;

/* Parses o->primary, reads the password file, loads the TLS files, and
 * starts the thread. 0, or PB_EINVAL (err names the setting, the address
 * or file, and what is wrong) or a start failure. The strings of o are
 * read here and by the thread: they must outlive it (the password is
 * copied). */
int follower_start(follower **out, const follower_options *o, char *err, size_t errlen);

/* Stops the thread (waiting for the batch in the writers), frees. NULL-safe. */
void follower_stop(follower *f);

#endif
