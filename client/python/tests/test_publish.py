"""Publishing against a real protobusd: acks, batches, errors, connections."""

import socket
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

import protobus

TWO_PARTITIONS = r"""
[partition orders]
match = orders\..*
[partition sensors]
match = sensors\..*
"""


def test_hello_tells_the_server_name_and_limits(client):
    info = client.server
    assert info.name.startswith("protobusd ")
    assert info.protocol_version == 1
    assert info.max_event_bytes == 1 << 20
    assert info.max_frame_bytes == 16 << 20


def test_publish_returns_partition_and_offset(client):
    assert client.publish("orders.eu", b'{"id": 42}', tags={"site": "eu"}) == ("events", 0)
    assert client.publish("orders.eu", b"second") == ("events", 1)
    assert client.publish("orders.us", b"") == ("events", 2)


def test_publish_many_acks_every_event_in_input_order(client):
    acks = client.publish_many(("orders.eu", b"x" * 100) for _ in range(10000))
    assert acks == [("events", i) for i in range(10000)]
    more = client.publish_many([("orders.eu", b"y")])
    assert more == [("events", 10000)]


def test_publish_many_small_batches_pipelined(daemon):
    # Many batches in flight at once: results still come back in input order.
    with protobus.Client(daemon.address, batch_events=7, window=3) as c:
        acks = c.publish_many(("t.%d" % (i % 5), b"%d" % i) for i in range(1000))
    assert acks == [("events", i) for i in range(1000)]


def test_publish_many_batches_split_by_bytes(daemon):
    with protobus.Client(daemon.address, batch_bytes=10000) as c:
        acks = c.publish_many(("big", b"z" * 3000) for _ in range(50))
    assert acks == [("events", i) for i in range(50)]


def test_publish_many_over_partitions(make_daemon):
    d = make_daemon(TWO_PARTITIONS)
    with protobus.Client(d.address, batch_events=50) as c:
        topics = ["orders.eu" if i % 3 else "sensors.t%d" % (i % 7) for i in range(1000)]
        acks = c.publish_many((t, b"%d" % i) for i, t in enumerate(topics))
        assert len(acks) == 1000
        next_offset = {"orders": 0, "sensors": 0}
        for t, (part, off) in zip(topics, acks):
            assert part == t.split(".")[0]
            assert off == next_offset[part]
            next_offset[part] += 1
        # What the acks say is where the events are.
        got = {}
        for ev in c.subscribe([".*"], start="beginning", until_caught_up=True, timeout=10):
            got[(ev.partition, ev.offset)] = (ev.topic, ev.payload)
            if len(got) == 1000:
                break
    assert got == {a: (t, b"%d" % i) for i, (t, a) in enumerate(zip(topics, acks))}


def test_publish_many_empty(client):
    assert client.publish_many([]) == []
    assert client.publish_many(iter(())) == []


def test_payload_kinds_and_event_fields(client):
    from protobus import protobus_pb2 as pb
    when = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    msg = pb.PartitionOffset(partition="p", offset=7)  # any protobuf message will do
    events = [
        protobus.Message("a.text", "héllo", {"k": "v", "site": "eu"}),
        protobus.Message("a.bytes", bytearray(b"\x00\x01"), payload_type="x/raw"),
        protobus.Message("a.view", memoryview(b"mv")),
        protobus.Message("a.proto", msg),
        protobus.Message("a.timed", b"t", time=when),
        ("a.ns", b"n", None, None, 1700000000123456789),
        ("a.tags", b"t", {"only": "tag"}),
    ]
    acks = client.publish_many(events)
    assert acks == [("events", i) for i in range(len(events))]
    got = list(client.subscribe(".*", start="beginning", until_caught_up=True, timeout=10))
    assert [e.offset for e in got] == list(range(len(events)))
    assert got[0].payload == "héllo".encode() and got[0].tags == {"k": "v", "site": "eu"}
    assert got[0].payload_type == "" and got[0].payload_size == len("héllo".encode())
    assert got[1].payload == b"\x00\x01" and got[1].payload_type == "x/raw"
    assert got[2].payload == b"mv" and got[2].tags == {}
    assert got[3].payload_type == "type.googleapis.com/protobus.PartitionOffset"
    assert pb.PartitionOffset.FromString(got[3].payload) == msg
    assert got[4].client_event_time == when
    assert got[4].client_event_time.tzinfo == timezone.utc
    assert got[4].client_event_time_ns == int(when.timestamp()) * 10**9 + 123456000
    assert got[5].client_event_time_ns == 1700000000123456789
    assert got[0].client_event_time is None and got[0].client_event_time_ns is None
    assert got[6].tags == {"only": "tag"}
    # The stored bytes are an EncapsulatedEvent any protobuf library reads alike.
    p = got[0].to_proto()
    assert p.topic == "a.text" and dict(p.tags) == {"k": "v", "site": "eu"}


