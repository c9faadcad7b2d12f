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
 * from the stream's leader) and compared with the partitions' files
 * (tests/lib/streamcheck): every event exactly once, in offset order per
 * partition (Nats-Msg-Id = PARTITION:OFFSET), with the subject its topic
 * maps to (and back), the stored event bytes (event format) or the payload
 * with its topic, receive time and tags as headers (payload format).
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
 * A second case on the same cluster, test_mirror_foreign_message (4 s),
 * puts another writer's message into a mirror's stream (a subject outside
 * subject_prefix, which the stream also takes) with the Nats-Msg-Id of an
 * event the mirror has not shipped yet, while protobusd is stopped: its
 * resume scan reads it, JetStream's duplicate window still holds its id
 * when the event is published. The event must still be in the stream
 * once, under the prefix, in order; the other message left as it was.
 *
 * PB_TEST_SCALE (a percentage, default 100) scales the number of events;
 * under ThreadSanitizer (PB_SANITIZER=thread, tests/run-tsan) the default is
 * 20%, to stay within the time budget. 55-67 s on this machine kind (load
 * 6-16, 2026-12-06).
 */
#include "itest.h"
#include "jscluster.h"
#include "mirror_cursor.h"
#include "pb_errors.h"
#include "protobus.h"
#include "streamcheck.h"

#include <inttypes.h>
#include <nats/nats.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
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

/* Publishes ids [from, to), each on topic(id, late), and waits until all
 * are acked. */
