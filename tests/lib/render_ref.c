/*
 * render_ref - the old renderer (see render_ref.h): client/cli/render.c of
 * commit ab7a7a2 from its output helpers on, unchanged but for the names.
 *
 * Threads: any.
 */
#include "render_ref.h"

#include "pb_errors.h"
#include "protobus.pb-c.h"
#include "timefmt.h"
#include "wire.h"

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static size_t ref_utf8_seq_len(const uint8_t *s, size_t len)
{
    uint32_t cp;
    return wire_utf8_next(s, len, &cp);
}

/* ---- output helpers ---- */

/* Writes to a FILE, remembering the first failure so callers check once. */
struct out {
    FILE *f;
    int err; /* positive errno of the first failed write, 0 if none */
};

static void put(struct out *o, const void *p, size_t n)
{
    if (o->err || n == 0)
        return;
    errno = 0;
    if (fwrite(p, 1, n, o->f) != n)
        o->err = errno ? errno : EIO;
}

static void put_str(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Standard base64 with padding; dst needs 4 * ceil(n / 3) bytes. Returns its length. */
static size_t base64_encode(const uint8_t *src, size_t n, char *dst)
{
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
    return o;
}

static size_t base64_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

/* The Any's bytes, or an empty payload when the event has none. */
static void payload_bytes(const Protobus__EncapsulatedEvent *ev, const uint8_t **p, size_t *n)
{
    static const uint8_t none[1];
    *p = none;
    *n = 0;
    if (ev->payload && ev->payload->value.len > 0) {
        *p = ev->payload->value.data;
        *n = ev->payload->value.len;
    }
}

/* ---- text ---- */

/*
 * Writes s[0..len) readably on one line: valid UTF-8 as is; backslash,
 * control characters and bytes that are not UTF-8 escaped; '"' too when the
 * text is inside quotes. Plain runs go out in one write.
 */
static void put_escaped(struct out *o, const uint8_t *s, size_t len, bool quoted)
{
    size_t run = 0, i = 0;
    while (i < len) {
        size_t n = ref_utf8_seq_len(s + i, len - i);
        uint8_t c = s[i];
        const char *esc = NULL;
        char hex[5];
        if (n == 0 || (n == 1 && (c < 0x20 || c == 0x7F))) {
            if (c == '\n')
                esc = "\\n";
            else if (c == '\t')
                esc = "\\t";
            else if (c == '\r')
                esc = "\\r";
            else {
                snprintf(hex, sizeof hex, "\\x%02x", c);
                esc = hex;
            }
            n = 1;
        } else if (c == '\\') {
            esc = "\\\\";
        } else if (quoted && c == '"') {
            esc = "\\\"";
        }
        if (esc) {
            put(o, s + run, i - run);
            put_str(o, esc);
            run = i + n;
        }
        i += n;
    }
    put(o, s + run, len - run);
}

static void put_escaped_str(struct out *o, const char *s)
{
    put_escaped(o, (const uint8_t *)s, strlen(s), false);
}

struct tag_ref {
    const char *key, *value;
    size_t index; /* position in the map, so equal keys keep wire order */
};

static int tag_ref_cmp(const void *a, const void *b)
{
    const struct tag_ref *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    if (c != 0)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

static void put_payload_text(struct out *o, const uint8_t *p, size_t n)
{
    size_t cut = n < PB_RENDER_TEXT_PAYLOAD_MAX ? n : PB_RENDER_TEXT_PAYLOAD_MAX;
    if (pb_utf8_valid(p, n)) {
        while (cut > 0 && cut < n && (p[cut] & 0xC0) == 0x80)
            cut--; /* never split a character */
        put_str(o, "\"");
        put_escaped(o, p, cut, true);
        put_str(o, "\"");
    } else {
        char b64[(PB_RENDER_TEXT_PAYLOAD_MAX / 3 + 1) * 4];
        if (cut < n)
            cut -= cut % 3; /* whole groups only, so no padding mid-stream */
        put_str(o, "base64:");
        put(o, b64, base64_encode(p, cut, b64));
    }
    if (cut < n)
        put_str(o, "...");
}

static int render_text(struct out *o, const Protobus__EncapsulatedEvent *ev, const char *partition,
                       uint64_t offset)
{
    char buf[PB_TIME_BUFSZ];
    const Google__Protobuf__Timestamp *t = ev->server_receive_time;
    struct tag_ref *tags = NULL;

    if (ev->n_tags > 0) {
        tags = calloc(ev->n_tags, sizeof *tags);
        if (!tags)
            return PB_ENOMEM;
        for (size_t i = 0; i < ev->n_tags; i++)
            tags[i] = (struct tag_ref){ev->tags[i]->key, ev->tags[i]->value, i};
        qsort(tags, ev->n_tags, sizeof *tags, tag_ref_cmp);
    }

    put_str(o, t && pb_time_format_ts(t->seconds, t->nanos, buf, sizeof buf) ? buf : "-");
    put_str(o, " ");
    put_escaped_str(o, partition);
    snprintf(buf, sizeof buf, ":%llu ", (unsigned long long)offset);
    put_str(o, buf);
    if (ev->topic[0])
        put_escaped_str(o, ev->topic);
    else
        put_str(o, "\"\"");
    put_str(o, " {");
    bool first = true;
    for (size_t i = 0; i < ev->n_tags; i++) {
        /* A repeated key: protobuf keeps the last entry, so show only that. */
        if (i + 1 < ev->n_tags && strcmp(tags[i].key, tags[i + 1].key) == 0)
            continue;
        if (!first)
            put_str(o, ",");
        first = false;
        put_escaped_str(o, tags[i].key);
        put_str(o, "=");
        put_escaped_str(o, tags[i].value);
    }
    put_str(o, "} ");
    const char *type = ev->payload ? ev->payload->type_url : "";
    if (type[0])
        put_escaped_str(o, type);
    else
        put_str(o, "-");

    const uint8_t *p;
    size_t n;
    payload_bytes(ev, &p, &n);
    snprintf(buf, sizeof buf, " %zuB ", n);
    put_str(o, buf);
    put_payload_text(o, p, n);
    put_str(o, "\n");
    free(tags);
    return 0;
}

/* ---- json ---- */

/* A copy of s[0..len) with each byte that is not part of well-formed UTF-8
 * replaced by U+FFFD, NUL-terminated; NULL when out of memory. */
static char *utf8_sanitize_dup(const uint8_t *s, size_t len)
{
    static const char replacement[] = "\xEF\xBF\xBD";
    if (len > (SIZE_MAX - 1) / 3)
        return NULL;
    char *d = malloc(len * 3 + 1);
    if (!d)
        return NULL;
    size_t o = 0, i = 0;
    while (i < len) {
        size_t n = ref_utf8_seq_len(s + i, len - i);
        if (n == 0) {
            memcpy(d + o, replacement, 3);
            o += 3;
            i++;
        } else {
            memcpy(d + o, s + i, n);
            o += n;
            i += n;
        }
    }
    d[o] = '\0';
    return d;
}

/* A JSON string of s[0..len), made valid UTF-8; NULL when out of memory. */
static json_object *json_text(const char *s, size_t len)
{
    if (len > INT_MAX / 3)
        return NULL;
    if (pb_utf8_valid((const uint8_t *)s, len))
        return json_object_new_string_len(s, (int)len);
    char *clean = utf8_sanitize_dup((const uint8_t *)s, len);
    if (!clean)
        return NULL;
    json_object *j = json_object_new_string(clean);
    free(clean);
    return j;
}

/* Adds val under key, taking ownership of val either way. */
static int json_add(json_object *obj, const char *key, json_object *val)
{
    if (!val)
        return PB_ENOMEM;
    if (json_object_object_add(obj, key, val) != 0) {
        json_object_put(val);
        return PB_ENOMEM;
    }
    return 0;
}

/* RFC 3339 string, or JSON null for an absent timestamp. */
static int json_add_time(json_object *obj, const char *key, const Google__Protobuf__Timestamp *t)
{
    char buf[PB_TIME_BUFSZ];
    if (!t)
        return json_object_object_add(obj, key, NULL) == 0 ? 0 : PB_ENOMEM;
    if (pb_time_format_ts(t->seconds, t->nanos, buf, sizeof buf) == 0)
        return PB_EINVAL; /* cannot happen: PB_TIME_BUFSZ fits every value */
    return json_add(obj, key, json_object_new_string(buf));
}

static int json_add_payload(json_object *obj, const Protobus__EncapsulatedEvent *ev)
{
    const uint8_t *p;
    size_t n;
    payload_bytes(ev, &p, &n);
    /* json-c counts string lengths in int. */
    if (n > (size_t)INT_MAX / 4 * 3 - 3)
        return PB_ETOOBIG;
    if (pb_utf8_valid(p, n))
        return json_add(obj, "payload", json_object_new_string_len((const char *)p, (int)n));
    char *b64 = malloc(base64_len(n) + 1);
    if (!b64)
        return PB_ENOMEM;
    size_t blen = base64_encode(p, n, b64);
    int rc = json_add(obj, "payload_base64", json_object_new_string_len(b64, (int)blen));
    free(b64);
    return rc;
}

static int render_json(struct out *o, const Protobus__EncapsulatedEvent *ev, const char *partition,
                       uint64_t offset)
{
    int rc = PB_ENOMEM;
    json_object *root = json_object_new_object();
    json_object *tags = json_object_new_object();
    if (!root || !tags) {
        json_object_put(tags);
        goto out;
    }
    if ((rc = json_add(root, "topic", json_text(ev->topic, strlen(ev->topic)))) != 0 ||
        (rc = json_add(root, "partition", json_text(partition, strlen(partition)))) != 0 ||
        (rc = json_add(root, "offset", json_object_new_uint64(offset))) != 0)
        goto out;
    /* EncapsulatedEvent.id: only when the publisher gave one. */
    if (ev->id && ev->id[0] && (rc = json_add(root, "id", json_text(ev->id, strlen(ev->id)))) != 0)
        goto out;
    /* Added before it is filled so that root owns it on every path below. */
    if ((rc = json_add(root, "tags", tags)) != 0)
        goto out;
    for (size_t i = 0; i < ev->n_tags; i++) {
        const char *key = ev->tags[i]->key, *value = ev->tags[i]->value;
        char *clean = NULL;
        if (!pb_utf8_valid((const uint8_t *)key, strlen(key))) {
            clean = utf8_sanitize_dup((const uint8_t *)key, strlen(key));
            if (!clean) {
                rc = PB_ENOMEM;
                goto out;
            }
            key = clean;
        }
        /* Adding an existing key replaces it: the last entry wins, as in protobuf. */
        rc = json_add(tags, key, json_text(value, strlen(value)));
        free(clean);
        if (rc != 0)
            goto out;
    }
    const char *type = ev->payload ? ev->payload->type_url : "";
    if ((rc = json_add_time(root, "client_event_time", ev->client_event_time)) != 0 ||
        (rc = json_add_time(root, "client_transmit_time", ev->client_transmit_time)) != 0 ||
        (rc = json_add_time(root, "server_receive_time", ev->server_receive_time)) != 0 ||
        (rc = json_add(root, "payload_type", json_text(type, strlen(type)))) != 0 ||
        (rc = json_add(root, "payload_size", json_object_new_int64(ev->payload_size))) != 0 ||
        (rc = json_add_payload(root, ev)) != 0)
        goto out;

    size_t jlen;
    const char *js = json_object_to_json_string_length(
        root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &jlen);
    if (!js) {
        rc = PB_ENOMEM;
        goto out;
    }
    put(o, js, jlen);
    put(o, "\n", 1);
    rc = 0;
out:
    json_object_put(root);
    return rc;
}

/* Lets the caller tell "not an event" from "out of memory": protobuf-c's
 * unpack returns NULL for both. */
struct unpack_alloc {
    bool failed;
};

static void *unpack_alloc(void *data, size_t size)
{
    void *p = malloc(size);
    if (!p)
        ((struct unpack_alloc *)data)->failed = true;
    return p;
}

static void unpack_free(void *data, void *p)
{
    free(p);
}

int ref_render_event(FILE *out, pb_render_format fmt, const char *partition, uint64_t offset,
                     const uint8_t *event, size_t len, char *err, size_t errlen)
{
    struct unpack_alloc state = {false};
    ProtobufCAllocator alloc = {unpack_alloc, unpack_free, &state};
    Protobus__EncapsulatedEvent *ev = NULL;
    struct out o = {out, 0};
    int rc;

    pb_set_err(err, errlen, "%s", "");
    if (!partition)
        partition = "";
    if (!out || (!event && len > 0) || (unsigned)fmt > PB_RENDER_RAW) {
        pb_set_err(err, errlen, "partition %s offset %llu: invalid render arguments", partition,
                   (unsigned long long)offset);
        return PB_EINVAL;
    }

    ev = protobus__encapsulated_event__unpack(&alloc, len, event);
    if (!ev) {
        rc = state.failed ? PB_ENOMEM : PB_EPROTO;
        pb_set_err(err, errlen, "partition %s offset %llu: %s (%zu bytes)", partition,
                   (unsigned long long)offset,
                   state.failed ? "out of memory decoding the event"
                                : "stored bytes are not a valid EncapsulatedEvent",
                   len);
        return rc;
    }

    switch (fmt) {
    case PB_RENDER_TEXT:
        rc = render_text(&o, ev, partition, offset);
        break;
    case PB_RENDER_JSON:
        rc = render_json(&o, ev, partition, offset);
        break;
    case PB_RENDER_RAW: {
        const uint8_t *p;
        size_t n;
        payload_bytes(ev, &p, &n);
        put(&o, p, n);
        rc = 0;
        break;
    }
    default:
        rc = PB_EINVAL;
        break;
    }

    if (rc == 0 && o.err) {
        rc = -o.err;
        pb_set_err(err, errlen, "partition %s offset %llu: writing output: %s", partition,
                   (unsigned long long)offset, pb_strerror(rc));
    } else if (rc != 0) {
        pb_set_err(err, errlen, "partition %s offset %llu: rendering the event: %s", partition,
                   (unsigned long long)offset, pb_strerror(rc));
    }
    protobuf_c_message_free_unpacked(&ev->base, &alloc);
    return rc;
}
