#!/usr/bin/env python3
"""Writes the fixed data set of tests/integration/test_cli_render.sh: events
in the original protobus-server layout (u32 LE length + EncapsulatedEvent,
hand-encoded so that it can hold what a protobuf library would not write:
NULs in strings, repeated fields; every event is one the readers accept).
expected.json and expected.text are what `protobus cat` printed for it
before the renderer was rewritten (commit ab7a7a2)."""
import struct
import sys


def varint(n):
    n &= (1 << 64) - 1
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def ld(num, data):  # a length-delimited field
    return varint(num << 3 | 2) + varint(len(data)) + data


def vf(num, value):  # a varint field
    return varint(num << 3) + varint(value)


def ts(num, sec, nanos):
    return ld(num, vf(1, sec) + vf(2, nanos))


def tag(key, value):
    return ld(2, ld(1, key) + ld(2, value))


def any_(type_url, value):
    return ld(7, ld(1, type_url) + ld(2, value))


UNICODE = "café 日本 😀 ünïcödé".encode()
CONTROL = bytes(range(1, 32)) + b"\x7f"  # NUL: see below
BINARY = bytes((i * 37 + 11) & 0xFF for i in range(200))
BASE = 1764892800  # 2025-12-05T00:00:00Z

events = [
    # Every field, plain.
    ld(1, b"orders.eu") + tag(b"site", b"eu") + tag(b"tier", b"gold")
    + ts(3, BASE, 1) + ts(4, BASE, 2) + ts(5, BASE, 3) + vf(6, 10)
    + any_(b"type.googleapis.com/google.protobuf.StringValue", b'{"id": 42}'),
    # Unicode everywhere, quotes, backslashes, slashes.
    ld(1, UNICODE) + tag(UNICODE, UNICODE) + tag(b'q"uote', b"back\\slash/")
    + ts(5, BASE, 999999999) + any_(UNICODE, UNICODE * 4),
    # Control characters in every string.
    ld(1, b"ctl" + CONTROL) + tag(b"k" + CONTROL, CONTROL) + ts(5, BASE + 1, 0)
    + any_(CONTROL, CONTROL),
    # Binary payload (base64), with every byte value.
    ld(1, b"binary") + ts(5, BASE + 1, 5) + any_(b"bin", bytes(range(256))),
    # NUL bytes inside strings (protobuf-c's strings end there).
    ld(1, b"before\x00after") + tag(b"k\x00x", b"v\x00y") + any_(b"t\x00u", b"pay\x00load"),
    # Repeated tags: last value wins.
    tag(b"zeta", b"1") + tag(b"alpha", b"2") + tag(b"zeta", b"3") + tag(b"", b"empty key"),
    # No fields at all.
    b"",
    # Timestamps: before 1970, the first and last nanosecond of int64.
    ts(3, -1, 0) + ts(4, -9223372037, 145224192) + ts(5, 9223372036, 854775807),
    ts(3, 0, 0) + ts(4, -86400 * 365, 999999999) + ts(5, BASE, 0),
    # Repeated message fields (merged), unknown fields, the id.
    ld(1, b"first") + ld(1, b"second") + ts(5, BASE, 7) + ts(5, BASE + 2, 0)
    + any_(b"t1", b"one") + ld(7, ld(2, b"")) + ld(8, b"event-id-1") + vf(99, 5)
    + ld(100, b"unknown"),
    # Text payloads around the 64-byte cut of the text format.
    ld(1, b"long") + any_(b"", ("é" * 40).encode()),
    ld(1, b"long") + any_(b"", b"x" * 63 + "日".encode()),
    ld(1, b"long") + any_(b"", BINARY[:65]),
    # payload_size that disagrees, negative.
    ld(1, b"size") + vf(6, -5) + any_(b"", b"abc"),
]

with open(sys.argv[1], "wb") as f:
    for ev in events:
        f.write(struct.pack("<I", len(ev)) + ev)
