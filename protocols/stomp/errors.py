"""The STOMP session's one error root, and the table from core errors to ERROR frames."""

from __future__ import annotations

from mqemu.broker.errors import BrokerError


class StompError(Exception):
    """A request the session refuses: it sends an ERROR frame and closes the connection.

    ``message`` goes to the ERROR frame's ``message`` header, ``detail`` to its
    text/plain body (STOMP 1.2, "ERROR").
    """

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or message


def from_broker_error(e: BrokerError, engine: str) -> StompError:
    """RabbitMQ: the AMQP error name in lower case (``not_found``) with the text as body,
    as the plugin's ``amqp_death`` writes it. ActiveMQ: the exception text in both."""
    if engine == "rabbitmq":
        return StompError(e.name.lower(), f"{e.name} - {e.text}\n")
    return StompError(e.text, f"{type(e).__name__}: {e.text}\n")