static void publish_topics(uint64_t from, uint64_t to, const char *(*topic)(uint64_t, bool),
                           bool late)
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
        pb_event ev = {.topic = topic(id, late),
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

static void publish_range(uint64_t from, uint64_t to, bool late)
{
    publish_topics(from, to, topic_for, late);
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
    if (s == NATS_OK) /* sc_check_stream: a subscription must drop nothing */
        s = natsOptions_SetMaxPendingMsgs(opts, 1 << 20); /* its bytes limit: 1 KiB each */
    if (s == NATS_OK)
        s = natsConnection_Connect(&nc, opts);
    natsOptions_Destroy(opts);
    if (s != NATS_OK)
        fail_msg("checker: cannot connect to NATS: %s", natsStatus_GetText(s));
    return nc;
}

/* Index of the node leading `stream` (n1.. -> 0..); 0 if unknown. */
static int stream_leader(const char *stream)
{
    natsConnection *nc = nats_connect();
    jsCtx *js = NULL;
    natsConnection_JetStream(&js, nc, NULL);
    char leader[64] = "";
    for (int tries = 0; tries < 100 && !leader[0]; tries++) {
        if (sc_stream_msgs(js, stream, leader, sizeof leader) < 0 || !leader[0])
            itest_sleep_ms(100);
    }
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    int i = leader[0] == 'n' ? atoi(leader + 1) - 1 : 0;
    return i >= 0 && i < C.n ? i : 0;
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
        sc_free_part(&P.sensors[i]);
    for (size_t i = 0; i < P.nev; i++)
        sc_free_part(&P.ev[i]);
    P.ns = P.nev = 0;
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
    while (itest_now_ms() < deadline && (n = sc_stream_msgs(js, "SENSORS", NULL, 0)) < want)
        itest_sleep_ms(20);
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
        s = sc_stream_msgs(js, "SENSORS", NULL, 0);
        e = sc_stream_msgs(js, "EVENTS", NULL, 0);
        if (s >= (int64_t)sensors && e >= (int64_t)events &&
            cursor_sum("sensors") == (int64_t)sensors && cursor_sum("events") == (int64_t)events)
            break;
        itest_sleep_ms(200);
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

/* The daemon's scans of a stream's tail (its headers-only consumers, as
 * the cluster sees their create requests), and of them those filtered on
 * a prefix: none may be (FORMAT.md E.4 item 2; nats-server 2.9.10
 * re-reads a block per message for a wildcard filter). */
static atomic_int scans, scans_filtered;

static void on_consumer_create(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *arg)
{
    (void)nc, (void)sub, (void)arg;
    const char *d = natsMsg_GetData(m);
    size_t n = (size_t)natsMsg_GetDataLength(m);
    if (d && memmem(d, n, "\"headers_only\":true", 19)) {
        scans++;
        if (memmem(d, n, "\"filter_subject\":\"pb.", 21))
            scans_filtered++;
    }
    natsMsg_Destroy(m);
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
    natsConnection *watch = nats_connect();
    natsSubscription *watch_sub = NULL;
    assert_int_equal(natsConnection_Subscribe(&watch_sub, watch, "$JS.API.CONSUMER.CREATE.>",
                                              on_consumer_create, NULL),
                     NATS_OK);
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
        itest_sleep_ms(100);
    if (!itest_log_contains(&D, gap) || !itest_log_contains(&D, "deleted the"))
        fail_msg("no \"%s\" and \"deleted the\" in the daemon log %s after 60 s", gap, D.log);
    /* The copies stored late are found by their acknowledgements. */
    const char *order = "message(s) of sensors-b at or after offset";
    for (int i = 0; i < 600 && !itest_log_contains(&D, order); i++)
        itest_sleep_ms(100);
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
    itest_sleep_ms(3000);
    restart_daemon(); /* killed and restarted while the cluster is down */
    itest_sleep_ms(1000);
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
    natsSubscription_Destroy(watch_sub);
    natsConnection_Destroy(watch);
    printf("the daemon's scans: %d, %d of them filtered\n", scans, scans_filtered);
    assert_true(scans > 0);
    assert_int_equal(scans_filtered, 0);
    assert_true(itest_log_contains(&D, "NATS unreachable"));
    assert_true(itest_log_contains(&D, "reachable again") ||
                itest_log_contains(&D, "connected to NATS"));
    assert_true(itest_log_contains(&D, "picked up new partition sensors-late"));

    char **names = NULL;
    size_t n = 0;
    assert_int_equal(pb_partition_list(D.data_dir, &names, &n), 0);
    for (size_t i = 0; i < n; i++) {
        if (strncmp(names[i], "sensors-", 8) == 0 && P.ns < 8)
            sc_load_part(D.data_dir, names[i], &P.sensors[P.ns++]);
        else if (strcmp(names[i], "events") == 0 && P.nev == 0)
            sc_load_part(D.data_dir, names[i], &P.ev[P.nev++]);
    }
    pb_partition_list_free(names, n);
    assert_int_equal(P.ns, 4); /* a, b, c1, late */

    natsConnection *nc = nats_connect();
    sc_check_stream(nc, C.n, D.log, "SENSORS", SENSORS_PREFIX, true, P.sensors, P.ns);
    sc_check_stream(nc, C.n, D.log, "EVENTS", EVENTS_PREFIX, false, P.ev, P.nev);
    natsConnection_Destroy(nc);
    free_parts();
    printf("test_mirror: %" PRIu64 " events in %.1f s\n", n_events,
           (double)(itest_now_ms() - t0) / 1000);
}

/* --- another writer's message in the stream ---------------------------------- */

/* Stream MIXED takes the subjects of mirror "mixed" (MIXED_PREFIX) and
 * another writer's (OTHER_PREFIX). */
#define MIXED_PREFIX   "pb.m."
#define OTHER_PREFIX   "other."
#define MIXED_WINDOW_S 1
#define OTHER_DATA     "another writer's message"

static const char *mixed_topic(uint64_t id, bool late)
{
    (void)late;
    return id % 2 ? "mix.b.t" : "mix.a.t"; /* partitions mixed-b, mixed-a */
}

/* MIXED as an operator would set it up beforehand: R3, both subject
 * trees, a duplicate window of MIXED_WINDOW_S (the mirror uses a stream
 * it finds as it is). Retried (bounded) while the cluster elects. */
static void create_mixed(jsCtx *js)
{
    const char *subjects[] = {MIXED_PREFIX ">", OTHER_PREFIX ">"};
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = "MIXED";
    sc.Subjects = subjects;
    sc.SubjectsLen = 2;
    sc.Storage = js_FileStorage;
    sc.Replicas = 3;
    sc.Duplicates = MIXED_WINDOW_S * 1000000000LL;
    natsStatus s = NATS_ERR;
    jsErrCode jerr = 0;
    for (int tries = 0; tries < 100 && s != NATS_OK; tries++) {
        jsStreamInfo *si = NULL;
        s = js_AddStream(&si, js, &sc, NULL, &jerr);
        jsStreamInfo_Destroy(si);
        if (s != NATS_OK)
            itest_sleep_ms(100);
    }
    if (s != NATS_OK)
        fail_msg("cannot create stream MIXED: %s (%d)", natsStatus_GetText(s), (int)jerr);
}

/* The daemon log's last line holding `text` into out ("" if none). */
static void last_log_line(const char *text, char *out, size_t n)
{
    FILE *f = fopen(D.log, "r");
    char line[1024];
    out[0] = '\0';
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, text))
            snprintf(out, n, "%s", line);
    if (f)
        fclose(f);
}

