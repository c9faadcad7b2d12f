/*
 * subharness - the subscription tests' harness (tests/unit/test_sub.c,
 * test_sub_live.c, test_sub_end.c): a real store with real partitions
 * (writer threads, segment files in a temp dir) fanning out to the
 * registry. The test thread plays the loop thread (partition_submit,
 * sub_start) and the client, reading the subscription's socket (one end of
 * a socketpair) and decoding every frame with protobuf-c.
 *
 * Events are numbered by a global seq: event seq has topic t<seq%3>, tags
 * env=prod|dev (odd|even) and region=us|eu (seq%5==0 or not), payload_size
 * = seq, plus f->pad payload bytes. The fixture remembers where each one
 * was stored (part_of, offset_of), so sh_expect_seq checks a delivered
 * event against it.
 *
 * Waits are on conditions (done callbacks, sub_registry_wait, poll on the
 * socket) with generous bounds that are never reached when things work.
 */
#ifndef PB_TEST_SUBHARNESS_H
#define PB_TEST_SUBHARNESS_H

#include "fanout.h"
#include "protobus.pb-c.h"
#include "store.h"
#include "sub.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WAIT_MS  30000 /* bound on every wait; never reached when it works */
#define MAX_SEQ  8192
#define FRAME_ID 77
#define SEC      1000000000LL

/* The fixture: store + registry. */
typedef struct sh_fixture {
    char root[64];
    store *st;
    fanout *live;
    sub_registry *reg;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    _Atomic int64_t clock_ns; /* receive times when use_clock */
    bool use_clock;
    size_t pad;   /* extra payload bytes per event */
    uint64_t seq; /* next event number (payload_size) */
    char part_of[MAX_SEQ][16];
    uint64_t offset_of[MAX_SEQ];
} sh_fixture;

/* The client side: one subscription's socket and what came on it. */
typedef struct sh_client {
    int fd;
    uint8_t *buf;
    size_t len, cap;
    /* Protocol v1's confirmations, seen on the way (sh_next_item checks
     * their order: Subscribed before anything, CaughtUp at most once). */
    bool subscribed;
    int caught_up;
    uint64_t history_events; /* CaughtUp's count */
    size_t events_before_caught_up;
    size_t events;
} sh_client;

/* One frame after the confirmations: an event or an Error. */
typedef struct sh_item {
    bool is_error;
    char part[32];
    uint64_t offset;
    int64_t seq;
    char topic[16];
    size_t payload_len;
    int code;
    uint64_t first, last;
    char msg[512];
} sh_item;

/* cmocka's setup and teardown: *state is an sh_fixture (a temp root, the
 * store open, fsync never); teardown destroys what sh_start created. */
int sh_setup(void **state);
int sh_teardown(void **state);
/* Creates the fan-out (before any partition, which announces into it) and
 * the registry: `threads` subscription threads, live queues of queue_bytes
 * each (queue_total_bytes for all; 0 = no shared budget). */
void sh_start_total(sh_fixture *f, uint32_t threads, uint64_t queue_bytes,
                    uint64_t queue_total_bytes, uint32_t deadline_ms);
void sh_start(sh_fixture *f, uint32_t threads, uint64_t queue_bytes, uint32_t deadline_ms);

/* Event seq's topic and whether it has env=prod and region=eu. */
const char *sh_topic_of(uint64_t seq);
bool sh_tags_prod_eu(uint64_t seq);
/* Publishes n events to partition `name` as one batch and waits until it
 * is stored. Returns the first seq. */
uint64_t sh_publish(sh_fixture *f, const char *name, size_t n);

/* Starts a subscription (sub_start must accept it) on a new socketpair. */
sh_client *sh_subscribe(sh_fixture *f, const Protobus__Subscribe *req);
/* sub_start must refuse: returns its code; err receives the message. */
int sh_subscribe_refused(sh_fixture *f, const uint8_t *body, size_t len, char *err, size_t errlen);
int sh_refused_req(sh_fixture *f, const Protobus__Subscribe *req, char *err, size_t errlen);
void sh_client_close(sh_client *c);
/* Reads the next frame; false on end of stream. Fails the test on timeout. */
bool sh_next_item(sh_client *c, sh_item *it);
/* The next item must be the event of seq (partition and offset as stored). */
void sh_expect_seq(sh_fixture *f, sh_client *c, uint64_t seq);
/* Waits until the registry has `active` subscriptions, `tailing` of them live. */
void sh_wait_subs(sh_fixture *f, uint32_t active, uint32_t tailing);
Protobus__Subscribe sh_sub_req(char **patterns, size_t n, Protobus__StartMode start);
extern char *sh_all_topics[1]; /* {".*"} */

#endif
