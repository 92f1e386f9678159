"""The STOMP listener: a session per accepted socket, run by the shared transport."""

from __future__ import annotations

import logging
from typing import Any

import trio

from mqemu.protocols.transport import MakeSession, serve_protocol

from .session import StompSession

log = logging.getLogger("mqemu.protocols.stomp")

# STOMP over WebSocket: the subprotocols clients offer (stomp.js, RabbitMQ's Web-STOMP,
# ActiveMQ's ws transport, which answers "stomp"), best first; frames go out as text messages.
WS_SUBPROTOCOLS = ("v12.stomp", "v11.stomp", "v10.stomp", "stomp")
WS_TEXT = True


async def serve_stomp(broker: Any, host: str, port: int, *, connections: set | None = None,
                      accepting: list | None = None,
                      task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Listen for STOMP 1.0-1.2 clients on host:port (0 = a free port); reports the bound
    port through task_status. Raises OSError when the port cannot be bound."""
    make, _task = session_factory(broker)
    await serve_protocol("stomp", host, port, make, log, sessions=connections, accepting=accepting,
                         task_status=task_status)


def session_factory(broker: Any) -> tuple[MakeSession, None]:
    """What makes a STOMP session for an accepted connection, for any listener (TCP, TLS,
    WebSocket); STOMP needs no task of its own beside them."""

    def make(peer: str | None, conn_id: int) -> StompSession:
        return StompSession(broker, peer, conn_id)

    return make, None
