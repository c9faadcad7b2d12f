/*
 * seeds - writes the seed corpora of the fuzz targets (tests/fuzz/corpus/):
 * well-formed frames, segment directories and config files, plus a few
 * damaged variants of each, so that fuzzing starts from inputs that reach
 * deep into each decoder. `make fuzz-seeds` rebuilds them; the files are
 * committed, so this only runs when the formats change.
 *
 * Encodes with protobuf-c and the record codec, independently of the
 * walkers under test. Threads: one.
 */
#include "crc32c.h"
#include "protobus.pb-c.h"
#include "record.h"
#include "segment.h"
#include "zseg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *outdir;
static int failures;

static void put(const char *target, const char *name, const void *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s/%s", outdir, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "seeds: cannot write %s: %s\n", path, strerror(errno));
        failures++;
    }
}

/* A growable byte buffer for composing inputs. */
typedef struct buf {
    uint8_t b[1 << 16];
    size_t n;
} buf;

static void add(buf *b, const void *p, size_t n)
{
    if (b->n + n > sizeof b->b) {
        fprintf(stderr, "seeds: a seed grew over %zu bytes\n", sizeof b->b);
        exit(1);
    }
    memcpy(b->b + b->n, p, n);
    b->n += n;
}

static void add_byte(buf *b, uint8_t v)
{
    add(b, &v, 1);
}

static void add_le(buf *b, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        add_byte(b, (uint8_t)(v >> (8 * i)));
}

static void add_varint(buf *b, uint64_t v)
{
    while (v >= 0x80) {
        add_byte(b, (uint8_t)(v | 0x80));
        v >>= 7;
    }
    add_byte(b, (uint8_t)v);
}

/* ---- frames ---- */

static Google__Protobuf__Timestamp ts(int64_t s, int32_t ns)
{
    Google__Protobuf__Timestamp t = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    t.seconds = s;
    t.nanos = ns;
    return t;
}

/* Packs a full EncapsulatedEvent (tags, both client times, payload). */
static size_t pack_event(uint8_t *out, const char *topic, int ntags, const char *value)
{
    Protobus__EncapsulatedEvent e = PROTOBUS__ENCAPSULATED_EVENT__INIT;
    Protobus__EncapsulatedEvent__TagsEntry t[2] = {PROTOBUS__ENCAPSULATED_EVENT__TAGS_ENTRY__INIT,
                                                   PROTOBUS__ENCAPSULATED_EVENT__TAGS_ENTRY__INIT};
    Protobus__EncapsulatedEvent__TagsEntry *tp[2] = {&t[0], &t[1]};
    t[0].key = "host";
    t[0].value = "a1";
    t[1].key = "zone";
    t[1].value = "eu";
    Google__Protobuf__Timestamp et = ts(1700000000, 123456789), tt = ts(1700000001, 5);
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    any.type_url = "type.googleapis.com/x.Reading";
    any.value.data = (uint8_t *)value;
    any.value.len = strlen(value);
    e.topic = (char *)topic;
    e.n_tags = (size_t)ntags;
    e.tags = tp;
    e.client_event_time = &et;
    e.client_transmit_time = &tt;
    e.payload_size = (int64_t)strlen(value);
    e.payload = &any;
    return protobus__encapsulated_event__pack(&e, out);
}

static void add_frame(buf *b, const Protobus__Frame *f)
{
    uint8_t tmp[8192];
    size_t n = protobus__frame__get_packed_size(f);
    if (n > sizeof tmp)
        exit(1);
    protobus__frame__pack(f, tmp);
    add_varint(b, n);
    add(b, tmp, n);
}

/* Protocol v1's frames: the handshake with credentials and limits, Ping
 * and Pong, an event with an id, a Publish with expectations, Subscribed,
 * CaughtUp, ReplicaAck, an Error with expected/actual, and frames whose
 * id comes before a fault (the reply must carry it). */
