/*
 * test_mirror_order - the rule that keeps a mirrored partition in offset
 * order when an acknowledgement names a copy stored out of order
 * (mirror_order.c, FORMAT.md E.4 item 4), without NATS: a mirror with two
 * partitions and a ring of acknowledged slots, as the ack thread leaves it.
 *
 * Covered: acknowledgements in stream order move each partition's
 * seq_last; one whose sequence lies before its partition's newest
 * acknowledged message (a "duplicate" of a copy stored after the stream's
 * tail was read) fails the slot, names both offsets in the failure, and
 * sets where the next scan reads from (the lowest such sequence) and the
 * copy to delete, once the stream confirms the copy at seq_last; a stream
 * that no longer holds that copy (created again) starts the order over;
 * another partition's order is its own; the stray list keeps which
 * strays are order strays; another writer's message (a subject outside
 * subject_prefix) with one of the mirror's ids confirms nothing: not as a
 * "duplicate" acknowledgement's copy, not as the end of a scan's run, not
 * as a stray to delete.
 */
#include "mirror_internal.h"
#include "pb_errors.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* The stream as the check asks it (m->id_at, in place of
 * mirror_nats_id_at): the id and subject at each sequence. */
static struct {
    uint64_t seq[8];
    const char *id[8], *subject[8];
    size_t n;
    int asked;
} stream;

static int fake_id_at(mirror_nats *mn, uint64_t seq, char *id, size_t idlen, char *subject,
                      size_t subjlen, char *why, size_t whylen)
{
    (void)mn;
    (void)why;
    (void)whylen;
    stream.asked++;
    for (size_t i = 0; i < stream.n; i++)
        if (stream.seq[i] == seq) {
            snprintf(id, idlen, "%s", stream.id[i]);
            snprintf(subject, subjlen, "%s", stream.subject[i]);
            return 0;
        }
    return PB_ENOTFOUND;
}

/* The stream holds a message with that id at seq, on `subject`. */
static void holds_on(uint64_t seq, const char *id, const char *subject)
{
    stream.seq[stream.n] = seq;
    stream.subject[stream.n] = subject;
    stream.id[stream.n++] = id;
}

/* ... one of the mirror's (subject_prefix pb.s.). */
static void holds(uint64_t seq, const char *id)
{
    holds_on(seq, id, "pb.s.sensors.x");
}

typedef struct fixture {
    pb_mirror_config cfg;
    mpart a, b;
    mpart *parts[2];
    mirror m;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    memset(&stream, 0, sizeof stream);
    pthread_mutex_init(&f->m.lock, NULL);
    pthread_mutex_lock(&f->m.lock); /* held, as collect holds it */
    snprintf(f->a.name, sizeof f->a.name, "sensors-a");
    snprintf(f->b.name, sizeof f->b.name, "sensors-b");
    f->parts[0] = &f->a;
    f->parts[1] = &f->b;
    f->m.parts = f->parts;
    f->m.n_parts = 2;
    f->m.id_at = fake_id_at;
    f->cfg.name = "sensors";
    f->cfg.stream = "SENSORS";
    f->cfg.subject_prefix = "pb.s.";
    f->m.cfg = &f->cfg;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    pthread_mutex_unlock(&f->m.lock);
    pthread_mutex_destroy(&f->m.lock);
    free(f->m.strays);
    free(f);
    return 0;
}

static slot acked(uint32_t part, uint64_t offset, uint64_t seq)
{
    return (slot){.part = part, .offset = offset, .seq = seq, .state = SLOT_ACKED};
}

static void test_in_order_moves_seq_last(void **state)
{
    fixture *f = *state;
    slot s[] = {acked(0, 0, 10), acked(1, 0, 11), acked(0, 1, 12), acked(1, 1, 20)};
    for (size_t i = 0; i < sizeof s / sizeof *s; i++) {
        assert_true(mirror_ack_in_order(&f->m, &s[i]));
        assert_int_equal(s[i].state, SLOT_ACKED);
    }
    assert_int_equal(f->a.seq_last, 12);
    assert_int_equal(f->a.off_last, 1);
    assert_int_equal(f->b.seq_last, 20);
    assert_false(f->m.failed);
    assert_int_equal(f->m.order_from, 0);
    assert_int_equal(stream.asked, 0); /* in order: no question to the stream */
}

