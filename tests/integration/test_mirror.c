/*
 * Integration: the mirror to JetStream against a real 3-node cluster
 * (Debian's nats-server, tests/lib/jscluster) on loopback, R3 streams.
 *
 * protobusd mirrors two scopes: the sensors-* partitions (capture-group
 * rule; one of them, sensors-late, appears only in phase 2) to stream
 * SENSORS in the payload format, and the catch-all partition "events" (its
 * topics are not valid NATS subjects as they stand: "odd..dots",
 * "wild.*.card", "gt.>", UTF-8, ...) to stream EVENTS in the event format.
 * 100,000 events are published with libprotobus in five phases:
 *
 *   1. cluster up;
 *   2. the SENSORS stream's leader node stopped (an election under load);
 *   3. the other two stopped as well: the whole cluster down for a while;
 *      then protobusd is killed (-9) and restarted while the cluster is
 *      still down, and the three nodes are restarted;
 *   4. while the mirror catches up: protobusd killed (-9) and restarted in
 *      the middle of the phase;
 *   5. the rest.
 *
 * Then, once the streams hold as many messages as the partitions have
 * events (bounded wait), protobusd is stopped and every stream is read
 * with the NATS C client (an ordered consumer; what its replica lacks,
 * from the stream's leader) and compared with the partitions' files:
 * every event exactly once, in offset order per partition (Nats-Msg-Id =
 * PARTITION:OFFSET), with the subject its topic maps to (and back), the
 * stored event bytes (event format) or the payload with its topic, receive
 * time and tags as headers (payload format).
 *
 * In phase 1 one publish is lost inside NATS on purpose (the daemon's test
 * hook PROTOBUSD_TEST_MIRROR_LOSE sends sensors-a:L to a subject where this
 * test listens and never answers) while the later ones are stored: the
 * mirror must find the gap, delete the messages of sensors-a stored after
 * it, wait for the stream's duplicate window (10 s here) and resend, so
 * that the stream still holds sensors-a in offset order (FORMAT.md E.4).
 * Later in phase 1 a second hook (PROTOBUSD_TEST_MIRROR_LATE) loses
 * sensors-b:M and holds back the publishes of sensors-b after it until the
 * stream's tail has been read: copies stored after the scan, before
 * sensors-b:M is resent. The mirror must see from the acknowledgements
 * that they are out of order, delete them and resend.
 *
 * PB_TEST_SCALE (a percentage, default 100) scales the number of events;
 * under ThreadSanitizer (PB_SANITIZER=thread, tests/run-tsan) the default is
 * 20%, to stay within the time budget. 55-67 s on this machine kind (load
 * 6-16, 2026-12-06).
 */
#include "event.h"
#include "itest.h"
#include "jscluster.h"
#include "mirror_cursor.h"
#include "mirror_subject.h"
#include "pb_errors.h"
#include "protobus.h"
#include "reader.h"

#include <inttypes.h>
#include <nats/nats.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define N_EVENTS        100000
#define SENSORS_PREFIX  "pb.s."
#define EVENTS_PREFIX   "pb.e."
#define CATCH_UP_WAIT_S 150

static itest_daemon D;
static jscluster C;
static uint64_t n_events;

/* Topics of the "events" partition: none is a valid subject as it stands
 * except the last. */
static const char *const odd_topics[] = {"odd..dots", "wild.*.card", "gt.>",   "pct%41",
                                         "ünï.cødé",  ".lead",       "trail.", "dollar.$x",
                                         "hash#tag",  "plain.topic"};
#define N_ODD (sizeof odd_topics / sizeof odd_topics[0])

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Event id -> topic: a quarter each to events, sensors-a, sensors-b and
 * sensors-c1 (sensors-late from phase 2 on). */
static const char *topic_for(uint64_t id, bool late)
{
    switch (id % 4) {
    case 0:
        return odd_topics[(id / 4) % N_ODD];
    case 1:
        return "sensors.a.temp";
    case 2:
        return "sensors.b.hum";
    default:
        return late ? "sensors.late.x" : "sensors.c1.x";
    }
}