static void v1_seeds(Protobus__EncapsulatedEvent **evp)
{
    uint8_t tmp[4096];
    buf b = {.n = 0};
    Protobus__Frame f = PROTOBUS__FRAME__INIT;

    Protobus__Hello ch = PROTOBUS__HELLO__INIT;
    ch.protocol_version = 1;
    ch.name = "seed-client";
    ch.user = "alice";
    ch.password = "secret";
    Protobus__Limits lim = PROTOBUS__LIMITS__INIT;
    lim.max_event_id_bytes = 64;
    lim.idle_timeout_ms = 60000;
    lim.dedup_window_ms = 120000;
    lim.max_subscribe_patterns = 100;
    Protobus__Hello sh = PROTOBUS__HELLO__INIT;
    sh.protocol_version = 1;
    sh.name = "protobusd 0.1.0";
    sh.max_frame_bytes = 16 << 20;
    sh.max_event_bytes = 1 << 20;
    sh.limits = &lim;
    Protobus__Ping ping = PROTOBUS__PING__INIT;
    Protobus__Pong pong = PROTOBUS__PONG__INIT;

    /* An event with an id, in a Publish with expectations. */
    Protobus__EncapsulatedEvent ide = *evp[1];
    ide.id = "order-42-v1";
    Protobus__EncapsulatedEvent *idp[2] = {&ide, evp[0]};
    Protobus__ExpectLast ex[2] = {PROTOBUS__EXPECT_LAST__INIT, PROTOBUS__EXPECT_LAST__INIT};
    Protobus__ExpectLast *exp[2] = {&ex[0], &ex[1]};
    ex[0].topic = "orders.eu";
    ex[0].offset = 41;
    ex[1].topic = "sensors.t17.temp";
    ex[1].none = 1;
    Protobus__Publish pub = PROTOBUS__PUBLISH__INIT;
    pub.n_events = 2;
    pub.events = idp;
    pub.n_expect = 2;
    pub.expect = exp;
    Protobus__PartitionOffset po = PROTOBUS__PARTITION_OFFSET__INIT;
    Protobus__PartitionOffset *pop = &po;
    po.partition = "events";
    po.offset = 99;
    Protobus__ReplicaAck ra = PROTOBUS__REPLICA_ACK__INIT;
    ra.n_durable = 1;
    ra.durable = &pop;

    /* A client's v1 session. */
    add_byte(&b, 7 << 1);
    f.id = 1;
    f.body_case = PROTOBUS__FRAME__BODY_HELLO;
    f.hello = &ch;
    add_frame(&b, &f);
    f.id = 2;
    f.body_case = PROTOBUS__FRAME__BODY_PING;
    f.ping = &ping;
    add_frame(&b, &f);
    f.id = 3;
    f.body_case = PROTOBUS__FRAME__BODY_PUBLISH;
    f.publish = &pub;
    add_frame(&b, &f);
    f.id = 4;
    f.body_case = PROTOBUS__FRAME__BODY_REPLICA_ACK;
    f.replica_ack = &ra;
    add_frame(&b, &f);
    f.id = 5;
    f.body_case = PROTOBUS__FRAME__BODY_PONG;
    f.pong = &pong;
    add_frame(&b, &f);
    /* id 42, then a body field whose length runs past the frame; then a
     * frame with an overlong (6-byte) tag. */
    const uint8_t cut[] = {5, 0x08, 0x2a, 0x12, 0x05, 0x01};
    add(&b, cut, sizeof cut);
    const uint8_t longtag[] = {7, 0x88, 0x80, 0x80, 0x80, 0x80, 0x00, 0x01};
    add(&b, longtag, sizeof longtag);
    put("frame", "stream-v1-client", b.b, b.n);

    /* What a v1 server sends. */
    b.n = 0;
    add_byte(&b, 6 << 1);
    f.id = 1;
    f.body_case = PROTOBUS__FRAME__BODY_HELLO;
    f.hello = &sh;
    add_frame(&b, &f);
    Protobus__PartitionPosition pp[2] = {PROTOBUS__PARTITION_POSITION__INIT,
                                         PROTOBUS__PARTITION_POSITION__INIT};
    Protobus__PartitionPosition *ppp[2] = {&pp[0], &pp[1]};
    pp[0].partition = "events";
    pp[0].start_offset = 41;
    pp[0].end_offset = 43;
    pp[1].partition = "sensors-t17";
    pp[1].first_offset = 7;
    pp[1].start_offset = 7;
    pp[1].end_offset = 7;
    Protobus__Subscribed sd = PROTOBUS__SUBSCRIBED__INIT;
    sd.n_partitions = 2;
    sd.partitions = ppp;
    f.id = 3;
    f.body_case = PROTOBUS__FRAME__BODY_SUBSCRIBED;
    f.subscribed = &sd;
    add_frame(&b, &f);
    Protobus__CaughtUp cu = PROTOBUS__CAUGHT_UP__INIT;
    cu.history_events = 2;
    f.body_case = PROTOBUS__FRAME__BODY_CAUGHT_UP;
    f.caught_up = &cu;
    add_frame(&b, &f);
    f.id = 2;
    f.body_case = PROTOBUS__FRAME__BODY_PONG;
    f.pong = &pong;
    add_frame(&b, &f);
    Protobus__ExpectLast actual = PROTOBUS__EXPECT_LAST__INIT;
    actual.topic = "orders.eu";
    actual.offset = 44;
    Protobus__Error er = PROTOBUS__ERROR__INIT;
    er.code = PROTOBUS__CODE__FAILED_PRECONDITION;
    er.message = "topic orders.eu: expected last offset 41, it is 44";
    er.expected = &ex[0];
    er.actual = &actual;
    f.id = 3;
    f.body_case = PROTOBUS__FRAME__BODY_ERROR;
    f.error = &er;
    add_frame(&b, &f);
    put("frame", "stream-v1-server", b.b, b.n);

    /* Bodies on their own. */
    b.n = 0;
    add_byte(&b, 1);
    add(&b, tmp, protobus__hello__pack(&sh, tmp));
    put("frame", "body-hello-server", b.b, b.n);
    b.n = 0;
    add_byte(&b, 1);
    add(&b, tmp, protobus__hello__pack(&ch, tmp));
    put("frame", "body-hello-client", b.b, b.n);
    b.n = 0;
    add_byte(&b, 1);
    add(&b, tmp, protobus__encapsulated_event__pack(&ide, tmp));
    put("frame", "body-event-id", b.b, b.n);
    b.n = 0;
    add_byte(&b, 1);
    add(&b, tmp, protobus__publish__pack(&pub, tmp));
    put("frame", "body-publish-expect", b.b, b.n);
}

