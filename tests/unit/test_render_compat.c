/*
 * Unit tests for client/cli/render.c against the renderer it replaced: the
 * old code (protobuf-c's unpack, then json-c or stdio; kept below as the
 * reference, unchanged apart from names) and the new one must give the same
 * bytes, return code and message for every input - a fixed set of tricky
 * events (unicode, control characters, invalid UTF-8, NULs in strings,
 * binary payloads, tags repeated and sanitized alike, every timestamp field
 * at the calendar's edges, fields that protobuf-c merges) and a bounded
 * number of random events, many of them damaged. Every JSON line must parse.
 * An intended change of the output (a new field) is made in the reference
 * too (tests/lib/render_ref.c), so the rest stays pinned.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "event.h"
#include "pb_errors.h"
#include "protobus.pb-c.h"
#include "render.h"
#include "render_ref.h"
#include "timefmt.h"
#include "wire.h"

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RANDOM_EVENTS 20000

/* ==== event bytes, written field by field ==== */

struct buf {
    uint8_t b[2048];
    size_t n;
};

static void b_varint(struct buf *b, uint32_t number, uint64_t v)
{
    assert_true(b->n + 16 <= sizeof b->b);
    b->n += wire_put_varint_field(b->b + b->n, number, v);
}

static void b_len(struct buf *b, uint32_t number, const void *p, size_t len)
{
    assert_true(b->n + len + 16 <= sizeof b->b);
    b->n += wire_put_len_field(b->b + b->n, number, p, len);
}

static void b_str(struct buf *b, uint32_t number, const char *s)
{
    b_len(b, number, s, strlen(s));
}

static void b_sub(struct buf *b, uint32_t number, const struct buf *m)
{
    b_len(b, number, m->b, m->n);
}

/* A Timestamp field; an int32 travels sign-extended to 64 bits. */
static void b_time(struct buf *b, uint32_t number, int64_t seconds, int32_t nanos)
{
    struct buf t = {.n = 0};
    b_varint(&t, 1, (uint64_t)seconds);
    b_varint(&t, 2, (uint64_t)(int64_t)nanos);
    b_sub(b, number, &t);
}

static void b_tag(struct buf *b, const void *key, size_t klen, const void *value, size_t vlen)
{
    struct buf t = {.n = 0};
    b_len(&t, 1, key, klen);
    b_len(&t, 2, value, vlen);
    b_sub(b, EVENT_TAGS, &t);
}

static void b_any(struct buf *b, const char *type, const void *value, size_t len)
{
    struct buf a = {.n = 0};
    b_str(&a, 1, type);
    b_len(&a, 2, value, len);
    b_sub(b, EVENT_PAYLOAD, &a);
}

/* ==== the comparison ==== */

static const pb_render_format FORMATS[] = {PB_RENDER_JSON, PB_RENDER_TEXT, PB_RENDER_RAW};

/* One renderer per format for the whole run (its buffers and time cache
 * carry over from event to event, as in `cat`). */
struct sink {
    pb_renderer r;
    FILE *f;
    char *buf;
    size_t len, seen;
};
static struct sink sinks[3];
static uint64_t compared;

static void sinks_open(void)
{
    for (size_t i = 0; i < 3; i++) {
        struct sink *s = &sinks[i];
        memset(s, 0, sizeof *s);
        s->f = open_memstream(&s->buf, &s->len);
        assert_non_null(s->f);
        pb_renderer_init(&s->r, s->f, FORMATS[i]);
    }
}

static void sinks_close(void)
{
    for (size_t i = 0; i < 3; i++) {
        pb_renderer_free(&sinks[i].r);
        assert_int_equal(fclose(sinks[i].f), 0);
        free(sinks[i].buf);
    }
}

