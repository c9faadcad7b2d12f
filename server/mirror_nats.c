/*
 * mirror_nats - a mirror's NATS connection, stream, messages and scan (see
 * mirror_nats.h). libnats does the protocol: connection, reconnection,
 * JetStream's API and asynchronous publishes with per-message timeouts.
 *
 * Threads: the mirror's thread calls everything here; libnats calls the
 * connection callbacks and the publish-ack handler on its own threads.
 * `mu` orders those callbacks against mirror_nats_close: once closed, a
 * late callback does nothing (libnats may still deliver one while its
 * threads wind down; mirror_nats_shutdown waits for them).
 */
#include "mirror_nats.h"

#include "event.h"
#include "logging.h"
#include "mirror_subject.h"
#include "pb_errors.h"

#include <inttypes.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The reconnect delay after each pass over the servers: 100 ms, doubling,
 * at most 5 s (a cluster that comes back is found within 5 s). */
#define RECONNECT_FIRST_MS 100
#define RECONNECT_MAX_MS   5000
/* JetStream API requests (stream info, create, consumer). */
#define API_WAIT_MS 5000
/* The scan of the stream's tail ends when its consumer is quiet this long. */
#define SCAN_QUIET_MS 2000

/* The next step, if the previous ones went well. */
#define IFOK(s, call)                                                                              \
    do {                                                                                           \
        if ((s) == NATS_OK)                                                                        \
            (s) = (call);                                                                          \
    } while (0)

struct mirror_nats {
    const pb_mirror_config *cfg;
    mirror_nats_hooks hooks;
    natsOptions *opts;
    natsConnection *nc;
    jsCtx *js;
    int64_t dup_window_ms; /* the stream's duplicate window (its last info) */
    const char *lose;      /* test hook: the id to lose once (mirror_nats_test_lose) */
    /* Test hook $PROTOBUSD_TEST_MIRROR_LATE (mirror_nats_test_release). */
    char late_part[PB_PARTITION_NAME_MAX + 1];
    uint64_t late_at;
    int late;       /* 0 off, 1 armed, 2 holding, 3 done */
    natsMsg **held; /* the copies held back, in send order */
    size_t n_held;
    pthread_mutex_t mu; /* closed, down_since_ns, ever_up */
    bool closed;
    bool ever_up;
    int64_t down_since_ns; /* 0 while up */
    bool stream_logged;
};

static void late_hook_init(mirror_nats *mn);

__attribute__((format(printf, 3, 4))) static void why_fmt(char *why, size_t n, const char *fmt, ...)
{
    if (why && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, n, fmt, ap);
        va_end(ap);
    }
}

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* libnats' own words for the last error on this thread, else the status. */
static const char *nats_why(natsStatus s)
{
    const char *t = nats_GetLastError(NULL);
    return t && *t ? t : natsStatus_GetText(s);
}

/* --- connection state ----------------------------------------------------- */

static void urls_text(const pb_mirror_config *cfg, char *out, size_t n)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < cfg->n_urls && len < n; i++) {
        int w = snprintf(out + len, n - len, "%s%s", i ? ", " : "", cfg->urls[i]);
        if (w < 0)
            break;
        len += (size_t)w;
    }
}

static void went_up(natsConnection *nc, void *closure)
{
    mirror_nats *mn = closure;
    char url[256] = "";
    natsConnection_GetConnectedUrl(nc, url, sizeof url);
    pthread_mutex_lock(&mn->mu);
    if (mn->closed) {
        pthread_mutex_unlock(&mn->mu);
        return;
    }
    if (!mn->ever_up)
        logging_printf(LOG_INFO, "mirror %s: connected to NATS at %s", mn->cfg->name, url);
    else if (mn->down_since_ns)
        logging_printf(LOG_INFO, "mirror %s: NATS reachable again at %s after %.1f s",
                       mn->cfg->name, url, (double)(wall_ns() - mn->down_since_ns) / 1e9);
    mn->ever_up = true;
    mn->down_since_ns = 0;
    pthread_mutex_unlock(&mn->mu);
    mn->hooks.state(mn->hooks.ctx, true);
}

