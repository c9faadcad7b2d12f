/*
 * render: stored EncapsulatedEvent bytes -> JSON line, text line or raw
 * payload, for the CLI's `cat` and `sub`; plus an allocation-free tag filter
 * over the wire format and a strict UTF-8 validator.
 *
 * Threads: whichever thread owns the pb_renderer; nothing is shared.
 *
 * `cat` and `sub` render millions of events a second into files, so the
 * path is allocation-free once warm: render_decode.h walks the bytes in
 * place (protobuf-c's rules, its unpack only for odd events), each event's
 * output is built in the renderer's buffer (JSON escaped the way json-c
 * escapes, which the CLI used before, byte for byte) and handed to stdio in
 * one fwrite, and a timestamp's date and time of day are formatted once per
 * second. The tag filter walks the bytes in place too.
 */
#include "render.h"

#include "event.h"
#include "wire.h"

#include "grow.h"
#include "pb_errors.h"
#include "timefmt.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- UTF-8 (the strict validator in proto/wire.c) ---- */

/* Length of the well-formed UTF-8 sequence at s[0..len), len > 0; 0 if the
 * bytes there are not one. */
static size_t utf8_seq_len(const uint8_t *s, size_t len)
{
    uint32_t cp;
    return wire_utf8_next(s, len, &cp);
}

bool pb_utf8_valid(const uint8_t *s, size_t len)
{
    size_t bad_at;
    return wire_utf8_valid(s, len, &bad_at);
}

/* ---- tag filter: the daemon's (event_filter_scan, proto/event.h) ---- */

int pb_event_tags_match(const uint8_t *event, size_t len, const char *const *keys,
                        const char *const *values, size_t n)
{
    wire_slice topic;
    uint8_t verdict;
    if (!event && len > 0)
        return PB_EINVAL;
    if (n == 0) {
        /* Nothing to match, but the tag entries' framing is still checked:
         * a filter walks them (its verdict is not needed). */
        const event_tag_filter none = {"", 0, "", 0};
        int rc = event_filter_scan(event, len, &none, 1, &verdict, &topic);
        return rc < 0 ? rc : 1;
    }
    if (!keys || !values)
        return PB_EINVAL;
    /* One pair per walk, so no scratch to allocate; one miss decides. */
    for (size_t i = 0; i < n; i++) {
        if (!keys[i] || !values[i])
            return PB_EINVAL;
        const event_tag_filter f = {keys[i], strlen(keys[i]), values[i], strlen(values[i])};
        int rc = event_filter_scan(event, len, &f, 1, &verdict, &topic);
        if (rc < 0)
            return rc;
        if (!event_filter_ok(&verdict, 1))
            return 0;
    }
    return 1;
}

/* ---- the output buffer: one event's bytes, then one fwrite ---- */

/* The tags of one event, for sorting (text) or merging duplicates (json). */
struct render_tag_ref {
    wire_slice key, value;
    size_t index; /* position in the map, so equal keys keep wire order */
};

/* The slow half of room(): out of line, the common case is inlined. */
static __attribute__((noinline)) bool grow_buf(pb_renderer *r, size_t n)
{
    if (n > SIZE_MAX - r->len || grow_reserve(&r->buf, &r->cap, r->len + n, 1) < 0) {
        r->nomem = true;
        return false;
    }
    return true;
}

/* Room for n more bytes; false (r->nomem set) when there is no memory. */
static inline bool room(pb_renderer *r, size_t n)
{
    return n <= r->cap - r->len || grow_buf(r, n);
}

static inline void put(pb_renderer *r, const void *p, size_t n)
{
    if (n > 0 && room(r, n)) {
        memcpy(r->buf + r->len, p, n);
        r->len += n;
    }
}

#define PUT_LIT(r, s) put((r), (s), sizeof(s) - 1)

static inline void put_c(pb_renderer *r, char c)
{
    if (room(r, 1))
        r->buf[r->len++] = c;
}

