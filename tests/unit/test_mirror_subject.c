/* Tests for server/mirror_subject: topic -> NATS subject and back (round
 * trips for every byte value, empty pieces, wildcards, UTF-8), the subjects
 * the reverse refuses (not of the mapping's canonical form), buffer bounds,
 * and the escaping of header values; which subjects the scan keeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "mirror_subject.h"
#include "pb_errors.h"

#include <stdio.h>
#include <string.h>

/* A valid NATS subject for publishing: dot-separated non-empty tokens of
 * printable ASCII without blanks, no token "*" or ">" and no '*' or '>'
 * anywhere (the mapping escapes them). */
static void assert_valid_subject(const char *s)
{
    size_t tok = 0;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '.') {
            if (tok == 0)
                fail_msg("\"%s\": empty token", s);
            tok = 0;
            continue;
        }
        if (c <= 0x20 || c >= 0x7f || c == '*' || c == '>')
            fail_msg("\"%s\": byte 0x%02x in a token", s, c);
        tok++;
    }
    if (tok == 0)
        fail_msg("\"%s\": empty last token", s);
}

static void round_trip(const char *prefix, const uint8_t *topic, size_t n, const char *expect)
{
    char subject[4096];
    uint8_t back[1024];
    char why[256] = "";
    int len = mirror_subject_from_topic(prefix, topic, n, subject, sizeof subject);
    assert_true(len > 0);
    assert_int_equal((size_t)len, strlen(subject));
    if (expect)
        assert_string_equal(subject, expect);
    assert_valid_subject(subject);
    int tl = mirror_subject_to_topic(prefix, subject, back, sizeof back, why, sizeof why);
    if (tl < 0)
        fail_msg("\"%s\" did not map back: %s", subject, why);
    assert_int_equal(tl, (int)n);
    assert_memory_equal(back, topic, n);
}

static void rt(const char *prefix, const char *topic, const char *expect)
{
    round_trip(prefix, (const uint8_t *)topic, strlen(topic), expect);
}

static void test_examples(void **state)
{
    (void)state;
    rt("pb.", "sensors.kitchen.temp", "pb.sensors.kitchen.temp");
    rt("pb.", "a-b_c~d:e/f=g+h@i!j", "pb.a-b_c~d:e/f=g+h@i!j");
    rt("pb.", "wild.*.card", "pb.wild.%2A.card");
    rt("pb.", "gt.>", "pb.gt.%3E");
    rt("pb.", "a*b>c", "pb.a%2Ab%3Ec");
    rt("pb.", "pct%41", "pb.pct%2541");
    rt("pb.", "dollar.$x", "pb.dollar.%24x");
    rt("pb.", "hash#tag", "pb.hash%23tag");
    rt("pb.", "ünï", "pb.%C3%BCn%C3%AF");
    rt("a.b.", "x", "a.b.x");
}

static void test_empty_pieces(void **state)
{
    (void)state;
    rt("pb.", "odd..dots", "pb.odd.%.dots");
    rt("pb.", ".lead", "pb.%.lead");
    rt("pb.", "trail.", "pb.trail.%");
    rt("pb.", ".", "pb.%.%");
    rt("pb.", "..", "pb.%.%.%");
    rt("pb.", "%", "pb.%25");
    rt("pb.", "", "pb.%");
}

/* Every single byte as a one-byte topic, and every pair (bytes 0..255
 * around a dot and inside a piece): each maps to a valid subject and back. */
static void test_every_byte(void **state)
{
    (void)state;
    for (int a = 0; a < 256; a++) {
        uint8_t t1[1] = {(uint8_t)a};
        round_trip("p.", t1, 1, NULL);
        for (int b = 0; b < 256; b += 7) {
            uint8_t t3[3] = {(uint8_t)a, '.', (uint8_t)b};
            round_trip("p.", t3, 3, NULL);
            uint8_t t2[2] = {(uint8_t)a, (uint8_t)b};
            round_trip("p.", t2, 2, NULL);
        }
    }
}

/* Different topics never get the same subject (the mapping is one-to-one):
 * pairs that an ad hoc escaping would confuse. */
static void test_distinct(void **state)
{
    (void)state;
    const char *topics[] = {"a.b", "a%2Eb", "a..b", "a.%.b", "a%",   "a.%", "a.",
                            "%2A", "*",     ">",    "%3E",   "a%25", ".",   ""};
    size_t n = sizeof topics / sizeof topics[0];
    char subj[32][256];
    for (size_t i = 0; i < n; i++)
        assert_true(mirror_subject_from_topic("p.", (const uint8_t *)topics[i], strlen(topics[i]),
                                              subj[i], sizeof subj[i]) > 0);
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(subj[i], subj[j]) == 0)
                fail_msg("\"%s\" and \"%s\" both map to %s", topics[i], topics[j], subj[i]);
}

