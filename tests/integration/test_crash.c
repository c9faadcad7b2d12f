/*
 * Integration: kill -9 under load. The real protobusd (small segments, so
 * rotation happens all the time) takes batches from a libprotobus publisher
 * with many batches in flight; after a seeded number of acknowledgements
 * the daemon gets SIGKILL while the rest are being written and synced. It
 * is restarted on the same files and the partition is read back with
 * pb_reader: every acknowledged event is there exactly once, at the offset
 * its ack named, with its bytes; offsets run 0, 1, 2, ... with no damage
 * reported (a kill leaves the page cache intact, so nothing may be lost at
 * all, acknowledged or not, except a record cut in the middle of its
 * write). 100 cycles; PB_TEST_SCALE (a percentage) scales them.
 *
 * Power loss (what a kill cannot show) is tests/unit/test_powerloss.c.
 */
#include "itest.h"
#include "pb_errors.h"
#include "protobus.h"
#include "reader.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_IDS    200000
#define BATCH      16
#define PAYLOAD_SZ 48

typedef struct crash_state {
    itest_daemon d;
    uint64_t next_id;           /* ids are global across cycles */
    uint64_t cycle_first;       /* id of the cycle's first event (publish sequence 0) */
    int64_t offset_of[MAX_IDS]; /* acked: its offset; -1 otherwise */
    uint64_t acked, acks_this_cycle, kill_after;
    bool killed;
    char problem[512];
} crash_state;

static crash_state S;

static uint64_t mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static void payload_for(uint64_t id, uint8_t *out)
{
    for (size_t i = 0; i < PAYLOAD_SZ; i += 8) {
        uint64_t v = i == 0 ? id : mix(id * 8 + i);
        memcpy(out + i, &v, 8);
    }
}

/* Called inside pb_client_publish/flush for each batch's answer. */
static void on_ack(void *ctx, const pb_batch_result *res)
{
    crash_state *s = ctx;
    if (res->status != 0)
        return;
    for (size_t i = 0; i < res->count; i++) {
        uint64_t id = s->cycle_first + res->first_event + i;
        const pb_position *p = &res->positions[i];
        if (p->status != 0 || id >= MAX_IDS)
            continue;
        s->offset_of[id] = (int64_t)p->offset;
        s->acked++;
    }
    /* The kill comes while later batches are in flight. */
    if (++s->acks_this_cycle == s->kill_after && !s->killed) {
        itest_daemon_kill(&s->d);
        s->killed = true;
    }
}

/* Publishes until the connection dies under the kill (bounded). */
static void publish_until_killed(crash_state *s, uint64_t cycle)
{
    pb_client_options o;
    pb_client_options_init(&o);
    o.batch_events = BATCH;
    o.max_in_flight = 8;
    o.no_positions = true;
    o.on_ack = on_ack;
    o.on_ack_ctx = s;
    o.io_timeout_ms = 10000;
    char addr[64], err[256];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", s->d.port);
    pb_client *c;
    int rc = pb_client_connect(&c, addr, &o, err, sizeof err);
    if (rc != 0)
        fail_msg("cycle %llu: connect: %s", (unsigned long long)cycle, err);
    s->cycle_first = s->next_id;
    s->acks_this_cycle = 0;
    s->killed = false;
    s->kill_after = 1 + mix(cycle) % 24;
    uint8_t payload[PAYLOAD_SZ];
    uint64_t limit = s->next_id + (s->kill_after + 16) * BATCH;
    while (s->next_id < limit && s->next_id < MAX_IDS) {
        payload_for(s->next_id, payload);
        pb_event ev = {.topic = "crash.test",
                       .payload_type = "t/crash",
                       .payload = payload,
                       .payload_len = sizeof payload};
        rc = pb_client_publish(c, &ev);
        if (rc != 0)
            break; /* the kill: the connection is gone */
        s->next_id++;
    }
    if (rc == 0)
        rc = pb_client_flush(c, 10000, NULL, NULL);
    pb_client_close(c);
    if (!s->killed)
        fail_msg("cycle %llu: the daemon was not killed (%llu acks, publish: %s)",
                 (unsigned long long)cycle, (unsigned long long)s->acks_this_cycle,
                 pb_strerror(rc));
}

/* Reads the partition's files: offsets contiguous from 0, no damage, each
 * acked id exactly once where its ack said. */
