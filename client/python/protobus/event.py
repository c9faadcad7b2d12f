"""Events as a subscriber receives them.

An Event holds the stored EncapsulatedEvent bytes (``raw``) with its
partition and offset; every other attribute is decoded from ``raw`` the
first time it is read (one walk over the top-level fields for topic, payload
and id; tags and times on their own), so a subscriber pays only for what it
looks at, and never for a protobuf message object.
"""

from datetime import datetime, timedelta, timezone

from . import wire
from .wire import WireError, read_varint, read_string

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def ns_to_datetime(ns):
    """An aware UTC datetime for ns nanoseconds since the epoch (microseconds kept)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def datetime_to_ns(dt):
    """Nanoseconds since the epoch of an aware datetime (naive ones are refused)."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError("datetime %s has no time zone: give an aware one, e.g. "
                         "datetime.now(timezone.utc)" % dt.isoformat())
    d = dt - _EPOCH
    return (d.days * 86400 + d.seconds) * 1000000000 + d.microseconds * 1000


_TOP = frozenset(("topic", "payload", "payload_type", "payload_size", "id"))
_TIMES = {"client_event_time_ns": "_cet", "client_transmit_time_ns": "_ctt",
          "server_receive_time_ns": "_srt"}
_DATETIMES = {"client_event_time": "client_event_time_ns",
              "client_transmit_time": "client_transmit_time_ns",
              "server_receive_time": "server_receive_time_ns"}