static void put_u64(pb_renderer *r, uint64_t v)
{
    char tmp[20];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(r, tmp + i, sizeof tmp - i);
}

static void put_i64(pb_renderer *r, int64_t v)
{
    if (v < 0) {
        put_c(r, '-');
        put_u64(r, -(uint64_t)v);
    } else {
        put_u64(r, (uint64_t)v);
    }
}

static const char hex_digits[] = "0123456789abcdef";

/*
 * pb_time_format_ts's text (RFC 3339 UTC, nine fraction digits). Everything
 * before the fraction is formatted once per second and kept: events come
 * in time order, so most timestamps share their second with the last one.
 */
static void put_time(pb_renderer *r, int slot, int64_t seconds, int32_t nanos)
{
    char buf[PB_TIME_BUFSZ];
    if (nanos < 0 || nanos >= 1000000000) { /* carries into the seconds: not cached */
        put(r, buf, pb_time_format_ts(seconds, nanos, buf, sizeof buf));
        return;
    }
    __typeof__(r->ts[0]) *c = &r->ts[slot];
    if (c->len == 0 || seconds != c->seconds) {
        /* "<date>T<time>.000000000Z": keep up to the '.' */
        size_t n = pb_time_format_ts(seconds, 0, c->prefix, sizeof c->prefix);
        if (n < 11) {
            c->len = 0;
            put(r, buf, pb_time_format_ts(seconds, nanos, buf, sizeof buf));
            return;
        }
        c->len = n - 10;
        c->seconds = seconds;
    }
    if (!room(r, c->len + 10))
        return;
    char *d = r->buf + r->len;
    memcpy(d, c->prefix, c->len);
    d += c->len;
    uint32_t ns = (uint32_t)nanos;
    for (int i = 8; i >= 0; i--) {
        d[i] = (char)('0' + ns % 10);
        ns /= 10;
    }
    d[9] = 'Z';
    r->len += c->len + 10;
}

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Standard base64 with padding of src[0..n). */
static void put_base64(pb_renderer *r, const uint8_t *src, size_t n)
{
    if (n > SIZE_MAX / 2) {
        r->nomem = true;
        return;
    }
    if (!room(r, (n + 2) / 3 * 4))
        return;
    char *dst = r->buf + r->len;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];
        dst[o++] = b64_alphabet[v >> 18 & 63];
        dst[o++] = b64_alphabet[v >> 12 & 63];
        dst[o++] = b64_alphabet[v >> 6 & 63];
        dst[o++] = b64_alphabet[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)src[i] << 16 | (i + 1 < n ? (uint32_t)src[i + 1] << 8 : 0);
        dst[o++] = b64_alphabet[v >> 18 & 63];
        dst[o++] = b64_alphabet[v >> 12 & 63];
        dst[o++] = i + 1 < n ? b64_alphabet[v >> 6 & 63] : '=';
        dst[o++] = '=';
    }
    r->len += o;
}

/* Sorts refs[0..n) by key bytes (as strcmp orders C strings), equal keys
 * by index. Insertion sort for the few tags events usually carry. */
