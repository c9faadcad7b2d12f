/* topicharness - see topicharness.h. */
#include "topicharness.h"

#include "log.h"
#include "testfs.h"
#include "wire.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

void th_add(topic_table *t, const char *topic, uint64_t offset)
{
    live_record r = {
        .offset = offset, .topic = (const uint8_t *)topic, .topic_len = (uint32_t)strlen(topic)};
    assert_int_equal(topics_add(t, &r, 1), 0);
}

int th_setup(void **state)
{
    th_fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    if (testfs_make_root(f->root, sizeof f->root, "test_topics", f->dir, sizeof f->dir) < 0) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

int th_teardown(void **state)
{
    th_fixture *f = *state;
    assert_int_equal(testfs_rmrf(f->root), 0);
    free(f);
    return 0;
}

size_t th_encode_event(uint8_t *buf, const char *topic, uint64_t payload_size)
{
    size_t n = wire_put_len_field(buf, 1, topic, strlen(topic));
    return n + wire_put_varint_field(buf + n, 6, payload_size);
}

void th_write_log(const char *dir, const char *const *topics, size_t n)
{
    pb_log *log;
    log_options o = {0};
    assert_int_equal(log_open(&log, dir, &o), 0);
    uint64_t base = log_next_offset(log);
    uint8_t buf[300];
    for (size_t i = 0; i < n; i++) {
        size_t len = th_encode_event(buf, topics[i], i);
        log_entry e = {.data = buf, .len = len, .time_ns = 1000 + (int64_t)i};
        uint64_t first;
        assert_int_equal(log_append(log, &e, 1, &first), 0);
        assert_int_equal(first, base + i);
    }
    assert_int_equal(log_close(log), 0);
}

const char *const th_topics30[30] = {
    "a", "b", "a", "c", "a", "a",   "b", "d.e", "a", "c", "b", "b", "a", "x", "a",
    "c", "c", "a", "b", "a", "d.e", "a", "a",   "b", "c", "a", "x", "a", "b", "a",
};