static void test_copy_before_newest_ack_fails(void **state)
{
    fixture *f = *state;
    /* sensors-b:3000 resent and stored at 500; sensors-b:3001 comes back
     * as a duplicate of a copy at 400 (stored before it). */
    slot first = acked(1, 3000, 500);
    assert_true(mirror_ack_in_order(&f->m, &first));
    f->b.cursor = 3001;
    holds(500, "sensors-b:3000");
    slot late = acked(1, 3001, 400);
    assert_false(mirror_ack_in_order(&f->m, &late));
    assert_int_equal(stream.asked, 1);
    assert_int_equal(f->m.n_order_strays, 1);
    assert_int_equal(f->m.order_strays[0].seq, 400);
    assert_int_equal(f->m.order_strays[0].offset, 3001);
    assert_true(f->m.order_strays[0].order);
    assert_int_equal(late.state, SLOT_FAILED);
    assert_true(f->m.failed);
    assert_int_equal(f->m.fail_part, 1);
    assert_int_equal(f->m.fail_offset, 3001);
    assert_int_equal(f->m.order_from, 400);
    assert_int_equal(f->b.seq_last, 500); /* unchanged */
    assert_non_null(strstr(f->m.fail_why, "sequence 400"));
    assert_non_null(strstr(f->m.fail_why, "sensors-b:3000 at sequence 500"));
    assert_int_equal(atomic_load(&f->m.counters.failed), 1);

    /* A lower one lowers where the scan starts; the first reason stays. */
    slot lower = acked(1, 3002, 390);
    assert_false(mirror_ack_in_order(&f->m, &lower));
    assert_int_equal(f->m.order_from, 390);
    assert_int_equal(f->m.fail_offset, 3001);
    /* The other partition is not concerned. */
    slot other = acked(0, 7, 450);
    assert_true(mirror_ack_in_order(&f->m, &other));
    assert_int_equal(f->a.seq_last, 450);
}

static void test_equal_sequence_is_not_in_order(void **state)
{
    fixture *f = *state;
    slot s1 = acked(0, 5, 100), s2 = acked(0, 6, 100);
    holds(100, "sensors-a:5");
    assert_true(mirror_ack_in_order(&f->m, &s1));
    assert_false(mirror_ack_in_order(&f->m, &s2));
}

/* The stream no longer holds the copy at seq_last (deleted and created
 * again: sequences start over): no disorder, the order starts over too. */
static void test_stream_created_again(void **state)
{
    fixture *f = *state;
    slot old = acked(0, 900, 5000);
    assert_true(mirror_ack_in_order(&f->m, &old));
    f->m.acked_seq = 5000;
    slot fresh = acked(0, 901, 1); /* nothing at 5000 now */
    assert_true(mirror_ack_in_order(&f->m, &fresh));
    assert_int_equal(fresh.state, SLOT_ACKED);
    assert_int_equal(f->a.seq_last, 1);
    assert_int_equal(f->a.off_last, 901);
    assert_int_equal(f->m.acked_seq, 0); /* collect moves it to 1 */
    assert_false(f->m.failed);
    /* Another message at 5000 (not this partition's copy): the same. */
    holds(7000, "sensors-a:950");
    slot a = acked(0, 950, 7000), b = acked(0, 951, 2);
    assert_true(mirror_ack_in_order(&f->m, &a));
    stream.id[0] = "events:3";
    assert_true(mirror_ack_in_order(&f->m, &b));
    assert_false(f->m.failed);
}

/* At the resync: order strays of a partition whose copy at seq_last the
 * stream no longer holds are dropped, not deleted; an order stray already
 * gone from the stream is no error. */
static void test_resync_drops_strays_of_a_recreated_stream(void **state)
{
    fixture *f = *state;
    f->a.seq_last = 500;
    f->a.off_last = 10;
    f->a.cursor = f->a.scan_next = 11;
    f->b.seq_last = 600;
    f->b.off_last = 20;
    f->b.cursor = f->b.scan_next = 21;
    holds(600, "sensors-b:20");
    mirror_stray_add(&f->m, &f->a, 12, 400, true);
    f->a.scan_order = 1;
    f->m.order_strays[f->m.n_order_strays++] =
        (mstray){.p = &f->a, .offset = 13, .seq = 401, .order = true};
    mirror_stray_add(&f->m, &f->b, 22, 590, true); /* not at 590 any more */
    f->b.scan_order = 1;
    char why[200] = "";
    pthread_mutex_unlock(&f->m.lock);
    int rc = mirror_apply_scan(&f->m, why, sizeof why);
    pthread_mutex_lock(&f->m.lock);
    assert_int_equal(rc, 0); /* nothing deleted */
    assert_int_equal(f->a.seq_last, 0);
    assert_int_equal(f->m.n_order_strays, 0);
    assert_int_equal(f->b.seq_last, 600); /* b's base is still there */
    assert_int_equal(f->b.scan_deleted, 0);
    assert_int_equal(f->m.n_strays, 0);
}

/* A "duplicate" acknowledgement naming another writer's message (a
 * subject outside subject_prefix) that carries the event's id: no copy of
 * the event. The slot fails and the resend waits for the duplicate window
 * (dup_gone); a duplicate of the mirror's own copy is taken. */