static void json_line_parses(const char *line, size_t len, const char *what)
{
    json_tokener *tok = json_tokener_new();
    assert_non_null(tok);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *obj = json_tokener_parse_ex(tok, line, (int)len);
    if (!obj || json_tokener_get_error(tok) != json_tokener_success)
        fail_msg("%s: invalid JSON (%s): %.*s", what,
                 json_tokener_error_desc(json_tokener_get_error(tok)), (int)len, line);
    json_object_put(obj);
    json_tokener_free(tok);
}

static void print_hex(const char *what, const uint8_t *p, size_t n)
{
    fprintf(stderr, "%s (%zu bytes):", what, n);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %02x", p[i]);
    fprintf(stderr, "\n");
}

/* Renders p[0..n) with the reference and the renderer in sink i; fails
 * the test on any difference. */
static void compare_one(size_t i, const uint8_t *p, size_t n, uint64_t offset, const char *what)
{
    struct sink *s = &sinks[i];
    char *want = NULL, err_want[256], err_got[256];
    size_t want_len = 0;
    FILE *f = open_memstream(&want, &want_len);
    assert_non_null(f);
    int rc_want =
        ref_render_event(f, s->r.fmt, "part\xc3\xa9", offset, p, n, err_want, sizeof err_want);
    assert_int_equal(fclose(f), 0);
    int rc_got = pb_render(&s->r, "part\xc3\xa9", offset, p, n, err_got, sizeof err_got);
    assert_int_equal(fflush(s->f), 0);
    const char *got = s->buf + s->seen;
    size_t got_len = s->len - s->seen;
    s->seen = s->len;
    if (rc_want != rc_got || want_len != got_len || memcmp(want, got, got_len) != 0 ||
        strcmp(err_want, err_got) != 0) {
        print_hex("event", p, n);
        fail_msg("%s, %s: reference rc %d \"%s\" [%.*s], new rc %d \"%s\" [%.*s]", what,
                 pb_render_format_name(s->r.fmt), rc_want, err_want, (int)want_len, want, rc_got,
                 err_got, (int)got_len, got);
    }
    if (rc_got == 0 && s->r.fmt == PB_RENDER_JSON)
        json_line_parses(got, got_len - 1, what);
    free(want);
    compared++;
}

static void compare_all(const uint8_t *p, size_t n, const char *what)
{
    for (size_t i = 0; i < 3; i++)
        compare_one(i, p, n, compared, what);
}

static void compare_buf(const struct buf *b, const char *what)
{
    compare_all(b->b, b->n, what);
}

/* ==== fixed cases ==== */

static const char *const STRINGS[] = {
    "",
    "orders.eu",
    "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80", /* é, 日本, emoji */
    "\x01\x02\x1f\x7f",
    "tab\there\nnew\rline\b\f",
    "quote\" back\\ slash/",
    "bad\xff utf8 \xc3 cut \xed\xa0\x80 surrogate \xf4\x90\x80\x80 big \xc0\xaf overlong",
    "\xef\xbf\xbd",
    "k",
};
#define NSTRINGS (sizeof STRINGS / sizeof STRINGS[0])

static void test_every_string_everywhere(void **state)
{
    (void)state;
    sinks_open();
    for (size_t i = 0; i < NSTRINGS; i++) {
        const char *s = STRINGS[i];
        struct buf b = {.n = 0};
        b_str(&b, EVENT_TOPIC, s);
        b_tag(&b, s, strlen(s), s, strlen(s));
        b_tag(&b, "k", 1, s, strlen(s));
        b_time(&b, EVENT_SERVER_RECEIVE_TIME, 1764892800, 5);
        b_varint(&b, EVENT_PAYLOAD_SIZE, strlen(s));
        b_any(&b, s, s, strlen(s));
        compare_buf(&b, s);
    }
    sinks_close();
}

