/* Tests for proto/legacy: files in the original protobus-server layout
 * (u32 little-endian length + EncapsulatedEvent, no header), written here
 * with protobuf-c, read back with ordinals and receive times; a truncated
 * last record reported (and, when following, waited for instead); an
 * invalid event reported and skipped; an absurd length stops the file;
 * pb_file_probe tells the three kinds of file apart. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testfs.h"
#include "frame.h"
#include "legacy.h"
#include "pb_errors.h"
#include "protobus.pb-c.h"
#include "record.h"

#define T0 1600000000ll /* seconds: events written "in 2020" */

static char root[64];
static char path[PATH_MAX];

static int setup(void **state)
{
    snprintf(root, sizeof root, "/tmp/pb_test_legacy.XXXXXX");
    if (!mkdtemp(root))
        return -1;
    snprintf(path, sizeof path, "%s/sensors.pb", root);
    return 0;
}

static int teardown(void **state)
{
    return testfs_rmrf(root);
}

/* Packs event i as the original server stored it: topic, one tag, all three
 * timestamps, payload_size and an Any payload. Returns the length. */
static size_t pack_event(int i, uint8_t *out, size_t cap)
{
    char topic[32], value[32], payload[64];
    snprintf(topic, sizeof topic, "sensors.t%d.temp", i);
    snprintf(value, sizeof value, "v%d", i);
    snprintf(payload, sizeof payload, "reading number %d", i);
    Protobus__EncapsulatedEvent__TagsEntry tag = PROTOBUS__ENCAPSULATED_EVENT__TAGS_ENTRY__INIT;
    Protobus__EncapsulatedEvent__TagsEntry *tags[1] = {&tag};
    tag.key = "site";
    tag.value = value;
    Google__Protobuf__Timestamp evt = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    Google__Protobuf__Timestamp sent = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    Google__Protobuf__Timestamp recv = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    evt.seconds = T0 + i;
    sent.seconds = T0 + i;
    sent.nanos = 500;
    recv.seconds = T0 + i;
    recv.nanos = 1000 + i;
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    any.type_url = "type.googleapis.com/test.Reading";
    any.value.data = (uint8_t *)payload;
    any.value.len = strlen(payload);
    Protobus__EncapsulatedEvent ev = PROTOBUS__ENCAPSULATED_EVENT__INIT;
    ev.topic = topic;
    ev.n_tags = 1;
    ev.tags = tags;
    ev.client_event_time = &evt;
    ev.client_transmit_time = &sent;
    ev.server_receive_time = &recv;
    ev.payload = &any;
    ev.payload_size = (int64_t)protobuf_c_message_get_packed_size(&any.base);
    size_t n = protobus__encapsulated_event__get_packed_size(&ev);
    assert_true(n <= cap);
    assert_int_equal(protobus__encapsulated_event__pack(&ev, out), n);
    return n;
}

