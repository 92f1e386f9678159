"""The STOMP session's one error root. Each engine's wording of refusals and its table from
core errors to ERROR frames are in ``flavours``."""

from __future__ import annotations

class StompError(Exception):
    """A request the session refuses with an ERROR frame.

    ``message`` goes to the ERROR frame's ``message`` header, ``detail`` to its
    text/plain body (STOMP 1.2, "ERROR"). STOMP 1.2 says the server then closes the
    connection; both engines keep it open after most refusals (RabbitMQ: a refused frame
    is answered and the connection goes on; ActiveMQ: only a fatal ``ProtocolException``
    closes), so ``close`` says whether this one ends the connection.
    """

    def __init__(self, message: str, detail: str = "", close: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or message
        self.close = close


def protocol_exception(message: str, close: bool = False) -> StompError:
    """ActiveMQ: a ``ProtocolException`` with the text in the ``message`` header and the
    exception (its stack trace, on ActiveMQ) in the body. Only the fatal ones close."""
    return StompError(message, f"org.apache.activemq.transport.stomp.ProtocolException: {message}\n", close)


def security_exception(message: str, close: bool = False) -> StompError:
    """ActiveMQ: a refused login or destination (the broker's SecurityException): the text in
    the ``message`` header and alone in the body (checked against ActiveMQ 5.17)."""
    return StompError(message, message, close)
