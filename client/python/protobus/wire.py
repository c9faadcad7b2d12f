"""Protobuf wire format by hand, for the frames on the hot paths.

FORMAT.md Part A: a connection carries varint-length-delimited Frame
messages. Publish frames (one per batch of events) are built here as bytes,
and the frames a publisher or subscriber receives in bulk (PublishAck,
Event, Subscribed, CaughtUp) are read here field by field, so neither side
pays for a protobuf message object per event. Cold frames (Hello, Subscribe,
Error) go through the generated protobus_pb2 module instead.

Decoders take a bytes object and positions in it, return the value and the
next position, and raise WireError on malformed input (an IndexError from a
truncated buffer is turned into one by the callers' ``except``).
"""

# Frame body field numbers (protobus.proto, message Frame).
HELLO = 2
PUBLISH = 3
PUBLISH_ACK = 4
SUBSCRIBE = 5
EVENT = 6
ERROR = 7
SUBSCRIBED = 8
CAUGHT_UP = 9
REPLICA_ACK = 10
PING = 11
PONG = 12

BODY_NAMES = {HELLO: "Hello", PUBLISH: "Publish", PUBLISH_ACK: "PublishAck",
              SUBSCRIBE: "Subscribe", EVENT: "Event", ERROR: "Error",
              SUBSCRIBED: "Subscribed", CAUGHT_UP: "CaughtUp", REPLICA_ACK: "ReplicaAck",
              PING: "Ping", PONG: "Pong"}

_U64 = (1 << 64) - 1
_SMALL = [bytes((i,)) for i in range(128)]


class WireError(ValueError):
    """Bytes that are not the protobuf encoding they should be."""


# --- encoding -------------------------------------------------------------


def varint(n):
    """The varint encoding of n (negative: its 64-bit two's complement)."""
    if 0 <= n < 0x80:
        return _SMALL[n]
    if 0 < n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    n &= _U64
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tag(field, wire_type):
    return varint((field << 3) | wire_type)


def len_field(field, data):
    """A length-delimited field: tag, length, bytes."""
    return tag(field, 2) + varint(len(data)) + data


def timestamp_field(field, ns):
    """A google.protobuf.Timestamp field for ns nanoseconds since the epoch.

    nanos always counts forward (-1 ns is seconds -1, nanos 999999999);
    zero fields are omitted, as protobuf does.
    """
    seconds, nanos = divmod(ns, 1000000000)
    body = b""
    if seconds:
        body = b"\x08" + varint(seconds)
    if nanos:
        body += b"\x10" + varint(nanos)
    return tag(field, 2) + varint(len(body)) + body


def frame(frame_id, field, body):
    """A whole delimited Frame: length prefix, id, one body field."""
    inner = b"\x08" + varint(frame_id) + tag(field, 2) + varint(len(body)) + body \
        if frame_id else tag(field, 2) + varint(len(body)) + body
    return varint(len(inner)) + inner


def frame_header(frame_id, field, body_len):
    """The bytes of a delimited Frame before its body of body_len bytes."""
    head = (b"\x08" + varint(frame_id) if frame_id else b"") + tag(field, 2) + varint(body_len)
    return varint(len(head) + body_len) + head


# --- decoding -------------------------------------------------------------


def read_varint(buf, pos):
    """(value, next position) of the varint at buf[pos]; at most 10 bytes, 64 bits."""
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    result = b & 0x7F
    shift = 7
    pos += 1
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 63:
            raise WireError("varint longer than 10 bytes")
    if result > _U64:
        raise WireError("varint overflows 64 bits")
    return result, pos


def skip_field(buf, pos, end, wire_type):
    """The position after a field's value (unknown fields are skipped)."""
    if wire_type == 0:
        _, pos = read_varint(buf, pos)
    elif wire_type == 2:
        n, pos = read_varint(buf, pos)
        pos += n
    elif wire_type == 1:
        pos += 8
    elif wire_type == 5:
        pos += 4
    else:
        raise WireError("wire type %d is not allowed" % wire_type)
    if pos > end:
        raise WireError("field runs past the end of its message")
    return pos


def fields(buf, pos, end):
    """Yields (field number, wire type, value) for a message in buf[pos:end].

    value is an int for varints, a (start, end) pair for length-delimited
    fields, None for fixed-size ones (no message of ours has any).
    """
    while pos < end:
        key, pos = read_varint(buf, pos)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise WireError("field number 0")
        if wt == 0:
            v, pos = read_varint(buf, pos)
            yield num, wt, v
        elif wt == 2:
            n, pos = read_varint(buf, pos)
            if pos + n > end:
                raise WireError("field %d: length %d exceeds the %d bytes left"
                                % (num, n, end - pos))
            yield num, wt, (pos, pos + n)
            pos += n
        else:
            pos = skip_field(buf, pos, end, wt)
            yield num, wt, None
    if pos != end:
        raise WireError("message runs past its end")