static void append_bytes(const void *p, size_t n)
{
    FILE *f = fopen(path, "ab");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* Appends a legacy record: u32 LE length, then the bytes. */
static void append_record(const uint8_t *ev, size_t n)
{
    uint8_t prefix[4];
    pb_store_le32(prefix, (uint32_t)n);
    append_bytes(prefix, sizeof prefix);
    append_bytes(ev, n);
}

static void write_events(int count)
{
    uint8_t buf[512];
    for (int i = 0; i < count; i++)
        append_record(buf, pack_event(i, buf, sizeof buf));
}

static void check_event(const pb_record *rec, int i)
{
    uint8_t want[512];
    size_t n = pack_event(i, want, sizeof want);
    assert_int_equal(rec->offset, (uint64_t)i);
    assert_int_equal(rec->time_ns, (T0 + i) * 1000000000ll + 1000 + i);
    assert_int_equal(rec->event_len, n);
    assert_memory_equal(rec->event, want, n);
    event_view v;
    assert_int_equal(event_scan(rec->event, rec->event_len, &v, NULL, 0), 0);
    char topic[32];
    snprintf(topic, sizeof topic, "sensors.t%d.temp", i);
    assert_int_equal(v.topic.len, strlen(topic));
    assert_memory_equal(v.topic.p, topic, v.topic.len);
}

static void test_reads_back_every_event(void **state)
{
    write_events(50);
    pb_legacy *l;
    assert_int_equal(pb_legacy_open(&l, path, false), 0);
    pb_record rec;
    for (int i = 0; i < 50; i++) {
        assert_int_equal(pb_legacy_next(l, &rec), 0);
        check_event(&rec, i);
    }
    assert_int_equal(pb_legacy_next(l, &rec), PB_EEOF);
    assert_int_equal(pb_legacy_next(l, &rec), PB_EEOF);
    pb_legacy_close(l);
}

static void test_event_without_receive_time_has_time_zero(void **state)
{
    Protobus__EncapsulatedEvent ev = PROTOBUS__ENCAPSULATED_EVENT__INIT;
    ev.topic = "plain";
    uint8_t buf[64];
    size_t n = protobus__encapsulated_event__pack(&ev, buf);
    append_record(buf, n);
    pb_legacy *l;
    assert_int_equal(pb_legacy_open(&l, path, false), 0);
    pb_record rec;
    assert_int_equal(pb_legacy_next(l, &rec), 0);
    assert_int_equal(rec.offset, 0);
    assert_int_equal(rec.time_ns, 0);
    assert_int_equal(rec.event_len, n);
    pb_legacy_close(l);
}

static void test_truncated_last_record_is_reported(void **state)
{
    write_events(3);
    uint8_t buf[512];
    size_t n = pack_event(3, buf, sizeof buf);
    uint8_t prefix[4];
    pb_store_le32(prefix, (uint32_t)n);
    append_bytes(prefix, sizeof prefix);
    append_bytes(buf, n / 2); /* the writer died half way */
    long start = 0;
    for (int i = 0; i < 3; i++)
        start += 4 + (long)pack_event(i, buf, sizeof buf);

    pb_legacy *l;
    assert_int_equal(pb_legacy_open(&l, path, false), 0);
    pb_record rec;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pb_legacy_next(l, &rec), 0);
        check_event(&rec, i);
    }
    assert_int_equal(pb_legacy_next(l, &rec), PB_ECORRUPT);
    const struct pb_reader_problem *p = pb_legacy_problem(l);
    assert_string_equal(p->file, path);
    assert_int_equal(p->position, (uint64_t)start);
    assert_int_equal(p->first_offset, 3);
    assert_int_equal(p->last_offset, 3);
    assert_non_null(strstr(p->reason, "cut short"));
    assert_int_equal(pb_legacy_next(l, &rec), PB_EEOF);
    pb_legacy_close(l);
}

static void test_truncated_length_prefix_is_reported(void **state)
{
    write_events(1);
    append_bytes("\x10\x00", 2);
    pb_legacy *l;
    assert_int_equal(pb_legacy_open(&l, path, false), 0);
    pb_record rec;
    assert_int_equal(pb_legacy_next(l, &rec), 0);
    assert_int_equal(pb_legacy_next(l, &rec), PB_ECORRUPT);
    assert_int_equal(pb_legacy_problem(l)->first_offset, 1);
    assert_non_null(strstr(pb_legacy_problem(l)->reason, "length bytes"));
    assert_int_equal(pb_legacy_next(l, &rec), PB_EEOF);
    pb_legacy_close(l);
}

static void test_follow_waits_for_a_partial_record(void **state)
{
    write_events(1);
    uint8_t buf[512];
    size_t n = pack_event(1, buf, sizeof buf);
    uint8_t prefix[4];
    pb_store_le32(prefix, (uint32_t)n);
    append_bytes(prefix, sizeof prefix);
    append_bytes(buf, 5);

    pb_legacy *l;
    assert_int_equal(pb_legacy_open(&l, path, true), 0);
    pb_record rec;
    assert_int_equal(pb_legacy_next(l, &rec), 0);
    check_event(&rec, 0);
    assert_int_equal(pb_legacy_next(l, &rec), PB_EEOF); /* not written yet */
    append_bytes(buf + 5, n - 5);
    assert_int_equal(pb_legacy_next(l, &rec), 0);
    check_event(&rec, 1);
    assert_int_equal(pb_legacy_next(l, &rec), PB_EEOF);
    append_record(buf, pack_event(2, buf, sizeof buf));
    assert_int_equal(pb_legacy_next(l, &rec), 0);
    check_event(&rec, 2);
    pb_legacy_close(l);
}

static void test_invalid_event_is_reported_and_skipped(void **state)
{
    uint8_t buf[512];
    append_record(buf, pack_event(0, buf, sizeof buf));
    /* Field 1 (topic) declared 200 bytes long in a 3-byte event. */
    const uint8_t bad[] = {0x0a, 0xc8, 0x01};
    append_record(bad, sizeof bad);
    append_record(buf, pack_event(2, buf, sizeof buf));
    uint64_t bad_pos = 4 + pack_event(0, buf, sizeof buf);

    pb_legacy *l;
    assert_int_equal(pb_legacy_open(&l, path, false), 0);
    pb_record rec;
    assert_int_equal(pb_legacy_next(l, &rec), 0);
    check_event(&rec, 0);
    assert_int_equal(pb_legacy_next(l, &rec), PB_ECORRUPT);
    const struct pb_reader_problem *p = pb_legacy_problem(l);
    assert_int_equal(p->position, bad_pos);
    assert_int_equal(p->first_offset, 1);
    assert_int_equal(p->last_offset, 1);
    assert_non_null(strstr(p->reason, "EncapsulatedEvent"));
    assert_int_equal(pb_legacy_next(l, &rec), 0);
    check_event(&rec, 2); /* ordinal 2: the bad record still counts */
    assert_int_equal(pb_legacy_next(l, &rec), PB_EEOF);
    pb_legacy_close(l);
}