/* Publishes ids [from, to) and waits until all are acked. */
static void publish_range(uint64_t from, uint64_t to, bool late)
{
    char addr[64], err[256];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", D.port);
    pb_client_options o;
    pb_client_options_init(&o);
    o.no_positions = true;
    pb_client *c;
    if (pb_client_connect(&c, addr, &o, err, sizeof err) != 0)
        fail_msg("connect to protobusd: %s", err);
    for (uint64_t id = from; id < to; id++) {
        char payload[48], idtxt[24];
        snprintf(payload, sizeof payload, "payload-%" PRIu64, id);
        snprintf(idtxt, sizeof idtxt, "%" PRIu64, id);
        /* Every third event has tags whose keys and values need escaping
         * in headers ('=', '%', a tab). */
        pb_tag tags[2] = {{.key = "id", .value = idtxt}, {.key = "k=e%y", .value = "v\t%al=ue"}};
        pb_event ev = {.topic = topic_for(id, late),
                       .tags = id % 3 == 0 ? tags : NULL,
                       .ntags = id % 3 == 0 ? 2 : 0,
                       .payload_type = id % 2 ? "type.example/pb.Test" : NULL,
                       .payload = payload,
                       .payload_len = strlen(payload)};
        int rc = pb_client_publish(c, &ev);
        if (rc != 0)
            fail_msg("publish %" PRIu64 ": %s", id, pb_strerror(rc));
    }
    int rc = pb_client_flush(c, 60000, NULL, NULL);
    if (rc != 0)
        fail_msg("flush: %s (%s)", pb_strerror(rc), pb_client_message(c));
    pb_client_close(c);
}

/* --- NATS side ------------------------------------------------------------- */

static natsConnection *nats_connect(void)
{
    natsOptions *opts = NULL;
    natsConnection *nc = NULL;
    const char *urls[JSCLUSTER_MAX];
    char buf[JSCLUSTER_MAX][64];
    for (int i = 0; i < C.n; i++) {
        snprintf(buf[i], sizeof buf[i], "nats://127.0.0.1:%u", C.port[i]);
        urls[i] = buf[i];
    }
    natsStatus s = natsOptions_Create(&opts);
    if (s == NATS_OK)
        s = natsOptions_SetServers(opts, urls, C.n);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(opts, -1);
    if (s == NATS_OK) /* check_stream: a subscription must drop nothing */
        s = natsOptions_SetMaxPendingMsgs(opts, 1 << 20); /* its bytes limit: 1 KiB each */
    if (s == NATS_OK)
        s = natsConnection_Connect(&nc, opts);
    natsOptions_Destroy(opts);
    if (s != NATS_OK)
        fail_msg("checker: cannot connect to NATS: %s", natsStatus_GetText(s));
    return nc;
}

/* The stream's message count, or -1 if it cannot be had now. */
static int64_t stream_msgs(jsCtx *js, const char *stream, char *leader, size_t leader_len)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    if (js_GetStreamInfo(&si, js, stream, NULL, &jerr) != NATS_OK)
        return -1;
    int64_t n = (int64_t)si->State.Msgs;
    if (leader && leader_len) {
        leader[0] = '\0';
        if (si->Cluster && si->Cluster->Leader)
            snprintf(leader, leader_len, "%s", si->Cluster->Leader);
    }
    jsStreamInfo_Destroy(si);
    return n;
}

/* Index of the node leading `stream` (n1.. -> 0..); 0 if unknown. */
static int stream_leader(const char *stream)
{
    natsConnection *nc = nats_connect();
    jsCtx *js = NULL;
    natsConnection_JetStream(&js, nc, NULL);
    char leader[64] = "";
    for (int tries = 0; tries < 100 && !leader[0]; tries++) {
        if (stream_msgs(js, stream, leader, sizeof leader) < 0 || !leader[0])
            nap_ms(100);
    }
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    int i = leader[0] == 'n' ? atoi(leader + 1) - 1 : 0;
    return i >= 0 && i < C.n ? i : 0;
}

/* --- the partitions' files (the truth) ------------------------------------ */

typedef struct part_data {
    char name[128];
    uint8_t **ev;
    uint32_t *len;
    int64_t *time;
    uint64_t count;
    uint64_t next;   /* the offset after the last one the stream gave */
    uint64_t unseen; /* the lowest offset the stream has not given yet */
    uint64_t got;    /* offsets the stream gave */
    bool *seen;
} part_data;

static void load_part(const char *name, part_data *p)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", D.data_dir, name);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    size_t cap = 1024;
    p->ev = malloc(cap * sizeof *p->ev);
    p->len = malloc(cap * sizeof *p->len);
    p->time = malloc(cap * sizeof *p->time);
    pb_reader *r;
    assert_int_equal(pb_reader_open(&r, dir), 0);
    pb_record rec;
    int rc;
    while ((rc = pb_reader_next(r, &rec)) == 0) {
        if (rec.offset != p->count)
            fail_msg("%s: offset %" PRIu64 " where %" PRIu64 " was expected", name, rec.offset,
                     p->count);
        if (p->count == cap) {
            cap *= 2;
            p->ev = realloc(p->ev, cap * sizeof *p->ev);
            p->len = realloc(p->len, cap * sizeof *p->len);
            p->time = realloc(p->time, cap * sizeof *p->time);
        }
        p->ev[p->count] = malloc(rec.event_len);
        memcpy(p->ev[p->count], rec.event, rec.event_len);
        p->len[p->count] = rec.event_len;
        p->time[p->count] = rec.time_ns;
        p->count++;
    }
    assert_int_equal(rc, PB_EEOF);
    pb_reader_close(r);
    p->seen = calloc(p->count ? p->count : 1, sizeof *p->seen);
    assert_non_null(p->seen);
}

