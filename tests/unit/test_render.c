/* Unit tests for client/cli/render.c: JSON/text/raw rendering, tag matching, UTF-8 validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "pb_errors.h"
#include "protobus.pb-c.h"
#include "render.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

/* An event under construction; the test owns every piece (stack + literals). */
struct test_event {
    Protobus__EncapsulatedEvent ev;
    Protobus__EncapsulatedEvent__TagsEntry entries[4];
    Protobus__EncapsulatedEvent__TagsEntry *tag_ptrs[4];
    Google__Protobuf__Timestamp times[3];
    Google__Protobuf__Any any;
};

static void event_init(struct test_event *t, const char *topic)
{
    memset(t, 0, sizeof *t);
    t->ev = (Protobus__EncapsulatedEvent)PROTOBUS__ENCAPSULATED_EVENT__INIT;
    t->ev.topic = (char *)topic;
    t->ev.tags = t->tag_ptrs;
}

static void event_tag(struct test_event *t, const char *key, const char *value)
{
    size_t i = t->ev.n_tags++;
    assert_true(i < 4);
    t->entries[i] =
        (Protobus__EncapsulatedEvent__TagsEntry)PROTOBUS__ENCAPSULATED_EVENT__TAGS_ENTRY__INIT;
    t->entries[i].key = (char *)key;
    t->entries[i].value = (char *)value;
    t->tag_ptrs[i] = &t->entries[i];
}

/* which: 0 client_event_time, 1 client_transmit_time, 2 server_receive_time. */
static void event_time(struct test_event *t, int which, int64_t sec, int32_t nanos)
{
    Google__Protobuf__Timestamp *ts = &t->times[which];
    *ts = (Google__Protobuf__Timestamp)GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ts->seconds = sec;
    ts->nanos = nanos;
    if (which == 0)
        t->ev.client_event_time = ts;
    else if (which == 1)
        t->ev.client_transmit_time = ts;
    else
        t->ev.server_receive_time = ts;
}

static void event_payload(struct test_event *t, const char *type, const void *p, size_t n)
{
    t->any = (Google__Protobuf__Any)GOOGLE__PROTOBUF__ANY__INIT;
    t->any.type_url = (char *)type;
    t->any.value.data = (uint8_t *)p;
    t->any.value.len = n;
    t->ev.payload = &t->any;
    t->ev.payload_size = (int64_t)n;
}

/* Packs into a malloc'd buffer the caller frees. */
static uint8_t *event_pack(const struct test_event *t, size_t *len)
{
    *len = protobus__encapsulated_event__get_packed_size(&t->ev);
    uint8_t *buf = malloc(*len ? *len : 1);
    assert_non_null(buf);
    assert_int_equal(protobus__encapsulated_event__pack(&t->ev, buf), *len);
    return buf;
}

struct rendered {
    int rc;
    char *out; /* malloc'd, NUL-terminated; may contain NULs (raw) */
    size_t len;
    char err[256];
};

static void render_bytes(struct rendered *r, pb_render_format fmt, const char *partition,
                         uint64_t offset, const uint8_t *bytes, size_t n)
{
    r->out = NULL;
    r->len = 0;
    FILE *f = open_memstream(&r->out, &r->len);
    assert_non_null(f);
    r->rc = pb_render_event(f, fmt, partition, offset, bytes, n, r->err, sizeof r->err);
    assert_int_equal(fclose(f), 0);
}

static void render(struct rendered *r, pb_render_format fmt, const char *partition, uint64_t offset,
                   const struct test_event *t)
{
    size_t n;
    uint8_t *bytes = event_pack(t, &n);
    render_bytes(r, fmt, partition, offset, bytes, n);
    free(bytes);
}

