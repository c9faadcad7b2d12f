"""The Client: publishing on one connection, subscriptions on their own.

Publishing encodes events by hand (wire.py) into Publish frames of up to
``batch_events`` events / ``batch_bytes`` bytes, keeps up to ``window`` of
them in flight on the connection and matches each PublishAck or Error to its
batch by frame id. A subscription needs a connection of its own (the server
allows one subscription per connection and refuses a Publish on a subscribed
one), so ``subscribe`` opens one for each Subscription.

Thread safety: every Client method may be called from any thread; calls that
use the publishing connection (publish, publish_many, ping) take the
Client's lock, so they run one at a time. A Subscription belongs to one
thread at a time (see subscription.py); subscribing and publishing from
different threads is the intended way to do both at once.
"""

import threading
import time as _time
import weakref
from collections import namedtuple
from datetime import datetime

from . import errors, wire
from .connection import Connection, error_from_body
from .errors import InvalidArgumentError, ProtocolError
from .event import datetime_to_ns

# Space a frame needs around its Publish body: prefix, id, body tag and length.
_FRAME_OVERHEAD = 32
# An event's own length prefix inside the Publish, plus client_transmit_time.
_EVENT_OVERHEAD = 6 + 19
# The largest client_transmit_time field.
_TRANSMIT_TIME_MAX = 19

Message = namedtuple("Message", "topic payload tags payload_type time id")
Message.__new__.__defaults__ = (None, None, None, None)
Message.__doc__ = """An event to publish: publish_many takes these or plain tuples
(topic, payload[, tags[, payload_type[, time[, id]]]]) in the same order.

topic: str. payload: bytes-like, str (sent as UTF-8) or a protobuf message
(serialized; payload_type defaults to its type URL). tags: dict str -> str.
payload_type: the type URL of the payload's google.protobuf.Any ("" = opaque
bytes). time: the client_event_time, an aware datetime or int nanoseconds
since the epoch (None: not set). id: the event's id (str, at most 64 bytes
of UTF-8; None: none): within the server's dedup window an id is stored
once per partition, and a repeat is acknowledged as a Duplicate of the
original."""

# EncapsulatedEvent.id's limit (FORMAT.md section 5).
MAX_ID_BYTES = 64


class Duplicate(tuple):
    """The ack of an event whose id the server had already stored.

    Equal to the plain (partition, offset) pair of the original event (the
    event was not stored again); isinstance(ack, Duplicate) tells it apart.
    """

    __slots__ = ()

    def __new__(cls, partition, offset):
        return tuple.__new__(cls, (partition, offset))

    def __repr__(self):
        return "Duplicate(%r, %d)" % (self[0], self[1])


def _id_field(id):
    if not isinstance(id, str):
        raise TypeError("id must be a str, not %s" % type(id).__name__)
    b = id.encode("utf-8")
    if len(b) > MAX_ID_BYTES:
        raise ValueError("id of %d bytes: the maximum is %d bytes of UTF-8"
                         % (len(b), MAX_ID_BYTES))
    return wire.len_field(8, b) if b else b""


def _expect_fields(expect):
    """Publish.expect entries for {topic: last offset (int) or "none"}."""
    if expect is None:
        return b""
    try:
        items = expect.items()
    except AttributeError:
        raise TypeError("expect must be a dict {topic: offset or 'none'}, not %s"
                        % type(expect).__name__) from None
    out = []
    for topic, last in items:
        if not isinstance(topic, str):
            raise TypeError("expect: topic %r is not a str" % (topic,))
        body = wire.len_field(1, topic.encode("utf-8"))
        if last == "none":
            body += b"\x10\x01"
        elif isinstance(last, int) and not isinstance(last, bool) and last >= 0:
            if last:
                body += b"\x18" + wire.varint(last)
        else:
            raise ValueError("expect: %r for topic %s: expected an offset (int >= 0) or 'none'"
                             % (last, topic))
        out.append(wire.len_field(3, body))
    return b"".join(out)


def _coerce_payload(payload, payload_type):
    """(bytes, type URL) for a payload that is not plain bytes."""
    if isinstance(payload, (bytearray, memoryview)):
        return bytes(payload), payload_type
    if isinstance(payload, str):
        return payload.encode("utf-8"), payload_type
    if payload is None:
        return b"", payload_type
    serialize = getattr(payload, "SerializeToString", None)
    if serialize is not None and hasattr(payload, "DESCRIPTOR"):
        if payload_type is None:
            payload_type = "type.googleapis.com/" + payload.DESCRIPTOR.full_name
        return serialize(), payload_type
    raise TypeError("payload must be bytes, str or a protobuf message, not %s"
                    % type(payload).__name__)