static void free_part(part_data *p)
{
    for (uint64_t i = 0; i < p->count; i++)
        free(p->ev[i]);
    free(p->ev);
    free(p->len);
    free(p->time);
    free(p->seen);
}

/* The partitions loaded for the comparison (freed by teardown too, when a
 * check fails half-way). */
static struct {
    part_data sensors[8], ev[1];
    size_t ns, nev;
} P;

static void free_parts(void)
{
    for (size_t i = 0; i < P.ns; i++)
        free_part(&P.sensors[i]);
    for (size_t i = 0; i < P.nev; i++)
        free_part(&P.ev[i]);
    P.ns = P.nev = 0;
}

/* --- comparing a stream with the files -------------------------------------- */

static void check_payload_headers(natsMsg *m, const event_view *v, const part_data *p, uint64_t off)
{
    const char *val = NULL;
    char want[2048], got_time[32];
    assert_int_equal(mirror_header_escape(v->topic.p, v->topic.len, false, want, sizeof want) >= 0,
                     1);
    if (natsMsgHeader_Get(m, "Protobus-Topic", &val) != NATS_OK || strcmp(val, want) != 0)
        fail_msg("%s:%" PRIu64 ": Protobus-Topic is \"%s\", expected \"%s\"", p->name, off,
                 val ? val : "(none)", want);
    snprintf(got_time, sizeof got_time, "%" PRId64, v->server_receive_time.ns);
    if (natsMsgHeader_Get(m, "Protobus-Receive-Time", &val) != NATS_OK ||
        strcmp(val, got_time) != 0)
        fail_msg("%s:%" PRIu64 ": Protobus-Receive-Time is %s, expected %s", p->name, off,
                 val ? val : "(none)", got_time);
    const char **values = NULL;
    int count = 0;
    natsMsgHeader_Values(m, "Protobus-Tag", &values, &count);
    event_tag_iter it;
    event_tag t;
    int i = 0;
    event_tags_begin(v, &it);
    while (event_tags_next(&it, &t)) {
        int k = mirror_header_escape(t.key.p, t.key.len, true, want, sizeof want);
        want[k] = '=';
        mirror_header_escape(t.value.p, t.value.len, false, want + k + 1, sizeof want - k - 1);
        if (i >= count || strcmp(values[i], want) != 0)
            fail_msg("%s:%" PRIu64 ": Protobus-Tag #%d is \"%s\", expected \"%s\"", p->name, off, i,
                     i < count ? values[i] : "(none)", want);
        i++;
    }
    if (i != count)
        fail_msg("%s:%" PRIu64 ": %d Protobus-Tag headers, expected %d", p->name, off, count, i);
    free((void *)values);
}

/* Offset order: each message is the lowest offset not seen yet (FORMAT.md
 * E.4: no exception, even where NATS lost a publish while a later one was
 * stored). */
static void check_order(part_data *p, uint64_t off, const char *id, uint64_t seq)
{
    if (off != p->unseen)
        fail_msg("message %s at stream sequence %" PRIu64 ": expected %s:%" PRIu64
                 " next (exactly once, in offset order; daemon log %s)",
                 id, seq, p->name, p->unseen, D.log);
}

/* One message (at stream sequence seq) against the event at its
 * PARTITION:OFFSET. */