static int tag_ref_cmp(const void *a, const void *b)
{
    const struct render_tag_ref *x = a, *y = b;
    size_t n = x->key.len < y->key.len ? x->key.len : y->key.len;
    int c = n ? memcmp(x->key.p, y->key.p, n) : 0;
    if (c == 0 && x->key.len != y->key.len)
        c = x->key.len < y->key.len ? -1 : 1;
    if (c != 0)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

static void sort_tag_refs(struct render_tag_ref *refs, size_t n)
{
    if (n > 16) {
        qsort(refs, n, sizeof *refs, tag_ref_cmp);
        return;
    }
    for (size_t i = 1; i < n; i++) {
        struct render_tag_ref t = refs[i];
        size_t j = i;
        for (; j > 0 && tag_ref_cmp(&refs[j - 1], &t) > 0; j--)
            refs[j] = refs[j - 1];
        refs[j] = t;
    }
}

/* refs[i] = the event's tags with their positions; NULL when out of memory. */
static struct render_tag_ref *tag_refs(pb_renderer *r, const render_event *ev)
{
    if (grow_reserve(&r->refs, &r->refs_cap, ev->n_tags, sizeof *r->refs) < 0) {
        r->nomem = true;
        return NULL;
    }
    for (size_t i = 0; i < ev->n_tags; i++)
        r->refs[i] = (struct render_tag_ref){ev->tags[i].key, ev->tags[i].value, i};
    return r->refs;
}

/* ---- text ---- */

/*
 * Writes s[0..len) readably on one line: valid UTF-8 as is; backslash,
 * control characters and bytes that are not UTF-8 escaped; '"' too when the
 * text is inside quotes.
 */
static void put_escaped(pb_renderer *r, const uint8_t *s, size_t len, bool quoted)
{
    if (len > SIZE_MAX / 4) {
        r->nomem = true;
        return;
    }
    if (!room(r, 4 * len))
        return;
    char *d = r->buf + r->len;
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c >= 0x20 && c < 0x7F) {
            if (c == '\\' || (quoted && c == '"'))
                *d++ = '\\';
            *d++ = (char)c;
            i++;
            continue;
        }
        size_t n = c < 0x80 ? 1 : utf8_seq_len(s + i, len - i);
        if (n > 1) {
            memcpy(d, s + i, n);
            d += n;
            i += n;
            continue;
        }
        /* A control character or a byte that is not UTF-8. */
        *d++ = '\\';
        if (c == '\n') {
            *d++ = 'n';
        } else if (c == '\t') {
            *d++ = 't';
        } else if (c == '\r') {
            *d++ = 'r';
        } else {
            *d++ = 'x';
            *d++ = hex_digits[c >> 4];
            *d++ = hex_digits[c & 15];
        }
        i++;
    }
    r->len = (size_t)(d - r->buf);
}

static void put_escaped_slice(pb_renderer *r, wire_slice s)
{
    put_escaped(r, s.p, s.len, false);
}

static void put_payload_text(pb_renderer *r, const uint8_t *p, size_t n)
{
    size_t cut = n < PB_RENDER_TEXT_PAYLOAD_MAX ? n : PB_RENDER_TEXT_PAYLOAD_MAX;
    if (pb_utf8_valid(p, n)) {
        while (cut > 0 && cut < n && (p[cut] & 0xC0) == 0x80)
            cut--; /* never split a character */
        put_c(r, '"');
        put_escaped(r, p, cut, true);
        put_c(r, '"');
    } else {
        if (cut < n)
            cut -= cut % 3; /* whole groups only, so no padding mid-stream */
        PUT_LIT(r, "base64:");
        put_base64(r, p, cut);
    }
    if (cut < n)
        PUT_LIT(r, "...");
}

static void render_text(pb_renderer *r, const render_event *ev, wire_slice partition,
                        uint64_t offset)
{
    const render_time *t = &ev->times[RENDER_SERVER_RECEIVE_TIME];
    if (t->present)
        put_time(r, RENDER_SERVER_RECEIVE_TIME, t->seconds, t->nanos);
    else
        put_c(r, '-');
    put_c(r, ' ');
    put_escaped_slice(r, partition);
    put_c(r, ':');
    put_u64(r, offset);
    put_c(r, ' ');
    if (ev->topic.len)
        put_escaped_slice(r, ev->topic);
    else
        PUT_LIT(r, "\"\"");
    PUT_LIT(r, " {");
    struct render_tag_ref *tags = tag_refs(r, ev);
    if (tags) {
        sort_tag_refs(tags, ev->n_tags);
        bool first = true;
        for (size_t i = 0; i < ev->n_tags; i++) {
            /* A repeated key: protobuf keeps the last entry, so show only that. */
            if (i + 1 < ev->n_tags && wire_slice_eq(tags[i].key, tags[i + 1].key))
                continue;
            if (!first)
                put_c(r, ',');
            first = false;
            put_escaped_slice(r, tags[i].key);
            put_c(r, '=');
            put_escaped_slice(r, tags[i].value);
        }
    }
    PUT_LIT(r, "} ");
    if (ev->type_url.len)
        put_escaped_slice(r, ev->type_url);
    else
        put_c(r, '-');
    put_c(r, ' ');
    put_u64(r, ev->value.len);
    PUT_LIT(r, "B ");
    put_payload_text(r, ev->value.p, ev->value.len);
    put_c(r, '\n');
}