static void test_duplicate_of_another_writers_message(void **state)
{
    fixture *f = *state;
    holds_on(700, "sensors-a:20", "other.sensors.a");
    holds(701, "sensors-a:21");
    slot own = acked(0, 21, 701);
    own.dup = true;
    assert_true(mirror_dup_still_stored(&f->m, &own));
    assert_false(own.dup);
    assert_false(f->m.failed);
    slot s = acked(0, 20, 700);
    s.dup = true;
    assert_false(mirror_dup_still_stored(&f->m, &s));
    assert_int_equal(s.state, SLOT_FAILED);
    assert_true(f->m.failed);
    assert_true(f->m.dup_gone);
    assert_int_equal(f->m.fail_part, 0);
    assert_int_equal(f->m.fail_offset, 20);
    assert_non_null(strstr(f->m.fail_why, "another writer's message"));
    assert_non_null(strstr(f->m.fail_why, "other.sensors.a"));
}

/* A scan whose run of a partition ends at another writer's message with
 * the next offset's id (the scan skips those, mirror_nats.c; this is the
 * check behind it): the leader does not confirm it, the cursor stays, and
 * a stray with such an id is not deleted. */
static void test_another_writers_message_confirms_nothing(void **state)
{
    fixture *f = *state;
    holds_on(300, "sensors-a:10", "other.a");
    f->a.cursor = f->a.scan_next = 10;
    f->b.cursor = f->b.scan_next = 5;
    mirror_scan_hit(&f->m, "sensors-a", 10, 300);
    assert_int_equal(f->a.scan_next, 11);
    char why[300] = "";
    pthread_mutex_unlock(&f->m.lock);
    int rc = mirror_apply_scan(&f->m, why, sizeof why);
    pthread_mutex_lock(&f->m.lock);
    assert_int_equal(rc, -1);
    assert_int_equal(f->a.cursor, 10);
    assert_non_null(strstr(why, "another writer's message"));
    mirror_stray_add(&f->m, &f->a, 10, 300, false);
    pthread_mutex_unlock(&f->m.lock);
    rc = mirror_delete_strays(&f->m, why, sizeof why); /* m.nats is NULL: a delete would crash */
    pthread_mutex_lock(&f->m.lock);
    assert_int_equal(rc, -1);
    assert_int_equal(f->a.scan_deleted, 0);
}

static void test_stray_list_keeps_kind(void **state)
{
    fixture *f = *state;
    mirror_stray_add(&f->m, &f->a, 9, 300, true);
    mirror_stray_add(&f->m, &f->b, 4, 301, false);
    assert_int_equal(f->m.n_strays, 2);
    assert_true(f->m.strays[0].order);
    assert_false(f->m.strays[1].order);
    assert_ptr_equal(f->m.strays[1].p, &f->b);
    assert_int_equal(f->m.strays[1].seq, 301);
    assert_false(f->m.strays_lost);
}

/* A gap in the scanned tail: within a run, only a publish of its failed
 * window makes the messages after the gap strays (the rest is resent and
 * dropped as duplicates); after a restart (no window known) every gap of
 * an offset the partition still holds does, so that nothing is stored
 * twice once the stream's duplicate window has passed. */
static void scan_gap(fixture *f, bool restarted)
{
    f->m.lost_valid = !restarted;
    f->a.cursor = f->a.scan_next = 10;
    mirror_scan_hit(&f->m, "sensors-a", 10, 100);
    mirror_scan_hit(&f->m, "sensors-a", 12, 101); /* 11 missing */
    mirror_scan_hit(&f->m, "sensors-a", 13, 102);
    assert_int_equal(f->a.scan_next, 11);
    assert_true(f->a.scan_gap);
    assert_int_equal(f->a.scan_gap_at, 12);
}

static void test_gap_in_a_run_not_lost_is_resent(void **state)
{
    fixture *f = *state;
    scan_gap(f, false);
    assert_false(f->a.scan_stray);
    assert_int_equal(f->m.n_strays, 0);
}

static void test_gap_after_restart_is_repaired(void **state)
{
    fixture *f = *state;
    scan_gap(f, true);
    assert_true(f->a.scan_stray);
    assert_int_equal(f->m.n_strays, 2);
    assert_int_equal(f->m.strays[0].offset, 12);
    assert_int_equal(f->m.strays[1].offset, 13);
    assert_false(f->m.strays[0].order);
    assert_ptr_equal(f->m.strays[1].p, &f->a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_in_order_moves_seq_last, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_before_newest_ack_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_equal_sequence_is_not_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_created_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resync_drops_strays_of_a_recreated_stream, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_of_another_writers_message, setup, teardown),
        cmocka_unit_test_setup_teardown(test_another_writers_message_confirms_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stray_list_keeps_kind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gap_in_a_run_not_lost_is_resent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gap_after_restart_is_repaired, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