static void check_message(natsMsg *m, const char *prefix, bool payload_format, part_data *parts,
                          size_t nparts, uint64_t seq)
{
    const char *id = NULL;
    if (natsMsgHeader_Get(m, "Nats-Msg-Id", &id) != NATS_OK)
        fail_msg("a message on %s has no Nats-Msg-Id", natsMsg_GetSubject(m));
    const char *colon = strrchr(id, ':');
    assert_non_null(colon);
    part_data *p = NULL;
    for (size_t i = 0; i < nparts && !p; i++)
        if (strlen(parts[i].name) == (size_t)(colon - id) &&
            strncmp(parts[i].name, id, (size_t)(colon - id)) == 0)
            p = &parts[i];
    if (!p)
        fail_msg("message %s: not a partition of this mirror", id);
    uint64_t off = strtoull(colon + 1, NULL, 10);
    if (off >= p->count)
        fail_msg("message %s: the partition has only %" PRIu64 " events", id, p->count);
    if (p->seen[off])
        fail_msg("message %s at stream sequence %" PRIu64 ": a second time (exactly once)", id,
                 seq);
    check_order(p, off, id, seq);
    p->seen[off] = true;
    p->got++;
    p->next = off + 1;
    while (p->unseen < p->count && p->seen[p->unseen])
        p->unseen++;

    event_view v;
    char err[256];
    assert_int_equal(event_scan(p->ev[off], p->len[off], &v, err, sizeof err), 0);
    char subject[2048];
    uint8_t topic[512];
    assert_true(mirror_subject_from_topic(prefix, v.topic.p, v.topic.len, subject, sizeof subject) >
                0);
    if (strcmp(natsMsg_GetSubject(m), subject) != 0)
        fail_msg("message %s: subject %s, expected %s", id, natsMsg_GetSubject(m), subject);
    int tl = mirror_subject_to_topic(prefix, natsMsg_GetSubject(m), topic, sizeof topic, err,
                                     sizeof err);
    if (tl != (int)v.topic.len || memcmp(topic, v.topic.p, v.topic.len) != 0)
        fail_msg("message %s: subject %s does not map back to its topic", id,
                 natsMsg_GetSubject(m));
    const void *want = payload_format ? (const void *)v.value.p : (const void *)p->ev[off];
    size_t want_len = payload_format ? v.value.len : p->len[off];
    if ((size_t)natsMsg_GetDataLength(m) != want_len ||
        memcmp(natsMsg_GetData(m), want, want_len) != 0)
        fail_msg("message %s: content differs from the stored event's %s", id,
                 payload_format ? "payload" : "bytes");
    if (payload_format)
        check_payload_headers(m, &v, p, off);
}

/* True once the stream has a leader and every other replica is current
 * with no lag. That is the applied index, not the content: nats-server
 * 2.9.10's replicas can drift apart after a leader change (FORMAT.md E.4
 * item 5), so check_stream takes what its consumer's replica lacks from
 * the leader. */
static bool replicas_current(jsCtx *js, const char *stream)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    if (js_GetStreamInfo(&si, js, stream, NULL, &jerr) != NATS_OK)
        return false;
    bool ok = si->Cluster && si->Cluster->Leader && *si->Cluster->Leader &&
              si->Cluster->ReplicasLen == C.n - 1;
    for (int i = 0; ok && si->Cluster && i < si->Cluster->ReplicasLen; i++) {
        const jsPeerInfo *r = si->Cluster->Replicas[i];
        ok = r->Current && !r->Offline && r->Lag == 0;
    }
    jsStreamInfo_Destroy(si);
    return ok;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The stream's first and last sequences, message count and deleted
 * sequences, sorted (from its leader; *deleted is the caller's to free),
 * or false if they cannot be had now. */
static bool stream_state(jsCtx *js, const char *stream, uint64_t *first, uint64_t *last,
                         int64_t *msgs, uint64_t **deleted, size_t *ndeleted)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    jsOptions o;
    jsOptions_Init(&o);
    o.Stream.Info.DeletedDetails = true;
    if (js_GetStreamInfo(&si, js, stream, &o, &jerr) != NATS_OK)
        return false;
    *first = si->State.FirstSeq;
    *last = si->State.LastSeq;
    *msgs = (int64_t)si->State.Msgs;
    *ndeleted = si->State.DeletedLen > 0 ? (size_t)si->State.DeletedLen : 0;
    *deleted = malloc((*ndeleted ? *ndeleted : 1) * sizeof **deleted);
    assert_non_null(*deleted);
    if (*ndeleted)
        memcpy(*deleted, si->State.Deleted, *ndeleted * sizeof **deleted);
    qsort(*deleted, *ndeleted, sizeof **deleted, cmp_u64);
    jsStreamInfo_Destroy(si);
    return true;
}

/* How a stream is read: an ordered consumer, and the stream's leader for
 * the sequences the consumer did not give. */
typedef struct stream_read {
    jsCtx *js;
    const char *stream, *prefix;
    bool payload_format;
    part_data *parts;
    size_t nparts;
    uint64_t last_seq; /* the last sequence checked (consumer or leader) */
    uint64_t checked;  /* messages checked */
    uint64_t *dels;    /* the leader's deleted sequences, sorted (the mirror deleted them) */
    size_t ndels;
    uint64_t deleted; /* of them, those the consumer's gaps covered */
    uint64_t from_leader;
} stream_read;

/* Sequences after sr->last_seq up to `to` (exclusive) that the consumer
 * skipped: each is read from the stream's leader (js_GetMsg) and checked
 * like a consumer's message if the leader holds one there. The ordered
 * consumer (R1) runs on a random peer of the stream, and nats-server
 * 2.9.10's replicas can disagree (server/mirror.h): a skip is the
 * consumer's replica lacking a message, which is the NATS server's state,
 * not the mirror's; the leader's copy, in sequence order, is what the
 * stream holds. The leader's deleted sequences (the mirror deletes copies
 * stored out of order, FORMAT.md E.4) are known from its stream info and
 * not asked for one by one (600-800 a run: one request instead). */