/* ---- json ---- */

/* Whether none of the 8 bytes in x needs a look: each is ASCII, at least
 * 0x20, and neither '"' nor '\\' (the "has a byte less than" bit trick;
 * exact as a yes/no for the whole word). */
static inline bool json_plain8(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
    uint64_t special = ((x - ones * 0x20) | (q - ones) | (b - ones)) & ~x & highs;
    return ((x & highs) | special) == 0;
}

/*
 * s[0..n) inside a JSON string, escaped as json-c escapes with
 * JSON_C_TO_STRING_NOSLASHESCAPE: '"', '\\', \b \f \n \r \t, other bytes
 * below 0x20 as \u00xx, everything else as is. A byte that is not part of
 * well-formed UTF-8 becomes U+FFFD, unless stop_at_bad: then nothing is
 * written and false is returned.
 */
static bool put_json_chars(pb_renderer *r, const uint8_t *s, size_t n, bool stop_at_bad)
{
    if (n > SIZE_MAX / 6)
        r->nomem = true;
    if (r->nomem || !room(r, 6 * n))
        return true; /* the event fails as a whole */
    char *d = r->buf + r->len;
    size_t i = 0;
    while (i < n) {
        uint64_t word;
        if (i + 8 <= n && (memcpy(&word, s + i, 8), json_plain8(word))) {
            memcpy(d, &word, 8);
            d += 8;
            i += 8;
            continue;
        }
        uint8_t c = s[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            *d++ = (char)c;
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t k = utf8_seq_len(s + i, n - i);
            if (k == 0) {
                if (stop_at_bad)
                    return false;
                memcpy(d, "\xEF\xBF\xBD", 3);
                d += 3;
                i++;
            } else {
                memcpy(d, s + i, k);
                d += k;
                i += k;
            }
            continue;
        }
        *d++ = '\\';
        switch (c) {
        case '"':
        case '\\':
            *d++ = (char)c;
            break;
        case '\b':
            *d++ = 'b';
            break;
        case '\f':
            *d++ = 'f';
            break;
        case '\n':
            *d++ = 'n';
            break;
        case '\r':
            *d++ = 'r';
            break;
        case '\t':
            *d++ = 't';
            break;
        default:
            memcpy(d, "u00", 3);
            d[3] = hex_digits[c >> 4];
            d[4] = hex_digits[c & 15];
            d += 5;
            break;
        }
        i++;
    }
    r->len = (size_t)(d - r->buf);
    return true;
}

static void put_json_str(pb_renderer *r, wire_slice s)
{
    put_c(r, '"');
    put_json_chars(r, s.p, s.len, false);
    put_c(r, '"');
}

static void put_json_time(pb_renderer *r, const render_event *ev, int slot)
{
    const render_time *t = &ev->times[slot];
    if (!t->present) {
        PUT_LIT(r, "null");
        return;
    }
    put_c(r, '"');
    put_time(r, slot, t->seconds, t->nanos);
    put_c(r, '"');
}

/* Keys that are not UTF-8 with each bad byte replaced by U+FFFD (copies
 * in r->keys), so that duplicates are found as json-c's object found them. */
