/*
 * Fuzz target: the CLI's renderer (client/cli/render.c, render_decode.c),
 * the code `protobus cat` runs on stored bytes, against the renderer it
 * replaced (tests/lib/render_ref.c: protobuf-c's unpack and json-c).
 *
 * Input: the bytes of one stored event. Each of json, text and raw is
 * rendered by both, the new one twice in a row (the second time from its
 * warm buffers and cached timestamps). Besides "no crash, no leak, no UB",
 * the oracles: the same return code, the same bytes and the same message
 * from both, every time; a JSON line parses (json-c, strict, UTF-8
 * checked).
 *
 * Threads: one (libFuzzer's or replay.c's). Nothing kept between inputs.
 */
#include "fuzz.h"

#include "render.h"
#include "render_ref.h"

#include <json-c/json.h>
#include <string.h>

/* What one render wrote and returned. */
struct rendered {
    int rc;
    char *out;
    size_t len;
    char err[256];
};

static void render_ref(pb_render_format fmt, const uint8_t *data, size_t size, struct rendered *r)
{
    FILE *f = open_memstream(&r->out, &r->len);
    FUZZ_CHECK(f != NULL);
    r->rc = ref_render_event(f, fmt, "part", 7, data, size, r->err, sizeof r->err);
    FUZZ_CHECK(fclose(f) == 0);
}

static void render_new(pb_renderer *pr, const uint8_t *data, size_t size, struct rendered *r)
{
    FILE *f = open_memstream(&r->out, &r->len);
    FUZZ_CHECK(f != NULL);
    pr->out = f;
    r->rc = pb_render(pr, "part", 7, data, size, r->err, sizeof r->err);
    FUZZ_CHECK(fclose(f) == 0);
}

static bool same(const struct rendered *a, const struct rendered *b)
{
    return a->rc == b->rc && a->len == b->len && memcmp(a->out, b->out, a->len) == 0 &&
           strcmp(a->err, b->err) == 0;
}

static void check_json(const struct rendered *r)
{
    FUZZ_CHECK(r->len > 0 && r->out[r->len - 1] == '\n');
    json_tokener *tok = json_tokener_new();
    FUZZ_CHECK(tok != NULL);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *obj = json_tokener_parse_ex(tok, r->out, (int)r->len - 1);
    FUZZ_CHECK(obj != NULL && json_tokener_get_error(tok) == json_tokener_success);
    json_object_put(obj);
    json_tokener_free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const pb_render_format fmts[] = {PB_RENDER_JSON, PB_RENDER_TEXT, PB_RENDER_RAW};
    for (size_t i = 0; i < sizeof fmts / sizeof fmts[0]; i++) {
        struct rendered want = {0}, got = {0}, again = {0};
        pb_renderer pr;
        pb_renderer_init(&pr, NULL, fmts[i]);
        render_ref(fmts[i], data, size, &want);
        render_new(&pr, data, size, &got);
        render_new(&pr, data, size, &again);
        pb_renderer_free(&pr);
        FUZZ_CHECK(same(&want, &got));
        FUZZ_CHECK(same(&want, &again));
        if (got.rc == 0 && fmts[i] == PB_RENDER_JSON)
            check_json(&got);
        free(want.out);
        free(got.out);
        free(again.out);
    }
    return 0;
}
