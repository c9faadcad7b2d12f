"""The hand codecs against Google's protobuf (no daemon).

Every frame the client builds by hand must read back through protobus_pb2
as the same message, and every event the client decodes by hand must give
what protobus_pb2 gives for the same bytes, including the corner cases of
protobuf's merge rules that FORMAT.md 1 and 5.1 spell out.
"""

import random

import pytest

from protobus import client as client_mod
from protobus import protobus_pb2 as pb
from protobus import subscription, wire
from protobus.event import Event


def test_varint_round_trip():
    for n in [0, 1, 127, 128, 300, 16383, 16384, 2**21, 2**35, 2**63, 2**64 - 1]:
        enc = wire.varint(n)
        msg = pb.PublishAck(offsets=[n]).SerializeToString()
        assert msg == b"\x1a" + wire.varint(len(enc)) + enc  # packed: same bytes as protobuf
        assert wire.read_varint(enc, 0) == (n, len(enc))
    assert wire.varint(-1) == b"\xff" * 9 + b"\x01"
    with pytest.raises(wire.WireError):
        wire.read_varint(b"\xff" * 10 + b"\x01", 0)
    with pytest.raises(wire.WireError):
        wire.read_varint(b"\xff" * 9 + b"\x7f", 0)  # 70 bits
    with pytest.raises(IndexError):
        wire.read_varint(b"\x80\x80", 0)


def test_format_md_examples():
    # FORMAT.md 3: a client Hello, id 1, protocol_version 1, name "cli".
    hello = pb.Hello(protocol_version=1, name="cli").SerializeToString()
    assert wire.frame(1, wire.HELLO, hello) == bytes.fromhex("0b 08 01 12 07 08 01 12 03 63 6c 69")
    # FORMAT.md 4.3: id 7, two events in "sensors" at 41 and 42.
    ack = bytes.fromhex("15 08 07 22 11 0a 07 73 65 6e 73 6f 72 73 12 02 00 00 1a 02 29 2a")
    fid, body, s, e = wire.split_frame(ack, 1, len(ack))
    assert (fid, body) == (7, wire.PUBLISH_ACK)
    assert wire.decode_publish_ack(ack, s, e) == (["sensors"], [0, 0], [41, 42], [])
    # FORMAT.md 4.5: the 18 header bytes of an Event frame.
    ev = bytes.fromhex("0a 03 61 2e 62 12 06 0a 01 6b 12 01 76 1a 08 08 80 e2 cf aa 06 10 05"
                       " 30 02 3a 09 0a 03 74 2f 78 12 02 ca fe")
    frame = bytes.fromhex("35 08 03 32 31 0a 07 73 65 6e 73 6f 72 73 10 2a 1a 24") + ev
    assert frame == event_frame_pb(3, "sensors", 42, ev)
    (got,) = decode_frames(frame, sid=3)
    assert (got.partition, got.offset, got.topic, got.tags) == ("sensors", 42, "a.b", {"k": "v"})
    assert (got.payload_type, got.payload, got.payload_size) == ("t/x", b"\xca\xfe", 2)
    assert got.client_event_time_ns == 1700000000 * 10**9 + 5