static bool sanitize_keys(pb_renderer *r, struct render_tag_ref *refs, size_t n)
{
    size_t need = 0;
    for (size_t i = 0; i < n; i++) {
        if (!pb_utf8_valid(refs[i].key.p, refs[i].key.len))
            need += 3 * refs[i].key.len;
    }
    if (need == 0)
        return true;
    if (grow_reserve(&r->keys, &r->keys_cap, need, 1) < 0) {
        r->nomem = true;
        return false;
    }
    char *w = r->keys;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *s = refs[i].key.p;
        size_t len = refs[i].key.len, o = 0;
        if (pb_utf8_valid(s, len))
            continue;
        for (size_t j = 0; j < len;) {
            size_t k = utf8_seq_len(s + j, len - j);
            if (k == 0) {
                memcpy(w + o, "\xEF\xBF\xBD", 3);
                o += 3;
                j++;
            } else {
                memcpy(w + o, s + j, k);
                o += k;
                j += k;
            }
        }
        refs[i].key = (wire_slice){(const uint8_t *)w, o};
        w += o;
    }
    return true;
}

static int tag_ref_index_cmp(const void *a, const void *b)
{
    const struct render_tag_ref *x = a, *y = b;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* The tags object: a key repeated in the map keeps the place of its first
 * entry and the value of its last (json-c replaced the value in place). */
static void put_json_tags(pb_renderer *r, const render_event *ev)
{
    put_c(r, '{');
    struct render_tag_ref *refs = ev->n_tags > 0 ? tag_refs(r, ev) : NULL;
    size_t n = 0;
    if (refs && ev->n_tags > 1 && sanitize_keys(r, refs, ev->n_tags)) {
        sort_tag_refs(refs, ev->n_tags);
        /* One entry per key, written over the sorted array (n <= i). */
        for (size_t i = 0; i < ev->n_tags;) {
            size_t j = i;
            while (j + 1 < ev->n_tags && wire_slice_eq(refs[j + 1].key, refs[i].key))
                j++;
            refs[n++] = (struct render_tag_ref){refs[i].key, refs[j].value, refs[i].index};
            i = j + 1;
        }
        qsort(refs, n, sizeof *refs, tag_ref_index_cmp);
    } else if (refs && ev->n_tags == 1) {
        n = 1;
    }
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            put_c(r, ',');
        put_json_str(r, refs[i].key);
        put_c(r, ':');
        put_json_str(r, refs[i].value);
    }
    put_c(r, '}');
}

/* "payload" when the bytes are UTF-8 text, else "payload_base64". */
static void put_json_payload(pb_renderer *r, wire_slice v)
{
    size_t mark = r->len;
    PUT_LIT(r, ",\"payload\":\"");
    if (put_json_chars(r, v.p, v.len, true)) {
        put_c(r, '"');
        return;
    }
    r->len = mark;
    PUT_LIT(r, ",\"payload_base64\":\"");
    put_base64(r, v.p, v.len);
    put_c(r, '"');
}

/* One object per line, the fields in this order (json-c's output before).
 * A new field is a few lines here plus
 * the same change in tests/lib/render_ref.c, the reference that
 * test_render_compat compares this output with. */
static void render_json(pb_renderer *r, const render_event *ev, wire_slice partition,
                        uint64_t offset)
{
    PUT_LIT(r, "{\"topic\":");
    put_json_str(r, ev->topic);
    PUT_LIT(r, ",\"partition\":");
    put_json_str(r, partition);
    PUT_LIT(r, ",\"offset\":");
    put_u64(r, offset);
    if (ev->id.len) { /* EncapsulatedEvent.id: only when the publisher gave one */
        PUT_LIT(r, ",\"id\":");
        put_json_str(r, ev->id);
    }
    PUT_LIT(r, ",\"tags\":");
    put_json_tags(r, ev);
    PUT_LIT(r, ",\"client_event_time\":");
    put_json_time(r, ev, RENDER_CLIENT_EVENT_TIME);
    PUT_LIT(r, ",\"client_transmit_time\":");
    put_json_time(r, ev, RENDER_CLIENT_TRANSMIT_TIME);
    PUT_LIT(r, ",\"server_receive_time\":");
    put_json_time(r, ev, RENDER_SERVER_RECEIVE_TIME);
    PUT_LIT(r, ",\"payload_type\":");
    put_json_str(r, ev->type_url);
    PUT_LIT(r, ",\"payload_size\":");
    put_i64(r, ev->payload_size);
    put_json_payload(r, ev->value);
    PUT_LIT(r, "}\n");
}