/* Renders as JSON and parses the line back strictly (UTF-8 checked too). */
static json_object *render_json(const struct test_event *t, const char *partition, uint64_t offset)
{
    struct rendered r;
    render(&r, PB_RENDER_JSON, partition, offset, t);
    assert_int_equal(r.rc, 0);
    assert_true(r.len > 0);
    assert_int_equal(r.out[r.len - 1], '\n');
    assert_null(memchr(r.out, '\n', r.len - 1)); /* exactly one line */

    json_tokener *tok = json_tokener_new();
    assert_non_null(tok);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *obj = json_tokener_parse_ex(tok, r.out, (int)r.len - 1);
    if (!obj || json_tokener_get_error(tok) != json_tokener_success)
        fail_msg("invalid JSON (%s): %s", json_tokener_error_desc(json_tokener_get_error(tok)),
                 r.out);
    json_tokener_free(tok);
    free(r.out);
    assert_true(json_object_is_type(obj, json_type_object));
    return obj;
}

static json_object *get(json_object *obj, const char *key)
{
    json_object *v = NULL;
    if (!json_object_object_get_ex(obj, key, &v))
        fail_msg("JSON lacks key \"%s\": %s", key, json_object_to_json_string(obj));
    return v;
}

static void assert_json_string(json_object *obj, const char *key, const char *want)
{
    json_object *v = get(obj, key);
    assert_true(json_object_is_type(v, json_type_string));
    assert_string_equal(json_object_get_string(v), want);
}

static void assert_absent(json_object *obj, const char *key)
{
    assert_false(json_object_object_get_ex(obj, key, NULL));
}

/* ---- json ---- */

static void test_json_all_fields(void **state)
{
    struct test_event t;
    event_init(&t, "sensors.kitchen.temp");
    event_tag(&t, "room", "kitchen");
    event_tag(&t, "floor", "1");
    event_time(&t, 0, INT64_C(1795428000), 1);
    event_time(&t, 1, INT64_C(1795428000), 500000000);
    event_time(&t, 2, INT64_C(1795428001), 999999999);
    event_payload(&t, "type.googleapis.com/x", "21.5", 4);
    t.ev.payload_size = 5; /* rendered as stored, not recomputed */

    json_object *j = render_json(&t, "events", UINT64_MAX - 1);
    assert_int_equal(json_object_object_length(j), 10);
    assert_json_string(j, "topic", "sensors.kitchen.temp");
    assert_json_string(j, "partition", "events");
    json_object *off = get(j, "offset");
    assert_true(json_object_is_type(off, json_type_int));
    assert_true(json_object_get_uint64(off) == UINT64_MAX - 1);

    json_object *tags = get(j, "tags");
    assert_true(json_object_is_type(tags, json_type_object));
    assert_int_equal(json_object_object_length(tags), 2);
    assert_json_string(tags, "room", "kitchen");
    assert_json_string(tags, "floor", "1");

    assert_json_string(j, "client_event_time", "2026-11-23T10:00:00.000000001Z");
    assert_json_string(j, "client_transmit_time", "2026-11-23T10:00:00.500000000Z");
    assert_json_string(j, "server_receive_time", "2026-11-23T10:00:01.999999999Z");
    assert_json_string(j, "payload_type", "type.googleapis.com/x");
    json_object *size = get(j, "payload_size");
    assert_true(json_object_is_type(size, json_type_int));
    assert_int_equal(json_object_get_int64(size), 5);
    assert_json_string(j, "payload", "21.5");
    assert_absent(j, "payload_base64");
    json_object_put(j);
}

