/*
 * follower_internal - the state follower.c (the session),
 * follower_conn.c (the connection), follower_batch.c (records checked and
 * gathered) and follower_write.c (batches through the writers) share. Internal to the
 * follower: nothing else includes it. Everything here belongs to the
 * follower's thread, except `stopping` and the batch's pending count and
 * lock (the partition writers complete the batch's parts).
 */
#ifndef PB_FOLLOWER_INTERNAL_H
#define PB_FOLLOWER_INTERNAL_H

#include "broker.h"
#include "follower.h"
#include "hostport.h"
#include "partname.h"
#include "protobus.pb-c.h"

#include <openssl/ssl.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One partition as the standby knows it. */
typedef struct fpart {
    char name[PB_PARTITION_NAME_MAX + 1];
    partition *p;
    uint64_t next; /* the next offset expected from the primary */
    bool stopped;  /* diverged or failed: its records are dropped, it is never overwritten */
    bool touched;  /* written by the current batch (to ack) */
} fpart;

/* A record of the current batch (slices of the read buffer). */
typedef struct frec {
    uint32_t part; /* index into parts */
    uint64_t offset;
    int64_t time_ns;
    const uint8_t *data, *topic;
    uint32_t len, topic_len;
    const uint8_t *id; /* EncapsulatedEvent.id (id_len bytes, at most 64), or NULL */
    uint8_t id_len;
    bool sealed; /* from a Records run: its header (as the primary sealed it) precedes data */
} frec;

/* The batch with the partition writers (follower_write.c). */
typedef struct finflight {
    bool active;       /* submitted, not finished */
    pub_batch b;       /* its events and parts */
    uint32_t *idx;     /* the parts' event indexes */
    uint32_t *kof;     /* part p is of f->parts[kof[p]] */
    uint32_t *map;     /* f->parts index -> part (building) */
    size_t ecap, pcap; /* of events and idx; of parts, kof and map */
    uint8_t *buf;      /* the read buffer its records point into; when none is
                          active, the spare buffer for the next swap */
    size_t cap;
} finflight;

struct follower {
    follower_options o;
    hostport hp;
    pthread_t thread;
    int stop_fd; /* eventfd: follower_stop wakes the thread */
    atomic_bool stopping;
    int fd;         /* the connection to the primary (non-blocking), -1 between sessions */
    SSL_CTX *tls;   /* follow_tls: the client context; NULL: plain TCP */
    SSL *ssl;       /* the session's TLS, NULL: plain TCP or between sessions */
    char *password; /* follow_password or the first line of follow_password_file; NULL: none */
    uint32_t backoff_ms;
    bool down_logged; /* "cannot connect" logged until a connection succeeds */
    bool got_frame;   /* the session's primary sent a frame */
    uint8_t *buf;     /* bytes read from the primary: [pos, len) not parsed yet */
    size_t cap, len, pos;
    size_t need; /* the incomplete frame at pos needs this many bytes (0: unknown) */
    fpart *parts;
    size_t nparts, partcap;
    size_t last_part; /* look-up cache */
    /* The batch being gathered (records in buf). */
    frec *recs;
    size_t nrecs, reccap;
    finflight fl;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    unsigned pending;   /* mu: parts not yet done */
    int done_fd;        /* eventfd: the writers finished the batch */
    char why_full[200]; /* a partition that could not store for lack of space */
};

/* follower.c */
/* A ReplicaAck of po[0..n) (partition, next offset). */
int follower_send_ack(follower *f, Protobus__PartitionOffset *po, size_t n);

/* follower_conn.c */
/* The password (read from follow_password_file) and the TLS context: 0,
 * or a negative code with err naming the setting and the file. */
int follower_conn_setup(follower *f, char *err, size_t errlen);
void follower_conn_teardown(follower *f);
/* Waits up to ms for fd (events) or the stop eventfd (fd -1: that alone).
 * 1 ready, 0 timeout, PB_ECLOSED stopping. */
int follower_wait_fd(follower *f, int fd, short events, int ms);
/* Connects f->fd (and TLS). 0, or a negative code with why set. */
int follower_connect(follower *f, char *why, size_t n);
void follower_disconnect(follower *f);
/* Writes it all (waiting, stoppable, at most 20 s without progress). */
int follower_send(follower *f, const void *buf, size_t len);
/* Reads what is there, up to cap: > 0 bytes, 0 nothing yet, PB_ECLOSED
 * (why says how). */
long follower_recv(follower *f, uint8_t *buf, size_t cap, char *why, size_t n);
/* Decrypted bytes wait inside TLS (poll would not see them). */
bool follower_recv_pending(const follower *f);

/* follower_batch.c */
/* Adds the store's partitions not known yet, each at its end offset. */
int follower_load_parts(follower *f);
/* Subscribed's entry for a partition: stops it if this standby holds
 * records the primary does not, or the primary no longer has the next. */
void follower_check_position(follower *f, const char *name, uint64_t first, uint64_t end);
void follower_stop_part(follower *f, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* An Event frame's body: into the batch, compared (an overlap), or
 * dropped (a stopped partition). 0, or a negative code ending the session. */
int follower_on_event(follower *f, const uint8_t *body, size_t len, char *why, size_t n);
/* A Records frame's body (FORMAT.md 4.11): the run is checked whole (each
 * record's length and CRC, consecutive offsets), then each record goes as
 * an Event's would, its header kept to be written as it is. A damaged run:
 * PB_ECORRUPT (why names the partition and the record), ending the
 * session. */
int follower_on_records(follower *f, const uint8_t *body, size_t len, char *why, size_t n);

/* follower_write.c */
int follower_batch_init(follower *f);
void follower_batch_free(follower *f);
int follower_grow(follower *f, size_t need);
/* Hands the gathered records to the writers unless a batch is with them;
 * the read buffer becomes the other one. 0, or PB_ENOMEM (why set). */
int follower_batch_submit(follower *f, char *why, size_t n);
/* Is the batch with the writers done (without waiting)? */
bool follower_batch_done(follower *f);
/* Waits for the batch with the writers, acknowledges it, stops the
 * partitions that failed. 0 (also when none), or a negative code ending
 * the session (why set). */
int follower_batch_finish(follower *f, char *why, size_t n);

#endif
