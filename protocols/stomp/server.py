"""The STOMP listener: a session per accepted socket, run by the shared transport."""

from __future__ import annotations

import logging
from typing import Any

import trio

from mqemu.protocols.transport import serve_protocol

from .session import StompSession

log = logging.getLogger("mqemu.protocols.stomp")


async def serve_stomp(broker: Any, host: str, port: int, *, connections: set | None = None,
                      accepting: list | None = None,
                      task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Listen for STOMP 1.0-1.2 clients on host:port (0 = a free port); reports the bound
    port through task_status. Raises OSError when the port cannot be bound."""

    def make(peer: str | None, conn_id: int) -> StompSession:
        session = StompSession(broker, peer, conn_id)
        return session

    await serve_protocol("stomp", host, port, make, log, sessions=connections, accepting=accepting,
                         task_status=task_status)
