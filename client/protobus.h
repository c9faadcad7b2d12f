/*
 * libprotobus - the Protobus client library. This is the only header a
 * library user includes (with pkg-config: `pkg-config --cflags --libs protobus`);
 * C and C++ alike. The public API is every function declared PB_API here and
 * in the protobus_*.h headers included below; the library exports nothing
 * else.
 *
 * A pb_client is one TCP connection to protobusd, speaking protocol
 * version 1 (proto/FORMAT.md Part A, section 7; a server that does not is
 * refused with a message saying so). It either publishes
 * (pb_client_publish / pb_client_flush, batched and pipelined) or, after
 * pb_client_subscribe, is dedicated to one subscription that pb_client_next
 * iterates. Segment files can also be read without a server: see the
 * pb_reader_* functions at the end of this header.
 *
 * Errors: every function that can fail returns 0 or a negative code from
 * protobus_errors.h (PB_E* or a negated errno value); pb_strerror(code)
 * names it.
 * pb_client_message() gives the text describing the last failure on a
 * client (including the server's own message for PB_ESERVER).
 *
 * Threads: no global state. A pb_client must be used by one thread at a time
 * (different clients in different threads are independent). Callbacks run on
 * the thread that called into the library.
 *
 * Memory: the library allocates while connecting and grows a few reusable
 * buffers up to the largest batch/frame seen; it does not allocate per
 * event once warmed up. Pointers the library hands out stay valid until the
 * call named next to them; the caller never frees them.
 */
#ifndef PROTOBUS_H
#define PROTOBUS_H

/* The rest of the public API; each is C++-safe on its own. */
#include "protobus_errors.h"  /* PB_E*, pb_strerror, PB_CODE_*, pb_code_name */
#include "protobus_reader.h"  /* pb_reader_*: segment files without a server */
#include "protobus_version.h" /* PB_VERSION_*, pb_version, PB_API */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Server Error frames carry a protobus.Code: enum pb_code (PB_CODE_*) and
 * pb_code_name() are in protobus_errors.h, included above. */

/* Wall clock (CLOCK_REALTIME) in nanoseconds since the Unix epoch. */
PB_API int64_t pb_time_now_ns(void);

typedef struct pb_client pb_client;

/* One tag (map<string,string> entry). Both strings NUL-terminated UTF-8. */
typedef struct pb_tag {
    const char *key;
    const char *value;
} pb_tag;

/* ------------------------------------------------------------------------ */
/* Connecting                                                                */

/* Where each published event ended up (or why it did not). */
typedef struct pb_position {
    /* Partition name, NUL-terminated; NULL when status != 0. Owned by the
     * client, valid until pb_client_close. */
    const char *partition;
    uint64_t offset;
    int status; /* 0 = stored (durable under the server's policy), else PB_ESERVER/PB_E* */
    /* status 0 and true: the event carried an id (pb_client_publish_id)
     * that the server had already stored within its dedup window; it was
     * not stored again, and partition/offset are the original's. */
    bool duplicate;
} pb_position;

/* The outcome of one Publish batch, given to pb_client_options.on_ack. */
typedef struct pb_batch_result {
    uint64_t frame_id;    /* the batch's frame id */
    uint64_t first_event; /* publish sequence number of its first event (see pb_client_publish) */
    size_t count;         /* events in the batch */
    int status;           /* 0 = acked; PB_ESERVER = refused (see error); PB_ECLOSED etc. */
    int code;             /* protobus.Code of the server's Error (0 when acked) */
    const char *message;  /* the server's message ("" when acked) */
    const pb_position *positions; /* count entries, in publish order */
} pb_batch_result;

/* The server's description of a refused request (an Error frame). Strings
 * are owned by the client and valid until the next call on it. */
typedef struct pb_server_error {
    int code;                   /* protobus.Code, e.g. PB_CODE_INVALID_ARGUMENT */
    const char *message;        /* the server's text, NUL-terminated */
    uint64_t frame_id;          /* the request it answers (0: the connection as a whole) */
    const char *partition;      /* DATA_LOSS / failed publish: the partition, or "" */
    uint64_t first_offset;      /* DATA_LOSS: first offset that could not be read */
    uint64_t last_offset;       /* DATA_LOSS: last offset that could not be read */
    bool about_event;           /* the error concerns one event of a batch ... */
    uint64_t event;             /* ... whose publish sequence number is this */
    uint32_t event_in_batch;    /* ... and its index inside the batch */
    uint64_t batch_first_event; /* publish: sequence number of the batch's first event */
    size_t batch_count;         /* publish: events in the batch (0 if not a publish) */
    /* FAILED_PRECONDITION of an expectation (pb_client_expect_last): the
     * topic, what the publisher expected and what the topic has (`*_none`:
     * no events; else its last offset). has_expect false otherwise. */
    bool has_expect;
    const char *expect_topic; /* "" without has_expect */
    bool expected_none, actual_none;
    uint64_t expected_offset, actual_offset;
} pb_server_error;

