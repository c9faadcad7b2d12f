/*
 * sub - the subscription registry: validating a Subscribe request and the
 * subscription threads (one each, bounded). What a subscription does on its
 * thread (history, live tail, output) is in subrun.c; how the partition
 * writers fill its live queue is in fanout.c. Calls run one way: sub.c ->
 * subrun.c -> fanout.c; what subrun needs back (the count of tailing
 * subscriptions) is a callback set here.
 *
 * Threads:
 *   loop thread     sub_start: unpack + validate (cold path), compile the
 *                   patterns, take a slot and start the subscription's
 *                   thread.
 *   sub threads     sub_thread: one per running subscription, started for
 *                   it (a small stack, SUB_STACK_BYTES, detached) and ended
 *                   with it, so an idle subscription costs a thread that
 *                   sleeps in poll() and nothing else, and a daemon without
 *                   subscriptions has no such threads.
 *   main thread     sub_registry_create, sub_registry_stop (ends every
 *                   subscription, waits for their threads),
 *                   sub_registry_destroy.
 *
 * Locks: r->pool_lock guards slots[].job, stopping, tailing, running. It is
 * never held together with the fan-out's locks (fanout.c).
 */
#include "sub.h"

#include "config.h"
#include "event.h"
#include "fanout.h"
#include "hash.h"
#include "hostport.h"
#include "livequeue.h"
#include "logging.h"
#include "patterns.h"
#include "pb_errors.h"
#include "protobus.pb-c.h"
#include "submatch.h"
#include "subreq.h"
#include "subrun.h"
#include "tls.h"

#include <errno.h>
#include <sched.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MAX_FRAME_BYTES (16u << 20)

/* A subscription thread's stack: it runs subrun (frames of a few KiB) and
 * PCRE2's JIT (32 KiB on the stack); sanitizers need more. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SUB_STACK_BYTES (2048u * 1024u)
#else
#define SUB_STACK_BYTES (256u * 1024u)
#endif

typedef struct sub_slot {
    sub *job; /* pool_lock: the subscription in it; NULL: free */
} sub_slot;

struct sub_registry {
    sub_options o;
    pthread_mutex_t pool_lock;
    pthread_cond_t changed; /* active or tailing changed (CLOCK_MONOTONIC) */
    bool stopping;
    atomic_uint active; /* slots with a job */
    uint32_t tailing;   /* pool_lock: subscriptions past their history */
    uint32_t running;   /* pool_lock: subscription threads not finished */
    uint32_t nslots;
    sub_slot *slots;
};

/* ------------------------------------------------------------------ */
/* sub_start (loop thread): unpack and validate */

static void sub_free(sub *s)
{
    if (!s)
        return;
    subrun_free_state(s);
    patterns_free(s->ps);
    livequeue_destroy(s->live.q);
    if (s->live.efd >= 0 && close(s->live.efd) < 0)
        logging_printf(LOG_WARN, "subscriber %s: closing its eventfd: %s", s->peer,
                       strerror(errno));
    if (s->mu_init) {
        pthread_cond_destroy(&s->live.fast_cv);
        pthread_mutex_destroy(&s->live.mu);
    }
    free(s->tags);
    free(s->tag_state);
    free(s->live.tag_state);
    free(s->offsets);
    free(s->input);
    tls_conn_free(s->tls);
    if (s->req)
        protobus__subscribe__free_unpacked(s->req, NULL);
    free(s);
}

/* "127.0.0.1:5000", "[::1]:5000" (hostport.h) or "local (fd N)" for the
 * peer of fd, and its address without the port (addr_len 0 if none). */
static void peer_name(int fd, sub *s)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    s->addr_len = 0;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            memcpy(s->addr, &((struct sockaddr_in *)&ss)->sin_addr, 4);
            s->addr_len = 4;
        } else if (ss.ss_family == AF_INET6) {
            memcpy(s->addr, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
            s->addr_len = 16;
        }
        if (hostport_format_sockaddr(s->peer, sizeof s->peer, (struct sockaddr *)&ss))
            return;
    }
    snprintf(s->peer, sizeof s->peer, "local (fd %d)", fd);
}

