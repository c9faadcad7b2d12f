/*
 * hostile - the harness of the isolation suite (issue 10): while a test
 * runs an attack against the real daemon, an honest publisher (one event per
 * Publish, each ack awaited and timed) and a probe (a new connection with a
 * Hello every 0.5 s) run beside it on their own thread, and the daemon's
 * memory is read from /proc. Afterwards every event the honest publisher
 * (or the attack) got acknowledged is checked: present, at its partition and
 * offset, with its topic (a full read with pb_reader), and `protobus cat
 * --verify` of the data directory is clean.
 *
 * Every wait is bounded; nothing here stops the daemon (the test does, by PID).
 */
#ifndef PB_HOSTILE_H
#define PB_HOSTILE_H

#include "itest.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One acknowledged event: where it went, and its topic. */
typedef struct hostile_acked {
    char partition[104];
    uint64_t offset;
    char topic[64];
} hostile_acked;

typedef struct hostile_acked_list {
    hostile_acked *v;
    size_t n, cap;
} hostile_acked_list;

/* Adds one; aborts the test program when out of memory. */
void hostile_acked_add(hostile_acked_list *l, const char *partition, uint64_t offset,
                       const char *topic);
void hostile_acked_free(hostile_acked_list *l);

/* Whether the daemon's RSS means anything in this build: sanitizers'
 * shadow memory and quarantine of freed blocks inflate it by hundreds of
 * MiB, so RSS bounds are asserted in plain builds only (and printed in all). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define HOSTILE_RSS_CHECKED 0
#else
#define HOSTILE_RSS_CHECKED 1
#endif

typedef struct hostile_honest {
    uint16_t port;
    bool running; /* the test thread's: started and not yet stopped */
    char topic[64];
    pthread_t thread;
    atomic_int stop; /* set by hostile_honest_stop */
    /* Results, read after hostile_honest_stop. */
    hostile_acked_list acked;
    uint64_t max_ack_ms;    /* slowest ack */
    uint64_t errors;        /* publishes answered with an Error, or not at all in 10 s */
    uint64_t probes;        /* probe connections tried */
    uint64_t probes_failed; /* not connected, or no Hello answer within 5 s */
    uint64_t max_probe_ms;
} hostile_honest;

/* Starts the honest publisher and the probe against 127.0.0.1:port,
 * publishing to `topic` (distinct payloads). 0 or -1. */
int hostile_honest_start(hostile_honest *h, uint16_t port, const char *topic);

/* Stops it and joins its thread; does nothing if it is not running (so a
 * test's teardown may call it after a failed assertion left it running). */
void hostile_honest_stop(hostile_honest *h);

/* Stops it, prints its figures and checks them: something acknowledged,
 * no publish failed, no probe failed and, when ack_budget_ms > 0 and the
 * build has no sanitizer (they slow the daemon tenfold), no ack slower. */
void hostile_honest_check(hostile_honest *h, uint64_t ack_budget_ms);

/* Stops d, restarts it (recovery over what it wrote) and stops it again;
 * then `protobus cat --verify` finds its data clean (the output into out,
 * and printed) and every event h acknowledged is there. */
void hostile_check_durable(itest_daemon *d, const hostile_honest *h, char *out, size_t outlen);

/* VmRSS and VmHWM (peak) of pid, in KiB; -1 when unreadable. */
long hostile_rss_kb(pid_t pid);
long hostile_peak_kb(pid_t pid);

/* Open descriptors and threads of pid, from /proc; -1 when unreadable. */
long hostile_fd_count(pid_t pid);
long hostile_thread_count(pid_t pid);

/* Runs `protobus cat --verify DATA_DIR` ($BUILD/protobus). Returns its exit
 * status (0: every record checked clean), -1 if it could not run. Its output
 * goes to out (NULL: discarded). Where the build has no CLI (the TSan
 * build), the same checks run here with pb_reader (every record's CRC and
 * offset, every event's encoding) and print the same summary line. */
int hostile_cat_verify(const char *data_dir, char *out, size_t outlen);

/* Reads every listed event back with pb_reader from data_dir/<partition>
 * and checks its offset and topic. Returns the number missing or wrong (each
 * printed), 0 when all are there. */
size_t hostile_check_acked(const char *data_dir, const hostile_acked_list *l);

/* Publishes raw frame bytes on a new connection (after its Hello) and waits for one reply.
 * Returns the reply (free with protobus__frame__free_unpacked), NULL on
 * timeout or close. */
Protobus__Frame *hostile_send_frame_bytes(uint16_t port, const uint8_t *frame, size_t len,
                                          int timeout_ms);

/* Appends the varint v to buf at *at; returns the bytes written. */
size_t hostile_put_varint(uint8_t *buf, uint64_t v);

#endif
