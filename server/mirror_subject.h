/*
 * mirror_subject - how a mirror names things in NATS: the subject of an
 * event (subject_prefix + its topic, mapped by a reversible rule) and the
 * escaping of header values. The rule, for a reader of the stream
 * (proto/FORMAT.md, Part E, says the same):
 *
 *   The topic is split at '.'; each piece becomes one subject token.
 *   Bytes in the safe set (A-Z a-z 0-9 and - _ ~ : / = + @ !) stay as
 *   they are; every other byte (the wildcards * and >, '%', '$', '#',
 *   every byte >= 0x80 of UTF-8 text, ...) becomes %XX, its value in two
 *   UPPERCASE hex digits. An empty piece (from "a..b", a leading or a
 *   trailing '.') becomes the token "%", which no escaped piece can be.
 *
 * So every topic gets a valid NATS subject (dot-separated tokens, none
 * empty, no blanks, no wildcards) and the mapping is one-to-one: the
 * reverse accepts exactly the subjects the forward direction produces
 * (canonical form: uppercase hex, no escape of a safe byte).
 *
 * Header values (format = payload): bytes below 0x20, 0x7F and '%' become
 * %XX (and '=' too in a tag's key, which "KEY=VALUE" splits at).
 *
 * Threads: any; pure functions, caller-owned buffers.
 */
#ifndef PB_MIRROR_SUBJECT_H
#define PB_MIRROR_SUBJECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Room for the longest subject of a topic of n bytes and the prefix. */
#define MIRROR_SUBJECT_MAX(prefix_len, n) ((prefix_len) + 3 * (n) + 2)

/* Writes prefix + the mapped topic[0..n) and a NUL into out. Returns the
 * subject's length, or PB_ETOOBIG if it does not fit in cap bytes. */
int mirror_subject_from_topic(const char *prefix, const uint8_t *topic, size_t n, char *out,
                              size_t cap);

/* The reverse: the topic of `subject` into out (not NUL-terminated).
 * Returns its length; PB_EINVAL (why says what) if the subject does not
 * start with prefix or is not in the canonical form above; PB_ETOOBIG if
 * the topic does not fit in cap bytes. */
int mirror_subject_to_topic(const char *prefix, const char *subject, uint8_t *out, size_t cap,
                            char *why, size_t whylen);

/* Escapes p[0..n) for a header value (also '=' when escape_eq) into out
 * with a NUL. Returns the length, or PB_ETOOBIG if cap is too small (3 * n
 * + 1 always suffices). */
int mirror_header_escape(const uint8_t *p, size_t n, bool escape_eq, char *out, size_t cap);

/* The reverse of mirror_header_escape (any %XX, either case). Returns the
 * length, or PB_EINVAL for a '%' not followed by two hex digits. */
int mirror_header_unescape(const char *s, size_t n, uint8_t *out, size_t cap);

/* True when `subject` lies under `prefix` (literal, ending in '.',
 * config_mirror_prefix_valid): longer than it and beginning with it. The
 * mirror's scan reads every subject of its stream and keeps these. */
bool mirror_subject_under(const char *prefix, const char *subject);

#endif
