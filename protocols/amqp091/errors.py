"""Errors raised by the AMQP 0-9-1 codec, and the reply codes they carry.

Every error the codec raises is a connection-level ("hard") error in the sense
of AMQP 0-9-1 §1.2 (constants with class ``hard-error``): after it the session
must send ``connection.close`` with :attr:`AMQPFrameError.reply_code` (or, for
:class:`ProtocolHeaderMismatch`, answer with the protocol header and close).
"""

from __future__ import annotations

# Reply codes, AMQP 0-9-1 §1.2 (the "constants" of the machine-readable spec).
FRAME_ERROR = 501
SYNTAX_ERROR = 502
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
NOT_IMPLEMENTED = 540
INTERNAL_ERROR = 541

__all__ = [
    "AMQPFrameError",
    "ProtocolHeaderMismatch",
    "FRAME_ERROR",
    "SYNTAX_ERROR",
    "COMMAND_INVALID",
    "CHANNEL_ERROR",
    "UNEXPECTED_FRAME",
    "NOT_IMPLEMENTED",
    "INTERNAL_ERROR",
]


class AMQPFrameError(Exception):
    """Bad input on the wire; always a connection-level error.

    Attributes:
        reply_code: the AMQP reply code to put in ``connection.close``.
        text: the reply text (already prefixed with the code's name, RabbitMQ
            style, e.g. ``"FRAME_ERROR - ..."``).
        class_id, method_id: the method being decoded when known, else 0.
    """

    __slots__ = ("reply_code", "text", "class_id", "method_id")

    def __init__(self, reply_code: int, text: str, class_id: int = 0, method_id: int = 0) -> None:
        super().__init__(reply_code, text)
        self.reply_code = reply_code
        self.text = text
        self.class_id = class_id
        self.method_id = method_id

    def __str__(self) -> str:
        return f"{self.reply_code} {self.text}"


class ProtocolHeaderMismatch(AMQPFrameError):
    """The peer did not open with ``AMQP\\x00\\x00\\x09\\x01``.

    Per AMQP 0-9-1 §4.2.2 the server answers with its own protocol header and
    closes the socket (no ``connection.close``). ``received`` holds the first
    bytes seen.
    """

    __slots__ = ("received",)

    def __init__(self, received: bytes) -> None:
        super().__init__(FRAME_ERROR, f"FRAME_ERROR - bad protocol header {received!r}")
        self.received = received


def frame_error(text: str, class_id: int = 0, method_id: int = 0) -> AMQPFrameError:
    """Build a 501 FRAME_ERROR."""
    return AMQPFrameError(FRAME_ERROR, "FRAME_ERROR - " + text, class_id, method_id)


def syntax_error(text: str, class_id: int = 0, method_id: int = 0) -> AMQPFrameError:
    """Build a 502 SYNTAX_ERROR."""
    return AMQPFrameError(SYNTAX_ERROR, "SYNTAX_ERROR - " + text, class_id, method_id)
