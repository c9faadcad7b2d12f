"""The exceptions protobus raises.

Every exception is a ProtobusError with ``.code``, the name of a Code of
protobus.proto ("INVALID_ARGUMENT", "NOT_FOUND", ...), and ``.message``.
Errors the server sent are ServerError subclasses, one per code, carrying the
rest of the server's Error frame (partition, offsets, the batch event
concerned). Errors the client detects itself use the code the server would
use for the same thing, or UNAVAILABLE (no connection), DEADLINE_EXCEEDED (no
answer in time), INTERNAL (the server broke the protocol).
"""

# protobus.Code, by number (gRPC numbering).
CODE_NAMES = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}
CODE_NUMBERS = {name: number for number, name in CODE_NAMES.items()}


class ProtobusError(Exception):
    """Base class of every protobus exception.

    ``code`` is a Code name (str), ``message`` the explanation (the server's
    own message for errors it sent).
    """

    code = "UNKNOWN"

    def __init__(self, message, code=None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self):
        return "%s: %s" % (self.code, self.message)


class ServerError(ProtobusError):
    """An Error frame from the server.

    ``partition``, ``first_offset`` and ``last_offset`` are set for DATA_LOSS
    and OUT_OF_RANGE notices (and name the partition of a failed publish);
    ``event_index`` is the index of the event concerned within the request
    (publish_many: within the whole call), or None. ``code_number`` is the
    numeric Code. publish_many also sets ``acks``: one (partition, offset) per
    event given, None for each event that was not stored. A FAILED_PRECONDITION
    of an expectation (publish's expect_last, publish_many's expect) sets
    ``expected`` and ``actual``: (topic, last offset), the offset None for
    "no event"; both are None otherwise.
    """

    def __init__(self, message, code=None, partition="", first_offset=0, last_offset=0,
                 event_index=None, code_number=None):
        super().__init__(message, code)
        self.code_number = CODE_NUMBERS.get(self.code, code_number) if code_number is None \
            else code_number
        self.partition = partition
        self.first_offset = first_offset
        self.last_offset = last_offset
        self.event_index = event_index
        self.acks = None
        self.expected = None
        self.actual = None


class CancelledError(ServerError):
    code = "CANCELLED"


class UnknownError(ServerError):
    code = "UNKNOWN"


class InvalidArgumentError(ServerError):
    code = "INVALID_ARGUMENT"


class DeadlineExceededError(ServerError):
    code = "DEADLINE_EXCEEDED"


class NotFoundError(ServerError):
    code = "NOT_FOUND"


class AlreadyExistsError(ServerError):
    code = "ALREADY_EXISTS"


class PermissionDeniedError(ServerError):
    code = "PERMISSION_DENIED"


class ResourceExhaustedError(ServerError):
    code = "RESOURCE_EXHAUSTED"


class FailedPreconditionError(ServerError):
    code = "FAILED_PRECONDITION"


class AbortedError(ServerError):
    code = "ABORTED"


class OutOfRangeError(ServerError):
    """Also the notice that offsets of a subscription were removed by retention."""

    code = "OUT_OF_RANGE"


class UnimplementedError(ServerError):
    code = "UNIMPLEMENTED"


class InternalError(ServerError):
    code = "INTERNAL"


class UnavailableError(ServerError):
    code = "UNAVAILABLE"


class DataLossError(ServerError):
    """Also the notice that stored events of a subscription could not be read."""

    code = "DATA_LOSS"


class UnauthenticatedError(ServerError):
    code = "UNAUTHENTICATED"


_BY_CODE = {cls.code: cls for cls in (
    CancelledError, UnknownError, InvalidArgumentError, DeadlineExceededError, NotFoundError,
    AlreadyExistsError, PermissionDeniedError, ResourceExhaustedError, FailedPreconditionError,
    AbortedError, OutOfRangeError, UnimplementedError, InternalError, UnavailableError,
    DataLossError, UnauthenticatedError)}


def server_error(code_number, message, partition="", first_offset=0, last_offset=0,
                 event_index=None):
    """The ServerError subclass instance for an Error frame's fields."""
    name = CODE_NAMES.get(code_number)
    cls = _BY_CODE.get(name, ServerError)
    if name is None:
        name = "UNKNOWN"
    return cls(message, name, partition, first_offset, last_offset, event_index, code_number)


class ConnectionLostError(ProtobusError, ConnectionError):
    """No connection to the server: it could not be made, or it broke.

    Also a ConnectionError. Requests whose answer had not arrived may or may
    not have been carried out.
    """

    code = "UNAVAILABLE"


class TimeoutError(ProtobusError, TimeoutError):  # noqa: A001 (also the builtin)
    """The server did not answer within the client's timeout.

    Also the builtin TimeoutError. The connection is closed (a late answer
    could not be matched any more); the next request opens a new one.
    """

    code = "DEADLINE_EXCEEDED"


class ProtocolError(ProtobusError):
    """The server sent bytes this client cannot read as protocol version 1.

    The connection is closed.
    """

    code = "INTERNAL"