def split_frame(buf, pos, end):
    """Parses the Frame in buf[pos:end]: (id, body field number, body start, body end).

    A frame without a body field this client knows yields field 0; two body
    fields are malformed (FORMAT.md 3).
    """
    frame_id = 0
    body = 0
    bstart = bend = pos
    for num, wt, v in fields(buf, pos, end):
        if num == 1:
            if wt != 0:
                raise WireError("Frame field 1 (id) is not a varint")
            frame_id = v
        elif 2 <= num <= 12:
            if wt != 2:
                raise WireError("Frame field %d is not length-delimited" % num)
            if body:
                raise WireError("Frame has two bodies (fields %d and %d)" % (body, num))
            body = num
            bstart, bend = v
    return frame_id, body, bstart, bend


def read_string(buf, start, end):
    try:
        return buf[start:end].decode("utf-8")
    except UnicodeDecodeError as e:
        raise WireError("string is not valid UTF-8: %s" % e) from None


def _packed(buf, pos, end, out):
    """Appends the varints of a packed field's bytes buf[pos:end] to out."""
    while pos < end:
        b = buf[pos]
        pos += 1
        if b < 0x80:
            out.append(b)
            continue
        v = b & 0x7F
        shift = 7
        while True:
            b = buf[pos]
            pos += 1
            v |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift > 63:
                raise WireError("varint longer than 10 bytes")
        out.append(v)
    if pos != end:
        raise WireError("packed varints run past their field")


def decode_publish_ack(buf, start, end):
    """(partitions, partition_index, offsets, duplicates) of a PublishAck body.

    Packed and unpacked number lists are both accepted (FORMAT.md 4.3).
    """
    partitions = []
    index = []
    offsets = []
    duplicates = []
    lists = {2: index, 3: offsets, 4: duplicates}
    for num, wt, v in fields(buf, start, end):
        if num == 1 and wt == 2:
            partitions.append(read_string(buf, v[0], v[1]))
        elif num in lists:
            if wt == 2:
                _packed(buf, v[0], v[1], lists[num])
            elif wt == 0:
                lists[num].append(v)
            else:
                raise WireError("PublishAck field %d has wire type %d" % (num, wt))
        elif num == 1:
            raise WireError("PublishAck field 1 (partitions) is not length-delimited")
    if len(index) != len(offsets):
        raise WireError("PublishAck has %d partition indexes but %d offsets"
                        % (len(index), len(offsets)))
    for i in index:
        if i >= len(partitions):
            raise WireError("PublishAck partition index %d but %d partitions"
                            % (i, len(partitions)))
    return partitions, index, offsets, duplicates


def decode_subscribed(buf, start, end):
    """{partition: (first_offset, start_offset, end_offset)} of a Subscribed body."""
    out = {}
    for num, wt, v in fields(buf, start, end):
        if num != 1:
            continue
        if wt != 2:
            raise WireError("Subscribed field 1 (partitions) is not length-delimited")
        name = ""
        offs = [0, 0, 0]
        for n2, wt2, v2 in fields(buf, v[0], v[1]):
            if n2 == 1 and wt2 == 2:
                name = read_string(buf, v2[0], v2[1])
            elif 2 <= n2 <= 4:
                if wt2 != 0:
                    raise WireError("PartitionPosition field %d is not a varint" % n2)
                offs[n2 - 2] = v2
        out[name] = tuple(offs)
    return out


def decode_caught_up(buf, start, end):
    """history_events of a CaughtUp body."""
    n = 0
    for num, wt, v in fields(buf, start, end):
        if num == 1:
            if wt != 0:
                raise WireError("CaughtUp field 1 (history_events) is not a varint")
            n = v
    return n


def decode_timestamp(buf, start, end, seconds=0, nanos=0):
    """(seconds, nanos) of a Timestamp body, merged over the given values.

    Repeated occurrences of a Timestamp field merge field by field
    (FORMAT.md 1), so a caller passes the previous occurrence's values.
    """
    for num, wt, v in fields(buf, start, end):
        if wt != 0:
            if num in (1, 2):
                raise WireError("Timestamp field %d is not a varint" % num)
            continue
        if num == 1:
            seconds = v - (1 << 64) if v >= (1 << 63) else v
        elif num == 2:
            nanos = v - (1 << 64) if v >= (1 << 63) else v
    return seconds, nanos