def test_times_are_utc_datetimes(client):
    before = datetime.now(timezone.utc)
    client.publish("t", b"x", time=before)
    after = datetime.now(timezone.utc)
    (ev,) = list(client.subscribe("t", start="beginning", until_caught_up=True, timeout=10))
    for t in (ev.client_event_time, ev.client_transmit_time, ev.server_receive_time):
        assert t.tzinfo == timezone.utc
    assert ev.client_event_time == before
    assert before <= ev.client_transmit_time <= after
    # Same machine, same clock: the server received it between the two.
    assert before - timedelta(seconds=1) <= ev.server_receive_time <= after + timedelta(seconds=1)
    assert ev.server_receive_time_ns // 1000 == \
        int((ev.server_receive_time - datetime(1970, 1, 1, tzinfo=timezone.utc))
            / timedelta(microseconds=1))


def test_naive_datetime_is_refused(client):
    with pytest.raises(ValueError, match="no time zone"):
        client.publish("t", b"x", time=datetime(2026, 1, 1))


def test_bad_topic_is_refused_and_the_connection_goes_on(client):
    with pytest.raises(protobus.InvalidArgumentError) as ei:
        client.publish("has space", b"x")
    e = ei.value
    assert e.code == "INVALID_ARGUMENT" and e.code_number == 3
    assert "topic" in e.message and "whitespace" in e.message
    assert e.event_index == 0
    assert isinstance(e, protobus.ServerError) and isinstance(e, protobus.ProtobusError)
    with pytest.raises(protobus.InvalidArgumentError, match="topic"):
        client.publish("", b"x")
    assert client.publish("fine", b"x") == ("events", 0)


def test_no_rule_matches_the_topic(make_daemon):
    d = make_daemon(TWO_PARTITIONS)
    with protobus.Client(d.address) as c:
        with pytest.raises(protobus.NotFoundError) as ei:
            c.publish("weather.today", b"x")
        assert ei.value.code == "NOT_FOUND"
        assert "weather.today" in ei.value.message
        assert c.publish("orders.eu", b"x") == ("orders", 0)


def test_oversize_event_is_refused(make_daemon):
    d = make_daemon(server="max_event_bytes = 1K")
    with protobus.Client(d.address) as c:
        assert c.server.max_event_bytes == 1024
        with pytest.raises(protobus.InvalidArgumentError) as ei:
            c.publish_many([("t", b"ok"), ("t", b"x" * 1024)])
        e = ei.value
        assert e.event_index == 1 and "max_event_bytes" in e.message
        assert e.acks == [None, None]  # the batch was never sent
        assert c.publish("t", b"y" * 900) == ("events", 0)


def test_refused_batch_reports_what_was_stored(daemon):
    events = [("good", b"%d" % i) for i in range(25)] + [("bad topic", b"x")] + \
        [("good", b"after") for _ in range(100)]
    with protobus.Client(daemon.address, batch_events=10, window=2) as c:
        with pytest.raises(protobus.InvalidArgumentError) as ei:
            c.publish_many(events)
        e = ei.value
        assert e.event_index == 25
        acks = e.acks
        # Batches 0 and 1 (events 0..19) were stored; batch 2 (20..29) was
        # refused as a whole. Batches sent before the refusal arrived (at
        # most the window, 2) were stored after it; none was sent later.
        assert acks[:20] == [("events", i) for i in range(20)]
        assert acks[20:30] == [None] * 10
        later = [a for a in acks[30:] if a is not None]
        assert len(later) in (0, 10, 20)
        assert acks[30:30 + len(later)] == [("events", 20 + i) for i in range(len(later))]
        assert all(a is None for a in acks[30 + len(later):])
        assert c.publish("good", b"next") == ("events", 20 + len(later))


def test_server_down(tmp_path):
    # The port stays bound (never listening) while the client tries it, so
    # no other program of a parallel test run can be listening there: the
    # connection is refused.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        with pytest.raises(protobus.ConnectionLostError) as ei:
            protobus.Client("127.0.0.1:%d" % port, timeout=5)
    assert ei.value.code == "UNAVAILABLE"
    assert isinstance(ei.value, ConnectionError)
    assert "127.0.0.1:%d" % port in str(ei.value)


def test_server_goes_away_and_comes_back(daemon):
    with protobus.Client(daemon.address, timeout=10) as c:
        assert c.publish("t", b"1") == ("events", 0)
        assert daemon.stop() == 0
        with pytest.raises(protobus.ConnectionLostError):
            c.publish("t", b"2")
        daemon.start()  # same port, same data
        assert c.publish("t", b"3") == ("events", 1)  # a new connection


