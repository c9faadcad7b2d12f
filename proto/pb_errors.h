/*
 * pb_errors - the error convention inside Protobus: the public codes,
 * pb_strerror, enum pb_code and pb_code_name (protobus_errors.h), plus the
 * message helper every module with an (err, errlen) argument uses.
 * Internal: not installed.
 */
#ifndef PB_ERRORS_H
#define PB_ERRORS_H

#include "protobus_errors.h"

#include <stddef.h>

/* printf into a caller's message buffer: the convention of every function
 * with (char *err, size_t errlen) arguments. err may be NULL or errlen 0
 * (then nothing is written). Thread-safe. */
void pb_set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