static void test_absurd_length_stops_the_file(void **state)
{
    write_events(2);
    uint8_t prefix[4];
    pb_store_le32(prefix, 0xfffffff0u);
    append_bytes(prefix, sizeof prefix);
    write_events(1); /* unreachable: no way to find where it starts */

    pb_legacy *l;
    assert_int_equal(pb_legacy_open(&l, path, true), 0);
    pb_record rec;
    assert_int_equal(pb_legacy_next(l, &rec), 0);
    assert_int_equal(pb_legacy_next(l, &rec), 0);
    assert_int_equal(pb_legacy_next(l, &rec), PB_ECORRUPT);
    assert_int_equal(pb_legacy_problem(l)->first_offset, 2);
    assert_non_null(strstr(pb_legacy_problem(l)->reason, "exceeds"));
    assert_int_equal(pb_legacy_next(l, &rec), PB_EEOF);
    assert_int_equal(pb_legacy_next(l, &rec), PB_EEOF);
    pb_legacy_close(l);
}

static void test_large_event_beyond_the_read_window(void **state)
{
    /* 3 MiB payload: larger than the reader's 1 MiB window. */
    size_t big = 3u << 20;
    uint8_t *payload = malloc(big);
    assert_non_null(payload);
    for (size_t i = 0; i < big; i++)
        payload[i] = (uint8_t)(i * 7);
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    any.value.data = payload;
    any.value.len = big;
    Protobus__EncapsulatedEvent ev = PROTOBUS__ENCAPSULATED_EVENT__INIT;
    ev.topic = "big";
    ev.payload = &any;
    size_t n = protobus__encapsulated_event__get_packed_size(&ev);
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    protobus__encapsulated_event__pack(&ev, buf);
    write_events(1);
    append_record(buf, n);

    pb_legacy *l;
    assert_int_equal(pb_legacy_open(&l, path, false), 0);
    pb_record rec;
    assert_int_equal(pb_legacy_next(l, &rec), 0);
    assert_int_equal(pb_legacy_next(l, &rec), 0);
    assert_int_equal(rec.offset, 1);
    assert_int_equal(rec.event_len, n);
    assert_memory_equal(rec.event, buf, n);
    assert_int_equal(pb_legacy_next(l, &rec), PB_EEOF);
    pb_legacy_close(l);
    free(buf);
    free(payload);
}

static void test_probe_kinds(void **state)
{
    pb_file_kind kind;
    char p[PATH_MAX];
    uint8_t hdr[PB_FILE_HEADER_SIZE];

    snprintf(p, sizeof p, "%s/00000000000000000000.log", root);
    file_header_encode(hdr, PB_LOG_MAGIC, 0, 1);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(hdr, 1, sizeof hdr, f), sizeof hdr);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(pb_file_probe(p, &kind), 0);
    assert_int_equal(kind, PB_FILE_SEGMENT);

    snprintf(p, sizeof p, "%s/00000000000000000000.idx", root);
    file_header_encode(hdr, PB_IDX_MAGIC, 0, 1);
    f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(hdr, 1, sizeof hdr, f), sizeof hdr);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(pb_file_probe(p, &kind), 0);
    assert_int_equal(kind, PB_FILE_INDEX);

    write_events(1);
    assert_int_equal(pb_file_probe(path, &kind), 0);
    assert_int_equal(kind, PB_FILE_LEGACY);

    snprintf(p, sizeof p, "%s/empty.pb", root);
    f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(pb_file_probe(p, &kind), 0);
    assert_int_equal(kind, PB_FILE_LEGACY);

    snprintf(p, sizeof p, "%s/missing", root);
    assert_int_equal(pb_file_probe(p, &kind), -ENOENT);
    pb_legacy *l = NULL;
    assert_int_equal(pb_legacy_open(&l, p, false), -ENOENT);
    assert_null(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reads_back_every_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_without_receive_time_has_time_zero, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_truncated_last_record_is_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_length_prefix_is_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_follow_waits_for_a_partial_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_event_is_reported_and_skipped, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_absurd_length_stops_the_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_event_beyond_the_read_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_probe_kinds, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
