"""Protobus client: publish events to protobusd and subscribe to them.

    import protobus
    with protobus.Client("127.0.0.1:7420") as c:
        partition, offset = c.publish("orders.eu", b'{"id": 42}', tags={"site": "eu"})
        acks = c.publish_many(("orders.eu", b"...") for _ in range(10000))
        c.publish("orders.eu", b"once", id="order-42-created")    # retry-safe
        c.publish("cart.7", b"added", expect_last=41)             # optimistic concurrency
        for ev in c.subscribe([r"orders\\..*"], start="beginning", timeout=5):
            print(ev.topic, ev.partition, ev.offset, ev.payload)

Pure Python on the protobuf package; speaks protocol version 1 (FORMAT.md
Part A). Thread safety: a Client may be shared by threads (its publishing
calls take turns on its one connection); a Subscription is iterated by one
thread at a time and may be closed from any thread.
"""

from ._version import __version__
from .client import Client, Duplicate, Message
from .connection import ServerInfo
from .errors import (AbortedError, AlreadyExistsError, CancelledError, ConnectionLostError,
                     DataLossError, DeadlineExceededError, FailedPreconditionError,
                     InternalError, InvalidArgumentError, NotFoundError, OutOfRangeError,
                     PermissionDeniedError, ProtobusError, ProtocolError, ResourceExhaustedError,
                     ServerError, TimeoutError, UnauthenticatedError, UnavailableError,
                     UnimplementedError, UnknownError)
from .event import Event
from .subscription import Position, Subscription

__all__ = [
    "__version__", "Client", "Duplicate", "Message", "ServerInfo", "Event", "Position", "Subscription",
    "ProtobusError", "ServerError", "ConnectionLostError", "TimeoutError", "ProtocolError",
    "CancelledError", "UnknownError", "InvalidArgumentError", "DeadlineExceededError",
    "NotFoundError", "AlreadyExistsError", "PermissionDeniedError", "ResourceExhaustedError",
    "FailedPreconditionError", "AbortedError", "OutOfRangeError", "UnimplementedError",
    "InternalError", "UnavailableError", "DataLossError", "UnauthenticatedError",
]
