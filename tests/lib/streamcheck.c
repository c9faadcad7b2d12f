/*
 * streamcheck - compares a JetStream stream that protobusd's mirror wrote
 * with the partitions' files (see streamcheck.h).
 */
#include "streamcheck.h"

#include "event.h"
#include "itest.h"
#include "mirror_subject.h"
#include "pb_errors.h"
#include "reader.h"

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

/* The stream's message count, or -1 if it cannot be had now. */
int64_t sc_stream_msgs(jsCtx *js, const char *stream, char *leader, size_t leader_len)
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

/* --- the partitions' files (the truth) ------------------------------------ */

void sc_load_part(const char *data_dir, const char *name, part_data *p)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", data_dir, name);
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

void sc_free_part(part_data *p)
{
    for (uint64_t i = 0; i < p->count; i++)
        free(p->ev[i]);
    free(p->ev);
    free(p->len);
    free(p->time);
    free(p->seen);
}

/* --- comparing a stream with the files -------------------------------------- */

/* How a stream is read: an ordered consumer, and the stream's leader for
 * the sequences the consumer did not give. */
typedef struct stream_read {
    jsCtx *js;
    const char *stream, *prefix;
    bool payload_format;
    part_data *parts;
    size_t nparts;
    int nodes;              /* the cluster's */
    const char *daemon_log; /* named in a failure */
    uint64_t last_seq;      /* the last sequence checked (consumer or leader) */
    uint64_t checked;       /* messages checked */
    uint64_t *dels;         /* the leader's deleted sequences, sorted (the mirror deleted them) */
    size_t ndels;
    uint64_t deleted; /* of them, those the consumer's gaps covered */
    uint64_t from_leader;
    const char *foreign_prefix; /* other writers' subjects (NULL: none expected) */
    uint64_t foreign;           /* their messages read */
} stream_read;

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
static void check_order(const stream_read *sr, part_data *p, uint64_t off, const char *id,
                        uint64_t seq)
{
    if (off != p->unseen)
        fail_msg("message %s at stream sequence %" PRIu64 ": expected %s:%" PRIu64
                 " next (exactly once, in offset order; daemon log %s)",
                 id, seq, p->name, p->unseen, sr->daemon_log);
}

/* One message (at stream sequence seq) against the event at its
 * PARTITION:OFFSET. */
static void check_message(stream_read *sr, natsMsg *m, uint64_t seq)
{
    const char *prefix = sr->prefix;
    bool payload_format = sr->payload_format;
    part_data *parts = sr->parts;
    size_t nparts = sr->nparts;
    const char *id = NULL;
    if (sr->foreign_prefix &&
        strncmp(natsMsg_GetSubject(m), sr->foreign_prefix, strlen(sr->foreign_prefix)) == 0) {
        /* Another writer's: no event of the mirror's, whatever its id. */
        sr->foreign++;
        return;
    }
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
    check_order(sr, p, off, id, seq);
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
static bool replicas_current(jsCtx *js, int nodes, const char *stream)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    if (js_GetStreamInfo(&si, js, stream, NULL, &jerr) != NATS_OK)
        return false;
    bool ok = si->Cluster && si->Cluster->Leader && *si->Cluster->Leader &&
              si->Cluster->ReplicasLen == nodes - 1;
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
        check_message(sr, lm, q);
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
void sc_check_stream(natsConnection *nc, int nodes, const char *daemon_log, const char *stream,
                     const char *prefix, bool payload_format, part_data *parts, size_t nparts)
{
    sc_check_stream_foreign(nc, nodes, daemon_log, stream, prefix, payload_format, parts, nparts,
                            NULL, 0);
}

void sc_check_stream_foreign(natsConnection *nc, int nodes, const char *daemon_log,
                             const char *stream, const char *prefix, bool payload_format,
                             part_data *parts, size_t nparts, const char *foreign_prefix,
                             uint64_t foreign)
{
    stream_read sr = {.stream = stream,
                      .prefix = prefix,
                      .payload_format = payload_format,
                      .parts = parts,
                      .nparts = nparts,
                      .nodes = nodes,
                      .daemon_log = daemon_log,
                      .foreign_prefix = foreign_prefix};
    assert_int_equal(natsConnection_JetStream(&sr.js, nc, NULL), NATS_OK);
    uint64_t total = foreign, first = 0, last = 0;
    for (size_t i = 0; i < nparts; i++)
        total += parts[i].count;
    uint64_t t0 = itest_now_ms(), deadline = t0 + 60000;
    while (!replicas_current(sr.js, nodes, stream) && itest_now_ms() < deadline)
        itest_sleep_ms(200);
    if (!replicas_current(sr.js, nodes, stream))
        fail_msg("stream %s: its replicas are not all current after 60 s", stream);
    int64_t msgs = -1;
    if (!stream_state(sr.js, stream, &first, &last, &msgs, &sr.dels, &sr.ndels))
        fail_msg("stream %s: no stream info", stream);
    if (msgs != (int64_t)total)
        fail_msg("stream %s holds %" PRId64 " messages; its partitions have %" PRIu64
                 " events, other writers put %" PRIu64 " there",
                 stream, msgs, total - foreign, foreign);
    sr.last_seq = first - 1;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream;
    so.Ordered = true;
    /* Unfiltered (the stream's subjects are PREFIX>, and FOREIGN> when
     * other writers are expected; check_message fails any other): with
     * the filter PREFIX>, the consumer info asked below once delivery
     * began made nats-server 2.9.10 re-read the block per message up to
     * its middle (EVENTS 18-25 s, 0.2 s unfiltered; the daemon's scan,
     * mirror_nats.c, reads unfiltered too). */
    const char *subject = ">";
    natsSubscription *sub = NULL;
    jsErrCode jerr = 0;
    /* The consumer on the stream's leader: an R1 consumer lands on a random
     * peer (nats-server 2.9.10), and a replica can hold other messages than
     * the leader at the same sequences (seen: n3 had sensors-late 3136..3138
     * at 19396..19398, the leader at 19602..19604, and lacked 3139..3160).
     * Created again until it is there (bounded). */
    char leader[64] = "", where[160] = "";
    sc_stream_msgs(sr.js, stream, leader, sizeof leader);
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
    /* No pending limit (the caller's connection's should be
     * far above it too): libnats 3.4.1
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
        check_message(&sr, m, seq);
        natsMsg_Destroy(m);
        sr.checked++;
        sr.last_seq = seq;
    }
    int64_t dropped = 0;
    natsSubscription_GetDropped(sub, &dropped);
    if (dropped)
        fail_msg("stream %s: the checker's subscription dropped %" PRId64 " message(s)", stream,
                 dropped);
    if (sr.foreign != foreign)
        fail_msg("stream %s: %" PRIu64 " message(s) of other writers (under %s), expected %" PRIu64
                 " (daemon log %s)",
                 stream, sr.foreign, foreign_prefix ? foreign_prefix : "-", foreign, daemon_log);
    for (size_t i = 0; i < nparts; i++)
        if (parts[i].got != parts[i].count)
            fail_msg("stream %s: %s has %" PRIu64 " of its %" PRIu64 " events", stream,
                     parts[i].name, parts[i].got, parts[i].count);
    natsSubscription_Destroy(sub);
    free(sr.dels);
    jsCtx_Destroy(sr.js);
    printf("stream %s: %" PRIu64 " messages read%s (%" PRIu64 " from the leader; %" PRIu64
           " deleted sequences) in %.1f s, each event once, in order, content checked\n",
           stream, total, where, sr.from_leader, sr.deleted, (double)(itest_now_ms() - t0) / 1000);
}
