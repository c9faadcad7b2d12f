"""One TCP connection to protobusd: connect, handshake, frames in and out.

The client speaks first (FORMAT.md, "Connection"): a Hello with
protocol_version 1, answered by the server's Hello (its name, limits and the
user the connection is authenticated as) or by an Error, after which the
server closes. Everything after that is frames: this module sends whole
frames and reads them back one at a time (``read_frame``) from a receive
buffer that the subscription's bulk decoder also reads directly.

Not thread-safe: each Connection is used by one thread at a time (the
Client's lock, or the Subscription's owner); only ``close`` may come from
another thread.
"""

import os
import select
import socket
import ssl

from . import errors, wire
from .errors import ConnectionLostError, ProtocolError

PROTOCOL_VERSION = 1
DEFAULT_ADDRESS = "127.0.0.1:7420"
DEFAULT_PORT = 7420
RECV_BYTES = 1 << 20


def _wrap_tls(sock, host, address, tls):
    """The socket under TLS (1.2 at least): the server's certificate checked
    against tls["ca"] (else the system's CAs) and the host or IP; a client
    certificate from tls["cert"] / tls["key"] for mutual TLS."""
    try:
        ctx = ssl.create_default_context(cafile=tls.get("ca"))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls.get("cert"):
            ctx.load_cert_chain(tls["cert"], tls.get("key"))
        return ctx.wrap_socket(sock, server_hostname=host)
    except (ssl.SSLError, OSError) as e:
        sock.close()
        raise ConnectionLostError("TLS handshake with protobusd at %s failed: %s"
                                  % (address, getattr(e, "reason", None) or e)) from None