typedef struct pb_client_options {
    /* Bounds connecting (every resolved address together) and the Hello
     * exchange. Default 5000. */
    uint32_t connect_timeout_ms;
    /* Bounds each blocking step of publishing: writing a batch into the
     * socket, waiting for room in the in-flight window. Default 30000.
     * pb_client_flush has its own timeout argument. */
    uint32_t io_timeout_ms;
    /* A batch is sent when its encoded events reach batch_bytes (default
     * 512 KiB; lowered to fit the server's max_frame_bytes) or batch_events
     * events (default 1000; lowered to the max_batch_events the server's
     * Hello announces). */
    size_t batch_bytes;
    uint32_t batch_events;
    /* Batches sent and not yet acknowledged; publishing waits for acks
     * beyond this. Default 64. */
    uint32_t max_in_flight;
    /* true: ask the server not to acknowledge (Publish.no_ack). Errors still
     * arrive; pb_client_flush then only sends and reports no positions. */
    bool no_ack;
    /* false (default): pb_client_flush returns the position of every event
     * published since the previous flush, which costs 24 bytes per event
     * until that flush. true: positions are only given to on_ack. */
    bool no_positions;
    /* Optional: called once per batch when its PublishAck or Error arrives
     * (from inside pb_client_publish/flush/close, on the caller's thread).
     * The result and everything it points to are valid during the call only.
     * The callback must not call into the same client. */
    void (*on_ack)(void *ctx, const pb_batch_result *result);
    void *on_ack_ctx;
    /* Free text sent in Hello.name; default "libprotobus " PB_VERSION_STRING. */
    const char *name;
    /* Credentials for a server with `auth = required`, sent in the Hello
     * (NULL: none, anonymous). Read during pb_client_connect only (not
     * kept). A refusal is PB_ESERVER with UNAUTHENTICATED, after the
     * server's delay. Send a password over TLS or loopback only. */
    const char *user;
    const char *password;
    /* TLS (TLS 1.2 at least; also chosen by an address "tls://host:port"):
     * the server's certificate is verified against tls_ca (PEM; NULL: the
     * system's CAs) and must name the host or IP address connected to.
     * tls_cert and tls_key (PEM): a client certificate, for a server that
     * requires one (its CN may name the user: no password needed). The
     * files are read during pb_client_connect only. A failed handshake is
     * PB_ECONNECT naming OpenSSL's reason. */
    bool tls;
    const char *tls_ca;
    const char *tls_cert;
    const char *tls_key;
} pb_client_options;

/* Fills *opts with the defaults (0/NULL fields also mean "default"). */
PB_API void pb_client_options_init(pb_client_options *opts);

/*
 * Connects to `address` ("host:port", "1.2.3.4:port", "[::1]:port"; host
 * may be a name, every resolved address is tried in turn) and exchanges
 * Hello (protocol version 1), learning the server's limits.
 * opts may be NULL (defaults); it is copied. On success *out owns the
 * connection; free it with pb_client_close.
 * Errors: PB_EINVAL (malformed address or option), PB_ECONNECT (cannot
 * resolve or connect), PB_ETIMEDOUT (connecting or Hello took longer than
 * connect_timeout_ms), PB_ECLOSED (server closed during Hello), PB_EPROTO
 * (the answer was not a Hello, or a Hello of another protocol version),
 * PB_ESERVER (the server refused with an Error, e.g. FAILED_PRECONDITION
 * for a protocol version it does not speak), PB_ENOMEM. On failure *out is
 * NULL and err (if not NULL and errlen > 0) describes it, naming the
 * address.
 */
PB_API int pb_client_connect(pb_client **out, const char *address, const pb_client_options *opts,
                             char *err, size_t errlen);

/*
 * Closes the connection and frees the client and everything it handed out.
 * Batches not yet flushed are NOT sent and acks not yet received are lost:
 * call pb_client_flush first to be sure. Always succeeds; NULL is a no-op.
 */
PB_API void pb_client_close(pb_client *c);

/* The server's limits from its Hello (0 if it gave none). */
PB_API uint64_t pb_client_max_frame_bytes(const pb_client *c);
PB_API uint64_t pb_client_max_event_bytes(const pb_client *c);
/* The server's Hello.name, NUL-terminated, valid until pb_client_close. */
PB_API const char *pb_client_server_name(const pb_client *c);

