"""The client against a scripted peer speaking protocol v1 (FORMAT.md, "Connection").

These frames are what CONTRACT.md says a v1 server sends, in the order it
sends them, including what the daemon cannot be made to send on demand
(OUT_OF_RANGE notices, a Ping from the server, acks out of order, a broken
peer). Frames are built with protobus_pb2 (or byte by byte, for a frame type
it does not know), never with the client's own encoders.
"""

import socket
import threading
import time

import pytest

import protobus
from protobus import protobus_pb2 as pb


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def delimited(frame_bytes):
    return varint(len(frame_bytes)) + frame_bytes


def frame(fid, **body):
    return delimited(pb.Frame(id=fid, **body).SerializeToString())


def raw_frame(fid, field, body):
    """A Frame with body field `field` holding `body` (a frame type pb lacks)."""
    inner = b"\x08" + varint(fid) + varint(field << 3 | 2) + varint(len(body)) + body
    return delimited(inner)


def subscribed(fid, positions):
    return frame(fid, subscribed=pb.Subscribed(partitions=[
        pb.PartitionPosition(partition=name, first_offset=first, start_offset=start,
                             end_offset=end)
        for name, (first, start, end) in positions.items()]))


def caught_up(fid, n):
    return frame(fid, caught_up=pb.CaughtUp(history_events=n))


def event(fid, partition, offset, topic, payload):
    f = pb.Frame(id=fid)
    f.event.partition = partition
    f.event.offset = offset
    f.event.event.topic = topic
    f.event.event.payload.value = payload
    f.event.event.server_receive_time.seconds = 1700000000
    return delimited(f.SerializeToString())


def error(fid, code, message, **kw):
    return frame(fid, error=pb.Error(code=code, message=message, **kw))