static void test_nul_in_strings(void **state)
{
    (void)state;
    static const char with_nul[] = "before\0after";
    struct buf b = {.n = 0};
    sinks_open();
    b_len(&b, EVENT_TOPIC, with_nul, sizeof with_nul - 1);
    b_tag(&b, with_nul, sizeof with_nul - 1, with_nul, sizeof with_nul - 1);
    b_tag(&b, "before", 6, "v", 1); /* the same key once cut at the NUL */
    b_any(&b, with_nul, with_nul, sizeof with_nul - 1);
    compare_buf(&b, "NUL bytes");
    sinks_close();
}

static void test_payloads(void **state)
{
    (void)state;
    uint8_t bin[300];
    char text[300];
    sinks_open();
    for (size_t i = 0; i < sizeof bin; i++)
        bin[i] = (uint8_t)(i * 7 + 3);
    /* Text of every length around the 64-byte cut, a 2-, 3- or 4-byte
     * character straddling it; binary of every length (base64 padding). */
    for (size_t len = 0; len < 140; len++) {
        for (size_t w = 1; w <= 4; w++) {
            static const char *const chars[] = {"a", "\xc3\xa9", "\xe6\x97\xa5",
                                                "\xf0\x9f\x98\x80"};
            size_t n = 0;
            while (n + w <= len) {
                memcpy(text + n, chars[w - 1], w);
                n += w;
            }
            struct buf b = {.n = 0};
            b_str(&b, EVENT_TOPIC, "t");
            b_any(&b, "type.googleapis.com/x", text, n);
            compare_buf(&b, "text payload");
        }
        struct buf b = {.n = 0};
        b_any(&b, "", bin, len);
        compare_buf(&b, "binary payload");
    }
    struct buf b = {.n = 0};
    b_str(&b, EVENT_TOPIC, "no payload");
    compare_buf(&b, "no payload");
    b.n = 0;
    b_len(&b, EVENT_PAYLOAD, "", 0); /* an empty Any */
    compare_buf(&b, "empty Any");
    sinks_close();
}

static const int64_t SECONDS[] = {
    0,
    1,
    -1,
    1764892800,
    1764892801,
    253402300799,
    253402300800,
    -62135596800,
    -62167219200,
    -62167219201,
    INT64_MAX,
    INT64_MIN,
    9223372036,
    -9223372037,
};
static const int32_t NANOS[] = {0, 1, 999999999, 1000000000, -1, INT32_MIN, INT32_MAX, 123456789};
#define NSECONDS (sizeof SECONDS / sizeof SECONDS[0])
#define NNANOS   (sizeof NANOS / sizeof NANOS[0])

static void test_timestamps(void **state)
{
    (void)state;
    sinks_open();
    for (size_t s = 0; s < NSECONDS; s++) {
        for (size_t n = 0; n < NNANOS; n++) {
            for (uint32_t field = EVENT_CLIENT_EVENT_TIME; field <= EVENT_SERVER_RECEIVE_TIME;
                 field++) {
                struct buf b = {.n = 0};
                b_time(&b, field, SECONDS[s], NANOS[n]);
                /* The same second twice in a row: the cached prefix. */
                compare_buf(&b, "timestamp");
                compare_buf(&b, "timestamp again");
            }
        }
    }
    /* Only seconds, only nanos, nothing, unknown fields inside. */
    struct buf t = {.n = 0}, b = {.n = 0};
    b_varint(&t, 1, 1764892800);
    b_sub(&b, EVENT_SERVER_RECEIVE_TIME, &t);
    t.n = 0;
    b_varint(&t, 2, 42);
    b_varint(&t, 9, 42);
    b_str(&t, 10, "x");
    b_sub(&b, EVENT_CLIENT_EVENT_TIME, &t);
    b_len(&b, EVENT_CLIENT_TRANSMIT_TIME, "", 0);
    compare_buf(&b, "partial timestamps");
    sinks_close();
}

