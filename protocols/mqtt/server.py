"""The MQTT listener: a session per accepted socket, run by the shared transport."""

from __future__ import annotations

import logging
from typing import Any

import trio

from mqemu.protocols.transport import serve_protocol

from .session import MqttConnection

log = logging.getLogger("mqemu.protocols.mqtt")


async def serve_mqtt(broker: Any, host: str, port: int, *, connections: set | None = None,
                     task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Listen for MQTT 3.1, 3.1.1 and 5.0 clients; reports the bound port through task_status.

    Settings come from the config file's ``[mqtt]`` section (``receive_maximum``,
    ``max_packet_size``, ``topic_alias_maximum``, ``server_keep_alive``, ``max_inflight``,
    ``allow_anonymous``, ``default_user``, ``default_pass``, ``deny_subscribe``,
    ``deny_publish``). Raises OSError when the port cannot be bound.
    """

    def make(peer: str | None, conn_id: int) -> MqttConnection:
        conn = MqttConnection(broker, peer, conn_id)
        return conn

    await serve_protocol("mqtt", host, port, make, log, sessions=connections, task_status=task_status)