def _time_ns(t):
    if isinstance(t, datetime):
        return datetime_to_ns(t)
    if isinstance(t, int) and not isinstance(t, bool):
        return t
    raise TypeError("time must be an aware datetime or int nanoseconds, not %s"
                    % type(t).__name__)


class _Encoder:
    """Encodes EncapsulatedEvents (without client_transmit_time, added per batch).

    Caches the encoded topic and tag fields: publishers repeat a few of each.
    """

    _CACHE_MAX = 4096

    def __init__(self):
        self.topics = {}
        self.tags = {}

    def topic_field(self, topic):
        if isinstance(topic, str):
            b = topic.encode("utf-8")
        elif isinstance(topic, (bytes, bytearray)):
            b = bytes(topic)
        else:
            raise TypeError("topic must be a str, not %s" % type(topic).__name__)
        f = b"\x0a" + wire.varint(len(b)) + b
        if len(self.topics) >= self._CACHE_MAX:
            self.topics.clear()
        self.topics[topic] = f
        return f

    def tag_fields(self, tags):
        cache = self.tags
        out = []
        try:
            items = tags.items()
        except AttributeError:
            raise TypeError("tags must be a dict of str to str, not %s"
                            % type(tags).__name__) from None
        for kv in items:
            f = cache.get(kv)
            if f is None:
                k, v = kv
                if not isinstance(k, str) or not isinstance(v, str):
                    raise TypeError("tag %r=%r: tag keys and values must be str" % (k, v))
                entry = wire.len_field(1, k.encode("utf-8")) + wire.len_field(2, v.encode("utf-8"))
                f = b"\x12" + wire.varint(len(entry)) + entry
                if len(cache) >= self._CACHE_MAX:
                    cache.clear()
                cache[kv] = f
            out.append(f)
        return b"".join(out)

    def event(self, item):
        """The encoded event for a Message or tuple (the general path)."""
        n = len(item)
        if not 2 <= n <= 6:
            raise TypeError("an event is (topic, payload[, tags[, payload_type[, time[, id]]]]), "
                            "got a %d-tuple" % n)
        topic, payload = item[0], item[1]
        tags = item[2] if n > 2 else None
        ptype = item[3] if n > 3 else None
        t = item[4] if n > 4 else None
        eid = item[5] if n > 5 else None
        tf = self.topics.get(topic) if isinstance(topic, str) else None
        if tf is None:
            tf = self.topic_field(topic)
        if type(payload) is not bytes:
            payload, ptype = _coerce_payload(payload, ptype)
        parts = [tf]
        if tags:
            parts.append(self.tag_fields(tags))
        if t is not None:
            parts.append(wire.timestamp_field(3, _time_ns(t)))
        plen = len(payload)
        anyb = b""
        if ptype:
            if not isinstance(ptype, str):
                raise TypeError("payload_type must be a str, not %s" % type(ptype).__name__)
            anyb = wire.len_field(1, ptype.encode("utf-8"))
        if plen:
            parts.append(b"\x30" + wire.varint(plen))
            anyb += b"\x12" + wire.varint(plen) + payload
        if anyb:
            parts.append(b"\x3a" + wire.varint(len(anyb)))
            parts.append(anyb)
        if eid is not None:
            parts.append(_id_field(eid))
        return b"".join(parts)


