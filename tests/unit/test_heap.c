/* Tests for proto/heap: pops come out in the caller's order for every
 * push/pop interleaving tried, duplicates included, and the caller's
 * context reaches the comparison. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>

#include "heap.h"

#define N 200

/* Items are indexes into keys; ties break by index, so the order is total. */
static bool key_less(const void *ctx, size_t a, size_t b)
{
    const uint32_t *keys = ctx;
    return keys[a] != keys[b] ? keys[a] < keys[b] : a < b;
}

static void test_pops_in_order(void **state)
{
    (void)state;
    uint32_t keys[N];
    size_t heap[N], n = 0;
    unsigned seed = 12345;

    for (size_t i = 0; i < N; i++) {
        seed = seed * 1103515245u + 12345u;
        keys[i] = (seed >> 16) % 50; /* many duplicates */
    }
    for (size_t i = 0; i < N; i++)
        heap_push(heap, &n, i, key_less, keys);
    assert_int_equal(n, N);
    size_t prev = heap_pop(heap, &n, key_less, keys);
    while (n > 0) {
        size_t next = heap_pop(heap, &n, key_less, keys);
        assert_true(key_less(keys, prev, next));
        prev = next;
    }
}

/* A k-way merge's pattern: pop one, push one back; the heap must stay a
 * heap whatever the order of the pushes. */
static void test_interleaved(void **state)
{
    (void)state;
    uint32_t keys[N];
    size_t heap[N], n = 0, popped = 0;

    for (size_t i = 0; i < N; i++)
        keys[i] = (uint32_t)((i * 7919) % N);
    for (size_t i = 0; i < N / 2; i++)
        heap_push(heap, &n, i, key_less, keys);
    for (size_t i = N / 2; i < N; i++) {
        size_t top = heap_pop(heap, &n, key_less, keys);
        /* Pushes below what was popped are allowed: check only the heap's
         * own invariant, that the popped key is the smallest present. */
        for (size_t j = 0; j < n; j++)
            assert_true(keys[top] <= keys[heap[j]]);
        popped++;
        heap_push(heap, &n, i, key_less, keys);
    }
    while (n > 0) {
        size_t top = heap_pop(heap, &n, key_less, keys);
        for (size_t j = 0; j < n; j++)
            assert_true(keys[top] <= keys[heap[j]]);
        popped++;
    }
    assert_int_equal(popped, N);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pops_in_order),
        cmocka_unit_test(test_interleaved),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
