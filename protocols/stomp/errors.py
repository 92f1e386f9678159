"""The STOMP session's one error root, and the table from core errors to ERROR frames."""

from __future__ import annotations

from mqemu.broker.errors import AccessRefused, BrokerError


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


def for_engine(engine: str, rabbit: StompError, activemq_text: str, activemq_close: bool = False,
               security: bool = False) -> StompError:
    """One refusal worded as each engine words it (ActiveMQ: a ProtocolException, or a
    SecurityException with ``security``)."""
    if engine == "rabbitmq":
        return rabbit
    return (security_exception if security else protocol_exception)(activemq_text, activemq_close)


def from_broker_error(e: BrokerError, engine: str) -> StompError:
    """RabbitMQ: the AMQP error name in lower case (``not_found``) with the text as body,
    as the plugin's ``amqp_death`` writes it. ActiveMQ: the exception text in both."""
    if engine == "rabbitmq":  # the channel died: RabbitMQ closes the STOMP connection too
        return StompError(e.name.lower(), f"{e.name} - {e.text}\n", close=True)
    if isinstance(e, AccessRefused):
        return security_exception(e.text)
    return StompError(e.text, f"{type(e).__name__}: {e.text}\n")