static void frame_seeds(void)
{
    uint8_t ev[3][512];
    size_t evn[3];
    evn[0] = pack_event(ev[0], "sensors.t17.temp", 2, "21.5");
    evn[1] = pack_event(ev[1], "orders.eu", 1, "");
    evn[2] = pack_event(ev[2], "x", 0, "payload bytes");
    Protobus__EncapsulatedEvent *evp[3];
    for (int i = 0; i < 3; i++)
        evp[i] = protobus__encapsulated_event__unpack(NULL, evn[i], ev[i]);

    Protobus__Hello h = PROTOBUS__HELLO__INIT;
    h.protocol_version = 1;
    h.name = "seed";
    Protobus__Publish pub = PROTOBUS__PUBLISH__INIT;
    pub.n_events = 3;
    pub.events = evp;
    char *pats[2] = {"sensors\\..*", "orders\\.(eu|us)"};
    Protobus__Subscribe sub = PROTOBUS__SUBSCRIBE__INIT;
    sub.n_patterns = 2;
    sub.patterns = pats;
    sub.start = PROTOBUS__START_MODE__START_LAST_N;
    sub.last_n = 5;
    Protobus__Frame f = PROTOBUS__FRAME__INIT;

    /* A client's session: hello, publish, subscribe, an empty frame. */
    buf b = {.n = 0};
    add_byte(&b, 7 << 1); /* stream, no frame limit */
    f.id = 1;
    f.body_case = PROTOBUS__FRAME__BODY_HELLO;
    f.hello = &h;
    add_frame(&b, &f);
    f.id = 2;
    f.body_case = PROTOBUS__FRAME__BODY_PUBLISH;
    f.publish = &pub;
    add_frame(&b, &f);
    f.id = 3;
    f.body_case = PROTOBUS__FRAME__BODY_SUBSCRIBE;
    f.subscribe = &sub;
    add_frame(&b, &f);
    add_byte(&b, 0);
    put("frame", "stream-session", b.b, b.n);

    /* The same stream under a 300-byte limit (the publish is refused),
     * and cut in the middle of the publish. */
    b.b[0] = 4 << 1;
    put("frame", "stream-limit-300", b.b, b.n);
    b.b[0] = 7 << 1;
    put("frame", "stream-cut", b.b, b.n / 2);

    /* What the server sends: an Event, a PublishAck, an Error. */
    b.n = 0;
    add_byte(&b, 6 << 1);
    Protobus__Event e = PROTOBUS__EVENT__INIT;
    e.partition = "sensors-t17";
    e.offset = 42;
    e.event = evp[0];
    f.id = 3;
    f.body_case = PROTOBUS__FRAME__BODY_EVENT;
    f.event = &e;
    add_frame(&b, &f);
    char *names[2] = {"events", "orders"};
    uint32_t idx[3] = {0, 1, 0};
    uint64_t offs[3] = {7, 0, 8};
    Protobus__PublishAck ack = PROTOBUS__PUBLISH_ACK__INIT;
    ack.n_partitions = 2;
    ack.partitions = names;
    ack.n_partition_index = 3;
    ack.partition_index = idx;
    ack.n_offsets = 3;
    ack.offsets = offs;
    f.id = 2;
    f.body_case = PROTOBUS__FRAME__BODY_PUBLISH_ACK;
    f.publish_ack = &ack;
    add_frame(&b, &f);
    Protobus__Error er = PROTOBUS__ERROR__INIT;
    er.code = PROTOBUS__CODE__DATA_LOSS;
    er.message = "partition events: events 3..4 lost";
    er.partition = "events";
    er.first_offset = 3;
    er.last_offset = 4;
    f.id = 3;
    f.body_case = PROTOBUS__FRAME__BODY_ERROR;
    f.error = &er;
    add_frame(&b, &f);
    put("frame", "stream-server", b.b, b.n);

    /* Bodies on their own (odd mode byte: every walker is tried). */
    uint8_t tmp[4096];
    b.n = 0;
    add_byte(&b, 1);
    add(&b, ev[0], evn[0]);
    put("frame", "body-event", b.b, b.n);
    b.n = 0;
    add_byte(&b, 1);
    add(&b, tmp, protobus__publish__pack(&pub, tmp));
    put("frame", "body-publish", b.b, b.n);
    pub.no_ack = 1;
    b.n = 0;
    add_byte(&b, 1);
    add(&b, tmp, protobus__publish__pack(&pub, tmp));
    put("frame", "body-publish-noack", b.b, b.n);
    b.n = 0;
    add_byte(&b, 1);
    add(&b, tmp, protobus__event__pack(&e, tmp));
    put("frame", "body-event-frame", b.b, b.n);
    b.n = 0;
    add_byte(&b, 1);
    add(&b, tmp, protobus__publish_ack__pack(&ack, tmp));
    put("frame", "body-ack-packed", b.b, b.n);

    /* A PublishAck with unpacked indexes and offsets, mixed with packed. */
    b.n = 0;
    add_byte(&b, 1);
    add_byte(&b, 0x0a);
    add_byte(&b, 6);
    add(&b, "events", 6);
    add_byte(&b, 0x10); /* partition_index, unpacked */
    add_byte(&b, 0);
    add_byte(&b, 0x18); /* offsets, unpacked */
    add_varint(&b, 300);
    add_byte(&b, 0x12); /* partition_index, packed */
    add_byte(&b, 1);
    add_byte(&b, 0);
    add_byte(&b, 0x1a); /* offsets, packed */
    add_byte(&b, 2);
    add_varint(&b, 301);
    put("frame", "body-ack-mixed", b.b, b.n);

    /* An event with a repeated tag key, a repeated topic, a repeated
     * timestamp (merged), an unknown field and a server time. */
    b.n = 0;
    add_byte(&b, 1);
    add(&b, ev[2], evn[2]);
    add(&b, ev[0], evn[0]);
    add_byte(&b, 0x0a);
    add_byte(&b, 3);
    add(&b, "a.b", 3);
    add_byte(&b, 0x1a); /* client_event_time again: nanos only */
    add_byte(&b, 2);
    add_byte(&b, 0x10);
    add_byte(&b, 9);
    add_byte(&b, 0xa0); /* field 100, varint: unknown */
    add_byte(&b, 0x06);
    add_byte(&b, 1);
    add_byte(&b, 0x2a); /* server_receive_time */
    add_byte(&b, 11);
    add_byte(&b, 0x08);
    add_varint(&b, 1700000002);
    add_byte(&b, 0x10);
    add_varint(&b, 999999999);
    put("frame", "body-event-repeats", b.b, b.n);

    /* Invalid on purpose: a topic that is not UTF-8, nanos out of range,
     * a group wire type, an 11-byte varint prefix. */
    b.n = 0;
    add_byte(&b, 1);
    add_byte(&b, 0x0a);
    add_byte(&b, 2);
    add_byte(&b, 0xc3);
    add_byte(&b, 0x28);
    put("frame", "bad-utf8-topic", b.b, b.n);
    b.n = 0;
    add_byte(&b, 1);
    add_byte(&b, 0x1a);
    add_byte(&b, 6);
    add_byte(&b, 0x10);
    add_varint(&b, 1000000000);
    put("frame", "bad-nanos", b.b, b.n);
    b.n = 0;
    add_byte(&b, 1);
    add_byte(&b, 0x0b); /* field 1, start group */
    add_byte(&b, 0x0c);
    put("frame", "bad-group", b.b, b.n);
    b.n = 0;
    add_byte(&b, 7 << 1);
    for (int i = 0; i < 10; i++)
        add_byte(&b, 0xff);
    add_byte(&b, 0x01);
    put("frame", "bad-prefix", b.b, b.n);

    v1_seeds(evp);
    for (int i = 0; i < 3; i++)
        protobus__encapsulated_event__free_unpacked(evp[i], NULL);
}