/* Said once per outage: libnats keeps retrying quietly. */
static void went_down(natsConnection *nc, void *closure)
{
    (void)nc;
    mirror_nats *mn = closure;
    char urls[512];
    pthread_mutex_lock(&mn->mu);
    if (mn->closed) {
        pthread_mutex_unlock(&mn->mu);
        return;
    }
    if (!mn->down_since_ns) {
        mn->down_since_ns = wall_ns();
        urls_text(mn->cfg, urls, sizeof urls);
        logging_printf(LOG_WARN,
                       "mirror %s: NATS unreachable (%s): reconnecting with backoff (up to %d "
                       "ms between rounds); events are shipped once it is back",
                       mn->cfg->name, urls, RECONNECT_MAX_MS);
    }
    pthread_mutex_unlock(&mn->mu);
    mn->hooks.state(mn->hooks.ctx, false);
}

static int64_t reconnect_delay(natsConnection *nc, int attempts, void *closure)
{
    (void)nc;
    (void)closure;
    int64_t d = RECONNECT_FIRST_MS;
    for (int i = 1; i < attempts && d < RECONNECT_MAX_MS; i++)
        d *= 2;
    return d < RECONNECT_MAX_MS ? d : RECONNECT_MAX_MS;
}

static void async_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    (void)nc;
    (void)sub;
    mirror_nats *mn = closure;
    logging_printf(LOG_WARN, "mirror %s: NATS client error: %s", mn->cfg->name,
                   natsStatus_GetText(err));
}

/* A publish's acknowledgement (or its failure: an error from JetStream, a
 * timeout after ack_timeout_ms, no responders). */
static void ack_handler(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    mirror_nats *mn = closure;
    char why[320] = "";
    enum mirror_ack result = MIRROR_ACK_STORED;
    uint64_t seq = pa ? pa->Sequence : 0;
    if (pa) {
        result = pa->Duplicate ? MIRROR_ACK_DUPLICATE : MIRROR_ACK_STORED;
    } else {
        result = MIRROR_ACK_FAILED;
        if (pae && pae->ErrCode)
            why_fmt(why, sizeof why, "JetStream error %d: %s", (int)pae->ErrCode,
                    pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err));
        else
            why_fmt(why, sizeof why, "%s",
                    pae ? (pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err))
                        : "no acknowledgement");
    }
    pthread_mutex_lock(&mn->mu);
    if (!mn->closed)
        mn->hooks.ack(mn->hooks.ctx, msg, result, seq, why);
    pthread_mutex_unlock(&mn->mu);
    natsMsg_Destroy(msg);
}