/* Text describing the last failure of a call on c (the server's message
 * for PB_ESERVER); "" if none. Valid until the next call on c. */
PB_API const char *pb_client_message(const pb_client *c);

/* The last server Error frame received (NULL if none yet). Valid until the
 * next call on c. */
PB_API const pb_server_error *pb_client_server_error(const pb_client *c);

/* ------------------------------------------------------------------------ */
/* Publishing                                                                */

/* One event to publish. The library copies (encodes) it before returning:
 * the caller keeps ownership of every pointer. */
typedef struct pb_event {
    const char *topic;  /* required: non-empty UTF-8, <= 255 bytes, no whitespace */
    const pb_tag *tags; /* ntags entries (may be NULL when ntags == 0) */
    size_t ntags;
    /* When the event happened, ns since the epoch. 0 = absent: the field is
     * not sent (pass pb_time_now_ns() to stamp the current time). */
    int64_t client_event_time_ns;
    const char *payload_type; /* Any.type_url, e.g. "type.googleapis.com/my.Msg"; NULL = "" */
    const void *payload;      /* payload_len bytes (may be NULL when 0) */
    size_t payload_len;
} pb_event;

/*
 * Adds one event to the current batch (encoding it into the client's
 * reusable batch buffer). The batch is sent when it reaches its size or
 * count limit; the library also reads acks that have arrived, without
 * blocking, and waits (at most io_timeout_ms) only when the socket is full
 * or max_in_flight batches are unacknowledged. client_transmit_time is set
 * when the batch is sent; payload_size is payload_len.
 * The event's publish sequence number is the number of events this client
 * accepted before it (0, 1, 2, ...), used by pb_batch_result and
 * pb_server_error.
 * Returns 0 when the event was accepted. These leave the event NOT taken
 * and the client usable:
 *  PB_EINVAL   the event is invalid (bad topic, tag not UTF-8, ...);
 *  PB_ETOOBIG  its encoding exceeds the server's max_event_bytes (or
 *              cannot fit in its max_frame_bytes);
 *  PB_ESERVER  the server refused an earlier batch (pb_client_server_error
 *              says which); reported once, call again to add the event.
 * These mean the connection is unusable and stay (every later call
 * returns them): PB_ECLOSED, PB_ETIMEDOUT, PB_EPROTO, PB_ENOMEM, negated
 * errno. Whether this event or earlier unacknowledged ones reached the
 * server is then unknown: publish again what the last successful flush did
 * not confirm, on a new connection.
 * Also PB_EINVAL after pb_client_subscribe. pb_client_message() explains.
 */
PB_API int pb_client_publish(pb_client *c, const pb_event *ev);

/* The largest event id (bytes of UTF-8) and the most expectations one batch
 * may carry; a server's Hello may announce less. */
#define PB_EVENT_ID_MAX_BYTES 64
#define PB_MAX_EXPECTATIONS   64

/*
 * pb_client_publish with a publisher-chosen id (EncapsulatedEvent.id; NULL:
 * none; at most PB_EVENT_ID_MAX_BYTES of UTF-8; copied). A server with a
 * dedup window (Hello Limits.dedup_window_ms > 0; protobusd: 2 minutes by
 * default) stores an id at most once per partition within the window: a
 * retry of an event that was stored is acknowledged with the original
 * position and pb_position.duplicate set. So a publisher that gives every
 * event a unique id and republishes, on a new connection, every event whose
 * flush did not confirm it gets each event stored exactly once (within the
 * window). Same returns as pb_client_publish (PB_EINVAL also for a bad id).
 */
PB_API int pb_client_publish_id(pb_client *c, const pb_event *ev, const char *id);

/*
 * Adds an expectation to the batch being built (Publish.expect): the topic
 * must have no events yet (none = true) or its last event must have offset
 * last_offset. The server checks it atomically with storing the batch; if
 * it does not hold, nothing of the batch is stored and the batch is refused
 * with FAILED_PRECONDITION (pb_server_error.has_expect, expected_*, actual_*:
 * the topic's real last offset). The batch is the one being built: events
 * published before this call and not yet sent are in it too, so call it
 * right after a flush, publish the events it covers, and flush. A batch
 * with expectations is sent by pb_client_flush only: an event that does not
 * fit in it (batch_events, batch_bytes, the server's limits) is refused
 * with PB_ETOOBIG, not taken. It must keep its events and expected topics
 * in one partition (else INVALID_ARGUMENT). A batch of expectations only
 * (flushed with no event) is a pure check. At most PB_MAX_EXPECTATIONS per
 * batch.
 * Returns 0, PB_EINVAL (bad topic, too many), PB_ENOMEM, or the sticky
 * connection errors.
 */