/* ---- segment files ---- */

/* A .log image: header + records base..base+count-1 (times 1000 ns apart). */
static void add_log(buf *b, uint64_t base, uint64_t first, int count)
{
    uint8_t hdr[PB_FILE_HEADER_SIZE];
    file_header_encode(hdr, PB_LOG_MAGIC, base, 1700000000000000000LL);
    add(b, hdr, sizeof hdr);
    for (int i = 0; i < count; i++) {
        char ev[64];
        int n = snprintf(ev, sizeof ev, "\x0a\x05t.%03d\x30%c", i, (char)(i + 1));
        uint8_t rh[PB_RECORD_HEADER_SIZE];
        record_encode_header(rh, first + (uint64_t)i, 1700000000000000000LL + 1000 * i, ev,
                             (size_t)n, NULL, 0);
        add(b, rh, sizeof rh);
        add(b, ev, (size_t)n);
    }
}

/* A compressed segment (FORMAT.md Part B) standing for the plain .log
 * image `plain` (records of 33 bytes after its 40-byte header): blocks of
 * per[k] records each; offs[k] (when given) the first and last offsets
 * block k's index entry names (else the records' own); block `bad` (-1:
 * none) gets a wrong CRC. The index and header CRCs are right, so the
 * reader trusts the entries. */
