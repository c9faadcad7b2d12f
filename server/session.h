/*
 * session - the connection model of protocol version 1, in one place: the
 * handshake (the client's Hello checked, the server's Hello or the Error
 * that refuses it) and what every frame gets in each state of a
 * connection. The transport (net.c, loop thread) and a subscribed
 * connection's pool thread (subrun.c) both ask here and send what they are
 * told, so the two cannot drift apart. FORMAT.md Part A section 7 is the
 * same rules in prose.
 *
 * States: HANDSHAKE (accepted, no Hello yet) -> OPEN (Publish, Subscribe,
 * Ping) -> SUBSCRIBED (the subscription's thread owns the socket: Ping
 * still answered, Publish and Subscribe refused).
 *
 * Authentication: with auth_required, a valid Hello is answered
 * SESSION_AUTHENTICATE: the transport checks its user and password
 * (auth.h, off the loop) and then sends the server Hello, or
 * UNAUTHENTICATED "authentication failed" and closes.
 *
 * Pure: no I/O, no allocation, no global state; any thread.
 */
#ifndef PB_SESSION_H
#define PB_SESSION_H

#include "frame.h"
#include "subcaps.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum session_state {
    SESSION_HANDSHAKE = 0,
    SESSION_OPEN,
    SESSION_SUBSCRIBED,
} session_state;

typedef struct session_options {
    const char *server_name; /* the server Hello's name: "protobusd X.Y.Z" */
    uint64_t max_frame_bytes;
    uint64_t max_event_bytes;
    uint32_t idle_timeout_ms;
    uint32_t max_batch_events; /* events per Publish (announced in Limits); 0: no cap */
    uint64_t dedup_window_ms;  /* announced in Limits; 0: ids are not deduplicated */
    uint32_t max_expectations; /* Publish.expect entries accepted (Limits) */
    bool auth_required;        /* [server] auth = required */
    sub_caps sub_caps;         /* a Subscribe's caps (announced in Limits); 0: none */
} session_options;

/* What to do with a frame. */
typedef enum session_action {
    SESSION_IGNORE = 0,   /* nothing to send (a Pong answering nothing we sent) */
    SESSION_ERROR,        /* send Error{code, message} with the frame's id */
    SESSION_HELLO,        /* handshake done: send session_put_hello's frame */
    SESSION_PONG,         /* send a Pong with the frame's id */
    SESSION_PUBLISH,      /* the caller's: a Publish on an open connection */
    SESSION_SUBSCRIBE,    /* the caller's: a Subscribe on an open connection */
    SESSION_AUTHENTICATE, /* a valid Hello, auth required: check Hello.user (in user,
                             truncated) and Hello.password, then answer */
} session_action;

#define SESSION_MESSAGE_MAX 400

typedef struct session_answer {
    session_action action;
    int code;   /* SESSION_ERROR: enum pb_code */
    bool close; /* close the connection once the answer is written */
    char message[SESSION_MESSAGE_MAX];
    char user[128]; /* SESSION_HELLO: the user the connection is authenticated as ("" anonymous) */
} session_answer;

/*
 * The answer to a well-formed frame (kind and body from frame_parse; a
 * SUBSCRIBED connection's scanner passes body NULL: it never keeps one) on
 * a connection in `state`. In HANDSHAKE only a Hello with protocol version
 * 1 is accepted; anything else is refused and closes.
 */
void session_answer_frame(const session_options *o, session_state state, enum frame_kind kind,
                          const uint8_t *body, size_t len, session_answer *a);

/*
 * The answer to a frame whose length was valid but whose Frame fields are
 * not (`why` from frame_parse or the scanner): INVALID_ARGUMENT, and the
 * connection is closed only during the handshake.
 */
void session_answer_malformed(session_state state, const char *why, session_answer *a);

/* The server's Hello (answering frame id, for user) into out, like the
 * frame_put_* encoders: returns the bytes it needs, writes them if cap is
 * enough. */
size_t session_put_hello(const session_options *o, uint64_t id, const char *user, uint8_t *out,
                         size_t cap);

#endif