int mirror_nats_open(mirror_nats **out, const pb_mirror_config *cfg, const mirror_nats_hooks *h,
                     char *why, size_t whylen)
{
    *out = NULL;
    mirror_nats *mn = calloc(1, sizeof *mn);
    if (!mn)
        return PB_ENOMEM;
    mn->cfg = cfg;
    mn->hooks = *h;
    mn->lose = mirror_nats_test_lose();
    late_hook_init(mn);
    pthread_mutex_init(&mn->mu, NULL);
    char name[PB_MIRROR_NAME_MAX + 32];
    snprintf(name, sizeof name, "protobusd mirror %s", cfg->name);
    natsStatus s = natsOptions_Create(&mn->opts);
    IFOK(s, natsOptions_SetServers(mn->opts, (const char **)cfg->urls, (int)cfg->n_urls));
    IFOK(s, natsOptions_SetName(mn->opts, name));
    IFOK(s, natsOptions_SetTimeout(mn->opts, 2000));
    IFOK(s, natsOptions_SetMaxReconnect(mn->opts, -1));
    IFOK(s, natsOptions_SetCustomReconnectDelay(mn->opts, reconnect_delay, mn));
    /* Publishing while disconnected fails at once instead of queueing in
     * the client: the mirror resends from its cursor after a resync. */
    IFOK(s, natsOptions_SetReconnectBufSize(mn->opts, 1));
    IFOK(s, natsOptions_SetPingInterval(mn->opts, 2000));
    IFOK(s, natsOptions_SetMaxPingsOut(mn->opts, 3));
    IFOK(s, natsOptions_SetDisconnectedCB(mn->opts, went_down, mn));
    IFOK(s, natsOptions_SetReconnectedCB(mn->opts, went_up, mn));
    IFOK(s, natsOptions_SetErrorHandler(mn->opts, async_error, mn));
    IFOK(s, natsOptions_SetRetryOnFailedConnect(mn->opts, true, went_up, mn));
    if (s == NATS_OK) {
        s = natsConnection_Connect(&mn->nc, mn->opts);
        if (s == NATS_NOT_YET_CONNECTED) {
            /* libnats goes on trying in the background. */
            went_down(NULL, mn);
            s = NATS_OK;
        } else if (s == NATS_OK) {
            went_up(mn->nc, mn);
        }
    }
    jsOptions jo;
    if (s == NATS_OK) {
        jsOptions_Init(&jo);
        jo.Wait = API_WAIT_MS;
        /* The mirror bounds what is outstanding itself (max_pending). */
        jo.PublishAsync.MaxPending = 0;
        jo.PublishAsync.AckHandler = ack_handler;
        jo.PublishAsync.AckHandlerClosure = mn;
        s = natsConnection_JetStream(&mn->js, mn->nc, &jo);
    }
    if (s != NATS_OK) {
        why_fmt(why, whylen, "cannot set up the NATS client: %s", nats_why(s));
        mirror_nats_close(mn);
        mirror_nats_free(mn);
        return PB_ECONNECT;
    }
    *out = mn;
    return 0;
}

bool mirror_nats_connected(mirror_nats *mn)
{
    return mn->nc && natsConnection_Status(mn->nc) == NATS_CONN_STATUS_CONNECTED;
}

/* --- the stream ------------------------------------------------------------ */

static void log_stream(mirror_nats *mn, const jsStreamInfo *si, const char *verb)
{
    const jsStreamConfig *c = si->Config;
    char subjects[512] = "";
    size_t len = 0;
    for (int i = 0; c && i < c->SubjectsLen && len < sizeof subjects; i++) {
        int w =
            snprintf(subjects + len, sizeof subjects - len, "%s%s", i ? " " : "", c->Subjects[i]);
        if (w < 0)
            break;
        len += (size_t)w;
    }
    if (!c)
        return;
    logging_printf(LOG_INFO,
                   "mirror %s: stream %s %s: subjects [%s], %s storage, replicas %" PRId64
                   ", duplicate window %.0f s, max messages %" PRId64 ", max bytes %" PRId64
                   ", max age %.0f s; %" PRIu64 " message(s) in it",
                   mn->cfg->name, c->Name, verb, subjects,
                   c->Storage == js_MemoryStorage ? "memory" : "file", c->Replicas,
                   (double)c->Duplicates / 1e9, c->MaxMsgs, c->MaxBytes, (double)c->MaxAge / 1e9,
                   si->State.Msgs);
    bool covered = false;
    size_t plen = strlen(mn->cfg->subject_prefix);
    for (int i = 0; i < c->SubjectsLen; i++) {
        const char *s = c->Subjects[i];
        size_t sl = strlen(s);
        if (strcmp(s, ">") == 0 || (sl >= 2 && s[sl - 1] == '>' && sl - 1 <= plen &&
                                    strncmp(s, mn->cfg->subject_prefix, sl - 1) == 0))
            covered = true;
    }
    if (!covered)
        logging_printf(LOG_WARN,
                       "mirror %s: stream %s's subjects do not obviously take every subject "
                       "under \"%s\"; events whose subject it does not take will not be "
                       "acknowledged",
                       mn->cfg->name, c->Name, mn->cfg->subject_prefix);
}