static void *sub_thread(void *arg);

/* pool_lock held: a free slot for s, or RESOURCE_EXHAUSTED naming the
 * limit: every slot taken (max_subscriptions), or s's address holding
 * max_subscriptions_per_address of them. One pass over the slots. */
static int take_slot(sub_registry *r, sub *s, uint32_t *out, char *err, size_t errlen)
{
    uint32_t free_slot = r->nslots, same = 0;
    for (uint32_t i = 0; i < r->nslots; i++) {
        const sub *o = r->slots[i].job;
        if (!o) {
            if (free_slot == r->nslots)
                free_slot = i;
        } else if (s->addr_len && o->addr_len == s->addr_len &&
                   memcmp(o->addr, s->addr, s->addr_len) == 0) {
            same++;
        }
    }
    if (free_slot == r->nslots) {
        pb_set_err(err, errlen,
                   "subscribe: all %" PRIu32 " subscriptions are taken (server setting "
                   "max_subscriptions)",
                   r->nslots);
        return PB_ETOOBIG;
    }
    if (r->o.max_per_address && same >= r->o.max_per_address) {
        pb_set_err(err, errlen,
                   "subscribe: this address has %" PRIu32 " subscriptions, the most one address "
                   "may have (server setting max_subscriptions_per_address)",
                   same);
        return PB_ETOOBIG;
    }
    *out = free_slot;
    return 0;
}

/* pool_lock held: starts s's thread in slot (detached, small stack). */
static int start_thread(sub_registry *r, sub *s, uint32_t slot, char *err, size_t errlen)
{
    pthread_attr_t attr;
    int e = pthread_attr_init(&attr);
    if (e == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        e = pthread_attr_setstacksize(&attr, SUB_STACK_BYTES);
        pthread_t t;
        s->live.slot = slot;
        r->slots[slot].job = s; /* before the thread runs: it clears it */
        if (e == 0)
            e = pthread_create(&t, &attr, sub_thread, s);
        pthread_attr_destroy(&attr);
        if (e != 0)
            r->slots[slot].job = NULL;
    }
    if (e != 0) {
        pb_set_err(err, errlen, "subscribe: cannot start a subscription thread: %s", strerror(e));
        return PB_ETOOBIG;
    }
    r->running++;
    return 0;
}

/* subrun's on_tailing: counts s in or out of the subscriptions following
 * the live stream (sub_registry_wait). */
static void count_tailing(void *ctx, bool tailing)
{
    sub_registry *r = ctx;
    pthread_mutex_lock(&r->pool_lock);
    if (tailing)
        r->tailing++;
    else
        r->tailing--;
    pthread_cond_broadcast(&r->changed);
    pthread_mutex_unlock(&r->pool_lock);
}

