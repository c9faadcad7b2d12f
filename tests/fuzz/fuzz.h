/*
 * fuzz - what the fuzz targets in tests/fuzz/ share. Each fuzz_<name>.c
 * defines LLVMFuzzerTestOneInput; it is linked either with libFuzzer (clang,
 * `make fuzz`) or with replay.c (gcc, `make check`), which feeds it every file
 * of tests/fuzz/corpus/<name>/.
 *
 * Threads: one; a target may keep static state between inputs (a temp dir),
 * but no input may depend on an earlier one.
 */
#ifndef PB_FUZZ_H
#define PB_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An oracle failed: the code accepted or produced something it must not.
 * abort() so that libFuzzer saves the input and replay exits non-zero. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz oracle failed: %s\n", __FILE__, __LINE__, #cond);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