static void test_tags(void **state)
{
    (void)state;
    sinks_open();
    struct buf b = {.n = 0};
    /* Repeated keys (the last value wins, json keeps the first place),
     * keys that differ only once made UTF-8, order of first sight. */
    b_tag(&b, "zeta", 4, "1", 1);
    b_tag(&b, "alpha", 5, "2", 1);
    b_tag(&b, "zeta", 4, "3", 1);
    b_tag(&b, "bad\xff", 4, "4", 1);
    b_tag(&b, "bad\xfe", 4, "5", 1);
    b_tag(&b, "bad\xef\xbf\xbd", 6, "6", 1);
    b_tag(&b, "", 0, "empty key", 9);
    b_tag(&b, "alpha", 5, "7", 1);
    compare_buf(&b, "repeated tags");
    /* Many tags (the sort's other path), a map entry without key or value,
     * an entry with repeated and unknown fields. */
    b.n = 0;
    for (int i = 0; i < 40; i++) {
        char k[8];
        int n = snprintf(k, sizeof k, "k%02d", (i * 17) % 23);
        b_tag(&b, k, (size_t)n, k, (size_t)n);
    }
    struct buf e = {.n = 0};
    b_sub(&b, EVENT_TAGS, &e);
    b_str(&e, 1, "first");
    b_str(&e, 1, "second");
    b_varint(&e, 7, 1);
    b_sub(&b, EVENT_TAGS, &e);
    compare_buf(&b, "many tags");
    sinks_close();
}

/* Fields protobuf-c merges or lets the last occurrence win. */
static void test_repeated_fields(void **state)
{
    (void)state;
    sinks_open();
    struct buf b = {.n = 0}, a = {.n = 0};
    b_str(&b, EVENT_TOPIC, "first");
    b_str(&b, EVENT_TOPIC, "second");
    b_varint(&b, EVENT_PAYLOAD_SIZE, 5);
    b_varint(&b, EVENT_PAYLOAD_SIZE, (uint64_t)-7);
    b_time(&b, EVENT_SERVER_RECEIVE_TIME, 100, 5);
    b_time(&b, EVENT_SERVER_RECEIVE_TIME, 200, 0);
    b_any(&b, "t1", "one", 3);
    b_len(&a, 2, "", 0); /* an explicitly empty value: protobuf-c keeps "one" */
    b_sub(&b, EVENT_PAYLOAD, &a);
    compare_buf(&b, "repeated fields");
    b.n = 0;
    b_any(&b, "t1", "\xff\xfe", 2);
    a.n = 0;
    b_str(&a, 1, "t2");
    b_sub(&b, EVENT_PAYLOAD, &a);
    b_str(&b, EVENT_ID, "id-1");
    b_varint(&b, 99, 1); /* unknown fields of each wire type */
    b_len(&b, 100, "zz", 2);
    b.n += wire_put_tag(b.b + b.n, 101, WIRE_I32);
    memcpy(b.b + b.n, "abcd", 4);
    b.n += 4;
    b.n += wire_put_tag(b.b + b.n, 102, WIRE_I64);
    memcpy(b.b + b.n, "abcdefgh", 8);
    b.n += 8;
    compare_buf(&b, "merged payload, unknown fields");
    sinks_close();
}

static void test_invalid_bytes(void **state)
{
    (void)state;
    static const struct {
        uint8_t bytes[8];
        size_t n;
    } bad[] = {
        {{0x0a, 0x05, 'a'}, 3},
        {{0x0a}, 1},
        {{0x3a, 0x02, 0x0a, 0x09}, 4},
        {{0x0a, 0x01, 'a', 0xff}, 4},
        {{0x0b, 0x00}, 2},
        {{0x08, 0x01}, 2},             /* topic as a varint */
        {{0x12, 0x02, 0x08, 0x01}, 4}, /* tag key as a varint */
        {{0x1a, 0x02, 0x0a, 0x00}, 4}, /* seconds as LEN */
        {{0x00, 0x01}, 2},             /* field number 0 */
        {{0x3a, 0x02, 0x10, 0x01}, 4}, /* Any.value as a varint */
    };
    sinks_open();
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        compare_all(bad[i].bytes, bad[i].n, "invalid bytes");
    compare_all(NULL, 0, "no bytes");
    sinks_close();
}