static void refused(const char *prefix, const char *subject, const char *why_part)
{
    uint8_t out[256];
    char why[256] = "";
    int rc = mirror_subject_to_topic(prefix, subject, out, sizeof out, why, sizeof why);
    if (rc != PB_EINVAL)
        fail_msg("\"%s\" was accepted (rc %d)", subject, rc);
    if (!strstr(why, why_part))
        fail_msg("\"%s\": message \"%s\" does not say \"%s\"", subject, why, why_part);
}

static void test_reverse_refuses(void **state)
{
    (void)state;
    refused("pb.", "other.x", "does not start with");
    refused("pb.", "pb.", "empty token");
    refused("pb.", "pb.a..b", "empty token");
    refused("pb.", "pb.a.", "ends with");
    refused("pb.", "pb.a%2", "two uppercase hex");
    refused("pb.", "pb.a%", "two uppercase hex");  /* '%' not alone in its token */
    refused("pb.", "pb.%2a", "two uppercase hex"); /* lowercase: not canonical */
    refused("pb.", "pb.%zz", "two uppercase hex");
    refused("pb.", "pb.%41", "never escaped");   /* 'A' is safe */
    refused("pb.", "pb.a*b", "must be escaped"); /* raw wildcard */
    refused("pb.", "pb.a$b", "must be escaped");
    refused("pb.", "pb.\xc3\xbc", "must be escaped"); /* raw UTF-8 */
    refused("pb.", "pb.%2E", "never escaped");        /* '.' separates pieces */
}

static void test_bounds(void **state)
{
    (void)state;
    char small[8];
    /* "pb." + "abcdef" needs 10 bytes with the NUL. */
    assert_int_equal(
        mirror_subject_from_topic("pb.", (const uint8_t *)"abcdef", 6, small, sizeof small),
        PB_ETOOBIG);
    assert_int_equal(mirror_subject_from_topic("pb.", (const uint8_t *)"*", 1, small, 6),
                     PB_ETOOBIG);
    assert_int_equal(mirror_subject_from_topic("pb.", (const uint8_t *)"*", 1, small, 7), 6);
    uint8_t out[2];
    char why[64];
    assert_int_equal(mirror_subject_to_topic("pb.", "pb.abc", out, sizeof out, why, sizeof why),
                     PB_ETOOBIG);
    /* The documented bound holds for the worst case: every byte escaped,
     * every piece empty. */
    uint8_t worst[255];
    memset(worst, '*', sizeof worst);
    char big[MIRROR_SUBJECT_MAX(3, 255)];
    assert_true(mirror_subject_from_topic("pb.", worst, sizeof worst, big, sizeof big) > 0);
    memset(worst, '.', sizeof worst);
    assert_true(mirror_subject_from_topic("pb.", worst, sizeof worst, big, sizeof big) > 0);
}

static void test_header_escape(void **state)
{
    (void)state;
    char out[64];
    uint8_t back[64];
    const char v[] = "a\tb%c=d\x7f\r\n";
    int n = mirror_header_escape((const uint8_t *)v, strlen(v), false, out, sizeof out);
    assert_string_equal(out, "a%09b%25c=d%7F%0D%0A");
    assert_int_equal(n, (int)strlen(out));
    assert_int_equal(mirror_header_unescape(out, strlen(out), back, sizeof back), (int)strlen(v));
    assert_memory_equal(back, v, strlen(v));
    mirror_header_escape((const uint8_t *)"k=e%y", 5, true, out, sizeof out);
    assert_string_equal(out, "k%3De%25y");
    assert_int_equal(mirror_header_unescape("%3d", 3, back, sizeof back), 1); /* either case */
    assert_int_equal(back[0], '=');
    assert_int_equal(mirror_header_unescape("a%4", 3, back, sizeof back), PB_EINVAL);
    assert_int_equal(mirror_header_unescape("%zz", 3, back, sizeof back), PB_EINVAL);
    assert_int_equal(mirror_header_escape((const uint8_t *)"%%", 2, false, out, 6), PB_ETOOBIG);
}

/* Which messages the mirror's scan keeps (it reads every subject of the
 * stream): those under the prefix, not another writer's. */
static void test_subject_under(void **state)
{
    (void)state;
    assert_true(mirror_subject_under("pb.e.", "pb.e.t"));
    assert_true(mirror_subject_under("pb.e.", "pb.e.a.b.%25"));
    assert_false(mirror_subject_under("pb.e.", "pb.f.t"));   /* a source's */
    assert_false(mirror_subject_under("pb.e.", "pb.ex.t"));  /* a look-alike */
    assert_false(mirror_subject_under("pb.e.", "pb.e."));    /* nothing after it */
    assert_false(mirror_subject_under("pb.e.", "pb.e"));     /* shorter */
    assert_false(mirror_subject_under("pb.e.", "x.pb.e.t")); /* not at the start */
    assert_false(mirror_subject_under("pb.e", "pb.ex"));     /* not a valid prefix */
    assert_false(mirror_subject_under("pb.e.", NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_examples),        cmocka_unit_test(test_empty_pieces),
        cmocka_unit_test(test_every_byte),      cmocka_unit_test(test_distinct),
        cmocka_unit_test(test_reverse_refuses), cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_header_escape),   cmocka_unit_test(test_subject_under),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
