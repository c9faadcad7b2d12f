/*
 * topicharness - what the topic table's tests (tests/unit/test_topics.c,
 * test_topics_cold.c) share: a temp partition directory, a real partition
 * log written with given topics, and adding one record to a table.
 *
 * Single-threaded: the tests play the partition's writer thread.
 */
#ifndef PB_TEST_TOPICHARNESS_H
#define PB_TEST_TOPICHARNESS_H

#include "topics.h"

#include <stddef.h>
#include <stdint.h>

typedef struct th_fixture {
    char root[64];
    char dir[96]; /* root/p: the partition directory */
} th_fixture;

/* cmocka's setup and teardown: *state is a th_fixture (a temp root, which
 * teardown removes). */
int th_setup(void **state);
int th_teardown(void **state);

/* Adds one record (topic at offset) to t, as the writer would. */
void th_add(topic_table *t, const char *topic, uint64_t offset);
/* A minimal EncapsulatedEvent: topic (field 1) and payload_size (field 6). */
size_t th_encode_event(uint8_t *buf, const char *topic, uint64_t payload_size);
/* Appends events with topics[0..n) to the partition log at dir (event i
 * with payload_size i). */
void th_write_log(const char *dir, const char *const *topics, size_t n);

/* The topics of 30 records: 5 distinct, "a" 14 times, "x" twice. */
extern const char *const th_topics30[30];

#endif