static void test_json_binary_payload_is_base64(void **state)
{
    static const struct {
        const char *bytes;
        size_t n;
        const char *b64;
    } cases[] = {
        {"\xff", 1, "/w=="},
        {"\xff\xfe", 2, "//4="},
        {"\xff\xfe\xfd", 3, "//79"},
        {"\x00\xff\x80"
         "a\xfe",
         5, "AP+AYf4="},
        {"\xc0\xaf", 2, "wK8="},     /* overlong '/' */
        {"\xed\xa0\x80", 3, "7aCA"}, /* surrogate U+D800 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct test_event t;
        event_init(&t, "bin");
        event_payload(&t, "t/bytes", cases[i].bytes, cases[i].n);
        json_object *j = render_json(&t, "p", 0);
        assert_json_string(j, "payload_base64", cases[i].b64);
        assert_absent(j, "payload");
        assert_int_equal(json_object_get_int64(get(j, "payload_size")), cases[i].n);
        json_object_put(j);
    }
}

static void test_json_absent_fields(void **state)
{
    struct test_event t;
    event_init(&t, "bare");
    json_object *j = render_json(&t, "p", 0);
    assert_int_equal(json_object_object_length(j), 10);
    assert_null(get(j, "client_event_time"));
    assert_null(get(j, "client_transmit_time"));
    assert_null(get(j, "server_receive_time"));
    assert_int_equal(json_object_object_length(get(j, "tags")), 0);
    assert_json_string(j, "payload_type", "");
    assert_int_equal(json_object_get_int64(get(j, "payload_size")), 0);
    assert_json_string(j, "payload", "");
    assert_int_equal(json_object_get_uint64(get(j, "offset")), 0);
    json_object_put(j);

    /* Only the receive time set: the others stay null. */
    event_time(&t, 2, -1, 0);
    j = render_json(&t, "p", 0);
    assert_null(get(j, "client_event_time"));
    assert_json_string(j, "server_receive_time", "1969-12-31T23:59:59.000000000Z");
    json_object_put(j);
}

static void test_json_escapes_and_sanitizes(void **state)
{
    /* Control characters, quotes and backslashes must be escaped; bytes that
     * are not UTF-8 in string fields become U+FFFD; the line stays valid JSON. */
    static const char payload[] = "line1\nline2\t\"q\"\\\x01\x7f"
                                  "\0"
                                  "end \xc3\xa9";
    struct test_event t;
    event_init(&t, "a\nb\"c\xff"
                   "d");
    event_tag(&t, "k\xc0\xaf", "v\x01\xed\xa0\x80");
    event_payload(&t, "type/\x80x", payload, sizeof payload - 1);

    json_object *j = render_json(&t, "part\xfe", 3);
    assert_json_string(j, "topic",
                       "a\nb\"c\xef\xbf\xbd"
                       "d");
    assert_json_string(j, "partition", "part\xef\xbf\xbd");
    assert_json_string(j, "payload_type", "type/\xef\xbf\xbdx");
    assert_json_string(get(j, "tags"), "k\xef\xbf\xbd\xef\xbf\xbd",
                       "v\x01\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    /* The payload, embedded NUL included, survives exactly. */
    json_object *p = get(j, "payload");
    assert_int_equal(json_object_get_string_len(p), sizeof payload - 1);
    assert_memory_equal(json_object_get_string(p), payload, sizeof payload - 1);
    json_object_put(j);
}

static void test_json_duplicate_tag_last_wins(void **state)
{
    struct test_event t;
    event_init(&t, "dup");
    event_tag(&t, "k", "first");
    event_tag(&t, "other", "x");
    event_tag(&t, "k", "last");
    json_object *j = render_json(&t, "p", 0);
    json_object *tags = get(j, "tags");
    assert_int_equal(json_object_object_length(tags), 2);
    assert_json_string(tags, "k", "last");
    json_object_put(j);
}

/* ---- text ---- */

static char *render_text(const struct test_event *t, const char *partition, uint64_t offset)
{
    struct rendered r;
    render(&r, PB_RENDER_TEXT, partition, offset, t);
    assert_int_equal(r.rc, 0);
    assert_int_equal(strlen(r.out), r.len);
    assert_int_equal(r.out[r.len - 1], '\n');
    assert_null(memchr(r.out, '\n', r.len - 1));
    return r.out;
}

static void test_text_line(void **state)
{
    struct test_event t;
    event_init(&t, "sensors.kitchen.temp");
    event_tag(&t, "room", "kitchen");
    event_tag(&t, "floor", "1");
    event_time(&t, 0, 5, 0); /* client times are not shown */
    event_time(&t, 2, INT64_C(1795428000), 1);
    event_payload(&t, "type.googleapis.com/x", "21.5", 4);
    char *s = render_text(&t, "events", 42);
    assert_string_equal(s, "2026-11-23T10:00:00.000000001Z events:42 sensors.kitchen.temp "
                           "{floor=1,room=kitchen} type.googleapis.com/x 4B \"21.5\"\n");
    free(s);
}

static void test_text_absent_fields(void **state)
{
    struct test_event t;
    event_init(&t, "");
    char *s = render_text(&t, NULL, 0);
    assert_string_equal(s, "- :0 \"\" {} - 0B \"\"\n");
    free(s);
}

static void test_text_escapes(void **state)
{
    struct test_event t;
    event_init(&t, "top\nic\\");
    event_tag(&t, "k", "v\tw");
    event_tag(&t, "k", "shown"); /* duplicate: only the last is shown */
    event_payload(&t, "", "say \"hi\"\r\n\x01\x7f \xc3\xa9", 15);
    char *s = render_text(&t, "p\xff", 1);
    assert_string_equal(s, "- p\\xff:1 top\\nic\\\\ {k=shown} - 15B "
                           "\"say \\\"hi\\\"\\r\\n\\x01\\x7f \xc3\xa9\"\n");
    free(s);
}

static void test_text_binary_payload(void **state)
{
    struct test_event t;
    event_init(&t, "bin");
    event_payload(&t, "t",
                  "\x00\xff\x80"
                  "a\xfe",
                  5);
    char *s = render_text(&t, "p", 2);
    assert_string_equal(s, "- p:2 bin {} t 5B base64:AP+AYf4=\n");
    free(s);
}

static void test_text_truncates_long_payloads(void **state)
{
    char buf[200];
    struct test_event t;
    char want[400];

    /* UTF-8: the first PB_RENDER_TEXT_PAYLOAD_MAX bytes, then "...", full size shown. */
    memset(buf, 'a', 100);
    event_init(&t, "long");
    event_payload(&t, "t", buf, 100);
    char *s = render_text(&t, "p", 0);
    snprintf(want, sizeof want, "- p:0 long {} t 100B \"%.*s\"...\n", PB_RENDER_TEXT_PAYLOAD_MAX,
             buf);
    assert_string_equal(s, want);
    free(s);

    /* Exactly the limit: nothing cut. */
    event_payload(&t, "t", buf, PB_RENDER_TEXT_PAYLOAD_MAX);
    s = render_text(&t, "p", 0);
    assert_null(strstr(s, "..."));
    free(s);

    /* A two-byte character straddling the limit is left out whole. */
    memset(buf, 'b', PB_RENDER_TEXT_PAYLOAD_MAX - 1);
    memcpy(buf + PB_RENDER_TEXT_PAYLOAD_MAX - 1, "\xc3\xa9zzz", 5);
    event_payload(&t, "t", buf, PB_RENDER_TEXT_PAYLOAD_MAX + 4);
    s = render_text(&t, "p", 0);
    snprintf(want, sizeof want, "- p:0 long {} t %dB \"%.*s\"...\n", PB_RENDER_TEXT_PAYLOAD_MAX + 4,
             PB_RENDER_TEXT_PAYLOAD_MAX - 1, buf);
    assert_string_equal(s, want);
    free(s);

    /* Binary: whole base64 groups of the first bytes, then "...". */
    memset(buf, 0xff, 100);
    event_payload(&t, "t", buf, 100);
    s = render_text(&t, "p", 0);
    char b64[100];
    memset(b64, '/', 84); /* 63 bytes of 0xff = 21 groups of "////" */
    b64[84] = '\0';
    snprintf(want, sizeof want, "- p:0 long {} t 100B base64:%s...\n", b64);
    assert_string_equal(s, want);
    free(s);
}

/* ---- raw ---- */

static void test_raw_is_exactly_the_payload(void **state)
{
    static const uint8_t payload[] = {0x00, 0xff, '\n', 'x', 0x00, 0x80};
    struct test_event t;
    event_init(&t, "raw");
    event_tag(&t, "a", "b");
    event_time(&t, 2, 1, 1);
    event_payload(&t, "t", payload, sizeof payload);
    struct rendered r;
    render(&r, PB_RENDER_RAW, "p", 0, &t);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.len, sizeof payload);
    assert_memory_equal(r.out, payload, sizeof payload);
    free(r.out);

    /* No payload: nothing at all. */
    event_init(&t, "raw");
    render(&r, PB_RENDER_RAW, "p", 0, &t);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.len, 0);
    free(r.out);
}