def test_publish_frame_reads_back_through_protobuf():
    enc = client_mod._Encoder()
    items = [
        ("orders.eu", b"x" * 100),
        ("orders.eu", b""),
        client_mod.Message("t", "héllo", {"k": "v", "": ""}, "type/x", -1),
        client_mod.Message("t", b"p" * 300, None, None, 1700000000123456789),
        ("t", pb.PartitionOffset(partition="p", offset=3)),
    ]
    evs = [enc.event(i) for i in items]
    sent = []

    class FakeConn:
        closed = False

        def next_id(self):
            return 99

        def send(self, data):
            sent.append(data)

    p = client_mod._Publishing.__new__(client_mod._Publishing)
    p.__init__(type("C", (), {"window": 100})(), FakeConn())
    p._send(evs)
    (data,) = sent
    n, pos = wire.read_varint(data, 0)
    assert pos + n == len(data)
    f = pb.Frame.FromString(data[pos:])
    assert f.id == 99 and f.WhichOneof("body") == "publish"
    got = f.publish.events
    assert len(got) == len(items)
    assert got[0].topic == "orders.eu" and got[0].payload.value == b"x" * 100
    assert got[0].payload_size == 100 and not got[0].HasField("client_event_time")
    assert not got[1].HasField("payload") and got[1].payload_size == 0
    assert dict(got[2].tags) == {"k": "v", "": ""}
    assert got[2].payload.type_url == "type/x" and got[2].payload.value == "héllo".encode()
    assert (got[2].client_event_time.seconds, got[2].client_event_time.nanos) == (-1, 999999999)
    assert got[3].client_event_time.ToNanoseconds() == 1700000000123456789
    assert got[4].payload.type_url == "type.googleapis.com/protobus.PartitionOffset"
    for g in got:
        assert g.HasField("client_transmit_time")


class _Conn:
    """A connection whose bytes are all there: fill() finds nothing more."""

    def __init__(self, data):
        self.buf = data
        self.pos = 0
        self.address = "test"
        self.closed = False
        self.sent = []

    def close(self):
        self.closed = True

    def send(self, data):
        self.sent.append(data)

    def fill(self, timeout, what):
        return False


def subscription_over(data, sid, **attrs):
    """A Subscription (id sid) reading data, without a socket or a server."""
    s = subscription.Subscription.__new__(subscription.Subscription)
    s.__dict__.update(timeout=None, until_caught_up=False, on_caught_up=None, on_notice=None,
                      positions=None, caught_up=False, history_events=None, timed_out=False,
                      closed=False, _error=None, _gen=None, _partitions={}, _conn=_Conn(data))
    s.__dict__.update(attrs)
    s._set_id(sid)
    return s


def decode_frames(data, sid):
    s = subscription_over(data, sid)
    events = list(s)
    assert s.timed_out and s._conn.pos == len(data), "a whole frame was left undecoded"
    return events


def event_frame_pb(fid, partition, offset, event_bytes):
    """An Event frame as protobuf writes it (the daemon writes the same bytes)."""
    f = pb.Frame(id=fid)
    f.event.partition = partition
    f.event.offset = offset
    f.event.event.MergeFromString(event_bytes)
    body = f.SerializeToString()
    return wire.varint(len(body)) + body


def random_event(rng):
    e = pb.EncapsulatedEvent(topic="".join(rng.choice("abc.é")
                                           for _ in range(rng.randrange(1, 40))))
    for _ in range(rng.randrange(0, 4)):
        e.tags["k%d" % rng.randrange(10)] = "v" * rng.randrange(0, 200)
    for field in ("client_event_time", "client_transmit_time", "server_receive_time"):
        if rng.random() < 0.7:
            t = getattr(e, field)
            t.seconds = rng.choice([0, -1, 1700000000, -10**10, 2**33])
            t.nanos = rng.choice([0, 1, 999999999, 123456789])
    if rng.random() < 0.9:
        size = rng.choice([0, 1, 127, 128, 1000])
        e.payload.value = bytes(rng.randrange(256) for _ in range(size))
        if rng.random() < 0.5:
            e.payload.type_url = "type/" + "x" * rng.randrange(0, 200)
        e.payload_size = rng.choice([len(e.payload.value), -5, 2**40])
    return e


def check_same(ev, p):
    assert ev.topic == p.topic
    assert ev.tags == dict(p.tags)
    assert ev.payload == p.payload.value and ev.payload_type == p.payload.type_url
    assert ev.payload_size == p.payload_size
    for field in ("client_event_time", "client_transmit_time", "server_receive_time"):
        ns = getattr(ev, field + "_ns")
        if p.HasField(field):
            t = getattr(p, field)
            assert ns == t.seconds * 10**9 + t.nanos
            assert getattr(ev, field).tzinfo is not None
        else:
            assert ns is None and getattr(ev, field) is None