def parse_address(address):
    """(host, port) from "host:port", "[v6addr]:port", "host" or a (host, port) pair.

    None means $PROTOBUS_SERVER, else 127.0.0.1:7420 (as the protobus CLI).
    """
    if address is None:
        address = os.environ.get("PROTOBUS_SERVER") or DEFAULT_ADDRESS
    if isinstance(address, tuple):
        host, port = address
        return str(host), int(port)
    if not isinstance(address, str):
        raise TypeError("address must be a str \"host:port\" or a (host, port) pair, not %s"
                        % type(address).__name__)
    a = address.strip()
    if a.startswith("tls://"):
        a = a[6:]  # TLS: Connection's business
    if a.startswith("["):
        close = a.find("]")
        if close < 0:
            raise ValueError("address %r: '[' without ']'" % address)
        host, rest = a[1:close], a[close + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError("address %r: expected ':PORT' after ']'" % address)
        port = rest[1:] if rest else str(DEFAULT_PORT)
    elif a.count(":") == 1:
        host, port = a.split(":")
    elif ":" in a:
        raise ValueError("address %r: put an IPv6 address in brackets: [::1]:7420" % address)
    else:
        host, port = a, str(DEFAULT_PORT)
    if not host:
        raise ValueError("address %r has no host" % address)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("address %r: port %r is not a number in 1..65535" % (address, port))
    return host, int(port)


def _seconds(timeout):
    return "%g s" % timeout if timeout is not None else "the system's TCP timeout"


class ServerInfo:
    """What the server said about itself in its Hello.

    ``name`` ("protobusd X.Y.Z"), ``protocol_version``, ``max_frame_bytes``,
    ``max_event_bytes``, ``user`` (the authenticated user, "" = anonymous) and
    ``limits`` (a dict of the Limits fields the server announced).
    """

    def __init__(self, hello):
        self.name = hello.name
        self.protocol_version = hello.protocol_version
        self.max_frame_bytes = hello.max_frame_bytes
        self.max_event_bytes = hello.max_event_bytes
        self.user = getattr(hello, "user", "")
        limits = getattr(hello, "limits", None)
        self.limits = {f.name: v for f, v in limits.ListFields()} if limits is not None else {}

    def __repr__(self):
        return "ServerInfo(name=%r, max_frame_bytes=%d, max_event_bytes=%d, user=%r)" % (
            self.name, self.max_frame_bytes, self.max_event_bytes, self.user)


def error_from_body(conn, start, end, event_offset=0):
    """The ServerError for the Error frame body conn.buf[start:end].

    event_index is shifted by event_offset. A malformed body closes the
    connection and raises ProtocolError.
    """
    from . import protobus_pb2 as pb
    try:
        e = pb.Error.FromString(conn.buf[start:end])
    except Exception as exc:  # protobuf's DecodeError, whatever the backend
        conn.close()
        raise ProtocolError("protobusd at %s sent a malformed Error frame: %s"
                            % (conn.address, exc)) from None
    index = e.event_index_plus_one - 1 + event_offset if e.event_index_plus_one else None
    err = errors.server_error(e.code, e.message, e.partition, e.first_offset, e.last_offset,
                              index)
    if e.HasField("expected"):
        # (topic, last offset or None for "no event") of Publish.expect.
        err.expected = (e.expected.topic, None if e.expected.none else e.expected.offset)
        err.actual = (e.actual.topic or e.expected.topic,
                      None if e.actual.none else e.actual.offset)
    return err


class Connection:
    """A connected, handshaken connection (see the module comment).

    ``timeout`` bounds each wait for the server (connect, handshake, a
    reply); None waits forever.
    """

    def __init__(self, address, timeout=30.0, name=None, user=None, password=None, tls=None):
        from . import protobus_pb2 as pb
        from . import __version__
        self.host, self.port = parse_address(address)
        self.address = "%s:%d" % (self.host, self.port) if ":" not in self.host \
            else "[%s]:%d" % (self.host, self.port)
        self.timeout = timeout
        self.closed = False
        self._next_id = 1
        self.buf = b""  # bytes received and not consumed: buf[pos:]
        self.pos = 0
        try:
            self.sock = socket.create_connection((self.host, self.port), timeout=timeout)
        except socket.timeout:
            raise errors.TimeoutError("cannot connect to protobusd at %s: no answer within %s"
                                      % (self.address, _seconds(timeout))) from None
        except OSError as e:
            raise ConnectionLostError("cannot connect to protobusd at %s: %s"
                                      % (self.address, e.strerror or e)) from None
        spelled = os.environ.get("PROTOBUS_SERVER") if address is None else address
        if tls is None and isinstance(spelled, str) and spelled.strip().startswith("tls://"):
            tls = {}
        if tls is not None:
            self.sock = _wrap_tls(self.sock, self.host, self.address, tls)
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            hello = pb.Hello(protocol_version=PROTOCOL_VERSION,
                             name=name or "protobus-python %s" % __version__,
                             user=user or "", password=password or "")
            hid = self.next_id()
            self.send(wire.frame(hid, wire.HELLO, hello.SerializeToString()))
            fid, body, s, e = self.read_frame("its Hello")
            if body == wire.ERROR:
                raise error_from_body(self, s, e)
            if body != wire.HELLO or fid != hid:
                raise ProtocolError("protobusd at %s answered the Hello with a %s frame (id %d)"
                                    % (self.address, wire.BODY_NAMES.get(body, "bodiless"), fid))
            try:
                self.server = ServerInfo(pb.Hello.FromString(self.buf[s:e]))
            except Exception as exc:
                raise ProtocolError("the server's Hello is malformed: %s" % exc) from None
            if self.server.protocol_version != PROTOCOL_VERSION:
                raise ProtocolError("protobusd at %s speaks protocol version %d; this client "
                                    "speaks %d" % (self.address, self.server.protocol_version,
                                                   PROTOCOL_VERSION))
        except BaseException:
            self.close()
            raise

    def next_id(self):
        i = self._next_id
        self._next_id += 1
        return i

    def send(self, data):
        try:
            self.sock.settimeout(self.timeout)
            self.sock.sendall(data)
        except socket.timeout:
            self.close()
            raise errors.TimeoutError("protobusd at %s accepted no bytes for %s"
                                      % (self.address, _seconds(self.timeout))) from None
        except OSError as e:
            self.close()
            raise ConnectionLostError("connection to protobusd at %s lost while sending: %s"
                                      % (self.address, e.strerror or e)) from None

    def fill(self, timeout, what):
        """Receives more bytes into buf; returns False if none came within timeout.

        The connection closing raises ConnectionLostError. timeout=None waits
        forever, 0 only takes what has arrived.
        """
        try:
            self.sock.settimeout(timeout)
            chunk = self.sock.recv(RECV_BYTES)
        except socket.timeout:
            return False
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except OSError as e:
            if self.closed:
                raise ConnectionLostError("connection closed") from None
            self.close()
            raise ConnectionLostError("connection to protobusd at %s lost: %s (this client was "
                                      "waiting for %s)" % (self.address, e.strerror or e, what)) \
                from None
        if not chunk:
            if self.closed:
                raise ConnectionLostError("connection closed")
            self.close()
            raise ConnectionLostError("protobusd at %s closed the connection (this client was "
                                      "waiting for %s)" % (self.address, what))
        if self.pos:
            self.buf = self.buf[self.pos:] + chunk
            self.pos = 0
        elif self.buf:
            self.buf += chunk
        else:
            self.buf = chunk
        return True

    def read_frame(self, what, timeout=-1):
        """The next frame: (id, body field number, body start, body end) in self.buf.

        The positions are valid until the next read. Waits at most timeout
        seconds (-1: the connection's timeout) for it: TimeoutError, and the
        connection is closed. A frame of a type this client does not know has
        body 0.
        """
        if timeout == -1:
            timeout = self.timeout
        while True:
            buf = self.buf
            pos = self.pos
            end = len(buf)
            if pos < end:
                try:
                    n, p = wire.read_varint(buf, pos)
                except IndexError:
                    p = end + 1  # the prefix is not complete yet
                except wire.WireError as e:
                    self.close()
                    raise ProtocolError("protobusd at %s sent a bad frame length: %s"
                                        % (self.address, e)) from None
                if p + n <= end:
                    self.pos = p + n
                    try:
                        return wire.split_frame(buf, p, p + n)
                    except (wire.WireError, IndexError) as e:
                        self.close()
                        raise ProtocolError("protobusd at %s sent a malformed frame: %s"
                                            % (self.address, e)) from None
            if not self.fill(timeout, what):
                self.close()
                raise errors.TimeoutError("no reply from protobusd at %s within %s (this "
                                          "client was waiting for %s)"
                                          % (self.address, _seconds(timeout), what))

    def usable(self):
        """Before a request: handles what arrived while none was in flight.

        A server may close an idle connection (after an Error with id 0) or
        go away; a new request would then be lost in a dead socket. Answers
        a Ping, skips a Pong; returns False (the connection closed) on end of
        stream, an Error or any other frame.
        """
        if self.closed:
            return False
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if readable and not self.fill(0, "nothing"):
                return True  # woken by nothing after all
            while self.pos < len(self.buf):
                fid, body, s, e = self.read_frame("the rest of a frame", 0)
                if body == wire.PING:
                    self.send(wire.frame(fid, wire.PONG, b""))
                elif body not in (0, wire.PONG):
                    self.close()
                    return False
        except (OSError, ValueError, errors.ProtobusError):
            self.close()
            return False
        return True

    def close(self):
        """Closes the socket; safe from any thread, any number of times.

        A thread blocked reading this connection gets ConnectionLostError.
        """
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