static void read_from_leader(stream_read *sr, uint64_t to)
{
    uint64_t skipped = 0;
    for (uint64_t q = sr->last_seq + 1; q < to; q++) {
        if (bsearch(&q, sr->dels, sr->ndels, sizeof q, cmp_u64)) {
            sr->deleted++;
            continue;
        }
        natsMsg *lm = NULL;
        jsErrCode jerr = 0;
        natsStatus s = NATS_TIMEOUT;
        for (int tries = 0; tries < 5 && s != NATS_OK && s != NATS_NOT_FOUND; tries++)
            s = js_GetMsg(&lm, sr->js, sr->stream, q, NULL, &jerr);
        if (s == NATS_NOT_FOUND) /* deleted after the stream's info was read */
            continue;
        if (s != NATS_OK)
            fail_msg("stream %s: sequence %" PRIu64 " cannot be read from its leader: %s (%d)",
                     sr->stream, q, natsStatus_GetText(s), (int)jerr);
        check_message(lm, sr->prefix, sr->payload_format, sr->parts, sr->nparts, q);
        natsMsg_Destroy(lm);
        sr->checked++;
        skipped++;
    }
    if (skipped)
        printf("stream %s: the ordered consumer skipped %" PRIu64 " message(s) the leader holds "
               "before sequence %" PRIu64 " (its replica lacks them); checked the leader's\n",
               sr->stream, skipped, to);
    sr->from_leader += skipped;
    if (to > sr->last_seq + 1)
        sr->last_seq = to - 1;
}

/* Reads the whole stream with an ordered consumer (once its replicas agree
 * on their last sequence) and compares it with parts, in stream order;
 * what the consumer skips comes from the leader (read_from_leader). */