/* ==== random events, often damaged ==== */

static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static size_t pick(size_t n)
{
    return (size_t)(next_rand() % n);
}

/* A few of STRINGS glued together, or random bytes. */
static size_t random_text(char *out, size_t cap)
{
    size_t n = 0;
    if (pick(4) == 0) {
        size_t len = pick(cap < 90 ? cap : 90);
        for (; n < len; n++)
            out[n] = (char)next_rand();
        return n;
    }
    for (size_t parts = pick(4); parts > 0; parts--) {
        const char *s = STRINGS[pick(NSTRINGS)];
        size_t len = strlen(s);
        if (n + len > cap)
            break;
        memcpy(out + n, s, len);
        n += len;
    }
    return n;
}

static void random_field(struct buf *b)
{
    char s[200], t[200];
    struct buf m = {.n = 0};
    size_t n, k;
    switch (pick(9)) {
    case 0:
        n = random_text(s, sizeof s);
        b_len(b, EVENT_TOPIC, s, n);
        break;
    case 1:
    case 2:
        n = random_text(s, 40);
        k = random_text(t, 40);
        if (pick(5) == 0)
            b_len(&m, pick(3) + 1, t, k); /* key only, value only, or unknown */
        else
            b_tag(b, s, n, t, k);
        if (m.n)
            b_sub(b, EVENT_TAGS, &m);
        break;
    case 3:
    case 4:
        b_time(b, (uint32_t)(EVENT_CLIENT_EVENT_TIME + pick(3)), SECONDS[pick(NSECONDS)],
               NANOS[pick(NNANOS)]);
        break;
    case 5:
        b_varint(b, EVENT_PAYLOAD_SIZE, pick(2) ? pick(300) : next_rand());
        break;
    case 6:
    case 7:
        n = random_text(s, 40);
        k = random_text(t, sizeof t);
        if (pick(6) == 0) {
            b_len(&m, pick(2) + 1, pick(2) ? s : t, pick(2) ? n : k);
            b_sub(b, EVENT_PAYLOAD, &m);
        } else {
            b_any(b, s, t, k);
        }
        break;
    default:
        if (pick(2))
            b_len(b, EVENT_ID, "id", 2);
        else
            b_varint(b, (uint32_t)(9 + pick(20)), next_rand());
        break;
    }
}

static void test_random_events(void **state)
{
    (void)state;
    sinks_open();
    for (int i = 0; i < RANDOM_EVENTS; i++) {
        struct buf b = {.n = 0};
        for (size_t f = pick(9); f > 0 && b.n < sizeof b.b - 600; f--)
            random_field(&b);
        /* Damage a third: a byte changed, the end cut, a byte inserted. */
        switch (b.n ? pick(9) : 9) {
        case 0:
            b.b[pick(b.n)] = (uint8_t)next_rand();
            break;
        case 1:
            b.n = pick(b.n);
            break;
        case 2: {
            size_t at = pick(b.n + 1);
            memmove(b.b + at + 1, b.b + at, b.n - at);
            b.b[at] = (uint8_t)next_rand();
            b.n++;
        } break;
        default:
            break;
        }
        compare_buf(&b, "random event");
    }
    sinks_close();
    assert_true(compared > RANDOM_EVENTS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_string_everywhere),
        cmocka_unit_test(test_nul_in_strings),
        cmocka_unit_test(test_payloads),
        cmocka_unit_test(test_timestamps),
        cmocka_unit_test(test_tags),
        cmocka_unit_test(test_repeated_fields),
        cmocka_unit_test(test_invalid_bytes),
        cmocka_unit_test(test_random_events),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