PB_API int pb_client_expect_last(pb_client *c, const char *topic, bool none, uint64_t last_offset);

/*
 * Sends the pending batch and waits up to timeout_ms (< 0: no limit) until
 * every batch sent has been acknowledged or refused. On return
 * *positions (if not NULL) points to *count entries: one per event accepted
 * since the previous flush, in publish order (empty with no_ack or
 * no_positions). The array is owned by the client, valid until the next
 * call on c.
 * Returns 0 when all of them were stored; PB_ESERVER when the server
 * refused some (their entries have status != 0; pb_client_server_error
 * gives the last refusal); PB_ETIMEDOUT when acks are still missing (their
 * entries have status PB_ETIMEDOUT; the client stays usable and the next
 * flush reports the same events again, with their answers if they came,
 * followed by the newer ones); the sticky connection errors of
 * pb_client_publish (entries not yet answered keep status PB_ETIMEDOUT).
 * A flush that returns 0 or PB_ESERVER starts a new window. (Only the wait
 * for acks times out softly: a PB_ETIMEDOUT while writing the last batch,
 * bounded by io_timeout_ms, is sticky like pb_client_publish's.)
 */
PB_API int pb_client_flush(pb_client *c, int timeout_ms, const pb_position **positions,
                           size_t *count);

/* ------------------------------------------------------------------------ */
/* Subscribing                                                               */

typedef enum pb_start_mode {
    PB_START_NEW = 0,       /* only events stored after the subscription starts */
    PB_START_BEGINNING = 1, /* everything stored */
    PB_START_OFFSETS = 2,   /* from `offsets` (partitions not listed: beginning) */
    PB_START_TIME = 3,      /* first event with server_receive_time >= from_time_ns */
    PB_START_LAST_N = 4,    /* the last `last_n` events of each matching topic */
} pb_start_mode;

typedef struct pb_partition_offset {
    const char *partition;
    uint64_t offset; /* first offset to deliver */
} pb_partition_offset;

typedef struct pb_subscription {
    const char *const *patterns; /* PCRE2; a topic matches if any matches it whole */
    size_t npatterns;
    const pb_tag *tags; /* all must be present with these values */
    size_t ntags;
    pb_start_mode start;
    const pb_partition_offset *offsets; /* PB_START_OFFSETS */
    size_t noffsets;
    int64_t from_time_ns; /* PB_START_TIME */
    uint32_t last_n;      /* PB_START_LAST_N */
} pb_subscription;

/*
 * Sends a Subscribe request and waits (at most io_timeout_ms) for the
 * server's answer. On 0 the server confirmed it (Subscribed): the start
 * positions are in pb_client_subscription, and from then on the
 * connection belongs to the subscription: pb_client_next yields its items;
 * publishing is refused. Pending publishes must be flushed first
 * (PB_EINVAL otherwise). The caller keeps ownership of *s.
 * Returns 0; PB_ESERVER when the server refused the subscription (bad
 * pattern, no free subscription slot, ...: pb_client_server_error and
 * pb_client_message say why; the connection stays usable, e.g. to
 * subscribe again); PB_EINVAL (bad arguments, or already subscribed);
 * PB_ENOMEM; PB_EPROTO (the server answered with something else than
 * Subscribed or an Error: it does not speak protocol version 1); or the
 * sticky connection errors (PB_ETIMEDOUT: no answer in time).
 */
PB_API int pb_client_subscribe(pb_client *c, const pb_subscription *s);

/* One partition of a confirmed subscription, as the server's Subscribed
 * frame described it when the subscription started. */
typedef struct pb_subscribed_partition {
    const char *partition; /* NUL-terminated */
    uint64_t first_offset; /* the oldest offset still stored */
    uint64_t start_offset; /* the first offset the subscription can deliver here */
    uint64_t end_offset;   /* the partition's next offset then: history is [start, end) */
} pb_subscribed_partition;

/*
 * After pb_client_subscribe returned 0: the partitions the server had when
 * the subscription started, in the server's order. *parts points to *n
 * entries owned by the client, valid until pb_client_close. A partition
 * created later is not listed; its events arrive live from its first
 * offset. Returns 0, or PB_EINVAL if c has no confirmed subscription.
 */
PB_API int pb_client_subscription(const pb_client *c, const pb_subscribed_partition **parts,
                                  size_t *n);