static void check_stream(const char *stream, const char *prefix, bool payload_format,
                         part_data *parts, size_t nparts)
{
    natsConnection *nc = nats_connect();
    stream_read sr = {.stream = stream,
                      .prefix = prefix,
                      .payload_format = payload_format,
                      .parts = parts,
                      .nparts = nparts};
    assert_int_equal(natsConnection_JetStream(&sr.js, nc, NULL), NATS_OK);
    uint64_t total = 0, first = 0, last = 0;
    for (size_t i = 0; i < nparts; i++)
        total += parts[i].count;
    uint64_t t0 = itest_now_ms(), deadline = t0 + 60000;
    while (!replicas_current(sr.js, stream) && itest_now_ms() < deadline)
        nap_ms(200);
    if (!replicas_current(sr.js, stream))
        fail_msg("stream %s: its replicas are not all current after 60 s", stream);
    int64_t msgs = -1;
    if (!stream_state(sr.js, stream, &first, &last, &msgs, &sr.dels, &sr.ndels))
        fail_msg("stream %s: no stream info", stream);
    if (msgs != (int64_t)total)
        fail_msg("stream %s holds %" PRId64 " messages; its partitions have %" PRIu64 " events",
                 stream, msgs, total);
    sr.last_seq = first - 1;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream;
    so.Ordered = true;
    /* Unfiltered (the stream's subjects are PREFIX> alone; check_message
     * fails any other): with the filter PREFIX>, the consumer info asked
     * below once delivery began made nats-server 2.9.10 re-read the block
     * per message up to its middle (EVENTS 18-25 s, 0.2 s unfiltered;
     * mirror_subjects_under). */
    const char *subject = ">";
    natsSubscription *sub = NULL;
    jsErrCode jerr = 0;
    /* The consumer on the stream's leader: an R1 consumer lands on a random
     * peer (nats-server 2.9.10), and a replica can hold other messages than
     * the leader at the same sequences (seen: n3 had sensors-late 3136..3138
     * at 19396..19398, the leader at 19602..19604, and lacked 3139..3160).
     * Created again until it is there (bounded). */
    char leader[64] = "", where[160] = "";
    stream_msgs(sr.js, stream, leader, sizeof leader);
    natsStatus s = NATS_ERR;
    for (int tries = 0; tries < 30; tries++) {
        s = js_SubscribeSync(&sub, sr.js, subject, NULL, &so, &jerr);
        if (s != NATS_OK)
            fail_msg("subscribe to %s: %s (%d)", stream, natsStatus_GetText(s), (int)jerr);
        /* Where the consumer runs, and what its replica holds (delivered +
         * pending). */
        jsConsumerInfo *ci = NULL;
        bool on_leader = false;
        if (natsSubscription_GetConsumerInfo(&ci, sub, NULL, &jerr) == NATS_OK && ci->Cluster &&
            ci->Cluster->Leader) {
            snprintf(where, sizeof where, " through a consumer on %s (its replica: %" PRIu64 ")",
                     ci->Cluster->Leader, ci->Delivered.Consumer + ci->NumPending);
            on_leader = strcmp(ci->Cluster->Leader, leader) == 0;
        }
        jsConsumerInfo_Destroy(ci);
        if (on_leader)
            break;
        natsSubscription_Unsubscribe(sub);
        natsSubscription_Destroy(sub);
        sub = NULL;
    }
    if (!sub)
        fail_msg("stream %s: no consumer on its leader %s in 30 tries", stream, leader);
    /* No pending limit (nats_connect's is far above it too): libnats 3.4.1
     * takes an ordered consumer's message as delivered before its
     * subscription's limit (65,536 messages by default) drops it, and the
     * consumer then stalls on flow control; nats-server 2.9.10's window
     * (32 MiB) lets more than that wait here when this reads slowly. */
    assert_int_equal(natsSubscription_SetPendingLimits(sub, -1, -1), NATS_OK);
    while (sr.checked < total && sr.last_seq < last) {
        natsMsg *m = NULL;
        s = natsSubscription_NextMsg(&m, sub, 10000);
        if (s == NATS_TIMEOUT) {
            read_from_leader(&sr, last + 1); /* the consumer's replica lacks the tail */
            break;
        }
        if (s != NATS_OK)
            fail_msg("stream %s: message %" PRIu64 " of %" PRIu64 " did not come: %s", stream,
                     sr.checked + 1, total, natsStatus_GetText(s));
        jsMsgMetaData *meta = NULL;
        assert_int_equal(natsMsg_GetMetaData(&meta, m), NATS_OK);
        uint64_t seq = meta->Sequence.Stream;
        jsMsgMetaData_Destroy(meta);
        if (seq <= sr.last_seq)
            fail_msg("stream %s: the consumer gave sequence %" PRIu64 " after %" PRIu64, stream,
                     seq, sr.last_seq);
        read_from_leader(&sr, seq);
        check_message(m, prefix, payload_format, parts, nparts, seq);
        natsMsg_Destroy(m);
        sr.checked++;
        sr.last_seq = seq;
    }
    int64_t dropped = 0;
    natsSubscription_GetDropped(sub, &dropped);
    if (dropped)
        fail_msg("stream %s: the checker's subscription dropped %" PRId64 " message(s)", stream,
                 dropped);
    for (size_t i = 0; i < nparts; i++)
        if (parts[i].got != parts[i].count)
            fail_msg("stream %s: %s has %" PRIu64 " of its %" PRIu64 " events", stream,
                     parts[i].name, parts[i].got, parts[i].count);
    natsSubscription_Destroy(sub);
    free(sr.dels);
    jsCtx_Destroy(sr.js);
    natsConnection_Destroy(nc);
    printf("stream %s: %" PRIu64 " messages read%s (%" PRIu64 " from the leader; %" PRIu64
           " deleted sequences) in %.1f s, each event once, in order, content checked\n",
           stream, total, where, sr.from_leader, sr.deleted, (double)(itest_now_ms() - t0) / 1000);
}

/* Waits (bounded, `limit_s`) until SENSORS holds at least `want` messages:
 * the mirror is shipping. Returns the count seen. */
static int64_t wait_sensors(int64_t want, int limit_s)
{
    natsConnection *nc = nats_connect();
    jsCtx *js = NULL;
    natsConnection_JetStream(&js, nc, NULL);
    uint64_t deadline = itest_now_ms() + (uint64_t)limit_s * 1000;
    int64_t n = -1;
    while (itest_now_ms() < deadline && (n = stream_msgs(js, "SENSORS", NULL, 0)) < want)
        nap_ms(20);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    if (n < want)
        fail_msg("SENSORS holds %" PRId64 " messages after %d s, expected at least %" PRId64
                 "; daemon log %s",
                 n, limit_s, want, D.log);
    return n;
}

/* The sum of mirror `name`'s cursors in its cursor file (every offset
 * below a partition's cursor is acknowledged in offset order), or -1 while
 * it cannot be read or names a copy found out of offset order (order_from:
 * a repair still to do). */
static int64_t cursor_sum(const char *name)
{
    char path[4200], why[600];
    mirror_cursors c;
    if (mirror_cursor_path(path, sizeof path, D.data_dir, name) < 0 ||
        mirror_cursor_load(fileio_posix(), path, name, &c, why, sizeof why) < 0)
        return -1;
    int64_t sum = c.order_from ? -1 : 0;
    for (size_t i = 0; sum >= 0 && i < c.count; i++)
        sum += (int64_t)c.offsets[i];
    mirror_cursors_free(&c);
    return sum;
}

