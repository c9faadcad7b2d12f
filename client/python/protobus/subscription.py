"""A subscription: its own connection, the Subscribe request, the event stream.

The server answers a Subscribe with Subscribed (per partition: first, start
and end offsets), then the history Events, then CaughtUp once, then live
Events; DATA_LOSS and OUT_OF_RANGE Errors with the Subscribe's id are
notices inside the stream, any other Error ends it (FORMAT.md,
"Connection"). The Event frames are decoded in bulk straight from the
receive buffer: a fast path for the exact layout the daemon writes
(FORMAT.md 4.5), the general field walker for anything else.

Thread safety: a Subscription is iterated by one thread at a time. close()
may be called from any thread: an iteration blocked in another thread then
ends (no exception).
"""

import time as _time
from collections import namedtuple
from datetime import datetime

from . import errors, wire
from .connection import error_from_body
from .errors import ConnectionLostError, ProtocolError
from .event import Event, datetime_to_ns

Position = namedtuple("Position", "first_offset start_offset end_offset")
Position.__doc__ = """Where a subscription starts in one partition (from Subscribed).

first_offset: the oldest offset still stored; start_offset: the first offset
this subscription can deliver; end_offset: the partition's next offset when
the subscription started, so history is [start_offset, end_offset)."""

START_NEW, START_BEGINNING, START_OFFSETS, START_TIME, START_LAST_N = range(5)

# Control items in the decoded stream, between events.
_SUBSCRIBED = 1
_CAUGHT_UP = 2
_NOTICE_CODES = (11, 15)  # OUT_OF_RANGE, DATA_LOSS


def subscribe_request(patterns, start, tags):
    """The Subscribe message (protobus_pb2) for subscribe()'s arguments."""
    from . import protobus_pb2 as pb
    if isinstance(patterns, str):
        patterns = [patterns]
    patterns = list(patterns)
    for p in patterns:
        if not isinstance(p, str):
            raise TypeError("patterns must be str, not %s" % type(p).__name__)
    req = pb.Subscribe(patterns=patterns)
    if tags:
        for k, v in tags.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("tag filter %r=%r: keys and values must be str" % (k, v))
            req.tags[k] = v
    if isinstance(start, str):
        if start == "new":
            req.start = START_NEW
        elif start == "beginning":
            req.start = START_BEGINNING
        else:
            raise ValueError("start %r: use \"new\", \"beginning\", {partition: offset}, a "
                             "datetime or (\"last\", N)" % start)
    elif isinstance(start, dict):
        req.start = START_OFFSETS
        for part, off in start.items():
            if not isinstance(part, str) or not isinstance(off, int) or off < 0:
                raise ValueError("start offsets: %r: %r must be a partition name and an offset "
                                 ">= 0" % (part, off))
            req.offsets.add(partition=part, offset=off)
    elif isinstance(start, datetime):
        req.start = START_TIME
        seconds, nanos = divmod(datetime_to_ns(start), 1000000000)
        req.from_time.seconds = seconds
        req.from_time.nanos = nanos
    elif isinstance(start, tuple) and len(start) == 2 and start[0] == "last":
        n = start[1]
        if not isinstance(n, int) or n < 1:
            raise ValueError("start (\"last\", N): N must be an int >= 1, not %r" % (n,))
        req.start = START_LAST_N
        req.last_n = n
    else:
        raise ValueError("start %r: use \"new\", \"beginning\", {partition: offset}, a "
                         "datetime or (\"last\", N)" % (start,))
    return req