/* ---- errors ---- */

static void test_invalid_bytes_rejected(void **state)
{
    static const struct {
        const uint8_t bytes[8];
        size_t n;
    } bad[] = {
        {{0x0a, 0x05, 'a'}, 3},        /* topic length runs past the end */
        {{0x0a}, 1},                   /* tag without its value */
        {{0x3a, 0x02, 0x0a, 0x09}, 4}, /* payload Any with a truncated type_url */
        {{0x0a, 0x01, 'a', 0xff}, 4},  /* truncated varint tag */
        {{0x0b, 0x00}, 2},             /* field 1 as a group start */
    };
    pb_render_format fmts[] = {PB_RENDER_JSON, PB_RENDER_TEXT, PB_RENDER_RAW};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        for (size_t f = 0; f < 3; f++) {
            struct rendered r;
            render_bytes(&r, fmts[f], "events", 7, bad[i].bytes, bad[i].n);
            if (r.rc != PB_EPROTO)
                fail_msg("case %zu format %zu: rc %d", i, f, r.rc);
            assert_int_equal(r.len, 0); /* nothing written */
            assert_non_null(strstr(r.err, "partition events offset 7"));
            assert_non_null(strstr(r.err, "not a valid EncapsulatedEvent"));
            free(r.out);
        }
    }
    /* Empty bytes are a valid (all-default) event. */
    struct rendered r;
    render_bytes(&r, PB_RENDER_JSON, "p", 0, NULL, 0);
    assert_int_equal(r.rc, 0);
    free(r.out);
}