class Client:
    """A connection to protobusd for publishing, and the factory of subscriptions.

    address: "host:port", "[v6]:port", (host, port), or None for
    $PROTOBUS_SERVER, else 127.0.0.1:7420. timeout: seconds to wait for the
    server (connect, handshake, each ack), None = forever; a request that
    times out raises protobus.TimeoutError and closes the connection.
    name: the client name sent in the Hello. user, password: credentials
    for a server with ``auth = required`` (sent in every Hello, also when a
    connection is reopened or a subscription opens its own; a refusal raises
    UnauthenticatedError after the server's delay). tls, tls_ca, tls_cert,
    tls_key: TLS (1.2 at least; also chosen by an address "tls://host:port"),
    the server's certificate checked against tls_ca (else the system's CAs)
    and the host; tls_cert/tls_key: a client certificate for mutual TLS (its
    CN may name the user: no password needed). batch_events,
    batch_bytes, window: publish_many's batches and how many are in flight
    at once.

    The connection is opened at once (so a server that is down raises here)
    and reopened by the next request after it broke or the server closed it
    while idle. Use as a context manager, or call close(), which also closes
    the Client's subscriptions.
    """

    def __init__(self, address=None, *, timeout=30.0, name=None, user=None, password=None,
                 tls=False, tls_ca=None, tls_cert=None, tls_key=None,
                 batch_events=1000, batch_bytes=1 << 20, window=8):
        if batch_events < 1 or batch_bytes < 1 or window < 1:
            raise ValueError("batch_events, batch_bytes and window must be >= 1")
        self.address = address
        self.timeout = timeout
        self.name = name
        self.user = user
        self._password = password  # never in repr or messages
        use_tls = tls or tls_ca or tls_cert
        self._tls = {"ca": tls_ca, "cert": tls_cert, "key": tls_key} if use_tls else None
        self.batch_events = batch_events
        self.batch_bytes = batch_bytes
        self.window = window
        self._lock = threading.RLock()
        self._enc = _Encoder()
        self._subs = weakref.WeakSet()  # open subscriptions, closed with the Client
        self._subs_lock = threading.Lock()
        self._closed = False
        self._conn = None
        self._connection()

    # --- lifetime -----------------------------------------------------------

    def _connect(self):
        return Connection(self.address, timeout=self.timeout, name=self.name, user=self.user,
                          password=self._password, tls=self._tls)

    def _connection(self):
        if self._closed:
            raise errors.ConnectionLostError("this Client is closed")
        c = self._conn
        if c is None or not c.usable():
            c = self._conn = self._connect()
        return c

    @property
    def server(self):
        """The ServerInfo of the server's Hello (name, limits, user)."""
        with self._lock:
            return self._connection().server

    def close(self):
        """Closes the publishing connection and every subscription of this Client.

        From any thread: a call blocked on the connection in another thread
        gets ConnectionLostError, an iteration of a subscription ends.
        """
        self._closed = True
        with self._subs_lock:
            subs = list(self._subs)
        for s in subs:
            s.close()
        conn = self._conn
        if conn is not None:
            conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- publishing ---------------------------------------------------------

    def publish(self, topic, payload, tags=None, payload_type=None, time=None, *, id=None,
                expect_last=None):
        """Publishes one event and waits for its ack: returns (partition, offset).

        The arguments are those of Message. Raises a ServerError subclass if
        the server refuses it (InvalidArgumentError for a bad topic or event,
        NotFoundError when no partition rule matches the topic, ...).
        id: see Message; a repeat within the server's dedup window returns a
        Duplicate of the original (partition, offset), storing nothing.
        expect_last: store the event only if the topic's last event has this
        offset ("none": the topic has no event yet); else nothing is stored
        and FailedPreconditionError is raised, its ``actual`` the topic's
        real last offset (None: no event).
        """
        expect = None if expect_last is None else {topic: expect_last}
        return self.publish_many(((topic, payload, tags, payload_type, time, id),),
                                 expect=expect)[0]

    def publish_many(self, events, *, expect=None):
        """Publishes every event of an iterable, batched and pipelined.

        events: Message objects or tuples (topic, payload[, tags[,
        payload_type[, time]]]); consumed lazily. Returns a list of
        (partition, offset), one per event in input order, once every event
        is acknowledged (durable under the server's fsync policy).

        A batch is acknowledged or refused as a whole. If the server refuses
        one, no batch is sent after that; the batches already in flight are
        waited for (they may be stored) and the ServerError is raised with
        ``acks`` (one (partition, offset) per event taken from the iterable,
        None for each event not acknowledged) and ``event_index`` (the index
        within the call of the event at fault, when the server named one).
        An invalid event refuses its batch with nothing stored; a storage
        failure (UNAVAILABLE) may leave other partitions' events of the batch
        stored without an ack. An event over the
        server's max_event_bytes is refused the same way before it is sent.
        ConnectionLostError and TimeoutError carry ``acks`` too: events
        without an ack may or may not have been stored.

        Events with an id (Message.id) are stored at most once per partition
        within the server's dedup window: republishing events whose ack was
        lost is safe, and their acks are Duplicate pairs.

        expect: {topic: last offset or "none"}: the events are sent as one
        Publish (at most batch_events of them, in one partition) that the
        server stores only if every topic's last event has that offset ("none":
        no event yet), atomically; otherwise nothing is stored and
        FailedPreconditionError is raised with ``expected`` and ``actual``
        (the topic's real last offset, None for no event).
        """
        with self._lock:
            conn = self._connection()
            return _Publishing(self, conn, _expect_fields(expect)).run(events)

    def ping(self):
        """Round trip to the server (Ping, Pong): returns the seconds it took."""
        with self._lock:
            conn = self._connection()
            pid = conn.next_id()
            t0 = _time.monotonic()
            conn.send(wire.frame(pid, wire.PING, b""))
            while True:
                fid, body, s, e = conn.read_frame("a Pong")
                if body == wire.PONG and fid == pid:
                    return _time.monotonic() - t0
                if body == wire.ERROR:
                    err = error_from_body(conn, s, e)
                    if fid == 0:
                        conn.close()
                    raise err
                _unexpected(conn, fid, body, "a Pong")

    # --- subscribing --------------------------------------------------------

    def subscribe(self, patterns, start="new", tags=None, timeout=None, *, until_caught_up=False,
                  on_caught_up=None, on_notice=None, confirm=True):
        """Opens a subscription on a connection of its own: returns a Subscription.

        patterns: a regex or a list of them (PCRE2, each must match a whole
        topic). start: "new", "beginning", {partition: offset}, an aware
        datetime (the first event received at or after it), or ("last", N)
        (the last N events of each matching topic). tags: dict; an event is
        delivered only if it has every one of them. timeout: iteration ends
        after this many seconds without an event (None: never).
        until_caught_up: iteration ends once history is delivered.
        on_caught_up(subscription): called once, when history is done and
        live events begin. on_notice(error): receives DATA_LOSS and
        OUT_OF_RANGE notices (DataLossError, OutOfRangeError); without it
        they are raised from the iteration, which can then go on.
        confirm: wait for the server's Subscribed (positions known, a refusal
        raised here, and every event published after this returns is
        delivered); False returns as soon as the request is sent.
        """
        from .subscription import Subscription
        if self._closed:
            raise errors.ConnectionLostError("this Client is closed")
        s = Subscription(self, patterns, start, tags, timeout, until_caught_up, on_caught_up,
                         on_notice, confirm)
        with self._subs_lock:
            self._subs.add(s)
        if self._closed:  # closed meanwhile by another thread
            s.close()
        return s