def test_no_answer_times_out():
    # A peer that accepts the connection and never answers the Hello.
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    try:
        t0 = time.monotonic()
        with pytest.raises(protobus.TimeoutError) as ei:
            protobus.Client("127.0.0.1:%d" % ls.getsockname()[1], timeout=0.5)
        elapsed = time.monotonic() - t0
        assert 0.4 <= elapsed < 10
        assert ei.value.code == "DEADLINE_EXCEEDED"
        assert isinstance(ei.value, TimeoutError)  # also the builtin
    finally:
        ls.close()


def test_address_forms(daemon):
    with protobus.Client(("127.0.0.1", daemon.port)) as c:
        assert c.publish("t", b"x") == ("events", 0)
    with pytest.raises(ValueError, match="port"):
        protobus.Client("127.0.0.1:notaport")
    with pytest.raises(ValueError, match="brackets"):
        protobus.Client("::1:7420")


def test_bad_arguments_are_type_errors(client):
    with pytest.raises(TypeError, match="payload"):
        client.publish("t", 42)
    with pytest.raises(TypeError, match="topic"):
        client.publish(42, b"x")
    with pytest.raises(TypeError, match="tag"):
        client.publish("t", b"x", tags={"k": 1})
    with pytest.raises(TypeError, match="tuple"):
        client.publish_many([("only-topic",)])
    assert client.publish("t", b"still fine") == ("events", 0)


def test_one_client_shared_by_threads(client):
    results = {}

    def worker(k):
        results[k] = client.publish_many(("w%d" % k, b"%d" % i) for i in range(500))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    offsets = sorted(o for acks in results.values() for _, o in acks)
    assert offsets == list(range(2000))
    for acks in results.values():
        assert [o for _, o in acks] == sorted(o for _, o in acks)


def test_ping(client):
    assert 0 <= client.ping() < 10


def test_failing_iterable_leaves_the_connection_in_step(daemon):
    def events():
        for i in range(30):
            yield ("t", b"%d" % i)
        raise RuntimeError("the producer broke")

    with protobus.Client(daemon.address, batch_events=5, window=4) as c:
        with pytest.raises(RuntimeError, match="producer broke"):
            c.publish_many(events())
        with pytest.raises(TypeError):
            c.publish_many([("t", b"a")] * 12 + [("t", 3.5)])
        # The batches sent (5 of 5 events, then 2) were stored and answered;
        # the unfinished ones were not sent; the next request is in step.
        assert c.publish_many([("t", b"next")]) == [("events", 35)]


def test_publish_with_id_is_stored_once(client):
    first = client.publish("orders.eu", b"created", id="order-1")
    again = client.publish("orders.us", b"created", id="order-1")
    assert again == first and isinstance(again, protobus.Duplicate)
    assert not isinstance(first, protobus.Duplicate)
    acks = client.publish_many([protobus.Message("orders.eu", b"a", id="m-1"),
                                ("orders.eu", b"b"),
                                protobus.Message("orders.eu", b"c", id="m-1")])
    assert acks[2] == acks[0] and isinstance(acks[2], protobus.Duplicate)
    assert acks[1][1] == acks[0][1] + 1
    with pytest.raises(ValueError):
        client.publish("orders.eu", b"x", id="i" * 65)
    events = list(client.subscribe(["orders\\..*"], start="beginning", until_caught_up=True))
    assert [e.id for e in events] == ["order-1", "m-1", ""]


def test_publish_with_expect_last(client):
    assert client.publish("cart.7", b"one", expect_last="none") == ("events", 0)
    assert client.publish("cart.7", b"two", expect_last=0) == ("events", 1)
    with pytest.raises(protobus.FailedPreconditionError) as e:
        client.publish("cart.7", b"late", expect_last=0)
    assert e.value.expected == ("cart.7", 0)
    assert e.value.actual == ("cart.7", 1)
    with pytest.raises(protobus.FailedPreconditionError) as e:
        client.publish("cart.8", b"x", expect_last=3)
    assert e.value.actual == ("cart.8", None)
    # Several events, several topics, one Publish; nothing stored on a mismatch.
    acks = client.publish_many([("cart.7", b"three"), ("cart.9", b"new")],
                               expect={"cart.7": 1, "cart.9": "none"})
    assert acks == [("events", 2), ("events", 3)]
    with pytest.raises(protobus.FailedPreconditionError):
        client.publish_many([("cart.7", b"no")], expect={"cart.7": 2, "cart.9": "none"})
    assert client.publish("cart.7", b"four", expect_last=2) == ("events", 4)