/* Waits (bounded) until both streams hold `sensors` and `events` messages,
 * and both mirrors' cursors say so too: a stream can hold every event once
 * while a copy is still out of offset order (E.4: a gap found after a
 * restart is resent from the gap; the copies after it are found by their
 * acknowledgements and deleted, then resent), so the count alone does not
 * mean the mirror is done. */
static void wait_shipped(uint64_t sensors, uint64_t events)
{
    natsConnection *nc = nats_connect();
    jsCtx *js = NULL;
    natsConnection_JetStream(&js, nc, NULL);
    uint64_t deadline = itest_now_ms() + CATCH_UP_WAIT_S * 1000ull;
    int64_t s = -1, e = -1;
    while (itest_now_ms() < deadline) {
        s = stream_msgs(js, "SENSORS", NULL, 0);
        e = stream_msgs(js, "EVENTS", NULL, 0);
        if (s >= (int64_t)sensors && e >= (int64_t)events &&
            cursor_sum("sensors") == (int64_t)sensors && cursor_sum("events") == (int64_t)events)
            break;
        nap_ms(200);
    }
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    int64_t cs = cursor_sum("sensors"), ce = cursor_sum("events");
    if (s < (int64_t)sensors || e < (int64_t)events || cs != (int64_t)sensors ||
        ce != (int64_t)events)
        fail_msg("after %d s the streams hold %" PRId64 "/%" PRIu64 " (SENSORS) and %" PRId64
                 "/%" PRIu64 " (EVENTS) messages, the mirrors' cursors %" PRId64 " and %" PRId64
                 " (-1: a repair pending); daemon log %s",
                 CATCH_UP_WAIT_S, s, sensors, e, events, cs, ce, D.log);
}

/* --- the scenario ------------------------------------------------------------ */

static void restart_daemon(void)
{
    itest_daemon_kill(&D);
    assert_int_equal(itest_daemon_restart(&D), 0);
}