/* Fills s from the unpacked request. INVALID_ARGUMENT errors name the field. */
static int validate(sub_registry *r, sub *s, char *err, size_t errlen)
{
    const Protobus__Subscribe *q = s->req;
    if (q->n_patterns == 0 && !q->replicate) {
        pb_set_err(err, errlen,
                   "subscribe: no patterns (a topic must match one of them; use \".*\" for every "
                   "topic)");
        return PB_EINVAL;
    }
    s->start = (int)q->start;
    switch (s->start) {
    case PROTOBUS__START_MODE__START_NEW:
    case PROTOBUS__START_MODE__START_BEGINNING:
        break;
    case PROTOBUS__START_MODE__START_OFFSETS:
        s->offsets = calloc(q->n_offsets ? q->n_offsets : 1, sizeof *s->offsets);
        if (!s->offsets)
            return PB_ENOMEM;
        for (size_t i = 0; i < q->n_offsets; i++) {
            const char *name = q->offsets[i]->partition;
            if (!partname_valid(name, strlen(name))) {
                pb_set_err(err, errlen,
                           "subscribe: offsets[%zu]: \"%.120s\" is not a valid partition name "
                           "(%s)",
                           i, name, PARTNAME_RULE);
                return PB_EINVAL;
            }
            s->offsets[i].partition = name;
            s->offsets[i].offset = q->offsets[i]->offset;
        }
        size_t dup = subreq_dup_offset(q->offsets, q->n_offsets);
        if (dup == (size_t)-1)
            return PB_ENOMEM;
        if (dup < q->n_offsets) {
            pb_set_err(err, errlen, "subscribe: offsets: partition \"%s\" is listed twice",
                       q->offsets[dup]->partition);
            return PB_EINVAL;
        }
        s->noffsets = q->n_offsets;
        break;
    case PROTOBUS__START_MODE__START_TIME: {
        const Google__Protobuf__Timestamp *t = q->from_time;
        if (!t) {
            pb_set_err(err, errlen, "subscribe: START_TIME needs from_time");
            return PB_EINVAL;
        }
        /* int64 nanoseconds cover 1677..2262, like every stored time. */
        if (t->nanos < 0 || t->nanos > 999999999 || t->seconds < -9223372035LL ||
            t->seconds > 9223372035LL) {
            pb_set_err(err, errlen,
                       "subscribe: from_time {seconds %" PRId64 ", nanos %" PRId32
                       "} is out of range (nanos 0..999999999, years 1677..2262)",
                       t->seconds, t->nanos);
            return PB_EINVAL;
        }
        s->min_time_ns = t->seconds * 1000000000LL + t->nanos;
        break;
    }
    case PROTOBUS__START_MODE__START_LAST_N:
        if (q->last_n == 0) {
            pb_set_err(err, errlen, "subscribe: START_LAST_N needs last_n >= 1");
            return PB_EINVAL;
        }
        if (q->last_n > r->o.topic_history) {
            pb_set_err(err, errlen,
                       "subscribe: last_n %" PRIu32 " is more than the %" PRIu32
                       " events the server keeps per topic",
                       q->last_n, r->o.topic_history);
            return PB_EINVAL;
        }
        s->last_n = q->last_n;
        break;
    default:
        pb_set_err(err, errlen, "subscribe: unknown start mode %d", s->start);
        return PB_EINVAL;
    }

    /* Tag filters; a key given twice keeps its last value (map semantics). */
    s->tags = calloc(q->n_tags ? q->n_tags : 1, sizeof *s->tags);
    s->tag_state = calloc(q->n_tags ? q->n_tags : 1, 1);
    s->live.tag_state = calloc(q->n_tags ? q->n_tags : 1, 1);
    if (!s->tags || !s->tag_state || !s->live.tag_state)
        return PB_ENOMEM;
    size_t ntags = subreq_tags(q->tags, q->n_tags, s->tags);
    if (ntags == (size_t)-1)
        return PB_ENOMEM;
    s->ntags = ntags;
    return 0;
}

/* The part of s the writers see (fanout_member, all but the slot): its
 * queue, eventfd and lock, and the filters validate and sub_start made. */
static int prepare_live(sub_registry *r, sub *s)
{
    int rc = livequeue_create(&s->live.q, r->o.queue_bytes, fanout_pool(r->o.live));
    if (rc < 0)
        return rc;
    s->live.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->live.efd < 0)
        return -errno;
    if ((rc = pthread_mutex_init(&s->live.mu, NULL)) != 0)
        return -rc;
    if ((rc = pthread_cond_init(&s->live.fast_cv, NULL)) != 0) {
        pthread_mutex_destroy(&s->live.mu);
        return -rc;
    }
    s->mu_init = true;
    s->live.patterns = (const char *const *)s->req->patterns;
    s->live.npatterns = s->req->n_patterns;
    s->live.min_time_ns = s->min_time_ns;
    s->live.tags = s->tags;
    s->live.ntags = s->ntags;
    /* A standby that takes Records frames gets its live records as runs
     * (replicate_check: no patterns, no tags; no time bound). */
    s->live.runs = s->req->replicate && s->req->replicate_records && s->ntags == 0 &&
                   s->min_time_ns == INT64_MIN;
    s->live.peer = s->peer;
    return 0;
}

int sub_start(sub_registry *r, int fd, uint64_t frame_id, const uint8_t *subscribe, size_t len,
              const uint8_t *pending, size_t pending_len, int *grpc_code, char *err, size_t errlen)
{
    return sub_start_as(r, NULL, fd, frame_id, subscribe, len, pending, pending_len, grpc_code, err,
                        errlen);
}

