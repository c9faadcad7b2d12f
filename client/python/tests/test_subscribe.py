"""Subscribing against a real protobusd: start modes, filters, markers, notices."""

import glob
import os
import struct
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

import protobus


def publish_numbered(c, topic, n, start=0, tags=None):
    return c.publish_many((topic, b"%d" % i, tags) for i in range(start, start + n))


def payloads(events):
    return [int(e.payload) for e in events]


def test_start_beginning_delivers_every_event_with_its_fields(client):
    acks = publish_numbered(client, "orders.eu", 300, tags={"site": "eu"})
    sub = client.subscribe([r"orders\..*"], start="beginning", until_caught_up=True, timeout=10)
    assert sub.positions == {"events": protobus.Position(0, 0, 300)}
    got = list(sub)
    assert sub.caught_up and sub.history_events == 300 and not sub.timed_out
    assert [(e.partition, e.offset) for e in got] == acks
    assert payloads(got) == list(range(300))
    assert all(e.topic == "orders.eu" and e.tags == {"site": "eu"} for e in got)


def test_start_offsets(client):
    publish_numbered(client, "a", 50)
    got = list(client.subscribe("a", start={"events": 42}, until_caught_up=True, timeout=10))
    assert [e.offset for e in got] == list(range(42, 50))


def test_start_time(client):
    publish_numbered(client, "a", 10)
    time.sleep(0.05)
    middle = datetime.now(timezone.utc)
    time.sleep(0.05)
    publish_numbered(client, "a", 5, start=10)
    got = list(client.subscribe("a", start=middle, until_caught_up=True, timeout=10))
    assert payloads(got) == list(range(10, 15))
    assert all(e.server_receive_time >= middle for e in got)
    # The same instant in another time zone is the same start.
    local = middle.astimezone(timezone(timedelta(hours=-5)))
    assert payloads(client.subscribe("a", start=local, until_caught_up=True, timeout=10)) == \
        list(range(10, 15))


def test_start_last_n(client):
    client.publish_many([("x.1", b"%d" % i) for i in range(10)] +
                        [("x.2", b"%d" % i) for i in range(100, 103)])
    got = list(client.subscribe(r"x\..*", start=("last", 2), until_caught_up=True, timeout=10))
    assert sorted((e.topic, int(e.payload)) for e in got) == \
        [("x.1", 8), ("x.1", 9), ("x.2", 101), ("x.2", 102)]


def test_patterns_match_whole_topics(client):
    client.publish_many([("orders.eu", b"1"), ("orders.eu.x", b"2"), ("xorders.eu", b"3"),
                         ("sensors.t", b"4")])
    got = list(client.subscribe([r"orders\.[a-z]+", "sensors.*"], start="beginning",
                                until_caught_up=True, timeout=10))
    assert [e.topic for e in got] == ["orders.eu", "sensors.t"]


def test_tags_filter(client):
    client.publish_many([
        ("o", b"1", {"site": "eu"}),
        ("o", b"2", {"site": "us"}),
        ("o", b"3", {"site": "eu", "tier": "gold"}),
        ("o", b"4"),
    ])
    got = client.subscribe("o", start="beginning", tags={"site": "eu"}, until_caught_up=True,
                           timeout=10)
    assert payloads(got) == [1, 3]
    got = client.subscribe("o", start="beginning", tags={"site": "eu", "tier": "gold"},
                           until_caught_up=True, timeout=10)
    assert payloads(got) == [3]


def test_timeout_ends_the_iteration_and_it_can_go_on(client):
    sub = client.subscribe(".*", start="beginning", timeout=0.3)
    t0 = time.monotonic()
    assert list(sub) == []
    assert 0.25 <= time.monotonic() - t0 < 10
    assert sub.timed_out
    client.publish("late", b"1")
    assert payloads(sub) == [1]


def test_unconfirmed_subscription(client):
    # confirm=False: subscribe() returns once the request is sent; the
    # iteration reads Subscribed on its way.
    publish_numbered(client, "u", 3)
    sub = client.subscribe("u", start="beginning", confirm=False, until_caught_up=True, timeout=10)
    assert sub.positions is None
    assert payloads(sub) == [0, 1, 2]
    assert sub.positions == {"events": protobus.Position(0, 0, 3)} and sub.caught_up


def test_refused_subscription_raises(client):
    with pytest.raises(protobus.InvalidArgumentError) as ei:
        client.subscribe(["(unclosed"], start="beginning")
    assert "unclosed" in ei.value.message or "pattern" in ei.value.message
    with pytest.raises(protobus.InvalidArgumentError, match="last_n"):
        client.subscribe(".*", start=("last", 1000000000))
    # Without confirm, the refusal ends the iteration instead.
    sub = client.subscribe([], start="beginning", confirm=False)
    with pytest.raises(protobus.InvalidArgumentError, match="no patterns"):
        list(sub)
    with pytest.raises(protobus.InvalidArgumentError):
        list(sub)  # ended for good


def test_bad_start_arguments(client):
    for bad in ("yesterday", ("last", 0), ("first", 3), {"events": -1}, 42,
                datetime(2026, 1, 1)):
        with pytest.raises((ValueError, TypeError)):
            client.subscribe(".*", start=bad)


def test_close_from_another_thread_ends_the_iteration(client):
    sub = client.subscribe(".*", start="new")
    done = threading.Event()
    got = []

    def reader():
        got.extend(sub)
        done.set()

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.2)
    sub.close()
    assert done.wait(10)
    t.join(10)
    assert got == []


def test_client_close_closes_its_subscriptions(daemon):
    c = protobus.Client(daemon.address)
    sub = c.subscribe(".*", start="beginning")
    c.close()
    assert sub.closed
    assert list(sub) == []