static void add_zlog(buf *out, const buf *plain, const int *per, int nblocks,
                     const uint64_t (*offs)[2], uint64_t first_offset, int bad)
{
    enum { REC = 33 };
    zseg_entry ent[8];
    void *cctx = NULL;
    uint8_t *comp = NULL;
    size_t cap = 0;
    out->n = 0;
    add(out, plain->b, PB_FILE_HEADER_SIZE);
    uint8_t zero[ZSEG_HEADER_END - PB_FILE_HEADER_SIZE] = {0};
    add(out, zero, sizeof zero);
    uint64_t logical = PB_FILE_HEADER_SIZE, offset = first_offset;
    for (int k = 0; k < nblocks; k++) {
        size_t len = (size_t)per[k] * REC, n;
        if (zseg_compress_block(&cctx, plain->b + logical, len, 1, &comp, &cap, &n) < 0) {
            fprintf(stderr, "seeds: zseg_compress_block failed\n");
            failures++;
            return;
        }
        ent[k] = (zseg_entry){.logical = logical,
                              .file_pos = out->n,
                              .first_offset = offs ? offs[k][0] : offset,
                              .last_offset = offs ? offs[k][1] : offset + (uint64_t)per[k] - 1,
                              .comp_len = (uint32_t)n,
                              .raw_len = (uint32_t)len,
                              .crc = crc32c(0, comp, n) ^ (k == bad ? 1u : 0u)};
        add(out, comp, n);
        logical += len;
        offset += (uint64_t)per[k];
    }
    uint64_t index_pos = out->n;
    uint8_t e[ZSEG_ENTRY_SIZE];
    size_t idx_start = out->n;
    for (int k = 0; k < nblocks; k++) {
        zseg_entry_encode(e, &ent[k]);
        add(out, e, sizeof e);
    }
    add_le(out, crc32c(0, out->b + idx_start, out->n - idx_start), 4);
    zseg_header_encode(out->b + PB_FILE_HEADER_SIZE, logical, index_pos, (uint32_t)nblocks);
    free(comp);
    zseg_cctx_free(cctx);
}