class Subscription:
    """An open subscription; iterate it for Event objects.

    Made by Client.subscribe (which documents the arguments). Attributes:
    ``positions``: {partition: Position} from the server's Subscribed (None
    until it arrived: only with confirm=False); ``caught_up``: True once
    every history event has been delivered (the CaughtUp marker was reached
    by the iteration); ``history_events``: how many events came before it;
    ``timed_out``: the last iteration ended for want of events within
    ``timeout``; ``until_caught_up``, ``timeout``, ``on_caught_up`` and
    ``on_notice`` may be changed between iterations.

    Iteration ends (without an exception) when ``timeout`` passes without an
    event, at the CaughtUp marker with until_caught_up, or when close() is
    called; iterating again goes on from there. It raises a ServerError when
    the server ends the subscription, a DataLossError or OutOfRangeError for
    a notice without on_notice (iterating again goes on after it), and
    ConnectionLostError if the connection breaks.
    """

    def __init__(self, client, patterns, start, tags, timeout, until_caught_up, on_caught_up,
                 on_notice, confirm):
        req = subscribe_request(patterns, start, tags)
        self.timeout = timeout
        self.until_caught_up = until_caught_up
        self.on_caught_up = on_caught_up
        self.on_notice = on_notice
        self.positions = None
        self.caught_up = False
        self.history_events = None
        self.timed_out = False
        self.closed = False
        self._error = None  # the Error that ended the subscription
        self._gen = None
        self._partitions = {}  # partition field bytes (tag, length, name) -> name
        self._conn = conn = client._connect()
        try:
            self._set_id(conn.next_id())
            conn.send(wire.frame(self._id, wire.SUBSCRIBE, req.SerializeToString()))
            if confirm:
                self._await_subscribed(client.timeout)
        except BaseException:
            conn.close()
            self.closed = True
            raise

    # --- lifetime -----------------------------------------------------------

    def close(self):
        """Ends the subscription and closes its connection (from any thread)."""
        self.closed = True
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- iteration ----------------------------------------------------------

    def __iter__(self):
        g = self._gen
        if g is None:
            g = self._gen = self._events()
        return g

    def __next__(self):
        return next(iter(self))

    def _events(self):
        """The iteration: decodes frames one at a time from the receive buffer.

        One Event is made per step and none is kept, so a caller that drops
        each event leaves nothing for the cyclic garbage collector to scan.
        """
        conn = self._conn
        try:
            if self._error is not None:
                raise self._error
            self.timed_out = False
            timeout = self.timeout
            deadline = None if timeout is None else _time.monotonic() + timeout
            yielded = False
            # The bytes every Event frame of this subscription starts with
            # (id field, Event tag), and the previous event's partition field.
            head = self._head
            lh = len(head)
            pkey = b"\xff"
            lpk = 1
            pname = ""
            parts = self._partitions
            read_varint = wire.read_varint
            new_event = Event
            while not self.closed:
                buf = conn.buf
                pos = conn.pos
                end = len(buf)
                while pos < end:
                    b = buf[pos]
                    if b < 0x80:
                        p = pos + 1
                        flen = b
                    elif pos + 1 < end and buf[pos + 1] < 0x80:
                        p = pos + 2
                        flen = (b & 0x7F) | (buf[pos + 1] << 7)
                    else:
                        try:
                            flen, p = read_varint(buf, pos)
                        except IndexError:
                            break
                        except wire.WireError as e:
                            conn.close()
                            raise ProtocolError("protobusd at %s sent a bad frame length: %s"
                                                % (conn.address, e)) from None
                    fend = p + flen
                    if fend > end:
                        break
                    # Fast path, the daemon's Event frame (FORMAT.md 4.5): 08
                    # id 32 len [0a len partition] [10 offset] 1a len event,
                    # ending with the frame; anything else goes to _general.
                    try:
                        if buf.startswith(head, p):
                            q = p + lh
                            n = buf[q]
                            if n < 0x80:
                                q += 1
                            elif buf[q + 1] < 0x80:
                                n = (n & 0x7F) | (buf[q + 1] << 7)
                                q += 2
                            else:
                                n = end  # 3 bytes or more: _general
                            if q + n == fend:
                                if buf.startswith(pkey, q):
                                    q += lpk
                                    part = pname
                                elif buf[q] == 0x0A and buf[q + 1] < 0x80:
                                    k = q + 2 + buf[q + 1]
                                    pkey = buf[q:k]
                                    lpk = len(pkey)
                                    pname = part = parts.get(pkey)
                                    if part is None:
                                        pname = part = self._partition(pkey)
                                    q = k
                                elif buf[q] == 0x0A:
                                    q = end  # a name of 128 bytes or more: _general
                                else:
                                    part = ""
                                if buf[q] == 0x10:
                                    off = buf[q + 1]
                                    q += 2
                                    if off >= 0x80:
                                        off &= 0x7F
                                        shift = 7
                                        while True:
                                            b = buf[q]
                                            q += 1
                                            off |= (b & 0x7F) << shift
                                            if b < 0x80:
                                                break
                                            shift += 7
                                            if shift > 63:
                                                raise wire.WireError("varint over 10 bytes")
                                else:
                                    off = 0
                                if buf[q] == 0x1A:
                                    n = buf[q + 1]
                                    q += 2
                                    if n >= 0x80:
                                        if buf[q] < 0x80:
                                            n = (n & 0x7F) | (buf[q] << 7)
                                            q += 1
                                        else:
                                            n = end  # 3 bytes or more: _general
                                    if q + n == fend and off <= 0xFFFFFFFFFFFFFFFF:
                                        conn.pos = pos = fend
                                        yield new_event(part, off, buf[q:fend])
                                        yielded = True
                                        continue
                    except (IndexError, wire.WireError):
                        pass
                    item = self._general(buf, p, fend)
                    conn.pos = pos = fend
                    if item is None:
                        continue
                    if type(item) is Event:
                        yield item
                        yielded = True
                    elif self._control(item):
                        return
                # Every whole frame is consumed: wait for more.
                if yielded:
                    # The timeout counts from the caller's return after an event.
                    yielded = False
                    deadline = None if timeout is None else _time.monotonic() + timeout
                wait = None
                if deadline is not None:
                    wait = deadline - _time.monotonic()
                    if wait <= 0:
                        self.timed_out = True
                        return
                if not conn.fill(wait, "the events of its subscription"):
                    self.timed_out = True
                    return
        except ConnectionLostError:
            if not self.closed:
                raise
        finally:
            self._gen = None

    def _control(self, it):
        """Handles a control item; True if the iteration ends here."""
        if isinstance(it, errors.ServerError):
            if it.code_number in _NOTICE_CODES:
                if self.on_notice is not None:
                    self.on_notice(it)
                    return False
                raise it
            self._error = it
            self.close()
            raise it
        kind, value = it
        if (kind == _SUBSCRIBED and self.positions is not None) or \
                (kind == _CAUGHT_UP and self.caught_up):
            self._conn.close()
            self._error = ProtocolError("protobusd at %s sent a second %s"
                                        % (self._conn.address, "Subscribed" if kind ==
                                           _SUBSCRIBED else "CaughtUp"))
            self.closed = True
            raise self._error
        if kind == _SUBSCRIBED:
            self.positions = value
        elif kind == _CAUGHT_UP:
            self.caught_up = True
            self.history_events = value
            if self.on_caught_up is not None:
                self.on_caught_up(self)
            return self.until_caught_up
        return False

    def _await_subscribed(self, timeout):
        """Reads the answer to the Subscribe: Subscribed, or an Error (raised)."""
        conn = self._conn
        while self.positions is None:
            fid, body, s, e = conn.read_frame("the answer to its Subscribe", timeout)
            if body in (wire.SUBSCRIBED, wire.ERROR, wire.PING):
                item = self._item(conn.buf, fid, body, s, e)
                if item is not None:
                    self._control(item)  # Subscribed, or the refusal raised
            elif body not in (0, wire.PONG):
                conn.close()
                raise ProtocolError("protobusd at %s sent %s before Subscribed"
                                    % (conn.address, "an Event" if body == wire.EVENT
                                       else "a %s frame" % wire.BODY_NAMES[body]))

    # --- decoding -----------------------------------------------------------

    def _set_id(self, sid):
        self._id = sid
        self._head = (b"\x08" + wire.varint(sid) if sid else b"") + b"\x32"

    def _partition(self, key):
        """The name in a partition field's bytes (tag, length, name), cached."""
        try:
            name = key[2:].decode("utf-8")
        except UnicodeDecodeError:
            self._conn.close()
            raise ProtocolError("protobusd at %s sent a partition name that is not UTF-8: %r"
                                % (self._conn.address, key)) from None
        if len(self._partitions) > 65536:
            self._partitions.clear()
        self._partitions[key] = name
        return name

    def _general(self, buf, start, end):
        """The item for any frame (the field walker): an Event, a control item or None."""
        try:
            fid, body, s, e = wire.split_frame(buf, start, end)
        except (wire.WireError, IndexError) as exc:
            raise self._malformed(exc) from None
        return self._item(buf, fid, body, s, e)

    def _malformed(self, why):
        self._conn.close()
        return ProtocolError("protobusd at %s sent a malformed frame on a subscription: %s"
                             % (self._conn.address, why))

    def _item(self, buf, fid, body, s, e):
        """The item for a frame's body: an Event, a control item or None."""
        conn = self._conn
        try:
            if body == wire.EVENT:
                part = ""
                off = 0
                raw = None
                for num, wt, v in wire.fields(buf, s, e):
                    if num == 1 and wt == 2:
                        part = wire.read_string(buf, v[0], v[1])
                    elif num == 2 and wt == 0:
                        off = v
                    elif num == 3 and wt == 2:
                        if raw is not None:
                            raise wire.WireError("Event has field 3 (event) twice")
                        raw = buf[v[0]:v[1]]
                    elif num in (1, 2, 3):
                        raise wire.WireError("Event field %d has wire type %d" % (num, wt))
                if raw is None:
                    raise wire.WireError("Event without field 3 (event)")
                item = Event(part, off, raw)
            elif body == wire.ERROR:
                item = error_from_body(conn, s, e)
                if fid not in (0, self._id):
                    raise wire.WireError("Error with id %d on a subscription with id %d"
                                         % (fid, self._id))
                return item
            elif body == wire.SUBSCRIBED:
                positions = {k: Position(*v) for k, v in wire.decode_subscribed(buf, s, e).items()}
                item = (_SUBSCRIBED, positions)
            elif body == wire.CAUGHT_UP:
                item = (_CAUGHT_UP, wire.decode_caught_up(buf, s, e))
            elif body == wire.PING:
                conn.send(wire.frame(fid, wire.PONG, b""))
                return None
            elif body in (0, wire.PONG):
                return None  # a frame type from a newer protocol, or a Pong
            else:
                raise wire.WireError("a %s frame on a subscription" % wire.BODY_NAMES[body])
            if fid != self._id:
                raise wire.WireError("%s frame with id %d on a subscription with id %d"
                                     % (wire.BODY_NAMES[body], fid, self._id))
            return item
        except (wire.WireError, IndexError) as exc:
            raise self._malformed(exc) from None