/* The user's read rights on the subscription's patterns (sub_rights). */
static int restrict_to(const sub_rights *who, sub *s, int *grpc_code, char *err, size_t errlen)
{
    if (who->nallow == 0) {
        *grpc_code = PB_CODE_PERMISSION_DENIED;
        pb_set_err(err, errlen, "subscribe: user \"%s\" may not read any topic", who->user);
        return PB_EINVAL;
    }
    return patterns_restrict(s->ps, who->allow, who->nallow, who->deny, who->ndeny, err, errlen);
}

/* Subscribe.replicate (a standby's subscription, FORMAT.md 4.4): no
 * patterns or tags of its own, every record of every partition from the
 * follower's offsets (START_OFFSETS). With access control, the user must be
 * allowed to read every topic: a read right ".*" and no deny, since a
 * replica missing a topic would not be one. */
static int replicate_check(const sub_rights *who, sub *s, int *grpc_code, char *err,
                           size_t errlen)
{
    Protobus__Subscribe *q = s->req;
    if (q->n_patterns > 0 || q->n_tags > 0) {
        *grpc_code = PB_CODE_INVALID_ARGUMENT;
        pb_set_err(err, errlen,
                   "subscribe: a replication subscription (replicate) takes every topic: "
                   "patterns and tags must be empty");
        return PB_EINVAL;
    }
    if (q->start != PROTOBUS__START_MODE__START_NEW &&
        q->start != PROTOBUS__START_MODE__START_OFFSETS) {
        *grpc_code = PB_CODE_INVALID_ARGUMENT;
        pb_set_err(err, errlen,
                   "subscribe: a replication subscription (replicate) starts from `offsets` "
                   "(START_OFFSETS), not start mode %d",
                   (int)q->start);
        return PB_EINVAL;
    }
    q->start = PROTOBUS__START_MODE__START_OFFSETS;
    if (who && who->user) {
        bool all = false;
        for (size_t i = 0; i < who->nallow && !all; i++)
            all = strcmp(who->allow[i], ".*") == 0;
        if (!all || who->ndeny > 0) {
            *grpc_code = PB_CODE_PERMISSION_DENIED;
            pb_set_err(err, errlen,
                       "subscribe: user \"%s\" may not replicate: a standby needs the read "
                       "right \".*\" and no deny",
                       who->user);
            return PB_EINVAL;
        }
    }
    return 0;
}

/* Unpacks the Subscribe into s->req and checks it: replication rights,
 * the caps (first: nothing below grows with a request over them), then
 * validate. 0, or an error with *grpc_code and err set. */
static int read_request(sub_registry *r, const sub_rights *rights, sub *s,
                        const uint8_t *subscribe, size_t len, int *grpc_code, char *err,
                        size_t errlen)
{
    int rc;
    s->req = protobus__subscribe__unpack(NULL, len, subscribe);
    if (!s->req) {
        *grpc_code = PB_CODE_INVALID_ARGUMENT;
        pb_set_err(err, errlen, "subscribe: the Subscribe message (%zu bytes) is malformed", len);
        return PB_EPROTO;
    }
    if (s->req->replicate && (rc = replicate_check(rights, s, grpc_code, err, errlen)) < 0)
        return rc;
    rc = subreq_check_caps(s->req, &r->o.caps, err, errlen);
    if (rc < 0) {
        *grpc_code = PB_CODE_RESOURCE_EXHAUSTED;
        return rc;
    }
    rc = validate(r, s, err, errlen);
    if (rc == PB_EINVAL)
        *grpc_code = PB_CODE_INVALID_ARGUMENT;
    return rc < 0 ? rc : 0;
}

/* One compiled set, here so that a bad pattern is refused with the
 * connection kept and the user's read rights restrict it before the
 * hand-off: the subscription thread matches history with it (under the
 * matcher's limits), the fan-out asks whether it matches every topic and
 * checks the rights on what the combined matcher found. A replication
 * subscription takes every topic. */