int mirror_nats_ensure_stream(mirror_nats *mn, char *why, size_t whylen)
{
    const pb_mirror_config *cfg = mn->cfg;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    const char *verb = "found";
    if (!mirror_nats_connected(mn)) {
        why_fmt(why, whylen, "not connected to NATS");
        return PB_ECONNECT;
    }
    natsStatus s = js_GetStreamInfo(&si, mn->js, cfg->stream, NULL, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
        if (!cfg->create_stream) {
            why_fmt(why, whylen,
                    "stream %s does not exist and create_stream = no: create it with subjects "
                    "%s>",
                    cfg->stream, cfg->subject_prefix);
            return PB_ENOTFOUND;
        }
        char subject[256];
        snprintf(subject, sizeof subject, "%s>", cfg->subject_prefix);
        const char *subjects[1] = {subject};
        jsStreamConfig sc;
        jsStreamConfig_Init(&sc);
        sc.Name = cfg->stream;
        sc.Subjects = subjects;
        sc.SubjectsLen = 1;
        sc.Storage = js_FileStorage;
        sc.Replicas = cfg->replicas;
        sc.Duplicates = cfg->duplicate_window_s * 1000000000LL;
        jerr = 0;
        s = js_AddStream(&si, mn->js, &sc, NULL, &jerr);
        verb = "created";
    }
    if (s != NATS_OK) {
        why_fmt(why, whylen, "stream %s: %s (JetStream error %d)", cfg->stream, nats_why(s),
                (int)jerr);
        return PB_ESERVER;
    }
    if (si->Cluster && (!si->Cluster->Leader || !*si->Cluster->Leader)) {
        /* A leaderless stream's info may come from a replica that is behind. */
        why_fmt(why, whylen, "stream %s has no leader yet (an election is under way)", cfg->stream);
        jsStreamInfo_Destroy(si);
        return PB_ESERVER;
    }
    if (si->Config)
        mn->dup_window_ms = si->Config->Duplicates / 1000000;
    if (!mn->stream_logged || strcmp(verb, "created") == 0)
        log_stream(mn, si, verb);
    mn->stream_logged = true;
    jsStreamInfo_Destroy(si);
    return 0;
}

/* One forward pass over the stream from start_seq to `last`, at most
 * `limit` messages. The consumer takes every subject (">") and the
 * messages outside subject_prefix are skipped here: with the filter
 * subject_prefix>, nats-server 2.9.10 (fixed in 2.9.15) recomputes the
 * consumer's pending count for every message it delivers while the
 * consumer stands in the first half of the stream's last block, each time
 * reading the block from its start (23,001 messages from sequence 2,000 of
 * a one-block stream: 20.3 s filtered, 0.22 s not). 0, 1 when it stopped
 * at the limit, or a negative code. */