def test_subscribe_and_publish_concurrently(client):
    # The subscription has its own connection: one Client publishes while a
    # thread iterates. History and live delivery join with no gap and no
    # duplicate.
    n = 20000
    sub = client.subscribe("c", start="beginning", timeout=10)
    got = []

    def reader():
        for ev in sub:
            got.append(int(ev.payload))
            if len(got) == n:
                break

    t = threading.Thread(target=reader)
    t.start()
    for k in range(0, n, 1000):
        publish_numbered(client, "c", 1000, start=k)
    t.join(60)
    assert not t.is_alive()
    assert got == list(range(n))


def test_many_partitions_and_offsets_of_every_size(make_daemon):
    # Offsets past 127 and 16383 take 2 and 3 varint bytes in the Event
    # header; partition names up to the longest allowed (100 bytes);
    # payloads past 127 bytes.
    d = make_daemon("[partition p]\nmatch = short\\..*\n[partition %s]\nmatch = .*\n"
                    % ("L" * 100))
    with protobus.Client(d.address) as c:
        acks = c.publish_many(("short.%d" % (i % 2) if i % 4 else "long", b"%d" % i * (i % 50))
                              for i in range(17000))
        got = list(c.subscribe(".*", start="beginning", until_caught_up=True, timeout=10))
    assert sorted((e.partition, e.offset) for e in got) == sorted(acks)
    by_pos = {(e.partition, e.offset): e for e in got}
    for i, a in enumerate(acks):
        assert by_pos[a].payload == b"%d" % i * (i % 50)


def flip_byte_of_record(data_dir, partition, offset):
    """Damages record `offset` of the partition's only segment (FORMAT.md Part B)."""
    (path,) = glob.glob(os.path.join(data_dir, partition, "*.log"))
    with open(path, "r+b") as f:
        data = f.read()
        pos = 40
        while pos < len(data):
            length, rec_offset = struct.unpack_from("<IQ", data, pos + 4)
            if rec_offset == offset:
                f.seek(pos + 24 + 3)  # a byte of the stored event
                f.write(bytes([data[pos + 24 + 3] ^ 0x55]))
                return
            pos += 8 + length
    raise AssertionError("offset %d not found in %s" % (offset, path))


def test_data_loss_is_a_notice(daemon):
    with protobus.Client(daemon.address) as c:
        publish_numbered(c, "d", 10)
    daemon.stop()
    flip_byte_of_record(os.path.join(daemon.workdir, "data"), "events", 4)
    daemon.start()
    with protobus.Client(daemon.address) as c:
        # Without on_notice: raised from the iteration, which then goes on.
        sub = c.subscribe("d", start="beginning", until_caught_up=True, timeout=10)
        before = []
        with pytest.raises(protobus.DataLossError) as ei:
            for ev in sub:
                before.append(int(ev.payload))
        e = ei.value
        assert e.code == "DATA_LOSS" and e.partition == "events"
        assert e.first_offset == 4 and e.last_offset == 4
        assert before == [0, 1, 2, 3]
        assert payloads(sub) == [5, 6, 7, 8, 9]
        # With on_notice: handed over, the iteration does not stop.
        notices = []
        got = payloads(c.subscribe("d", start="beginning", until_caught_up=True, timeout=10,
                                   on_notice=notices.append))
        assert got == [0, 1, 2, 3, 5, 6, 7, 8, 9]
        assert [(n.code, n.first_offset, n.last_offset) for n in notices] == \
            [("DATA_LOSS", 4, 4)]


# --- Subscribed, CaughtUp, start "new" ---------------------------------------


def test_start_new_sees_exactly_what_is_published_after_subscribe(client):
    publish_numbered(client, "n", 5)
    sub = client.subscribe("n", start="new", timeout=1)
    assert sub.positions == {"events": protobus.Position(0, 5, 5)}
    publish_numbered(client, "n", 3, start=5)
    assert payloads(sub) == [5, 6, 7]


def test_positions_and_caught_up(client):
    publish_numbered(client, "h", 7)
    seen = []
    sub = client.subscribe("h", start="beginning", until_caught_up=True,
                           on_caught_up=lambda s: seen.append(s.history_events))
    assert sub.positions == {"events": protobus.Position(0, 0, 7)}
    assert not sub.caught_up
    assert payloads(sub) == list(range(7))
    assert sub.caught_up and sub.history_events == 7 and seen == [7]
    # Iterating again goes on with the live events.
    sub.until_caught_up = False
    sub.timeout = 1
    publish_numbered(client, "h", 2, start=7)
    assert payloads(sub) == [7, 8]
    assert seen == [7]


def test_caught_up_with_no_history(client):
    sub = client.subscribe("e", start="beginning", until_caught_up=True, timeout=10)
    assert list(sub) == [] and sub.caught_up and sub.history_events == 0
    assert not sub.timed_out


def test_caught_up_counts_only_matching_history(client):
    client.publish_many([("m", b"1"), ("other", b"2"), ("m", b"3", {"k": "v"})])
    sub = client.subscribe("m", start="beginning", tags={"k": "v"}, until_caught_up=True,
                           timeout=10)
    assert payloads(sub) == [3]
    assert sub.caught_up and sub.history_events == 1


def test_subscribe_and_publish_concurrently_from_new(client):
    n = 5000
    sub = client.subscribe("c", start="new", timeout=10)
    got = []
    t = threading.Thread(target=lambda: got.extend(
        int(e.payload) for _, e in zip(range(n), sub)))
    t.start()
    for k in range(0, n, 500):
        publish_numbered(client, "c", 500, start=k)
    t.join(60)
    assert got == list(range(n))