typedef enum pb_item_kind {
    PB_ITEM_EVENT = 1,     /* item.event is set */
    PB_ITEM_DATA_LOSS = 2, /* item.loss is set: stored events that could not be read */
    /* item.caught_up is set: every history event (those below the end
     * offsets of pb_client_subscription) has been delivered; every later
     * event is live. Comes exactly once per subscription, right after
     * pb_client_subscribe for PB_START_NEW. */
    PB_ITEM_CAUGHT_UP = 3,
    /* item.loss is set: offsets [first_offset, last_offset] of `partition`
     * were removed by retention before they were delivered (an
     * OUT_OF_RANGE notice: not damage). The subscription continues at the
     * first offset still stored. */
    PB_ITEM_OUT_OF_RANGE = 4,
} pb_item_kind;

/* A tag of a received event: byte strings, NUL-terminated for convenience. */
typedef struct pb_tag_view {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
} pb_tag_view;

/* A received event. Strings are NUL-terminated copies (lengths given too,
 * as they may contain NUL bytes); payload and raw point into the client's
 * receive buffer. All valid until the next call on the client. */
typedef struct pb_received_event {
    const char *partition;
    size_t partition_len;
    uint64_t offset;
    const char *topic;
    size_t topic_len;
    const pb_tag_view *tags; /* ntags entries; a key repeated on the wire: the last wins */
    size_t ntags;
    bool has_client_event_time, has_client_transmit_time, has_server_receive_time;
    int64_t client_event_time_ns; /* ns since the epoch (0 when absent) */
    int64_t client_transmit_time_ns;
    int64_t server_receive_time_ns;
    const char *payload_type; /* Any.type_url ("" when no payload) */
    size_t payload_type_len;
    const uint8_t *payload; /* Any.value */
    size_t payload_len;
    int64_t payload_size; /* as the publisher stated it */
    /* The stored EncapsulatedEvent bytes exactly as the server sent them
     * (e.g. to store or forward them unchanged). */
    const uint8_t *raw;
    size_t raw_len;
} pb_received_event;

/* The event's id (EncapsulatedEvent.id, given by its publisher; the last
 * occurrence if repeated): a pointer into ev->raw with *len bytes of UTF-8
 * (not NUL-terminated), valid as long as ev; NULL with *len 0 when it has
 * none. Pure: any thread. */
PB_API const char *pb_received_event_id(const pb_received_event *ev, size_t *len);

/* The server could not read stored events [first_offset, last_offset] of
 * `partition` (a DATA_LOSS Error); the subscription continues after them. */
typedef struct pb_data_loss {
    const char *partition;
    uint64_t first_offset;
    uint64_t last_offset;
    const char *message; /* the server's text (names the file and position) */
} pb_data_loss;

/* The server's CaughtUp marker. */
typedef struct pb_caught_up {
    uint64_t history_events; /* Event frames the server sent before it */
} pb_caught_up;

typedef struct pb_item {
    pb_item_kind kind;
    pb_received_event event;
    pb_data_loss loss;
    pb_caught_up caught_up;
} pb_item;

/*
 * Waits up to timeout_ms (< 0: no limit, 0: only what has arrived) for the
 * next item of the subscription and fills *item (its pointers are valid
 * until the next call on c). Decoding does not allocate per event. With
 * timeout 0 (an event loop: poll the descriptor, then call until
 * PB_ETIMEDOUT), when the last read (made by a timeout-0 call) came back
 * short, the call that runs out of the frames it buffered returns
 * PB_ETIMEDOUT without another system call, even if more has arrived
 * since: poll again (it says readable at once then); the next call reads.
 * Returns 0 (an event, a data-loss or out-of-range report or the caught-up
 * marker; iterate
 * on), PB_ETIMEDOUT
 * (nothing yet; call again), PB_ESERVER (the server ended the subscription
 * with an Error: pb_client_server_error / pb_client_message), PB_ECLOSED
 * (the server closed the connection), PB_EPROTO (a malformed frame or
 * event; the connection is then unusable), PB_EINVAL (not subscribed).
 * Errors other than PB_ETIMEDOUT are final.
 */
PB_API int pb_client_next(pb_client *c, pb_item *item, int timeout_ms);

/* ------------------------------------------------------------------------ */
/* Reading segment files without a server                                   */
/*
 * The pb_reader_* functions and pb_partition_list declared by
 * protobus_reader.h (included above) read a partition directory offline
 * with the same code the daemon uses: pb_reader_open / seek_offset /
 * seek_time / set_end / next / problem / close. See that header for their
 * contracts; a pb_reader is used by one thread at a time.
 */

#ifdef __cplusplus
}
#endif

#endif
