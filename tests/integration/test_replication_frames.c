/* Integration test: the frames a replication subscription receives
 * (FORMAT.md 4.4, 4.11), on a real protobusd on 127.0.0.1. Without
 * Subscribe.replicate_records (an older standby) every record comes as an
 * Event frame, history and live; with it, history still comes as Event
 * frames and live records as Records frames whose runs pass recrun_check,
 * with consecutive offsets and the stored events' bytes; a large batch is
 * split into runs, an event too large for one going alone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "itest.h"
#include "pb_errors.h"
#include "protobus.pb-c.h"
#include "record.h"
#include "recrun.h"

typedef struct fixture {
    itest_daemon d;
} fixture;

static int setup(void **state)
{
    return itest_fixture_setup(state, sizeof(fixture));
}

/* Subscribe{replicate, START_OFFSETS, replicate_records = records}. */
static int subscribe_replicate(int fd, bool records)
{
    Protobus__Subscribe s = PROTOBUS__SUBSCRIBE__INIT;
    s.replicate = true;
    s.replicate_records = records;
    s.start = PROTOBUS__START_MODE__START_OFFSETS;
    Protobus__Frame fr = PROTOBUS__FRAME__INIT;
    fr.id = 2;
    fr.body_case = PROTOBUS__FRAME__BODY_SUBSCRIBE;
    fr.subscribe = &s;
    return itest_send_frame(fd, &fr);
}

static void publish_n(int pub, uint64_t id, const char *prefix, size_t n)
{
    const char *topics[8];
    const char *payloads[8];
    char bufs[8][32];
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++) {
        topics[i] = "sensors.a";
        snprintf(bufs[i], sizeof bufs[i], "%s-%zu", prefix, i);
        payloads[i] = bufs[i];
    }
    Protobus__Frame *ack = itest_publish(pub, id, topics, payloads, n, 5000);
    assert_non_null(ack);
    assert_int_equal(ack->body_case, PROTOBUS__FRAME__BODY_PUBLISH_ACK);
    protobus__frame__free_unpacked(ack, NULL);
}

/* Reads frames until `want` records arrived after CaughtUp; counts the
 * Event and Records frames before and after it. */
typedef struct seen {
    size_t history_events, live_events, live_runs, live_records;
    uint64_t next; /* the next live offset expected */
    bool caught_up;
    size_t max_run_bytes; /* the largest live run's records */
} seen;

static void read_until(int fd, seen *s, size_t history, size_t live)
{
    uint64_t deadline = itest_now_ms() + 10000;
    while (!(s->caught_up && s->live_events + s->live_records >= live)) {
        assert_true(itest_now_ms() < deadline);
        Protobus__Frame *fr = itest_recv_frame(fd, 5000);
        if (!fr)
            fail_msg("no frame within 5 s (history %zu, live %zu + %zu)", s->history_events,
                     s->live_events, s->live_records);
        switch (fr->body_case) {
        case PROTOBUS__FRAME__BODY_SUBSCRIBED:
            break;
        case PROTOBUS__FRAME__BODY_CAUGHT_UP:
            assert_int_equal(s->history_events, history);
            s->caught_up = true;
            break;
        case PROTOBUS__FRAME__BODY_EVENT:
            assert_string_equal(fr->event->partition, "events");
            if (s->caught_up) {
                assert_int_equal(fr->event->offset, s->next);
                s->next++;
                s->live_events++;
            } else {
                s->history_events++;
            }
            break;
        case PROTOBUS__FRAME__BODY_RECORDS: {
            assert_true(s->caught_up); /* history never comes as runs */
            assert_string_equal(fr->records->partition, "events");
            uint64_t first;
            size_t count;
            char err[256];
            if (recrun_check(fr->records->records.data, fr->records->records.len,
                             PB_RECORD_MAX_EVENT, &first, &count, err, sizeof err) != 0)
                fail_msg("a run from the primary: %s", err);
            assert_int_equal(first, s->next);
            if (fr->records->records.len > s->max_run_bytes)
                s->max_run_bytes = fr->records->records.len;
            s->next += count;
            s->live_runs++;
            s->live_records += count;
            break;
        }
        default:
            fail_msg("unexpected frame %d", (int)fr->body_case);
        }
        protobus__frame__free_unpacked(fr, NULL);
    }
}