def _unexpected(conn, fid, body, what):
    """Handles a frame that is not the awaited reply: answers a Ping, else fails."""
    if body == wire.PING:
        conn.send(wire.frame(fid, wire.PONG, b""))
        return
    if body == 0:
        return  # a frame type from a newer protocol: nothing to do with it
    conn.close()
    raise ProtocolError("protobusd at %s sent a %s frame (id %d) while this client waited for %s"
                        % (conn.address, wire.BODY_NAMES.get(body, "?"), fid, what))


class _Publishing:
    """One publish_many call: its batches, the ones in flight, the results."""

    def __init__(self, client, conn, expect=b""):
        self.client = client
        self.conn = conn
        self.expect = expect  # encoded Publish.expect entries: one batch only
        self.inflight = {}  # frame id -> (batch number, index of its first event, count)
        self.results = []  # per batch sent: list of (partition, offset), or None
        self.error = None  # the first refusal
        self.sent = 0  # events sent
        self.taken = 0  # events taken from the iterable

    def run(self, events):
        client = self.client
        conn = self.conn
        enc = client._enc
        topics = enc.topics
        max_event = conn.server.max_event_bytes or (1 << 62)
        limit = min(client.batch_bytes,
                    (conn.server.max_frame_bytes or (1 << 62)) - _FRAME_OVERHEAD)
        batch_events = min(client.batch_events,
                           conn.server.limits.get("max_batch_events") or client.batch_events)
        varint = wire.varint
        batch = []
        size = 0
        try:
            for item in events:
                self.taken += 1
                # The common case, (str topic, bytes payload) and nothing else, inline.
                if type(item) is tuple and len(item) == 2 and type(item[1]) is bytes:
                    topic, payload = item
                    tf = topics.get(topic)
                    if tf is None:
                        tf = enc.topic_field(topic)
                    plen = len(payload)
                    if plen:
                        vl = varint(plen)
                        ev = b"".join((tf, b"\x30", vl, b"\x3a", varint(plen + 1 + len(vl)),
                                       b"\x12", vl, payload))
                    else:
                        ev = tf
                else:
                    ev = enc.event(item)
                n = len(ev)
                if n + _TRANSMIT_TIME_MAX > max_event:
                    self._check_size(ev, max_event)
                if batch and (size + n + _EVENT_OVERHEAD > limit or len(batch) >= batch_events):
                    if self.expect:
                        raise ValueError("publish_many with expect: the events must fit in one "
                                         "Publish (batch_events %d, batch_bytes %d)"
                                         % (batch_events, limit))
                    self._send(batch)
                    batch = []
                    size = 0
                    if self.error is not None:
                        break
                batch.append(ev)
                size += n + _EVENT_OVERHEAD
            else:
                if batch or self.expect:
                    self._send(batch)
            while self.inflight:
                self._read_reply()
        except errors.ServerError as e:
            # An event refused before sending, or an Error about the whole
            # connection: wait for what is in flight, then report it.
            if self.error is None:
                self.error = e
            try:
                while self.inflight and not conn.closed:
                    self._read_reply()
            except errors.ProtobusError:
                pass
        except (errors.ConnectionLostError, errors.TimeoutError, ProtocolError) as e:
            e.acks = self._acks()
            raise
        except Exception:
            # The caller's iterable or one of its events failed: the batches
            # in flight are answered first, so that the connection's next
            # request does not read their acks.
            try:
                while self.inflight and not conn.closed:
                    self._read_reply()
            except errors.ProtobusError:
                pass
            raise
        except BaseException:
            conn.close()  # interrupted: replies in flight are abandoned with it
            raise
        if self.error is not None:
            self.error.acks = self._acks()
            raise self.error
        return self._acks()

    def _check_size(self, ev, max_event):
        # The size the server measures: the event as sent, transmit time included.
        size = len(ev) + len(wire.timestamp_field(4, _time.time_ns()))
        if size > max_event:
            index = self.taken - 1
            raise InvalidArgumentError(
                "event %d is %d bytes, over the server's maximum of %d bytes (max_event_bytes)"
                % (index, size, max_event), event_index=index)

    def _acks(self):
        out = []
        for r, count in self.results:
            out.extend(r if r is not None else [None] * count)
        out.extend([None] * (self.taken - len(out)))
        return out

    def _send(self, batch):
        conn = self.conn
        tt = wire.timestamp_field(4, _time.time_ns())
        ltt = len(tt)
        varint = wire.varint
        parts = []
        for ev in batch:
            parts.append(b"\x0a")
            parts.append(varint(len(ev) + ltt))
            parts.append(ev)
            parts.append(tt)
        parts.append(self.expect)
        body = b"".join(parts)
        fid = conn.next_id()
        self.inflight[fid] = (len(self.results), self.sent, len(batch))
        self.results.append((None, len(batch)))
        self.sent += len(batch)
        conn.send(wire.frame_header(fid, wire.PUBLISH, len(body)) + body)
        while len(self.inflight) >= self.client.window:
            self._read_reply()

    def _read_reply(self):
        conn = self.conn
        fid, body, s, e = conn.read_frame("a PublishAck")
        if body == wire.PUBLISH_ACK:
            entry = self.inflight.pop(fid, None)
            if entry is None:
                conn.close()
                raise ProtocolError("protobusd at %s sent a PublishAck with id %d, which names "
                                    "no batch in flight" % (conn.address, fid))
            number, _, count = entry
            try:
                parts, index, offsets, dups = wire.decode_publish_ack(conn.buf, s, e)
            except (wire.WireError, IndexError) as exc:
                conn.close()
                raise ProtocolError("protobusd at %s sent a malformed PublishAck: %s"
                                    % (conn.address, exc)) from None
            if len(offsets) != count:
                conn.close()
                raise ProtocolError("protobusd at %s acknowledged %d events of a batch of %d"
                                    % (conn.address, len(offsets), count))
            if len(parts) == 1:
                p = parts[0]
                positions = [(p, o) for o in offsets]
            else:
                positions = list(zip(map(parts.__getitem__, index), offsets))
            for i in dups:
                if i < count:
                    positions[i] = Duplicate(*positions[i])
            self.results[number] = (positions, count)
        elif body == wire.ERROR:
            entry = self.inflight.pop(fid, None)
            if entry is None:
                # id 0 or not a request of ours: about the connection, which
                # the server closes after it.
                err = error_from_body(conn, s, e)
                conn.close()
                raise err
            _, first, _ = entry
            err = error_from_body(conn, s, e, event_offset=first)
            if self.error is None:
                self.error = err
        else:
            _unexpected(conn, fid, body, "a PublishAck")