class Wire:
    """One accepted connection, seen from the scripted server."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def read(self):
        """The next Frame (pb), or None at end of stream."""
        while True:
            try:
                n, pos = 0, 0
                shift = 0
                while True:
                    b = self.buf[pos]
                    pos += 1
                    n |= (b & 0x7F) << shift
                    shift += 7
                    if b < 0x80:
                        break
                if pos + n <= len(self.buf):
                    f = pb.Frame.FromString(self.buf[pos:pos + n])
                    self.buf = self.buf[pos + n:]
                    return f
            except IndexError:
                pass
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk

    def send(self, data):
        self.sock.sendall(data)

    def hello(self):
        f = self.read()
        assert f.WhichOneof("body") == "hello" and f.hello.protocol_version == 1
        self.send(frame(f.id, hello=pb.Hello(protocol_version=1, name="scripted 1.0",
                                              max_frame_bytes=1 << 20,
                                              max_event_bytes=1 << 16)))
        return f

    def until_closed(self):
        while self.read() is not None:
            pass


class Peer:
    """A server on 127.0.0.1 running scripts[i] on the i-th connection."""

    def __init__(self, *scripts):
        self.scripts = list(scripts)
        self.errors = []
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(8)
        self.address = "127.0.0.1:%d" % self.ls.getsockname()[1]
        self.threads = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        for script in self.scripts:
            try:
                s, _ = self.ls.accept()
            except OSError:
                return
            t = threading.Thread(target=self._run, args=(script, s), daemon=True)
            t.start()
            self.threads.append(t)

    def _run(self, script, s):
        try:
            script(Wire(s))
        except Exception as e:  # reported by close()
            self.errors.append(e)
        finally:
            s.close()

    def close(self):
        self.ls.close()
        self.acceptor.join(10)
        for t in self.threads:
            t.join(10)
        assert not self.errors, self.errors


def idle_publisher(w):
    w.hello()
    w.until_closed()


def test_subscription_stream():
    seen = []

    def sub(w):
        w.hello()
        f = w.read()
        assert f.WhichOneof("body") == "subscribe"
        assert list(f.subscribe.patterns) == ["x.*"] and f.subscribe.start == pb.START_BEGINNING
        i = f.id
        w.send(subscribed(i, {"a": (10, 10, 30), "b": (0, 0, 1)}))
        w.send(event(i, "a", 20, "x.1", b"h1") + event(i, "a", 21, "x.1", b"h2"))
        w.send(error(i, pb.OUT_OF_RANGE, "offsets 22..24 of partition a were removed by "
                     "retention", partition="a", first_offset=22, last_offset=24))
        w.send(event(i, "b", 0, "x.2", b"h3") + caught_up(i, 3) + event(i, "a", 30, "x.1",
                                                                          b"live"))
        w.send(delimited(b"\x08" + varint(i) + b"\x6a\x00"))  # field 13: a newer frame type
        w.send(frame(77, ping=pb.Ping()))
        pong = w.read()
        assert pong.id == 77
        w.send(event(i, "a", 31, "x.1", b"live2"))

    peer = Peer(idle_publisher, sub)
    try:
        with protobus.Client(peer.address, timeout=10) as c:
            assert c.server.name == "scripted 1.0" and c.server.max_event_bytes == 1 << 16
            s = c.subscribe("x.*", start="beginning",
                            on_caught_up=lambda s: seen.append(("caught up", s.history_events)))
            assert s.positions == {"a": protobus.Position(10, 10, 30),
                                   "b": protobus.Position(0, 0, 1)}
            got = []
            with pytest.raises(protobus.OutOfRangeError) as ei:
                for ev in s:
                    got.append(ev.payload)
            assert (ei.value.partition, ei.value.first_offset, ei.value.last_offset) == \
                ("a", 22, 24)
            assert "retention" in ei.value.message and ei.value.code == "OUT_OF_RANGE"
            assert not s.caught_up
            with pytest.raises(protobus.ConnectionLostError, match="closed"):
                for ev in s:
                    got.append(ev.payload)
                    seen.append(ev.payload)
            assert got == [b"h1", b"h2", b"h3", b"live", b"live2"]
            assert seen == [b"h3", ("caught up", 3), b"live", b"live2"]
            assert s.caught_up and s.history_events == 3
    finally:
        peer.close()


def test_until_caught_up_and_notice_callback():
    def sub(w):
        w.hello()
        i = w.read().id
        w.send(subscribed(i, {"a": (0, 0, 2)}) + event(i, "a", 0, "t", b"0"))
        w.send(error(i, pb.DATA_LOSS, "damaged", partition="a", first_offset=1, last_offset=1))
        w.send(caught_up(i, 1) + event(i, "a", 2, "t", b"2"))
        w.until_closed()

    peer = Peer(idle_publisher, sub)
    try:
        with protobus.Client(peer.address, timeout=10) as c:
            notices = []
            s = c.subscribe("t", start="beginning", until_caught_up=True,
                            on_notice=notices.append, timeout=10)
            assert [e.payload for e in s] == [b"0"]
            assert s.caught_up and not s.timed_out
            assert [(n.code, n.first_offset) for n in notices] == [("DATA_LOSS", 1)]
            s.until_caught_up = False
            assert next(iter(s)).payload == b"2"
    finally:
        peer.close()


def test_error_ends_the_subscription():
    def sub(w):
        w.hello()
        i = w.read().id
        w.send(subscribed(i, {}) + caught_up(i, 0))
        w.send(error(i, pb.RESOURCE_EXHAUSTED, "subscriber too slow (write_deadline_ms)"))
        w.until_closed()

    peer = Peer(idle_publisher, sub)
    try:
        with protobus.Client(peer.address, timeout=10) as c:
            s = c.subscribe("t")
            with pytest.raises(protobus.ResourceExhaustedError, match="too slow"):
                list(s)
            assert s.closed
            with pytest.raises(protobus.ResourceExhaustedError):
                list(s)
    finally:
        peer.close()


def test_event_before_subscribed_is_a_protocol_error():
    def sub(w):
        w.hello()
        i = w.read().id
        w.send(event(i, "a", 0, "t", b"0"))
        w.until_closed()

    peer = Peer(idle_publisher, sub)
    try:
        with protobus.Client(peer.address, timeout=10) as c:
            with pytest.raises(protobus.ProtocolError, match="before Subscribed"):
                c.subscribe("t")
    finally:
        peer.close()


def test_refused_hello():
    def refuse(w):
        f = w.read()
        w.send(error(f.id, pb.FAILED_PRECONDITION,
                     "protocol version 1 is not supported; this server speaks 2"))

    peer = Peer(refuse)
    try:
        with pytest.raises(protobus.FailedPreconditionError, match="speaks 2") as ei:
            protobus.Client(peer.address, timeout=10)
        assert ei.value.code == "FAILED_PRECONDITION" and ei.value.code_number == 9
    finally:
        peer.close()


def test_malformed_reply_is_a_protocol_error():
    def garbage(w):
        f = w.read()
        w.send(delimited(b"\x08" + varint(f.id) + b"\x12\x05\x08"))  # Hello cut short

    peer = Peer(garbage)
    try:
        with pytest.raises(protobus.ProtocolError, match="malformed"):
            protobus.Client(peer.address, timeout=10)
    finally:
        peer.close()


def test_acks_are_matched_by_id_and_pings_answered():
    # A v1 server acks in request order; the client matches acks by id and
    # does not depend on it. The peer answers each window of Publishes in
    # reverse order and sends a Ping first; publish_many still returns
    # positions in input order.
    def publisher(w):
        w.hello()
        next_offset = 0
        while True:
            batch = []
            while len(batch) < 3:
                f = w.read()
                if f is None:
                    break
                if f.WhichOneof("body") == "pong":
                    assert f.id == 500
                    continue
                batch.append(f)
            if not batch:
                return
            w.send(frame(500, ping=pb.Ping()))
            offsets = {}
            for f in batch:
                offsets[f.id] = list(range(next_offset, next_offset + len(f.publish.events)))
                next_offset += len(f.publish.events)
            for f in reversed(batch):
                w.send(frame(f.id, publish_ack=pb.PublishAck(
                    partitions=["p"], partition_index=[0] * len(offsets[f.id]),
                    offsets=offsets[f.id])))

    peer = Peer(publisher)
    try:
        with protobus.Client(peer.address, timeout=10, batch_events=2, window=3) as c:
            assert c.publish_many(("t", b"%d" % i) for i in range(12)) == \
                [("p", i) for i in range(12)]
    finally:
        peer.close()


def test_close_from_another_thread_ends_a_blocked_publish():
    def silent(w):  # takes the Publish, never answers it
        w.hello()
        w.until_closed()

    peer = Peer(silent)
    try:
        c = protobus.Client(peer.address, timeout=30)
        threading.Timer(0.2, c.close).start()
        with pytest.raises(protobus.ConnectionLostError) as ei:
            c.publish("t", b"x")
        assert ei.value.acks == [None]
        with pytest.raises(protobus.ConnectionLostError, match="closed"):
            c.publish("t", b"y")
    finally:
        peer.close()


def test_a_connection_the_server_closed_while_idle_is_replaced():
    closed = threading.Event()

    def closes_when_idle(w):
        w.hello()
        w.send(error(0, pb.DEADLINE_EXCEEDED, "idle for 100 ms (idle_timeout_ms)"))
        closed.set()

    def acks(w):
        w.hello()
        f = w.read()
        w.send(frame(f.id, publish_ack=pb.PublishAck(partitions=["p"], partition_index=[0],
                                                     offsets=[7])))
        w.until_closed()

    peer = Peer(closes_when_idle, acks)
    try:
        with protobus.Client(peer.address, timeout=10) as c:
            assert closed.wait(10)
            time.sleep(0.1)
            assert c.publish("t", b"x") == ("p", 7)
    finally:
        peer.close()


def test_batches_stay_within_the_announced_max_batch_events():
    sizes = []

    def publisher(w):
        f = w.read()
        w.send(frame(f.id, hello=pb.Hello(protocol_version=1, name="scripted",
                                          max_frame_bytes=1 << 20, max_event_bytes=1 << 16,
                                          limits=pb.Limits(max_batch_events=3))))
        while True:
            f = w.read()
            if f is None:
                return
            n = len(f.publish.events)
            sizes.append(n)
            w.send(frame(f.id, publish_ack=pb.PublishAck(partitions=["p"],
                                                         partition_index=[0] * n,
                                                         offsets=list(range(n)))))

    peer = Peer(publisher)
    try:
        with protobus.Client(peer.address, timeout=10) as c:
            assert c.server.limits == {"max_batch_events": 3}
            assert len(c.publish_many(("t", b"x") for _ in range(10))) == 10
        assert sizes == [3, 3, 3, 1]
    finally:
        peer.close()


def test_a_second_caught_up_is_a_protocol_error():
    def sub(w):
        w.hello()
        i = w.read().id
        w.send(subscribed(i, {"a": (0, 0, 0)}) + caught_up(i, 0) + event(i, "a", 0, "t", b"0")
               + caught_up(i, 1))
        w.until_closed()

    peer = Peer(idle_publisher, sub)
    try:
        with protobus.Client(peer.address, timeout=10) as c:
            s = c.subscribe("t", timeout=10)
            got = []
            with pytest.raises(protobus.ProtocolError, match="second CaughtUp"):
                for ev in s:
                    got.append(ev.payload)
            assert got == [b"0"] and s.closed
    finally:
        peer.close()