static void add_prelude(buf *b, int op, int many, uint64_t param)
{
    b->n = 0;
    add_byte(b, (uint8_t)(op | (many ? 4 : 0)));
    add_le(b, param, 8);
}

/* One file of a "many" input: kind, base, 16-bit length, bytes. */
static void add_file(buf *b, int idx, uint64_t base, const buf *content)
{
    add_byte(b, (uint8_t)idx);
    add_le(b, base, 8);
    add_le(b, content->n, 2);
    add(b, content->b, content->n);
}

static void segment_seeds(void)
{
    static buf b, log, idx;
    log.n = 0;
    add_log(&log, 0, 0, 6);

    add_prelude(&b, 0, 0, 0);
    add(&b, log.b, log.n);
    put("segment", "one-log", b.b, b.n);
    add_prelude(&b, 1, 0, 3);
    add(&b, log.b, log.n);
    put("segment", "seek-offset", b.b, b.n);
    add_prelude(&b, 2, 0, 1700000000000002500ULL);
    add(&b, log.b, log.n);
    put("segment", "seek-time", b.b, b.n);
    add_prelude(&b, 3, 0, 4);
    add(&b, log.b, log.n);
    put("segment", "end-offset", b.b, b.n);

    /* Torn tail, a flipped bit in record 2, a bogus 60 MiB length. */
    add_prelude(&b, 0, 0, 0);
    add(&b, log.b, log.n - 5);
    put("segment", "torn-tail", b.b, b.n);
    add_prelude(&b, 0, 0, 0);
    add(&b, log.b, log.n);
    b.b[9 + PB_FILE_HEADER_SIZE + 2 * 33 + 30] ^= 0x10;
    put("segment", "bit-flip", b.b, b.n);
    add_prelude(&b, 0, 0, 0);
    add(&b, log.b, log.n);
    size_t at = 9 + PB_FILE_HEADER_SIZE + 33 + 4;
    b.b[at] = 0;
    b.b[at + 1] = 0;
    b.b[at + 2] = 0xc0;
    b.b[at + 3] = 0x03;
    put("segment", "bogus-length", b.b, b.n);
    add_prelude(&b, 0, 0, 0);
    add(&b, log.b, log.n);
    b.b[9 + 3] ^= 1; /* damaged magic */
    put("segment", "bad-header", b.b, b.n);

    /* Two segments and an index; then a gap between segments. */
    static buf log2;
    log.n = 0;
    add_log(&log, 0, 0, 4);
    log2.n = 0;
    add_log(&log2, 4, 4, 3);
    idx.n = 0;
    uint8_t ih[PB_FILE_HEADER_SIZE];
    file_header_encode(ih, PB_IDX_MAGIC, 0, 1700000000000000000LL);
    add(&idx, ih, sizeof ih);
    segment_index_entry ent = {
        .offset = 2, .position = PB_FILE_HEADER_SIZE + 2 * 33, .time_ns = 1700000000000002000LL};
    uint8_t raw[PB_INDEX_ENTRY_SIZE];
    segment_index_entry_encode(raw, &ent);
    add(&idx, raw, sizeof raw);
    for (int op = 0; op < 4; op++) {
        static const uint64_t params[4] = {0, 2, 1700000000000001500ULL, 5};
        add_prelude(&b, op, 1, params[op]);
        add_file(&b, 0, 0, &log);
        add_file(&b, 1, 0, &idx);
        add_file(&b, 0, 4, &log2);
        char name[32];
        snprintf(name, sizeof name, "two-segments-op%d", op);
        put("segment", name, b.b, b.n);
    }
    log2.n = 0;
    add_log(&log2, 10, 10, 2);
    add_prelude(&b, 0, 1, 0);
    add_file(&b, 0, 0, &log);
    add_file(&b, 0, 10, &log2);
    put("segment", "gap-between-segments", b.b, b.n);
    /* Records whose offsets do not match the file name. */
    log2.n = 0;
    add_log(&log2, 7, 9, 2);
    add_prelude(&b, 0, 1, 0);
    add_file(&b, 0, 0, &log);
    add_file(&b, 0, 7, &log2);
    put("segment", "offsets-missing-in-segment", b.b, b.n);
    /* Compressed segments: whole; a block that fails its CRC; and a bad
     * block whose index entry (CRCs right) names offsets that do not
     * follow the ones before it (the reader must not trust them further
     * than the offsets it has already passed). */
    static buf z;
    static const int per[3] = {2, 2, 2};
    log.n = 0;
    add_log(&log, 0, 0, 6);
    add_zlog(&z, &log, per, 3, NULL, 0, -1);
    add_prelude(&b, 0, 0, 0);
    add(&b, z.b, z.n);
    put("segment", "compressed", b.b, b.n);
    add_prelude(&b, 1, 0, 3);
    add(&b, z.b, z.n);
    put("segment", "compressed-seek-offset", b.b, b.n);
    add_zlog(&z, &log, per, 3, NULL, 0, 1);
    add_prelude(&b, 0, 0, 0);
    add(&b, z.b, z.n);
    put("segment", "compressed-bad-block", b.b, b.n);
    static const uint64_t backwards[3][2] = {{0, 1}, {3, 0}, {4, 5}};
    add_zlog(&z, &log, per, 3, backwards, 0, 1);
    add_prelude(&b, 0, 0, 0);
    add(&b, z.b, z.n);
    put("segment", "compressed-bad-block-index-offsets-backwards", b.b, b.n);
    static const uint64_t behind[3][2] = {{0, 5}, {0, 1}, {4, 5}};
    add_zlog(&z, &log, per, 3, behind, 0, 1);
    add_prelude(&b, 0, 0, 0);
    add(&b, z.b, z.n);
    put("segment", "compressed-bad-block-index-offsets-behind", b.b, b.n);
}