/* Waits (bounded, limit_s) until mirror "mixed"'s cursors add up to
 * `events` and MIXED holds `msgs` messages. */
static void wait_mixed(jsCtx *js, uint64_t events, int64_t msgs, int limit_s)
{
    uint64_t deadline = itest_now_ms() + (uint64_t)limit_s * 1000;
    int64_t n = -1, cs = -1;
    while (itest_now_ms() < deadline) {
        n = sc_stream_msgs(js, "MIXED", NULL, 0);
        cs = cursor_sum("mixed");
        if (n == msgs && cs == (int64_t)events)
            return;
        itest_sleep_ms(50);
    }
    char warn[1024], last[1024];
    last_log_line(" WARN mirror mixed: ", warn, sizeof warn);
    last_log_line("mirror mixed: ", last, sizeof last);
    fail_msg("after %d s MIXED holds %" PRId64 " messages (expected %" PRId64
             "), the mirror's cursors add up to %" PRId64 " (expected %" PRIu64
             "); the daemon's last warning: %sits last word: %s(log %s)",
             limit_s, n, msgs, cs, events, warn[0] ? warn : "none\n", last, D.log);
}

/* The other writer's message: on OTHER_PREFIX "mix.a", with the id of
 * mixed-a's next offset. Its stream sequence. */
static uint64_t other_publish(jsCtx *js)
{
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = "mixed-a:20";
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    natsStatus s =
        js_Publish(&pa, js, OTHER_PREFIX "mix.a", OTHER_DATA, (int)strlen(OTHER_DATA), &po, &jerr);
    if (s != NATS_OK)
        fail_msg("publish to " OTHER_PREFIX "mix.a: %s (%d)", natsStatus_GetText(s), (int)jerr);
    uint64_t seq = pa->Sequence;
    jsPubAck_Destroy(pa);
    return seq;
}

/* The other writer's message is still at seq, as it was put there. */
static void other_check(jsCtx *js, uint64_t seq)
{
    natsMsg *om = NULL;
    const char *oid = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetMsg(&om, js, "MIXED", seq, NULL, &jerr);
    if (s != NATS_OK)
        fail_msg("the other writer's message at sequence %" PRIu64 " is gone: %s (daemon log %s)",
                 seq, natsStatus_GetText(s), D.log);
    assert_string_equal(natsMsg_GetSubject(om), OTHER_PREFIX "mix.a");
    assert_int_equal(natsMsgHeader_Get(om, "Nats-Msg-Id", &oid), NATS_OK);
    assert_string_equal(oid, "mixed-a:20");
    assert_int_equal(natsMsg_GetDataLength(om), (int)strlen(OTHER_DATA));
    assert_memory_equal(natsMsg_GetData(om), OTHER_DATA, strlen(OTHER_DATA));
    natsMsg_Destroy(om);
}