static void test_write_error_reported(void **state)
{
    FILE *f = fopen("/dev/full", "w");
    if (!f)
        skip();
    assert_int_equal(setvbuf(f, NULL, _IONBF, 0), 0);
    struct test_event t;
    event_init(&t, "x");
    event_payload(&t, "t", "abc", 3);
    size_t n;
    uint8_t *bytes = event_pack(&t, &n);
    char err[256];
    pb_render_format fmts[] = {PB_RENDER_JSON, PB_RENDER_TEXT, PB_RENDER_RAW};
    for (size_t i = 0; i < 3; i++) {
        int rc = pb_render_event(f, fmts[i], "p", 9, bytes, n, err, sizeof err);
        assert_int_equal(rc, -ENOSPC);
        assert_non_null(strstr(err, "partition p offset 9: writing output"));
        clearerr(f);
    }
    free(bytes);
    assert_int_equal(fclose(f), 0); /* unbuffered: nothing left to fail on */
}

static void test_bad_arguments(void **state)
{
    char err[128];
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(pb_render_event(f, (pb_render_format)99, "p", 0, NULL, 0, err, sizeof err),
                     PB_EINVAL);
    assert_int_equal(pb_render_event(NULL, PB_RENDER_JSON, "p", 0, NULL, 0, err, sizeof err),
                     PB_EINVAL);
    assert_int_equal(pb_render_event(f, PB_RENDER_JSON, "p", 0, NULL, 5, err, sizeof err),
                     PB_EINVAL);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(len, 0);
    free(buf);
}

