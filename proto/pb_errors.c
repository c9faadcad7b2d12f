/* pb_strerror and pb_code_name (protobus_errors.h), pb_set_err (pb_errors.h).
 * Thread-safe. */
#include "pb_errors.h"

#include "protobus.pb-c.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *pb_strerror(int code)
{
    switch (code) {
    case PB_OK:
        return "success";
    case PB_ECORRUPT:
        return "corrupt record";
    case PB_EEOF:
        return "end of data";
    case PB_EINCOMPLETE:
        return "record incomplete (still being written)";
    case PB_ETOOBIG:
        return "too large";
    case PB_EPROTO:
        return "malformed frame or protocol violation";
    case PB_EINVAL:
        return "invalid argument";
    case PB_ENOMEM:
        return "out of memory";
    case PB_ECONNECT:
        return "connection failed";
    case PB_ETIMEDOUT:
        return "timed out";
    case PB_ECLOSED:
        return "connection closed";
    case PB_ESERVER:
        return "server error";
    case PB_ENOTFOUND:
        return "not found";
    case PB_EFORMAT:
        return "not a protobus file or unsupported format version";
    case PB_EFAILED:
        return "partition failed after a write or sync error";
    case PB_EDATALOSS:
        return "data loss";
    case PB_EREMOVED:
        return "offsets removed by retention";
    default:
        break;
    }
    if (code < 0 && code > PB_ERRNO_MIN) {
        /* strerrordesc_np is thread-safe and returns a static string. */
        const char *s = strerrordesc_np(-code);
        return s ? s : "unknown system error";
    }
    return "unknown error";
}

void pb_set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* enum pb_code is protobus.proto's Code, number for number. */
#define SAME_CODE(x)                                                                               \
    _Static_assert((int)PB_CODE_##x == (int)PROTOBUS__CODE__##x, "PB_CODE_" #x " differs")
SAME_CODE(OK);
SAME_CODE(CANCELLED);
SAME_CODE(UNKNOWN);
SAME_CODE(INVALID_ARGUMENT);
SAME_CODE(DEADLINE_EXCEEDED);
SAME_CODE(NOT_FOUND);
SAME_CODE(ALREADY_EXISTS);
SAME_CODE(PERMISSION_DENIED);
SAME_CODE(RESOURCE_EXHAUSTED);
SAME_CODE(FAILED_PRECONDITION);
SAME_CODE(ABORTED);
SAME_CODE(OUT_OF_RANGE);
SAME_CODE(UNIMPLEMENTED);
SAME_CODE(INTERNAL);
SAME_CODE(UNAVAILABLE);
SAME_CODE(DATA_LOSS);
SAME_CODE(UNAUTHENTICATED);

const char *pb_code_name(int code)
{
    static const char *const names[] = {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    if (code < 0 || code >= (int)(sizeof(names) / sizeof(names[0])))
        return "UNKNOWN_CODE";
    return names[code];
}