/* ---- config files ---- */

static void config_seed(const char *name, const char *text)
{
    put("config", name, text, strlen(text));
}

static void config_seeds(void)
{
    config_seed("minimal", "[partition events]\nmatch = .*\n");
    config_seed("full", "[server]\n"
                        "listen = [::1]:7421\n"
                        "data_dir = /var/lib/protobus\n"
                        "fsync = interval               # comment\n"
                        "fsync_interval_ms = 50\n"
                        "threads = 32\n"
                        "max_event_bytes = 256K\n"
                        "max_frame_bytes = 4M\n"
                        "subscriber_queue_bytes = 8M\n"
                        "max_connections = 2000\n"
                        "write_deadline_ms = 500\n"
                        "idle_timeout_ms = 1000\n"
                        "route_cache_entries = 4096\n"
                        "log_level = warn\n"
                        "\n"
                        "; payments\n"
                        "[partition payments]\n"
                        "match = payments\\.(eu|us)\\.[a-z_]+\n"
                        "segment_bytes = 16M\n"
                        "rotate_every = none\n"
                        "[partition orders]\n"
                        "match = orders\\..*\n"
                        "segment_bytes = 256M\n"
                        "rotate_every = 1d\n"
                        "utc_offset = +02:00\n"
                        "[partition sensors-$1-$0]\n"
                        "match = sensors\\.([a-z0-9]+)\\..*\n"
                        "rotate_every = 1h\n"
                        "[partition misc]\n"
                        "match = .*\n");
    config_seed("fsync-never", "[server]\nfsync = never\nlisten = 127.0.0.1:0\n"
                               "[partition a]\nmatch = a\n[partition b]\nmatch = (?i)B+\n");
    config_seed("bad-regex", "[partition events]\nmatch = (abc\n");
    config_seed("bad-group-ref", "[partition p-$2]\nmatch = (a)\n");
    config_seed("no-rules", "[server]\nthreads = 4\n");
    config_seed("bad-size", "[server]\nmax_event_bytes = 12Q\n[partition e]\nmatch = .*\n");
    config_seed("frame-too-small", "[server]\nmax_event_bytes = 1M\nmax_frame_bytes = 1M\n"
                                   "[partition e]\nmatch = .*\n");
    config_seed("duplicate-key", "[server]\nthreads = 1\nthreads = 2\n[partition e]\nmatch = .*\n");
    config_seed("unknown-key", "[server]\nthredas = 1\n[partition e]\nmatch = .*\n");
    config_seed("bad-section", "[servre]\n[partition e]\nmatch = .*\n");
    config_seed("indented", "[partition e]\n  match = .*\n");
    config_seed("bad-utc", "[partition e]\nmatch = .*\nutc_offset = +24:00\nrotate_every = 25h\n");
    config_seed("value-size", "16M\n");
    config_seed("value-duration", "30m\n");
    config_seed("value-utc", "-05:30\n");
}

int main(int argc, char **argv)
{
    outdir = argc > 1 ? argv[1] : "tests/fuzz/corpus";
    const char *targets[] = {"frame", "segment", "config"};
    for (size_t i = 0; i < 3; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", outdir, targets[i]);
        if (mkdir(path, 0755) < 0 && errno != EEXIST) {
            fprintf(stderr, "seeds: mkdir %s: %s\n", path, strerror(errno));
            return 1;
        }
    }
    frame_seeds();
    segment_seeds();
    config_seeds();
    return failures ? 1 : 0;
}