static void test_format_parse(void **state)
{
    pb_render_format f = PB_RENDER_RAW;
    assert_int_equal(pb_render_format_parse("text", &f), 0);
    assert_int_equal(f, PB_RENDER_TEXT);
    assert_int_equal(pb_render_format_parse("json", &f), 0);
    assert_int_equal(f, PB_RENDER_JSON);
    assert_int_equal(pb_render_format_parse("JSON", &f), 0);
    assert_int_equal(f, PB_RENDER_JSON);
    assert_int_equal(pb_render_format_parse("raw", &f), 0);
    assert_int_equal(f, PB_RENDER_RAW);
    assert_int_equal(pb_render_format_parse("xml", &f), PB_EINVAL);
    assert_int_equal(pb_render_format_parse("", &f), PB_EINVAL);
    assert_int_equal(pb_render_format_parse("jsonl", &f), PB_EINVAL);
    assert_int_equal(pb_render_format_parse(NULL, &f), PB_EINVAL);
    assert_int_equal(f, PB_RENDER_RAW); /* untouched on failure */
    assert_string_equal(pb_render_format_name(PB_RENDER_TEXT), "text");
    assert_string_equal(pb_render_format_name(PB_RENDER_JSON), "json");
    assert_string_equal(pb_render_format_name(PB_RENDER_RAW), "raw");
    assert_string_equal(pb_render_format_name((pb_render_format)42), "?");
}

/* ---- UTF-8 ---- */

static void utf8_is(const char *s, size_t n, bool want)
{
    if (pb_utf8_valid((const uint8_t *)s, n) != want) {
        char hex[64] = "";
        for (size_t i = 0; i < n && i < 16; i++)
            snprintf(hex + 3 * i, 4, "%02x ", (unsigned char)s[i]);
        fail_msg("pb_utf8_valid(%s) should be %s", hex, want ? "true" : "false");
    }
}

#define VALID(s)   utf8_is(s, sizeof(s) - 1, true)
#define INVALID(s) utf8_is(s, sizeof(s) - 1, false)