static void test_event_frames_unless_asked(void **state)
{
    fixture *f = *state;
    assert_int_equal(itest_daemon_start(&f->d, NULL, NULL), 0);
    int pub = itest_connect_hello(f->d.port);
    assert_true(pub >= 0);
    publish_n(pub, 10, "history", 3); /* offsets 0..2 */

    /* An older standby: Event frames only. */
    int old = itest_connect_hello(f->d.port);
    assert_true(old >= 0);
    assert_int_equal(subscribe_replicate(old, false), 0);
    seen a = {.next = 3};
    read_until(old, &a, 3, 0);
    publish_n(pub, 11, "live", 5); /* offsets 3..7 */
    read_until(old, &a, 3, 5);
    assert_int_equal(a.live_events, 5);
    assert_int_equal(a.live_runs, 0);
    close(old);

    /* A standby that asks for runs: history as Event frames, live as runs. */
    int fresh = itest_connect_hello(f->d.port);
    assert_true(fresh >= 0);
    assert_int_equal(subscribe_replicate(fresh, true), 0);
    seen b = {.next = 8};
    read_until(fresh, &b, 8, 0);
    publish_n(pub, 12, "more", 6); /* offsets 8..13 */
    read_until(fresh, &b, 8, 6);
    assert_int_equal(b.live_events, 0);
    assert_true(b.live_runs >= 1);
    assert_int_equal(b.live_records, 6);
    close(fresh);
    close(pub);
    assert_int_equal(itest_daemon_stop(&f->d), 0);
}

/* One live batch of ~130 KiB with a 40 KiB event in its middle, to a
 * standby that asks for runs: the writer splits it into runs (two to a live
 * queue block), the large event goes as a record entry of its own (in a
 * Records frame too), every offset comes once and in order, every run
 * passes its CRCs, frames of runs stay within 64 KiB. */
static void test_large_batch_split_into_runs(void **state)
{
    fixture *f = *state;
    assert_int_equal(itest_daemon_start(&f->d, NULL, NULL), 0);
    int pub = itest_connect_hello(f->d.port);
    assert_true(pub >= 0);
    int sb = itest_connect_hello(f->d.port);
    assert_true(sb >= 0);
    assert_int_equal(subscribe_replicate(sb, true), 0);
    seen b = {.next = 0};
    read_until(sb, &b, 0, 0);

    enum { N = 61, BIG = 30 }; /* (N small events of 1.5 KiB, one replaced) */
    static char small[N][1500];
    static char big[40 * 1024];
    const char *topics[N], *payloads[N];
    for (size_t i = 0; i < N; i++) {
        memset(small[i], 'a' + (int)(i % 26), sizeof small[i] - 1);
        small[i][sizeof small[i] - 1] = '\0';
        topics[i] = "sensors.a";
        payloads[i] = small[i];
    }
    memset(big, 'B', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    payloads[BIG] = big;
    Protobus__Frame *ack = itest_publish(pub, 20, topics, payloads, N, 5000);
    assert_non_null(ack);
    assert_int_equal(ack->body_case, PROTOBUS__FRAME__BODY_PUBLISH_ACK);
    protobus__frame__free_unpacked(ack, NULL);

    read_until(sb, &b, 0, N);
    assert_int_equal(b.next, N);
    assert_int_equal(b.live_events, 0);
    assert_int_equal(b.live_records, N);
    assert_true(b.live_runs >= 3);             /* runs before and after it, and it */
    assert_true(b.max_run_bytes <= 64 * 1024); /* frames of runs: 64 KiB at most */
    close(sb);
    close(pub);
    assert_int_equal(itest_daemon_stop(&f->d), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_event_frames_unless_asked, setup,
                                        itest_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_large_batch_split_into_runs, setup,
                                        itest_fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