static void check_files(crash_state *s, uint64_t cycle)
{
    char dir[400];
    snprintf(dir, sizeof dir, "%s/events", s->d.data_dir);
    static uint32_t seen[MAX_IDS];
    memset(seen, 0, sizeof seen);
    pb_reader *r;
    pb_record rec;
    int rc = pb_reader_open(&r, dir);
    if (rc == PB_ENOTFOUND && s->acked == 0)
        return;
    assert_int_equal(rc, 0);
    uint64_t next = 0;
    uint8_t want[PAYLOAD_SZ];
    for (uint64_t guard = 0; guard <= MAX_IDS; guard++) {
        rc = pb_reader_next(r, &rec);
        if (rc == PB_EEOF)
            break;
        if (rc == PB_ECORRUPT) {
            const struct pb_reader_problem *pr = pb_reader_problem(r);
            fail_msg("cycle %llu: damage after kill -9: offsets %llu..%llu, %s at byte %llu of %s",
                     (unsigned long long)cycle, (unsigned long long)pr->first_offset,
                     (unsigned long long)pr->last_offset, pr->reason,
                     (unsigned long long)pr->position, pr->file);
        }
        assert_int_equal(rc, 0);
        if (rec.offset != next)
            fail_msg("cycle %llu: offset %llu where %llu was due", (unsigned long long)cycle,
                     (unsigned long long)rec.offset, (unsigned long long)next);
        next++;
        Protobus__EncapsulatedEvent *ev =
            protobus__encapsulated_event__unpack(NULL, rec.event_len, rec.event);
        if (!ev || !ev->payload || ev->payload->value.len != PAYLOAD_SZ)
            fail_msg("cycle %llu: offset %llu is not an event of this test",
                     (unsigned long long)cycle, (unsigned long long)rec.offset);
        uint64_t id;
        memcpy(&id, ev->payload->value.data, 8);
        payload_for(id, want);
        bool ok = id < s->next_id && memcmp(ev->payload->value.data, want, PAYLOAD_SZ) == 0 &&
                  strcmp(ev->topic, "crash.test") == 0;
        protobus__encapsulated_event__free_unpacked(ev, NULL);
        if (!ok)
            fail_msg("cycle %llu: offset %llu holds bytes never published",
                     (unsigned long long)cycle, (unsigned long long)rec.offset);
        if (++seen[id] > 1)
            fail_msg("cycle %llu: event %llu stored twice", (unsigned long long)cycle,
                     (unsigned long long)id);
        if (s->offset_of[id] >= 0 && (uint64_t)s->offset_of[id] != rec.offset)
            fail_msg("cycle %llu: event %llu acked at offset %lld, found at %llu",
                     (unsigned long long)cycle, (unsigned long long)id, (long long)s->offset_of[id],
                     (unsigned long long)rec.offset);
    }
    pb_reader_close(r);
    for (uint64_t id = 0; id < s->next_id; id++)
        if (s->offset_of[id] >= 0 && seen[id] != 1)
            fail_msg("cycle %llu: acked event %llu (offset %lld) is missing",
                     (unsigned long long)cycle, (unsigned long long)id,
                     (long long)s->offset_of[id]);
}

static int cycles(void)
{
    const char *s = getenv("PB_TEST_SCALE");
    int pct = s ? atoi(s) : 100;
    int n = 100 * (pct > 0 ? pct : 100) / 100;
    return n > 0 ? n : 1;
}

static void test_kill9_under_load(void **state)
{
    crash_state *s = &S;
    for (size_t i = 0; i < MAX_IDS; i++)
        s->offset_of[i] = -1;
    /* 4 KiB segments: rotation every few batches. */
    assert_int_equal(
        itest_daemon_start(&s->d, NULL, "[partition events]\nmatch = .*\nsegment_bytes = 4K\n"), 0);
    uint64_t t0 = itest_now_ms();
    int n = cycles();
    for (int cycle = 0; cycle < n; cycle++) {
        publish_until_killed(s, (uint64_t)cycle);
        if (itest_daemon_restart(&s->d) != 0)
            fail_msg("cycle %d: restart failed; log %s", cycle, s->d.log);
        check_files(s, (uint64_t)cycle);
    }
    printf("kill -9: %d cycles, %llu events published, %llu acked, all there; %llu ms\n", n,
           (unsigned long long)s->next_id, (unsigned long long)s->acked,
           (unsigned long long)(itest_now_ms() - t0));
    assert_true(s->acked > (uint64_t)n);
    assert_int_equal(itest_daemon_stop(&s->d), 0);
    itest_daemon_cleanup(&s->d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill9_under_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
