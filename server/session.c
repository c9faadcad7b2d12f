/*
 * session - protocol version 1's connection rules (see session.h): the
 * handshake and the answer each frame gets in each connection state.
 *
 * Threads: any (the loop thread for connections it reads, pool threads for
 * subscribed ones). Pure.
 */
#include "session.h"

#include "event.h"
#include "pb_errors.h"
#include "protobus_version.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void answer_error(session_answer *a, int code, bool close, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void answer_error(session_answer *a, int code, bool close, const char *fmt, ...)
{
    va_list ap;

    a->action = SESSION_ERROR;
    a->code = code;
    a->close = close;
    va_start(ap, fmt);
    vsnprintf(a->message, sizeof a->message, fmt, ap);
    va_end(ap);
}

/*
 * The client's Hello. Version first: a client that speaks another version
 * may mean other things by every other field.
 *
 * Authentication. With `auth = none`, Hello.user and Hello.password are
 * parsed (a malformed Hello is refused like any) but ignored, and every
 * connection is anonymous: the server's Hello says user "". With `auth =
 * required` the answer is SESSION_AUTHENTICATE: the transport verifies the
 * credentials (auth.h) and then answers. The password is never logged nor
 * echoed, and never copied here.
 */
static void session_hello(const session_options *o, const uint8_t *body, size_t len,
                          session_answer *a)
{
    hello_view h;
    char why[300];

    if (hello_parse(body, len, &h, why, sizeof why) < 0) {
        answer_error(a, PB_CODE_INVALID_ARGUMENT, true, "malformed Hello: %s", why);
        return;
    }
    if (h.protocol_version != PB_PROTOCOL_VERSION) {
        answer_error(a, PB_CODE_FAILED_PRECONDITION, true,
                     "protocol version %llu is not supported; this server speaks %d",
                     (unsigned long long)h.protocol_version, PB_PROTOCOL_VERSION);
        return;
    }
    if (o->auth_required) {
        size_t n = h.user.len < sizeof a->user - 1 ? h.user.len : sizeof a->user - 1;
        a->action = SESSION_AUTHENTICATE;
        if (n)
            memcpy(a->user, h.user.p, n);
        a->user[n] = '\0';
        return;
    }
    a->action = SESSION_HELLO;
    a->user[0] = '\0'; /* auth = none: anonymous */
}

/* A frame only the server sends, or one the state does not take. */
static void refuse_kind(session_state state, enum frame_kind kind, session_answer *a)
{
    switch (kind) {
    case FRAME_HELLO:
        answer_error(a, PB_CODE_FAILED_PRECONDITION, false,
                     "this connection has already completed its handshake");
        return;
    case FRAME_PUBLISH:
        answer_error(a, PB_CODE_FAILED_PRECONDITION, false,
                     "this connection is subscribed; publish on another connection");
        return;
    case FRAME_SUBSCRIBE:
        answer_error(a, PB_CODE_FAILED_PRECONDITION, false,
                     "this connection is subscribed; subscribe on another connection");
        return;
    case FRAME_REPLICA_ACK:
        answer_error(a, PB_CODE_FAILED_PRECONDITION, false,
                     "ReplicaAck is only accepted on a replication subscription");
        return;
    case FRAME_NONE:
        answer_error(a, PB_CODE_UNIMPLEMENTED, false,
                     "unknown frame type: the frame has no body this server knows");
        return;
    default:
        answer_error(a, PB_CODE_INVALID_ARGUMENT, false,
                     "frame type %s is not accepted from clients", frame_kind_name(kind));
        return;
    }
    (void)state;
}

void session_answer_frame(const session_options *o, session_state state, enum frame_kind kind,
                          const uint8_t *body, size_t len, session_answer *a)
{
    memset(a, 0, sizeof *a);
    if (state == SESSION_HANDSHAKE) {
        if (kind == FRAME_HELLO)
            session_hello(o, body, len, a);
        else
            answer_error(a, PB_CODE_FAILED_PRECONDITION, true,
                         "the first frame must be a Hello (this one is %s)", frame_kind_name(kind));
        return;
    }
    switch (kind) {
    case FRAME_PING:
        /* Ping has no fields: its body is not looked at. */
        a->action = SESSION_PONG;
        return;
    case FRAME_PONG:
        a->action = SESSION_IGNORE; /* answers a Ping; the server sends none today */
        return;
    case FRAME_PUBLISH:
    case FRAME_SUBSCRIBE:
        if (state == SESSION_OPEN) {
            a->action = kind == FRAME_PUBLISH ? SESSION_PUBLISH : SESSION_SUBSCRIBE;
            return;
        }
        refuse_kind(state, kind, a);
        return;
    default:
        refuse_kind(state, kind, a);
        return;
    }
}

void session_answer_malformed(session_state state, const char *why, session_answer *a)
{
    memset(a, 0, sizeof *a);
    answer_error(a, PB_CODE_INVALID_ARGUMENT, state == SESSION_HANDSHAKE, "malformed frame: %s",
                 why);
}

size_t session_put_hello(const session_options *o, uint64_t id, const char *user, uint8_t *out,
                         size_t cap)
{
    /* What this server enforces, for a client to stay within; 0 = no such
     * cap (announced as absent). */
    frame_limits limits = {
        .max_batch_events = o->max_batch_events,
        .max_subscribe_patterns = o->sub_caps.max_patterns,
        .max_pattern_bytes = o->sub_caps.max_pattern_bytes,
        .max_subscribe_tags = o->sub_caps.max_tags,
        .max_subscribe_offsets = o->sub_caps.max_offsets,
        .max_event_id_bytes = EVENT_ID_MAX_BYTES,
        .dedup_window_ms = o->dedup_window_ms,
        .max_expectations = o->max_expectations,
        .idle_timeout_ms = o->idle_timeout_ms,
    };
    frame_hello h = {
        .protocol_version = PB_PROTOCOL_VERSION,
        .name = o->server_name,
        .max_frame_bytes = o->max_frame_bytes,
        .max_event_bytes = o->max_event_bytes,
        .user = user,
        .limits = &limits,
    };
    return frame_put_hello(out, cap, id, &h);
}