class Event:
    """One delivered event.

    Attributes: ``partition`` (str), ``offset`` (int), ``topic`` (str),
    ``tags`` (dict str -> str), ``payload`` (bytes, the Any's value),
    ``payload_type`` (str, the Any's type URL, "" when none was given),
    ``payload_size`` (int, as the publisher set it), ``id`` (str, the
    publisher's event id, "" when none), ``client_event_time``,
    ``client_transmit_time``, ``server_receive_time`` (aware UTC datetimes,
    microsecond precision, None when absent) and the same three as integer
    nanoseconds since the epoch (``*_ns``, None when absent), and ``raw``
    (the stored EncapsulatedEvent bytes, for ``to_proto()`` or your own
    decoder).

    Decoding errors (bytes that are not an EncapsulatedEvent: the server
    validates every event, so only a damaged or foreign server can send
    them) raise protobus.ProtocolError when the attribute is read.
    """

    __slots__ = ("partition", "offset", "raw", "topic", "payload", "payload_type",
                 "payload_size", "id", "tags", "client_event_time_ns", "client_transmit_time_ns",
                 "server_receive_time_ns", "client_event_time", "client_transmit_time",
                 "server_receive_time", "_tag_spans", "_cet", "_ctt", "_srt")

    def __init__(self, partition, offset, raw):
        self.partition = partition
        self.offset = offset
        self.raw = raw

    def __getattr__(self, name):
        # Only called for a slot not set yet: decode what it needs, set it.
        if name in _TOP or name in ("_tag_spans", "_cet", "_ctt", "_srt"):
            self._parse()
        elif name == "tags":
            self.tags = self._decode_tags()
        elif name in _TIMES:
            spans = getattr(self, _TIMES[name])
            setattr(self, name, self._decode_time(spans))
        elif name in _DATETIMES:
            ns = getattr(self, _DATETIMES[name])
            setattr(self, name, None if ns is None else ns_to_datetime(ns))
        else:
            raise AttributeError("%r object has no attribute %r" % (type(self).__name__, name))
        return object.__getattribute__(self, name)

    def _parse(self):
        buf = self.raw
        end = len(buf)
        topic = b""
        type_url = b""
        payload = None
        payload_size = 0
        event_id = b""
        tag_spans = cet = ctt = srt = None
        pos = 0
        try:
            while pos < end:
                key = buf[pos]
                if key < 0x80:
                    pos += 1
                else:
                    key, pos = read_varint(buf, pos)
                wt = key & 7
                if wt == 2:
                    n = buf[pos]
                    if n < 0x80:
                        pos += 1
                    else:
                        n, pos = read_varint(buf, pos)
                    s = pos
                    pos += n
                    if pos > end:
                        raise WireError("field %d runs past the end of the event" % (key >> 3))
                    f = key >> 3
                    if f == 1:
                        topic = buf[s:pos]
                    elif f == 7:
                        # Fast path: an Any of just a value shorter than 128 bytes.
                        if (pos - s >= 2 and buf[s] == 0x12 and buf[s + 1] < 0x80
                                and s + 2 + buf[s + 1] == pos):
                            payload = buf[s + 2:pos]
                        else:
                            type_url, payload = _any(buf, s, pos, type_url, payload)
                    elif f == 2:
                        if tag_spans is None:
                            tag_spans = []
                        tag_spans.append((s, pos))
                    elif f == 5:
                        srt = (srt or ()) + ((s, pos),)
                    elif f == 3:
                        cet = (cet or ()) + ((s, pos),)
                    elif f == 4:
                        ctt = (ctt or ()) + ((s, pos),)
                    elif f == 8:
                        event_id = buf[s:pos]
                    elif f == 6:
                        raise WireError("field 6 (payload_size) is not a varint")
                elif wt == 0:
                    v = buf[pos]
                    if v < 0x80:
                        pos += 1
                    else:
                        v, pos = read_varint(buf, pos)
                    if key >> 3 == 6:
                        payload_size = v - (1 << 64) if v >= (1 << 63) else v
                    elif key >> 3 in (1, 2, 3, 4, 5, 7, 8):
                        raise WireError("field %d is a varint" % (key >> 3))
                else:
                    if key >> 3 in (1, 2, 3, 4, 5, 6, 7, 8):
                        raise WireError("field %d has wire type %d" % (key >> 3, wt))
                    pos = wire.skip_field(buf, pos, end, wt)
            if pos != end:
                raise WireError("the last field runs past the end of the event")
            self.topic = topic.decode("utf-8")
            self.payload_type = type_url.decode("utf-8")
            self.id = event_id.decode("utf-8")
        except (WireError, IndexError, UnicodeDecodeError) as e:
            raise _bad_event(self, e) from None
        self.payload = payload if payload is not None else b""
        self.payload_size = payload_size
        self._tag_spans = tag_spans
        self._cet = cet
        self._ctt = ctt
        self._srt = srt

    def _decode_tags(self):
        spans = self._tag_spans
        tags = {}
        if not spans:
            return tags
        buf = self.raw
        try:
            for s, e in spans:
                k = v = ""
                for num, wt, val in wire.fields(buf, s, e):
                    if num in (1, 2):
                        if wt != 2:
                            raise WireError("tag entry field %d is not a string" % num)
                        if num == 1:
                            k = read_string(buf, val[0], val[1])
                        else:
                            v = read_string(buf, val[0], val[1])
                tags[k] = v
        except (WireError, IndexError) as e:
            raise _bad_event(self, e) from None
        return tags

    def _decode_time(self, spans):
        if spans is None:
            return None
        seconds = nanos = 0
        try:
            for s, e in spans:
                seconds, nanos = wire.decode_timestamp(self.raw, s, e, seconds, nanos)
        except (WireError, IndexError) as e:
            raise _bad_event(self, e) from None
        return seconds * 1000000000 + nanos

    def to_proto(self):
        """The event as a protobus_pb2.EncapsulatedEvent message."""
        from . import protobus_pb2
        return protobus_pb2.EncapsulatedEvent.FromString(self.raw)

    def __eq__(self, other):
        if not isinstance(other, Event):
            return NotImplemented
        return (self.partition, self.offset, self.raw) == (other.partition, other.offset,
                                                           other.raw)

    def __hash__(self):
        return hash((self.partition, self.offset))

    def __repr__(self):
        return "Event(partition=%r, offset=%d, topic=%r, tags=%r, payload=%r)" % (
            self.partition, self.offset, self.topic, self.tags,
            self.payload if len(self.payload) <= 64 else self.payload[:64] + b"...")


def _any(buf, start, end, type_url, value):
    """Merges a google.protobuf.Any occurrence into (type_url, value)."""
    pos = start
    while pos < end:
        key, pos = read_varint(buf, pos)
        if key & 7 == 2:
            n, pos = read_varint(buf, pos)
            s = pos
            pos += n
            if pos > end:
                raise WireError("payload field %d runs past the end of the payload" % (key >> 3))
            if key >> 3 == 1:
                type_url = buf[s:pos]
            elif key >> 3 == 2:
                value = buf[s:pos]
        else:
            if key >> 3 in (1, 2):
                raise WireError("payload field %d is not length-delimited" % (key >> 3))
            pos = wire.skip_field(buf, pos, end, key & 7)
    if pos != end:
        raise WireError("the payload's last field runs past its end")
    return type_url, value


def _bad_event(ev, why):
    from .errors import ProtocolError
    return ProtocolError("event at partition %s offset %d is not a valid EncapsulatedEvent: %s"
                         % (ev.partition, ev.offset, why))