def test_event_frames_decode_like_protobuf():
    rng = random.Random(12)
    frames = []
    expect = []
    for i in range(400):
        e = random_event(rng)
        raw = e.SerializeToString()
        part = rng.choice(["p", "", "q" * 100, "r" * 200])  # 200: past the fast path
        offset = rng.choice([0, 1, 127, 128, 16383, 16384, 2**40, 2**64 - 1])
        frames.append(event_frame_pb(5, part, offset, raw))
        expect.append((part, offset, e))
    got = decode_frames(b"".join(frames), sid=5)
    assert len(got) == len(expect)
    for ev, (part, offset, e) in zip(got, expect):
        assert (ev.partition, ev.offset) == (part, offset)
        check_same(ev, e)


def test_merge_rules_of_repeated_fields():
    # FORMAT.md 1 and 5.1: the last topic wins; Timestamps and payloads merge
    # field by field; tag entries with one key: the last wins; unknown fields
    # are skipped. Build the bytes by concatenation, read them with protobuf.
    parts = [
        pb.EncapsulatedEvent(topic="first").SerializeToString(),
        pb.EncapsulatedEvent(tags={"k": "1", "j": "x"}).SerializeToString(),
        b"\x1a\x06\x08\x80\xe2\xcf\xaa\x06",  # client_event_time: seconds only
        b"\x1a\x02\x10\x07",  # then nanos only: merged
        pb.EncapsulatedEvent(topic="second", tags={"k": "2"}).SerializeToString(),
        b"\x3a\x05\x0a\x03t/x",  # payload type only
        b"\x3a\x04\x12\x02hi",  # then value only: merged
        b"\xa0\x06\x05",  # unknown field 100, varint
        b"\xaa\x06\x02zz",  # unknown field 101, bytes
        b"\x2a\x04\x08\x01\x10\x02",  # server_receive_time as the daemon appends it
    ]
    raw = b"".join(parts)
    p = pb.EncapsulatedEvent.FromString(raw)
    ev = Event("p", 1, raw)
    check_same(ev, p)
    assert ev.topic == "second" and ev.tags == {"k": "2", "j": "x"}
    assert ev.client_event_time_ns == 1700000000 * 10**9 + 7
    assert (ev.payload_type, ev.payload) == ("t/x", b"hi")


def test_malformed_event_raises_protocol_error():
    import protobus
    for raw in [b"\x0a\x05ab", b"\x0a\x02\xff\xfe", b"\x08\x01", b"\x1f", b"\x3a\x02\x12\x05"]:
        ev = Event("p", 3, raw)
        with pytest.raises(protobus.ProtocolError, match="offset 3"):
            ev.topic


def test_control_frames_and_unknown_frames():
    def frame(fid, field, body):
        return wire.frame(fid, field, body)

    subscribed = b"\x0a\x09\x0a\x01a\x10\x02\x18\x05\x20\x09" + b"\x0a\x03\x0a\x01b"
    ev = pb.EncapsulatedEvent(topic="t").SerializeToString()
    data = (frame(4, wire.SUBSCRIBED, subscribed) + event_frame_pb(4, "a", 5, ev)
            + frame(4, wire.CAUGHT_UP, b"\x08\x01")
            + frame(4, 13, b"") + frame(4, wire.PONG, b"")
            + frame(9, wire.PING, b"")
            + frame(4, wire.ERROR, pb.Error(code=11, message="gone", partition="a",
                                             first_offset=1, last_offset=2).SerializeToString())
            + event_frame_pb(4, "b", 0, ev))
    notices = []
    marks = []
    s = subscription_over(data, 4, on_notice=notices.append,
                          on_caught_up=lambda s: marks.append(s.history_events))
    got = []
    for e in s:
        got.append((e.partition, e.offset, s.caught_up))
    assert got == [("a", 5, False), ("b", 0, True)]
    assert s.positions == {"a": (2, 5, 9), "b": (0, 0, 0)}
    assert marks == [1] and s.history_events == 1
    assert [(n.code, n.partition, n.first_offset, n.last_offset) for n in notices] == \
        [("OUT_OF_RANGE", "a", 1, 2)]
    assert s._conn.sent == [frame(9, wire.PONG, b"")]  # a Ping is answered