static int scan_pass(mirror_nats *mn, uint64_t start_seq, uint64_t last, uint32_t limit,
                     mirror_scan_fn fn, void *ctx, uint32_t *read, char *why, size_t whylen)
{
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = mn->cfg->stream;
    so.Ordered = true;
    so.Config.HeadersOnly = true; /* the ids are all it needs */
    so.Config.DeliverPolicy = js_DeliverByStartSequence;
    so.Config.OptStartSeq = start_seq;
    natsSubscription *sub = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_SubscribeSync(&sub, mn->js, ">", NULL, &so, &jerr);
    if (s != NATS_OK) {
        why_fmt(why, whylen, "stream %s: cannot read its tail: %s", mn->cfg->stream, nats_why(s));
        return PB_ESERVER;
    }
    /* No pending limit: libnats (3.4.1) drops what a subscription holds
     * beyond it (65,536 messages by default, fewer than `limit`) after its
     * ordered consumer took the message as delivered, and the consumer
     * then stalls on flow control: the scan would end early at
     * SCAN_QUIET_MS and take the rest of the tail for missing. The
     * server's flow-control window (32 MiB in 2.9.10) bounds what waits. */
    natsSubscription_SetPendingLimits(sub, -1, -1);
    int rc = 0;
    for (uint32_t n = 0;; n++) {
        if (n >= limit) {
            rc = 1;
            break;
        }
        natsMsg *msg = NULL;
        /* A quiet consumer: the stream shrank meanwhile. */
        if (natsSubscription_NextMsg(&msg, sub, SCAN_QUIET_MS) != NATS_OK)
            break;
        jsMsgMetaData *meta = NULL;
        uint64_t seq = 0;
        if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
            seq = meta->Sequence.Stream;
            jsMsgMetaData_Destroy(meta);
        }
        /* Another writer's message (a stream with sources, or subjects
         * changed after use) is no copy of ours, whatever its id says. */
        bool ours = mirror_subject_under(mn->cfg->subject_prefix, natsMsg_GetSubject(msg));
        if (ours)
            (*read)++;
        const char *id = NULL;
        if (ours && natsMsgHeader_Get(msg, "Nats-Msg-Id", &id) == NATS_OK && id) {
            const char *colon = strrchr(id, ':');
            size_t plen = colon ? (size_t)(colon - id) : 0;
            char part[PB_PARTITION_NAME_MAX + 1], *end = NULL;
            if (colon && plen > 0 && plen <= PB_PARTITION_NAME_MAX && colon[1] >= '0' &&
                colon[1] <= '9') {
                unsigned long long off = strtoull(colon + 1, &end, 10);
                memcpy(part, id, plen);
                part[plen] = '\0';
                if (end && *end == '\0')
                    fn(ctx, part, off, seq);
            }
        }
        natsMsg_Destroy(msg);
        if (seq >= last)
            break;
    }
    int64_t dropped = 0;
    if (natsSubscription_GetDropped(sub, &dropped) == NATS_OK && dropped > 0) {
        why_fmt(why, whylen,
                "stream %s: reading its tail, the client dropped %" PRId64 " message(s)",
                mn->cfg->stream, dropped);
        rc = PB_ESERVER;
    }
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
    return rc;
}

int mirror_nats_scan(mirror_nats *mn, uint64_t from_seq, uint32_t limit, mirror_scan_fn fn,
                     void *ctx, uint32_t *read, bool *hit_limit, char *why, size_t whylen)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    *read = 0;
    *hit_limit = false;
    natsStatus s = js_GetStreamInfo(&si, mn->js, mn->cfg->stream, NULL, &jerr);
    if (s != NATS_OK) {
        why_fmt(why, whylen, "stream %s: %s", mn->cfg->stream, nats_why(s));
        return PB_ESERVER;
    }
    uint64_t first = si->State.FirstSeq, last = si->State.LastSeq;
    bool empty = si->State.Msgs == 0;
    jsStreamInfo_Destroy(si);
    if (empty || from_seq > last)
        return 0;
    if (from_seq < first)
        from_seq = first;
    /* More than `limit` to read: the newest `limit` are the ones that
     * matter (the last messages sent before the acknowledgements stopped). */
    if (last - from_seq + 1 > limit) {
        *hit_limit = true;
        from_seq = last + 1 - limit;
    }
    int rc = scan_pass(mn, from_seq, last, limit, fn, ctx, read, why, whylen);
    return rc < 0 ? rc : 0;
}

int mirror_nats_id_at(mirror_nats *mn, uint64_t seq, char *id, size_t idlen, char *subject,
                      size_t subjlen, char *why, size_t whylen)
{
    natsMsg *msg = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetMsg(&msg, mn->js, mn->cfg->stream, seq, NULL, &jerr);
    if (s == NATS_NOT_FOUND)
        return PB_ENOTFOUND;
    if (s != NATS_OK) {
        why_fmt(why, whylen, "stream %s: reading message %" PRIu64 ": %s", mn->cfg->stream, seq,
                nats_why(s));
        return PB_ESERVER;
    }
    const char *v = NULL;
    snprintf(id, idlen, "%s", natsMsgHeader_Get(msg, "Nats-Msg-Id", &v) == NATS_OK && v ? v : "");
    const char *subj = natsMsg_GetSubject(msg);
    snprintf(subject, subjlen, "%s", subj ? subj : "");
    natsMsg_Destroy(msg);
    return 0;
}