static void test_mirror_through_outages(void **state)
{
    (void)state;
    uint64_t t0 = itest_now_ms();
    assert_int_equal(jscluster_start(&C, 3), 0);
    char rules[2048];
    snprintf(rules, sizeof rules,
             "[partition sensors-$1]\n"
             "match = sensors\\.([a-z0-9]+)\\..*\n"
             "[partition events]\n"
             "match = .*\n"
             "[mirror sensors]\n"
             "nats_url = %s\n"
             "partitions = sensors-.*\n"
             "stream = SENSORS\n"
             "subject_prefix = " SENSORS_PREFIX "\n"
             "format = payload\n"
             "replicas = 3\n"
             "duplicate_window = 10s\n"
             "ack_timeout_ms = 2000\n"
             "[mirror events]\n"
             "nats_url = %s\n"
             "partitions = events\n"
             "stream = EVENTS\n"
             "subject_prefix = " EVENTS_PREFIX "\n"
             "replicas = 3\n"
             "ack_timeout_ms = 2000\n",
             C.urls, C.urls);
    /* The lost publish: to a subject with a listener that never answers,
     * so that its acknowledgement times out (a subject without one gets
     * "no responders" at once) while the later ones are stored. */
    uint64_t lose_at = n_events / 80, late_at = n_events * 3 / 160;
    char lose[64], late[64];
    snprintf(lose, sizeof lose, "sensors-a:%" PRIu64, lose_at);
    snprintf(late, sizeof late, "sensors-b:%" PRIu64, late_at);
    setenv("PROTOBUSD_TEST_MIRROR_LOSE", lose, 1);
    setenv("PROTOBUSD_TEST_MIRROR_LATE", late, 1);
    natsConnection *hole = nats_connect();
    natsSubscription *hole_sub = NULL;
    assert_int_equal(natsConnection_SubscribeSync(&hole_sub, hole, "_pbtest.lost"), NATS_OK);
    assert_int_equal(natsConnection_Flush(hole), NATS_OK);
    assert_int_equal(itest_daemon_start(&D, NULL, rules), 0);
    unsetenv("PROTOBUSD_TEST_MIRROR_LOSE"); /* the restarts below lose nothing */
    unsetenv("PROTOBUSD_TEST_MIRROR_LATE");
    uint64_t fifth = n_events / 5;

    /* Each step waits until the mirror is shipping, so that every outage
     * and every kill comes in the middle of it. A sensors event is 3/4 of
     * the events published. */
    int64_t step = (int64_t)n_events / 40;
    publish_range(0, fifth, false); /* 1: cluster up */
    wait_sensors(step, 60);
    /* The lost publish is found (its acknowledgement times out after
     * ack_timeout_ms) while the cluster is up. */
    char gap[160];
    snprintf(gap, sizeof gap, "but not sensors-a:%" PRIu64 ": a publish was lost", lose_at);
    for (int i = 0; i < 600 && !itest_log_contains(&D, gap); i++)
        nap_ms(100);
    if (!itest_log_contains(&D, gap) || !itest_log_contains(&D, "deleted the"))
        fail_msg("no \"%s\" and \"deleted the\" in the daemon log %s after 60 s", gap, D.log);
    /* The copies stored late are found by their acknowledgements. */
    const char *order = "message(s) of sensors-b at or after offset";
    for (int i = 0; i < 600 && !itest_log_contains(&D, order); i++)
        nap_ms(100);
    if (!itest_log_contains(&D, order))
        fail_msg("no \"%s\" in the daemon log %s after 60 s", order, D.log);
    natsSubscription_Destroy(hole_sub);
    natsConnection_Destroy(hole);
    int leader = stream_leader("SENSORS");
    printf("phase 1 done (%.1f s); stopping n%d, the SENSORS leader\n",
           (double)(itest_now_ms() - t0) / 1000, leader + 1);
    jscluster_stop_node(&C, leader);

    publish_range(fifth, 2 * fifth, true); /* 2: one node down; sensors-late appears */
    int64_t seen = wait_sensors((int64_t)(fifth * 3 / 4) + step, 60);
    printf("phase 2 done (%.1f s, SENSORS at %" PRId64 "); stopping the other nodes\n",
           (double)(itest_now_ms() - t0) / 1000, seen);
    for (int i = 0; i < C.n; i++)
        jscluster_stop_node(&C, i);

    publish_range(2 * fifth, 3 * fifth, true); /* 3: all down, for a while */
    nap_ms(3000);
    restart_daemon(); /* killed and restarted while the cluster is down */
    nap_ms(1000);
    for (int i = 0; i < C.n; i++)
        assert_int_equal(jscluster_start_node(&C, i), 0);
    printf("phase 3 done (%.1f s); cluster restarted\n", (double)(itest_now_ms() - t0) / 1000);

    publish_range(3 * fifth, 3 * fifth + fifth / 2, true); /* 4: catching up */
    seen = wait_sensors(seen + 2 * step, 90);
    restart_daemon(); /* killed -9 while shipping */
    publish_range(3 * fifth + fifth / 2, 4 * fifth, true);
    printf("phase 4 done (%.1f s), protobusd killed at SENSORS %" PRId64 " and restarted\n",
           (double)(itest_now_ms() - t0) / 1000, seen);

    publish_range(4 * fifth, n_events, true); /* 5 */
    uint64_t events = (n_events + 3) / 4;
    wait_shipped(n_events - events, events);
    printf("all shipped (%.1f s)\n", (double)(itest_now_ms() - t0) / 1000);
    assert_int_equal(itest_daemon_stop(&D), 0);
    assert_true(itest_log_contains(&D, "NATS unreachable"));
    assert_true(itest_log_contains(&D, "reachable again") ||
                itest_log_contains(&D, "connected to NATS"));
    assert_true(itest_log_contains(&D, "picked up new partition sensors-late"));

    char **names = NULL;
    size_t n = 0;
    assert_int_equal(pb_partition_list(D.data_dir, &names, &n), 0);
    for (size_t i = 0; i < n; i++) {
        if (strncmp(names[i], "sensors-", 8) == 0 && P.ns < 8)
            load_part(names[i], &P.sensors[P.ns++]);
        else if (strcmp(names[i], "events") == 0 && P.nev == 0)
            load_part(names[i], &P.ev[P.nev++]);
    }
    pb_partition_list_free(names, n);
    assert_int_equal(P.ns, 4); /* a, b, c1, late */

    check_stream("SENSORS", SENSORS_PREFIX, true, P.sensors, P.ns);
    check_stream("EVENTS", EVENTS_PREFIX, false, P.ev, P.nev);
    free_parts();
    printf("test_mirror: %" PRIu64 " events in %.1f s\n", n_events,
           (double)(itest_now_ms() - t0) / 1000);
}

static int teardown(void **state)
{
    (void)state;
    free_parts();
    itest_daemon_cleanup(&D);
    jscluster_cleanup(&C);
    nats_CloseAndWait(5000);
    return 0;
}

int main(void)
{
    const char *scale = getenv("PB_TEST_SCALE");
    const char *san = getenv("PB_SANITIZER");
    n_events = N_EVENTS;
    if (scale && atoi(scale) > 0)
        n_events = n_events * (uint64_t)atoi(scale) / 100;
    else if (san && strcmp(san, "thread") == 0)
        n_events /= 5; /* ThreadSanitizer's daemon is ~5x slower: same scenario, 20,000 */
    if (n_events < 100)
        n_events = 100;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_mirror_through_outages, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
