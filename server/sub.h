/*
 * sub - subscriptions: a bounded number of subscription threads that replay
 * history from the segment files (the store) and then tail a live queue
 * that the partition writers fill through the live fan-out (fanout.h).
 *
 * Threads: sub_start() runs on the loop thread; each subscription then runs
 * on a thread of its own, started for it and ended with it, which owns the
 * client socket (blocking writes with a deadline).
 */
#ifndef PB_SUB_H
#define PB_SUB_H

#include "subcaps.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fanout;
struct store;
typedef struct sub_registry sub_registry;

typedef struct sub_options {
    struct store *store;        /* the partitions (for history and end offsets) */
    struct fanout *live;        /* where the subscriptions' live queues register (fanout.h) */
    uint32_t threads;           /* max concurrent subscriptions (max_subscriptions), each on a
                                   thread of its own; <= fanout_slots(live) */
    uint64_t queue_bytes;       /* bound of each live queue */
    uint32_t write_deadline_ms; /* a subscriber that accepts nothing this long is dropped */
    uint32_t topic_history;     /* what the partitions keep per topic (for START_LAST_N) */
    /* What the client may still send on its subscribed connection (read
     * and answered, never buffered): frames over this close it. 0: 16 MiB. */
    uint64_t max_frame_bytes;
    /* Synchronous standby mode (standby.h): replication subscriptions
     * record their ReplicaAcks there. NULL: they are accepted, unused. */
    struct standby *standby;
    /* Caps on one Subscribe (subcaps.h); a field 0 means its default. */
    sub_caps caps;
    /* Subscriptions one client address may hold at once; 0: no such cap
     * (threads alone bounds them). */
    uint32_t max_per_address;
} sub_options;

/* PB_EINVAL if an option is missing or out of range (threads 0 or above the
 * fan-out's slots, queue_bytes < 64). The store and the fan-out must outlive
 * the registry. */
int sub_registry_create(sub_registry **out, const sub_options *opts);

/* Loop thread. Validates the Subscribe frame body (patterns compile, start
 * mode valid) and hands the connection to a thread of its own, which takes
 * ownership of fd (a blocking-capable dup the caller no longer uses), sends
 * Subscribed, Event frames and CaughtUp answering frame_id, and keeps
 * reading the connection: what the client sends later (Ping: Pong; Publish,
 * Subscribe: an Error) is answered there. pending[0..pending_len) are bytes
 * the caller already read after the Subscribe frame (copied; may be NULL):
 * they are read first. On failure returns a negative code, sets *grpc_code
 * (protobus.Code) and writes a message naming the problem into err; fd
 * stays the caller's. RESOURCE_EXHAUSTED when every slot is taken
 * (max_subscriptions), when the client's address holds max_per_address
 * subscriptions, or when no thread can be started. */
int sub_start(sub_registry *r, int fd, uint64_t frame_id, const uint8_t *subscribe, size_t len,
              const uint8_t *pending, size_t pending_len, int *grpc_code, char *err, size_t errlen);

/* Whose subscription it is (auth = required): the user's read rights,
 * whole-topic patterns (acl.h). The subscription's pattern set is
 * restricted with them (patterns_restrict), so every event it delivers, in
 * history, live, --last N or from a time, is one whose topic the user may
 * read, whatever patterns the client sent. The strings are only read
 * during the call. */
typedef struct sub_rights {
    const char *user;
    const char *const *allow;
    size_t nallow;
    const char *const *deny;
    size_t ndeny;
    /* The connection's TLS session (tls.h), NULL for plain TCP: the
     * subscription takes it with the socket on success (frees it when it
     * ends); on failure it stays the caller's. Also without a user. */
    struct tls_conn *tls;
} sub_rights;

/* sub_start for a user and/or a TLS connection: rights NULL is
 * sub_start. With a user (rights->user not NULL), one with no read right at
 * all is refused (PERMISSION_DENIED). */
int sub_start_as(sub_registry *r, const sub_rights *rights, int fd, uint64_t frame_id,
                 const uint8_t *subscribe, size_t len, const uint8_t *pending, size_t pending_len,
                 int *grpc_code, char *err, size_t errlen);

/* sub_start_as in two halves, for a caller that keeps the costly one off
 * its thread (net.c: libuv's pool, so that a Subscribe at the caps, ~50 ms
 * of protobuf unpacking and PCRE2/JIT compiling, never holds the loop).
 * sub_prepare unpacks, checks and compiles the request and restricts it to
 * the rights' read rights: any thread (it reads the registry's settings
 * and the store's partition list, nothing it changes); on failure *out is
 * NULL and *grpc_code / err say why. sub_launch, on the loop, does the
 * rest of sub_start_as with the prepared subscription, which it owns from
 * then on (freed on failure too); rights must be the same. A prepared
 * subscription that is not launched goes to sub_prepared_free. */
struct sub;
int sub_prepare(sub_registry *r, const sub_rights *rights, const uint8_t *subscribe, size_t len,
                struct sub **out, int *grpc_code, char *err, size_t errlen);
int sub_launch(sub_registry *r, struct sub *s, const sub_rights *rights, int fd,
               uint64_t frame_id, const uint8_t *pending, size_t pending_len, int *grpc_code,
               char *err, size_t errlen);
void sub_prepared_free(struct sub *s);

/* A fingerprint of rights' read rights (user, allow and deny lists), to
 * tell whether a reload changed them. */
uint64_t sub_rights_fingerprint(const sub_rights *rights);

/* Ends every running subscription of a user for which still_allowed(ctx,
 * user, fingerprint) is false (a reload removed the user or changed its
 * read rights): its socket is shut down, the client may subscribe again
 * under the new rights. Anonymous subscriptions are not asked. Returns how
 * many were ended. Any thread. */
uint32_t sub_registry_end_users(sub_registry *r,
                                bool (*still_allowed)(void *ctx, const char *user,
                                                      uint64_t fingerprint),
                                void *ctx);

/* Number of subscriptions running (any thread). */
uint32_t sub_registry_active(sub_registry *r);

/* Any thread; for tests and diagnostics. Waits until exactly `active`
 * subscriptions are running and `tailing` of them have replayed their
 * history and written it to their socket (they follow the live stream now),
 * or timeout_ms passes.
 * Returns 0 or PB_ETIMEDOUT. */
int sub_registry_wait(sub_registry *r, uint32_t active, uint32_t tailing, uint32_t timeout_ms);

/* Ends every subscription (closing their sockets, removing their queues
 * from the fan-out) and waits for their threads; sub_start refuses from then
 * on (UNAVAILABLE). Call it before store_close, since subscriptions read the
 * partitions. */
void sub_registry_stop(sub_registry *r);

/* sub_registry_stop if not done yet, then frees the registry. NULL-safe. */
void sub_registry_destroy(sub_registry *r);

#endif