static void test_utf8_valid(void **state)
{
    VALID("");
    VALID("plain ascii \x01\x7f");
    VALID("\0");
    VALID("\xc2\x80");         /* U+0080 */
    VALID("\xdf\xbf");         /* U+07FF */
    VALID("\xe0\xa0\x80");     /* U+0800 */
    VALID("\xed\x9f\xbf");     /* U+D7FF, just below the surrogates */
    VALID("\xee\x80\x80");     /* U+E000, just above them */
    VALID("\xef\xbf\xbf");     /* U+FFFF */
    VALID("\xf0\x90\x80\x80"); /* U+10000 */
    VALID("\xf4\x8f\xbf\xbf"); /* U+10FFFF */
    VALID("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
}

static void test_utf8_invalid(void **state)
{
    INVALID("\x80");             /* stray continuation */
    INVALID("a\xbf");            /* stray continuation after ASCII */
    INVALID("\xc0\x80");         /* overlong NUL */
    INVALID("\xc1\xbf");         /* overlong U+007F */
    INVALID("\xe0\x80\x80");     /* overlong 3-byte */
    INVALID("\xe0\x9f\xbf");     /* overlong U+07FF */
    INVALID("\xf0\x80\x80\x80"); /* overlong 4-byte */
    INVALID("\xf0\x8f\xbf\xbf"); /* overlong U+FFFF */
    INVALID("\xed\xa0\x80");     /* U+D800 */
    INVALID("\xed\xbf\xbf");     /* U+DFFF */
    INVALID("\xf4\x90\x80\x80"); /* U+110000 */
    INVALID("\xf5\x80\x80\x80");
    INVALID("\xfe");
    INVALID("\xff");
    INVALID("\xc3");             /* truncated */
    INVALID("\xe2\x82");         /* truncated */
    INVALID("\xf0\x9f\x98");     /* truncated */
    INVALID("\xe2\x28\xa1");     /* bad continuation */
    INVALID("\xf0\x9f\x28\x80"); /* bad third byte */
    INVALID("ok\xc3\xa9\xc3");   /* valid then truncated */
}

/* ---- tag matching ---- */

static int match(const uint8_t *b, size_t n, size_t npairs, const char *k0, const char *v0,
                 const char *k1, const char *v1)
{
    const char *keys[2] = {k0, k1}, *values[2] = {v0, v1};
    return pb_event_tags_match(b, n, keys, values, npairs);
}

static void test_tags_match(void **state)
{
    struct test_event t;
    event_init(&t, "sensors.kitchen.temp");
    event_tag(&t, "room", "kitchen");
    event_tag(&t, "floor", "1");
    event_tag(&t, "empty", "");
    event_time(&t, 2, 100, 5);
    event_payload(&t, "t", "room=kitchen", 12);
    size_t n;
    uint8_t *b = event_pack(&t, &n);

    assert_int_equal(match(b, n, 0, NULL, NULL, NULL, NULL), 1);
    assert_int_equal(match(b, n, 1, "room", "kitchen", NULL, NULL), 1);
    assert_int_equal(match(b, n, 2, "room", "kitchen", "floor", "1"), 1);
    assert_int_equal(match(b, n, 2, "floor", "1", "room", "kitchen"), 1);
    assert_int_equal(match(b, n, 1, "empty", "", NULL, NULL), 1);
    assert_int_equal(match(b, n, 2, "room", "kitchen", "floor", "2"), 0);
    assert_int_equal(match(b, n, 1, "room", "kitche", NULL, NULL), 0);   /* value prefix */
    assert_int_equal(match(b, n, 1, "room", "kitchens", NULL, NULL), 0); /* value longer */
    assert_int_equal(match(b, n, 1, "roo", "kitchen", NULL, NULL), 0);   /* key prefix */
    assert_int_equal(match(b, n, 1, "Room", "kitchen", NULL, NULL), 0);  /* case matters */
    assert_int_equal(match(b, n, 1, "missing", "", NULL, NULL), 0);      /* absent != "" */
    assert_int_equal(match(b, n, 1, "", "", NULL, NULL), 0);
    free(b);

    /* No tags at all. */
    event_init(&t, "x");
    b = event_pack(&t, &n);
    assert_int_equal(match(b, n, 0, NULL, NULL, NULL, NULL), 1);
    assert_int_equal(match(b, n, 1, "room", "kitchen", NULL, NULL), 0);
    free(b);
    assert_int_equal(match(NULL, 0, 0, NULL, NULL, NULL, NULL), 1);
}

static void test_tags_match_duplicate_key_last_wins(void **state)
{
    struct test_event t;
    event_init(&t, "x");
    event_tag(&t, "k", "old");
    event_tag(&t, "k", "new");
    size_t n;
    uint8_t *b = event_pack(&t, &n);
    assert_int_equal(match(b, n, 1, "k", "new", NULL, NULL), 1);
    assert_int_equal(match(b, n, 1, "k", "old", NULL, NULL), 0);
    free(b);
}

static void test_tags_match_wire_details(void **state)
{
    /* An entry without a key field has key ""; one without a value has value "".
     * Unknown fields (in the event and in the entry) are skipped, whatever
     * their wire type. Later key/value fields inside one entry win. */
    static const uint8_t b[] = {
        0x12, 0x03, 0x12, 0x01, 'v',                /* {"" : "v"} */
        0x12, 0x03, 0x0a, 0x01, 'e',                /* {"e" : ""} */
        0xf8, 0x06, 0x96, 0x01,                     /* field 111 varint */
        0x79, 1,    2,    3,    4,    5,   6, 7, 8, /* field 15 fixed64 */
        0x7d, 1,    2,    3,    4,                  /* field 15 fixed32 */
        0x12, 0x0e, 0x18, 0x05,                     /* entry: field 3 varint */
        0x0a, 0x01, 'x',  0x0a, 0x01, 'k',          /* key "x" then "k" */
        0x12, 0x01, 'a',  0x12, 0x01, 'b',          /* value "a" then "b" */
    };
    assert_int_equal(match(b, sizeof b, 1, "", "v", NULL, NULL), 1);
    assert_int_equal(match(b, sizeof b, 1, "e", "", NULL, NULL), 1);
    assert_int_equal(match(b, sizeof b, 1, "k", "b", NULL, NULL), 1);
    assert_int_equal(match(b, sizeof b, 1, "x", "a", NULL, NULL), 0);
    assert_int_equal(match(b, sizeof b, 1, "k", "a", NULL, NULL), 0);
    assert_int_equal(match(b, sizeof b, 2, "", "v", "k", "b"), 1);
}

static void test_tags_match_malformed(void **state)
{
    static const struct {
        const uint8_t b[16];
        size_t n;
        const char *why;
    } bad[] = {
        {{0x12, 0x05, 0x0a, 0x01, 'k'}, 5, "entry length past the end"},
        {{0x12, 0x03, 0x0a, 0x05, 'k'}, 5, "key length past the entry"},
        {{0x10, 0x01}, 2, "tags field as a varint"},
        {{0x12, 0x02, 0x08, 0x01}, 4, "key as a varint"},
        {{0x12, 0x02, 0x15, 0x01}, 4, "value as fixed32 (and truncated)"},
        {{0x0b, 0x0c}, 2, "group wire type"},
        {{0x0e, 0x00}, 2, "wire type 6"},
        {{0x02, 0x00}, 2, "field number 0"},
        {{0x0a}, 1, "tag without a value"},
        {{0x08, 0x80}, 2, "truncated varint"},
        {{0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
         12,
         "11-byte varint"},
        {{0x79, 1, 2, 3}, 4, "truncated fixed64"},
        {{0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00}, 7, "tag beyond 32 bits"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc0 = match(bad[i].b, bad[i].n, 0, NULL, NULL, NULL, NULL);
        int rc1 = match(bad[i].b, bad[i].n, 1, "k", "v", NULL, NULL);
        if (rc0 != PB_EPROTO || rc1 != PB_EPROTO)
            fail_msg("%s: got %d/%d, expected PB_EPROTO", bad[i].why, rc0, rc1);
    }
}

static void test_tags_match_bad_arguments(void **state)
{
    static const uint8_t b[] = {0x12, 0x03, 0x0a, 0x01, 'k'};
    const char *keys[1] = {"k"}, *values[1] = {NULL};
    assert_int_equal(pb_event_tags_match(b, sizeof b, NULL, NULL, 1), PB_EINVAL);
    assert_int_equal(pb_event_tags_match(b, sizeof b, keys, values, 1), PB_EINVAL);
    assert_int_equal(pb_event_tags_match(NULL, 3, keys, keys, 1), PB_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_all_fields),
        cmocka_unit_test(test_json_binary_payload_is_base64),
        cmocka_unit_test(test_json_absent_fields),
        cmocka_unit_test(test_json_escapes_and_sanitizes),
        cmocka_unit_test(test_json_duplicate_tag_last_wins),
        cmocka_unit_test(test_text_line),
        cmocka_unit_test(test_text_absent_fields),
        cmocka_unit_test(test_text_escapes),
        cmocka_unit_test(test_text_binary_payload),
        cmocka_unit_test(test_text_truncates_long_payloads),
        cmocka_unit_test(test_raw_is_exactly_the_payload),
        cmocka_unit_test(test_invalid_bytes_rejected),
        cmocka_unit_test(test_write_error_reported),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_format_parse),
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_utf8_invalid),
        cmocka_unit_test(test_tags_match),
        cmocka_unit_test(test_tags_match_duplicate_key_last_wins),
        cmocka_unit_test(test_tags_match_wire_details),
        cmocka_unit_test(test_tags_match_malformed),
        cmocka_unit_test(test_tags_match_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