int mirror_nats_delete(mirror_nats *mn, uint64_t seq, char *why, size_t whylen)
{
    jsErrCode jerr = 0;
    natsStatus s = js_DeleteMsg(mn->js, mn->cfg->stream, seq, NULL, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JSSequenceNotFoundErr)
        return PB_ENOTFOUND;
    if (s != NATS_OK) {
        why_fmt(why, whylen, "stream %s: deleting message %" PRIu64 ": %s (JetStream error %d)",
                mn->cfg->stream, seq, nats_why(s), (int)jerr);
        return PB_ESERVER;
    }
    return 0;
}

int64_t mirror_nats_dup_window_ms(mirror_nats *mn)
{
    /* A server's default window is 2 minutes. */
    return mn->dup_window_ms > 0 ? mn->dup_window_ms : 120000;
}

const char *mirror_nats_test_lose(void)
{
    /* Test hook (tests/integration/test_mirror.c): PARTITION:OFFSET whose
     * first publish goes to LOSE_SUBJECT instead of the stream, where the
     * test's subscriber never answers: JetStream never sees it and its
     * acknowledgement times out, exactly as a publish lost inside NATS. */
    const char *v = getenv("PROTOBUSD_TEST_MIRROR_LOSE");
    return v && *v ? v : NULL;
}

/* Test hook (tests/integration/test_mirror.c): $PROTOBUSD_TEST_MIRROR_LATE
 * = PARTITION:OFFSET. That publish is lost (LOSE_SUBJECT, as above); each
 * later publish of the partition also goes there, while a copy with the
 * real subject is held back until mirror_nats_test_release, which the
 * mirror calls after the scan that follows the failure: publishes that
 * were still inside NATS when the stream's tail was read, stored after
 * it (FORMAT.md E.4 item 4). */
#define LATE_HELD_MAX 4096

static void late_hook_init(mirror_nats *mn)
{
    const char *v = getenv("PROTOBUSD_TEST_MIRROR_LATE");
    const char *colon = v ? strrchr(v, ':') : NULL;
    if (!colon || (size_t)(colon - v) > PB_PARTITION_NAME_MAX)
        return;
    snprintf(mn->late_part, sizeof mn->late_part, "%.*s", (int)(colon - v), v);
    mn->late_at = strtoull(colon + 1, NULL, 10);
    mn->late = 1;
}

/* Whether the message of part:offset goes to LOSE_SUBJECT, and whether
 * msg (built with its real subject) is to be held back. */
static bool late_hook(mirror_nats *mn, const char *part, uint64_t offset, bool *hold)
{
    *hold = false;
    if (mn->late == 0 || mn->late == 3 || strcmp(part, mn->late_part) != 0 || offset < mn->late_at)
        return false;
    if (mn->late == 1 && offset == mn->late_at) {
        mn->late = 2;
        return true;
    }
    if (mn->late != 2 || offset == mn->late_at)
        return false;
    *hold = mn->n_held < LATE_HELD_MAX;
    return true;
}

void mirror_nats_test_release(mirror_nats *mn)
{
    if (mn->late != 2)
        return;
    mn->late = 3;
    for (size_t i = 0; i < mn->n_held; i++) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = mn->cfg->ack_timeout_ms;
        /* Its acknowledgement names a message the mirror does not track:
         * ignored. */
        if (js_PublishMsgAsync(mn->js, &mn->held[i], &po) != NATS_OK)
            natsMsg_Destroy(mn->held[i]);
    }
    free(mn->held);
    mn->held = NULL;
    mn->n_held = 0;
}

/* --- messages ---------------------------------------------------------------- */