/* ---- entry points ---- */

int pb_render_format_parse(const char *name, pb_render_format *out)
{
    static const pb_render_format all[] = {PB_RENDER_TEXT, PB_RENDER_JSON, PB_RENDER_RAW};
    if (!name || !out)
        return PB_EINVAL;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (strcasecmp(name, pb_render_format_name(all[i])) == 0) {
            *out = all[i];
            return 0;
        }
    }
    return PB_EINVAL;
}

const char *pb_render_format_name(pb_render_format fmt)
{
    switch (fmt) {
    case PB_RENDER_TEXT:
        return "text";
    case PB_RENDER_JSON:
        return "json";
    case PB_RENDER_RAW:
        return "raw";
    }
    return "?";
}

void pb_renderer_init(pb_renderer *r, FILE *out, pb_render_format fmt)
{
    memset(r, 0, sizeof *r);
    r->out = out;
    r->fmt = fmt;
    render_decoder_init(&r->dec);
}

void pb_renderer_free(pb_renderer *r)
{
    render_decoder_free(&r->dec);
    free(r->buf);
    free(r->refs);
    free(r->keys);
    memset(r, 0, sizeof *r);
}

/* One fwrite: the whole event or nothing of it reaches stdio's buffer. */
static int write_out(pb_renderer *r, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    errno = 0;
    if (fwrite(p, 1, n, r->out) == n)
        return 0;
    return errno ? -errno : -EIO;
}

int pb_render(pb_renderer *r, const char *partition, uint64_t offset, const uint8_t *event,
              size_t len, char *err, size_t errlen)
{
    render_event ev;
    int rc;

    if (err && errlen > 0)
        err[0] = '\0';
    if (!partition)
        partition = "";
    if (!r->out || (!event && len > 0) || (unsigned)r->fmt > PB_RENDER_RAW) {
        pb_set_err(err, errlen, "partition %s offset %llu: invalid render arguments", partition,
                   (unsigned long long)offset);
        return PB_EINVAL;
    }
    rc = render_decode(&r->dec, event, len, &ev);
    if (rc < 0) {
        pb_set_err(err, errlen, "partition %s offset %llu: %s (%zu bytes)", partition,
                   (unsigned long long)offset,
                   rc == PB_ENOMEM ? "out of memory decoding the event"
                                   : "stored bytes are not a valid EncapsulatedEvent",
                   len);
        return rc;
    }
    wire_slice part = {(const uint8_t *)partition, strlen(partition)};
    r->len = 0;
    r->nomem = false;
    if (r->fmt == PB_RENDER_RAW) {
        rc = write_out(r, ev.value.p, ev.value.len);
    } else {
        if (r->fmt == PB_RENDER_JSON)
            render_json(r, &ev, part, offset);
        else
            render_text(r, &ev, part, offset);
        rc = r->nomem ? PB_ENOMEM : write_out(r, r->buf, r->len);
    }
    if (rc == PB_ENOMEM)
        pb_set_err(err, errlen, "partition %s offset %llu: rendering the event: %s", partition,
                   (unsigned long long)offset, pb_strerror(rc));
    else if (rc < 0)
        pb_set_err(err, errlen, "partition %s offset %llu: writing output: %s", partition,
                   (unsigned long long)offset, pb_strerror(rc));
    return rc;
}

int pb_render_event(FILE *out, pb_render_format fmt, const char *partition, uint64_t offset,
                    const uint8_t *event, size_t len, char *err, size_t errlen)
{
    pb_renderer r;
    pb_renderer_init(&r, out, fmt);
    int rc = pb_render(&r, partition, offset, event, len, err, errlen);
    pb_renderer_free(&r);
    return rc;
}