def test_malformed_frames_are_protocol_errors():
    import protobus
    for data in [
        wire.frame(4, wire.EVENT, b"\x0a\x01p"),  # no event field
        wire.varint(4) + b"\x08\x04\x30\x00\x00"[:4],  # field 6 not length-delimited
        wire.frame(4, wire.EVENT, b"\x1a\x00\x1a\x00"),  # event twice
        wire.frame(5, wire.EVENT, b"\x1a\x00"),  # another subscription's id
        wire.frame(4, wire.PUBLISH_ACK, b""),  # not a subscription frame
    ]:
        with pytest.raises(protobus.ProtocolError):
            decode_frames(data, sid=4)


def test_publish_ack_forms():
    # Unpacked numbers, a mix, several partitions, duplicates (field 4).
    body = (b"\x0a\x01a\x0a\x01b" + b"\x10\x01" + b"\x12\x01\x00" + b"\x18\x07"
            + b"\x1a\x01\x05" + b"\x22\x01\x01")
    assert wire.decode_publish_ack(body, 0, len(body)) == (["a", "b"], [1, 0], [7, 5], [1])
    for bad in [b"\x10\x00", b"\x0a\x01a\x10\x01\x18\x01", b"\x0a\x01a\x10\x00"]:
        with pytest.raises(wire.WireError):
            wire.decode_publish_ack(bad, 0, len(bad))


class _AckingConn:
    """A connection that acks every Publish it is sent, read back through protobuf."""

    closed = False
    address = "test"

    def __init__(self):
        self.server = type("S", (), {"max_event_bytes": 1 << 20, "max_frame_bytes": 16 << 20,
                                     "limits": {}})()
        self.frames = []
        self.replies = []
        self.next = 1
        self.buf = b""

    def next_id(self):
        self.next += 1
        return self.next - 1

    def send(self, data):
        n, pos = wire.read_varint(data, 0)
        assert pos + n == len(data)
        f = pb.Frame.FromString(data[pos:])
        self.frames.append(f)
        ack = pb.Frame(id=f.id)
        ack.publish_ack.partitions.append("p")
        for i in range(len(f.publish.events)):
            ack.publish_ack.partition_index.append(0)
            ack.publish_ack.offsets.append(1000 * f.id + i)
        self.replies.append(ack.SerializeToString())

    def read_frame(self, what):
        self.buf = self.replies.pop(0)
        return wire.split_frame(self.buf, 0, len(self.buf))


def test_publish_many_batches_read_back_through_protobuf():
    # run()'s inline path for (str, bytes) pairs and the general path, in
    # batches cut by count and by bytes.
    items = [("t%d" % (i % 3), b"%d" % i * (i % 40)) for i in range(50)]
    items[7] = ("t", "str payload")
    items[8] = client_mod.Message("t", b"m", {"a": "b"})
    conn = _AckingConn()
    fake_client = type("C", (), {"_enc": client_mod._Encoder(), "batch_events": 8,
                                 "batch_bytes": 400, "window": 3})()
    acks = client_mod._Publishing(fake_client, conn).run(iter(items))
    sent = [e for f in conn.frames for e in f.publish.events]
    assert len(sent) == len(items)
    for (topic, payload, *rest), e in zip(items, sent):
        assert e.topic == topic
        assert e.payload.value == (payload.encode() if isinstance(payload, str) else payload)
        assert e.payload_size == len(e.payload.value)
        assert e.HasField("client_transmit_time") and not e.HasField("client_event_time")
        assert not e.payload.type_url
    assert dict(sent[8].tags) == {"a": "b"}
    assert all(len(f.publish.events) <= 8 for f in conn.frames)
    assert all(len(f.SerializeToString()) <= 400 + 64 for f in conn.frames)
    assert acks == [("p", 1000 * f.id + i) for f in conn.frames
                    for i in range(len(f.publish.events))]