/* Adds one header; counts its bytes on the wire ("Key: value\r\n"). */
static natsStatus header(natsMsg *m, bool add, const char *key, const char *value, size_t *bytes)
{
    *bytes += strlen(key) + strlen(value) + 4;
    return add ? natsMsgHeader_Add(m, key, value) : natsMsgHeader_Set(m, key, value);
}

static natsStatus time_header(natsMsg *m, const char *key, const event_time *t, size_t *bytes)
{
    if (!t->present)
        return NATS_OK;
    char v[32];
    snprintf(v, sizeof v, "%" PRId64, t->ns);
    return header(m, false, key, v, bytes);
}

/* The payload format's headers (FORMAT.md, Part E). */
static natsStatus payload_headers(natsMsg *m, const event_view *v, size_t *bytes, char *buf,
                                  size_t cap)
{
    natsStatus s = NATS_OK;
    if (mirror_header_escape(v->topic.p, v->topic.len, false, buf, cap) < 0)
        return NATS_INSUFFICIENT_BUFFER;
    IFOK(s, header(m, false, "Protobus-Topic", buf, bytes));
    if (s == NATS_OK && v->type_url.len) {
        if (mirror_header_escape(v->type_url.p, v->type_url.len, false, buf, cap) < 0)
            return NATS_INSUFFICIENT_BUFFER;
        s = header(m, false, "Protobus-Type", buf, bytes);
    }
    IFOK(s, time_header(m, "Protobus-Receive-Time", &v->server_receive_time, bytes));
    IFOK(s, time_header(m, "Protobus-Event-Time", &v->client_event_time, bytes));
    IFOK(s, time_header(m, "Protobus-Transmit-Time", &v->client_transmit_time, bytes));
    event_tag_iter it;
    event_tag t;
    event_tags_begin(v, &it);
    while (s == NATS_OK && event_tags_next(&it, &t)) {
        int k = mirror_header_escape(t.key.p, t.key.len, true, buf, cap);
        if (k < 0 || (size_t)k + 2 > cap)
            return NATS_INSUFFICIENT_BUFFER;
        buf[k] = '=';
        if (mirror_header_escape(t.value.p, t.value.len, false, buf + k + 1, cap - (size_t)k - 1) <
            0)
            return NATS_INSUFFICIENT_BUFFER;
        s = header(m, true, "Protobus-Tag", buf, bytes);
    }
    return s;
}