static int compile_patterns(const sub_rights *rights, sub *s, int *grpc_code, char *err,
                            size_t errlen)
{
    static const char *const every_topic[] = {".*"};
    const char *const *pats = (const char *const *)s->req->patterns;
    size_t npats = s->req->n_patterns;
    if (s->req->replicate) {
        pats = every_topic;
        npats = 1;
    }
    int rc = patterns_compile(pats, npats, &s->ps, err, errlen);
    if (rc == PB_EINVAL)
        *grpc_code = PB_CODE_INVALID_ARGUMENT;
    if (rc < 0)
        return rc;
    submatch_limit(s->ps);
    if (rights && rights->user && !s->req->replicate)
        return restrict_to(rights, s, grpc_code, err, errlen);
    return 0;
}

/* A failure's message when the step that failed set none. */
static void fail_message(int rc, int *grpc_code, char *err, size_t errlen)
{
    if (rc == PB_ENOMEM) {
        *grpc_code = PB_CODE_RESOURCE_EXHAUSTED;
        pb_set_err(err, errlen, "subscribe: out of memory");
    } else if (*grpc_code == PB_CODE_INTERNAL) {
        pb_set_err(err, errlen, "subscribe: cannot set up the subscription: %s", pb_strerror(rc));
    }
}

int sub_prepare(sub_registry *r, const sub_rights *rights, const uint8_t *subscribe, size_t len,
                struct sub **out, int *grpc_code, char *err, size_t errlen)
{
    int rc;
    *out = NULL;
    *grpc_code = PB_CODE_INTERNAL;
    sub *s = calloc(1, sizeof *s);
    if (!s) {
        fail_message(PB_ENOMEM, grpc_code, err, errlen);
        return PB_ENOMEM;
    }
    s->fd = -1;
    s->live.efd = -1;
    s->min_time_ns = INT64_MIN;
    if ((rc = read_request(r, rights, s, subscribe, len, grpc_code, err, errlen)) < 0 ||
        (rc = compile_patterns(rights, s, grpc_code, err, errlen)) < 0) {
        fail_message(rc, grpc_code, err, errlen);
        sub_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void sub_prepared_free(struct sub *s)
{
    sub_free(s); /* never launched: fd -1, no thread, no queue */
}

int sub_launch(sub_registry *r, struct sub *s, const sub_rights *rights, int fd,
               uint64_t frame_id, const uint8_t *pending, size_t pending_len, int *grpc_code,
               char *err, size_t errlen)
{
    int rc;
    *grpc_code = PB_CODE_INTERNAL;
    s->store = r->o.store;
    s->fo = r->o.live;
    s->write_deadline_ms = r->o.write_deadline_ms;
    s->on_tailing = count_tailing;
    s->tailing_ctx = r;
    s->fd = fd;
    s->frame_id = frame_id;
    s->max_frame_bytes = r->o.max_frame_bytes;
    s->standby = r->o.standby;
    peer_name(fd, s);
    if (pending_len > 0) {
        if (!(s->input = malloc(pending_len))) {
            rc = PB_ENOMEM;
            goto fail;
        }
        memcpy(s->input, pending, pending_len);
        s->input_len = pending_len;
    }

    if ((rc = prepare_live(r, s)) < 0)
        goto fail;

    pthread_mutex_lock(&r->pool_lock);
    uint32_t slot;
    if (r->stopping) {
        pthread_mutex_unlock(&r->pool_lock);
        *grpc_code = PB_CODE_UNAVAILABLE;
        pb_set_err(err, errlen, "subscribe: the server is shutting down");
        rc = PB_ECLOSED;
        goto fail;
    }
    rc = take_slot(r, s, &slot, err, errlen);
    if (rc == 0) {
        /* Before its thread starts: it uses them at once. */
        s->tls = rights ? rights->tls : NULL; /* the subscription's from here on */
        if (rights && rights->user) {
            snprintf(s->user, sizeof s->user, "%s", rights->user);
            s->rights_fp = sub_rights_fingerprint(rights);
        }
        atomic_fetch_add(&r->active, 1);
        rc = start_thread(r, s, slot, err, errlen);
        if (rc < 0) {
            atomic_fetch_sub(&r->active, 1);
            s->tls = NULL; /* stays the caller's */
        }
    }
    if (rc < 0) {
        pthread_mutex_unlock(&r->pool_lock);
        *grpc_code = PB_CODE_RESOURCE_EXHAUSTED;
        goto fail;
    }
    pthread_cond_broadcast(&r->changed);
    pthread_mutex_unlock(&r->pool_lock);
    return 0; /* s is its thread's now (it may even be gone already) */

fail:
    fail_message(rc, grpc_code, err, errlen);
    s->fd = -1; /* stays the caller's */
    sub_free(s);
    return rc;
}

int sub_start_as(sub_registry *r, const sub_rights *rights, int fd, uint64_t frame_id,
                 const uint8_t *subscribe, size_t len, const uint8_t *pending, size_t pending_len,
                 int *grpc_code, char *err, size_t errlen)
{
    sub *s;
    int rc = sub_prepare(r, rights, subscribe, len, &s, grpc_code, err, errlen);
    if (rc < 0)
        return rc;
    return sub_launch(r, s, rights, fd, frame_id, pending, pending_len, grpc_code, err, errlen);
}

/* ------------------------------------------------------------------ */
/* the pool */

static void *sub_thread(void *arg)
{
    sub *s = arg;
    sub_registry *r = s->tailing_ctx;
    uint32_t slot = s->live.slot;
    (void)pthread_setname_np(pthread_self(), "pb-sub");
    /* Batch scheduling (sched(7)): a woken subscription thread does not
     * preempt the thread that woke it (the fan-out's waker signalling up to
     * 1,000 of them in a row, a partition writer, the loop); it runs on an
     * idle core at once, else when the running thread blocks or its slice
     * ends. With 1,000 subscriptions fed at once, the daemon switches
     * context ~17% less often and the waker is no longer interrupted 1,000
     * times a round (README, Performance). Failing is harmless. */
    struct sched_param sp = {0};
    (void)pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
    subrun_main(s); /* registers and unregisters its queue itself */
    /* Unregistered: no writer reaches the queue any more. Its blocks go
     * back to the shared budget before the slot counts as free. */
    livequeue_destroy(s->live.q);
    s->live.q = NULL;

    /* Off the slot first: from then on sub_registry_stop no longer touches
     * s, so it can be freed. The socket is closed next, so a client that
     * sees its connection end can subscribe again at once. */
    pthread_mutex_lock(&r->pool_lock);
    r->slots[slot].job = NULL;
    atomic_fetch_sub(&r->active, 1);
    pthread_cond_broadcast(&r->changed);
    pthread_mutex_unlock(&r->pool_lock);
    int fd = s->fd;
    s->fd = -1;
    sub_free(s);
    if (close(fd) < 0)
        logging_printf(LOG_WARN, "subscription socket: close: %s", strerror(errno));
    /* Last: after this, sub_registry_stop may free r. */
    pthread_mutex_lock(&r->pool_lock);
    r->running--;
    pthread_cond_broadcast(&r->changed);
    pthread_mutex_unlock(&r->pool_lock);
    return NULL;
}

uint64_t sub_rights_fingerprint(const sub_rights *rights)
{
    uint64_t h = hash_bytes(0, rights->user, strlen(rights->user));
    for (size_t i = 0; i < rights->nallow; i++)
        h = hash_bytes(h * 31 + 1, rights->allow[i], strlen(rights->allow[i]));
    for (size_t i = 0; i < rights->ndeny; i++)
        h = hash_bytes(h * 31 + 2, rights->deny[i], strlen(rights->deny[i]));
    return h;
}

uint32_t sub_registry_end_users(sub_registry *r,
                                bool (*still_allowed)(void *ctx, const char *user,
                                                      uint64_t fingerprint),
                                void *ctx)
{
    uint32_t ended = 0;
    pthread_mutex_lock(&r->pool_lock);
    for (uint32_t i = 0; i < r->nslots; i++) {
        sub *s = r->slots[i].job;
        if (!s || !s->user[0] || atomic_load(&s->stop) || still_allowed(ctx, s->user, s->rights_fp))
            continue;
        logging_printf(LOG_INFO,
                       "subscriber %s: ended: the read rights of user \"%s\" changed "
                       "(configuration reloaded)",
                       s->peer, s->user);
        atomic_store(&s->stop, true);
        fanout_wake(&s->live);
        if (shutdown(s->fd, SHUT_RDWR) < 0 && errno != ENOTCONN)
            logging_printf(LOG_DEBUG, "subscriber %s: shutdown: %s", s->peer, strerror(errno));
        ended++;
    }
    pthread_mutex_unlock(&r->pool_lock);
    return ended;
}

void sub_registry_stop(sub_registry *r)
{
    pthread_mutex_lock(&r->pool_lock);
    r->stopping = true;
    for (uint32_t i = 0; i < r->nslots; i++) {
        sub *s = r->slots[i].job;
        if (s) {
            atomic_store(&s->stop, true);
            fanout_wake(&s->live);
            /* Also ends a write the peer is not reading; the fd stays open
             * until the thread has finished with it. */
            if (shutdown(s->fd, SHUT_RDWR) < 0 && errno != ENOTCONN)
                logging_printf(LOG_DEBUG, "subscriber %s: shutdown: %s", s->peer, strerror(errno));
        }
    }
    while (r->running > 0)
        pthread_cond_wait(&r->changed, &r->pool_lock);
    pthread_mutex_unlock(&r->pool_lock);
}

static void registry_free(sub_registry *r)
{
    free(r->slots);
    pthread_cond_destroy(&r->changed);
    pthread_mutex_destroy(&r->pool_lock);
    free(r);
}

int sub_registry_create(sub_registry **out, const sub_options *opts)
{
    if (!opts || !opts->store || !opts->live || opts->threads == 0 ||
        opts->threads > fanout_slots(opts->live) || opts->queue_bytes < 64 ||
        opts->write_deadline_ms == 0 || opts->topic_history == 0)
        return PB_EINVAL;
    sub_registry *r = calloc(1, sizeof *r);
    if (!r)
        return PB_ENOMEM;
    r->o = *opts;
    if (!r->o.max_frame_bytes)
        r->o.max_frame_bytes = DEFAULT_MAX_FRAME_BYTES;
    if (!r->o.caps.max_patterns)
        r->o.caps.max_patterns = SUB_CAPS_PATTERNS_DEFAULT;
    if (!r->o.caps.max_pattern_bytes)
        r->o.caps.max_pattern_bytes = SUB_CAPS_PATTERN_BYTES_DEFAULT;
    if (!r->o.caps.max_tags)
        r->o.caps.max_tags = SUB_CAPS_TAGS_DEFAULT;
    if (!r->o.caps.max_offsets)
        r->o.caps.max_offsets = SUB_CAPS_OFFSETS_DEFAULT;
    atomic_init(&r->active, 0);
    int rc = pthread_mutex_init(&r->pool_lock, NULL);
    if (rc != 0) {
        free(r);
        return -rc;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&r->changed, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) {
        pthread_mutex_destroy(&r->pool_lock);
        free(r);
        return -rc;
    }
    r->slots = calloc(opts->threads, sizeof *r->slots);
    if (!r->slots) {
        registry_free(r);
        return PB_ENOMEM;
    }
    r->nslots = opts->threads;
    *out = r;
    return 0;
}

uint32_t sub_registry_active(sub_registry *r)
{
    return atomic_load(&r->active);
}

int sub_registry_wait(sub_registry *r, uint32_t active, uint32_t tailing, uint32_t timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    int rc = 0;
    pthread_mutex_lock(&r->pool_lock);
    while (atomic_load(&r->active) != active || r->tailing != tailing) {
        if (pthread_cond_timedwait(&r->changed, &r->pool_lock, &ts) == ETIMEDOUT) {
            rc = atomic_load(&r->active) == active && r->tailing == tailing ? 0 : PB_ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&r->pool_lock);
    return rc;
}

void sub_registry_destroy(sub_registry *r)
{
    if (!r)
        return;
    sub_registry_stop(r);
    registry_free(r);
}