/* A message of another writer in the mirror's stream, on a subject outside
 * subject_prefix, whose Nats-Msg-Id names the next offset of mixed-a, which
 * the mirror has not shipped yet: put there while protobusd is stopped, so
 * that its resume scan reads it. It is no copy of that event: the event
 * must still get to the stream under the prefix, once, in order, and the
 * other writer's message must stay as it is. JetStream's duplicate window
 * (MIXED_WINDOW_S) usually still holds that id when the mirror publishes
 * the event (some 0.1 s later): the "duplicate" acknowledgement names the
 * other writer's message, which must not pass for the event either; the
 * mirror waits out the window (plus 2 s) and publishes again. 4 s once the
 * cluster has its leaders. */
static void test_mirror_foreign_message(void **state)
{
    (void)state;
    uint64_t t0 = itest_now_ms();
    for (int i = 0; i < C.n; i++) /* the previous test may have stopped some */
        if (!C.pid[i])
            assert_int_equal(jscluster_start_node(&C, i), 0);
    natsConnection *nc = nats_connect();
    jsCtx *js = NULL;
    assert_int_equal(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    create_mixed(js);
    char rules[1024];
    snprintf(rules, sizeof rules,
             "[partition mixed-$1]\n"
             "match = mix\\.([a-z])\\..*\n"
             "[mirror mixed]\n"
             "nats_url = %s\n"
             "partitions = mixed-.*\n"
             "stream = MIXED\n"
             "subject_prefix = " MIXED_PREFIX "\n"
             "ack_timeout_ms = 2000\n",
             C.urls);
    assert_int_equal(itest_daemon_start(&D, NULL, rules), 0);
    publish_topics(0, 40, mixed_topic, false); /* mixed-a and mixed-b 0..19 */
    wait_mixed(js, 40, 40, 30);
    assert_int_equal(itest_daemon_stop(&D), 0);

    uint64_t t_other = itest_now_ms();
    uint64_t other_seq = other_publish(js);

    assert_int_equal(itest_daemon_restart(&D), 0);
    /* mixed-a:20 alone first, so that nothing of mixed-a after it is in
     * flight when its publish fails (that repair is test_mirror_through_
     * outages' and would cost a second window). */
    publish_topics(40, 41, mixed_topic, false);
    uint64_t t_event = itest_now_ms();
    const char *dup = "publishing mixed-a:20 to stream MIXED failed";
    for (int i = 0; i < 300 && !itest_log_contains(&D, dup) && cursor_sum("mixed") != 41; i++)
        itest_sleep_ms(20);
    publish_topics(41, 80, mixed_topic, false); /* mixed-a 21..39, mixed-b 20..39 */
    wait_mixed(js, 80, 81, 30);
    assert_int_equal(itest_daemon_stop(&D), 0);
    /* Which way it went depends on the time (test_mirror_order checks
     * the duplicate case on its own): said, not asserted. */
    printf("mixed-a:20 published to protobusd %.2f s after the other writer's message: %s\n",
           (double)(t_event - t_other) / 1000,
           itest_log_contains(&D, dup) ? "the mirror's publish was answered \"duplicate\", "
                                         "sent again after the window"
                                       : "stored at once (the window had passed)");

    other_check(js, other_seq);
    jsCtx_Destroy(js);

    sc_load_part(D.data_dir, "mixed-a", &P.sensors[P.ns++]);
    sc_load_part(D.data_dir, "mixed-b", &P.sensors[P.ns++]);
    assert_int_equal(P.sensors[0].count + P.sensors[1].count, 80);
    sc_check_stream_foreign(nc, C.n, D.log, "MIXED", MIXED_PREFIX, false, P.sensors, P.ns,
                            OTHER_PREFIX, 1);
    natsConnection_Destroy(nc);
    free_parts();
    printf("test_mirror_foreign_message: %.1f s\n", (double)(itest_now_ms() - t0) / 1000);
}

static int teardown(void **state)
{
    (void)state;
    free_parts();
    itest_daemon_cleanup(&D);
    memset(&D, 0, sizeof D); /* its temp dir is gone: never removed twice */
    return 0;
}

static int cluster_up(void **state)
{
    (void)state;
    return jscluster_start(&C, 3);
}

static int cluster_down(void **state)
{
    (void)state;
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
        cmocka_unit_test_teardown(test_mirror_foreign_message, teardown),
    };
    return cmocka_run_group_tests(tests, cluster_up, cluster_down);
}