int mirror_nats_build(mirror_nats *mn, const char *part_name, const pb_record *rec, void **token,
                      char id[MIRROR_MSG_ID_MAX], char *why, size_t whylen)
{
    const pb_mirror_config *cfg = mn->cfg;
    event_view v;
    char err[200];
    *token = NULL;
    snprintf(id, MIRROR_MSG_ID_MAX, "%s:%" PRIu64, part_name, rec->offset);
    if (event_scan(rec->event, rec->event_len, &v, err, sizeof err) < 0) {
        why_fmt(why, whylen, "the stored event does not parse: %s", err);
        return PB_EPROTO;
    }
    char subject[MIRROR_SUBJECT_MAX(256, 256)];
    if (mirror_subject_from_topic(cfg->subject_prefix, v.topic.p, v.topic.len, subject,
                                  sizeof subject) < 0) {
        why_fmt(why, whylen, "its subject is too long");
        return PB_ETOOBIG;
    }
    const void *data = rec->event;
    size_t len = rec->event_len;
    if (cfg->format == PB_MIRROR_PAYLOAD) {
        data = v.value.p;
        len = v.value.len;
    }
    if (mn->lose && strcmp(mn->lose, id) == 0) {
        snprintf(subject, sizeof subject, "%s", MIRROR_LOSE_SUBJECT);
        mn->lose = NULL;
    }
    bool hold = false;
    if (late_hook(mn, part_name, rec->offset, &hold) && !hold)
        snprintf(subject, sizeof subject, "%s", MIRROR_LOSE_SUBJECT);
    natsMsg *m = NULL;
    size_t hdr_bytes = 12; /* "NATS/1.0\r\n" ... "\r\n" */
    natsStatus s = natsMsg_Create(&m, subject, NULL, (const char *)data, (int)len);
    IFOK(s, header(m, false, "Nats-Msg-Id", id, &hdr_bytes));
    if (s == NATS_OK && cfg->format == PB_MIRROR_PAYLOAD) {
        /* Room for the longest escaped key=value: a tag is at most one
         * event's bytes, each escaped to 3. */
        size_t cap = 3 * (size_t)rec->event_len + 8;
        char *buf = malloc(cap);
        s = buf ? payload_headers(m, &v, &hdr_bytes, buf, cap) : NATS_NO_MEMORY;
        free(buf);
    }
    if (s != NATS_OK) {
        natsMsg_Destroy(m);
        why_fmt(why, whylen, "cannot build its NATS message: %s", natsStatus_GetText(s));
        return s == NATS_NO_MEMORY ? PB_ENOMEM : PB_EINVAL;
    }
    int64_t maxp = mn->nc ? natsConnection_GetMaxPayload(mn->nc) : 0;
    if (maxp > 0 && (int64_t)(len + hdr_bytes + strlen(subject)) > maxp) {
        natsMsg_Destroy(m);
        why_fmt(why, whylen,
                "%zu bytes with its headers, more than the NATS server's max_payload (%" PRId64 ")",
                len + hdr_bytes, maxp);
        return PB_ETOOBIG;
    }
    if (hold) {
        /* The copy is held; what is published (and times out) is an
         * empty message to LOSE_SUBJECT. */
        natsMsg *lost = NULL;
        natsMsg **grown = realloc(mn->held, (mn->n_held + 1) * sizeof *grown);
        if (grown)
            mn->held = grown;
        if (!grown || natsMsg_Create(&lost, MIRROR_LOSE_SUBJECT, NULL, "", 0) != NATS_OK) {
            natsMsg_Destroy(m);
            why_fmt(why, whylen, "test hook: no memory");
            return PB_ENOMEM;
        }
        mn->held[mn->n_held++] = m;
        m = lost;
    }
    *token = m;
    return 0;
}

int mirror_nats_publish(mirror_nats *mn, void *token, char *why, size_t whylen)
{
    natsMsg *m = token;
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = mn->cfg->ack_timeout_ms;
    natsStatus s = js_PublishMsgAsync(mn->js, &m, &po);
    if (s != NATS_OK) {
        why_fmt(why, whylen, "%s", nats_why(s));
        return s == NATS_CONNECTION_CLOSED || s == NATS_CONNECTION_DISCONNECTED ||
                       s == NATS_INSUFFICIENT_BUFFER
                   ? PB_ECONNECT
                   : PB_ESERVER;
    }
    return 0;
}

void mirror_nats_drop(void *token)
{
    natsMsg_Destroy(token);
}

void mirror_nats_close(mirror_nats *mn)
{
    if (!mn)
        return;
    pthread_mutex_lock(&mn->mu);
    mn->closed = true;
    pthread_mutex_unlock(&mn->mu);
    if (mn->nc)
        natsConnection_Close(mn->nc);
    jsCtx_Destroy(mn->js);
    natsConnection_Destroy(mn->nc);
    natsOptions_Destroy(mn->opts);
    mn->js = NULL;
    mn->nc = NULL;
    mn->opts = NULL;
}

void mirror_nats_free(mirror_nats *mn)
{
    if (!mn)
        return;
    for (size_t i = 0; i < mn->n_held; i++)
        natsMsg_Destroy(mn->held[i]);
    free(mn->held);
    pthread_mutex_destroy(&mn->mu);
    free(mn);
}

void mirror_nats_shutdown(void)
{
    /* Waits (bounded) until libnats' threads are gone, so no callback can
     * run after the mirrors are freed. */
    (void)nats_CloseAndWait(5000);
}
