"""The AMQP 0-9-1 listener: a session per accepted socket, run by the shared transport."""

from __future__ import annotations

import logging
from typing import Any

import trio

from mqemu.protocols.transport import MakeSession, serve_protocol

from .session import AMQPConnection

log = logging.getLogger("mqemu.protocols.amqp091")


async def serve_amqp(broker: Any, host: str, port: int, *, connections: set | None = None,
                     accepting: list | None = None,
                     task_status: Any = trio.TASK_STATUS_IGNORED, **options: Any) -> None:
    """Listen for AMQP 0-9-1 clients; reports the bound port. ``options`` go to each
    connection (heartbeat, frame_max, channel_max)."""
    make, _task = session_factory(broker, **options)
    await serve_protocol("amqp", host, port, make, log, sessions=connections, accepting=accepting,
                         task_status=task_status)


def session_factory(broker: Any, **options: Any) -> tuple[MakeSession, None]:
    """What makes an AMQP 0-9-1 session for an accepted connection, for any listener (TCP,
    TLS); AMQP needs no task of its own beside them. The heartbeat proposed in
    connection.tune is ``options``' or the config's (``[amqp] heartbeat``, rabbitmq.conf's
    ``heartbeat``), else RabbitMQ's 60 s."""
    heartbeat = broker.config.extra.get("amqp", {}).get("heartbeat")
    if heartbeat is not None:
        options.setdefault("heartbeat", heartbeat)

    def make(peer: str | None, conn_id: int) -> AMQPConnection:
        return AMQPConnection(broker, peer, conn_id, **options)

    return make, None
