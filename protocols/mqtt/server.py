"""The MQTT listener: a session per accepted socket, run by the shared transport, and the
publish pump that routes PUBLISH packets at the end of each scheduler pass."""

from __future__ import annotations

import contextvars
import logging
from typing import Any, Awaitable, Callable

import trio
from mqemu.protocols.faults import FAULTS
from mqemu.protocols.session_base import ClosedReason
from mqemu.protocols.transport import Flusher, MakeSession, current_flusher, serve_protocol

from .persist import restore
from .session import MqttConnection

__all__ = ["PublishPump", "recover", "serve_mqtt", "session_factory"]

log = logging.getLogger("mqemu.protocols.mqtt")

# MQTT over WebSocket: the subprotocol a client must offer [MQTT-6.0.0-3] (``mqttv3.1``:
# older Paho JavaScript clients); packets travel in binary messages only [MQTT-6.0.0-1].
WS_SUBPROTOCOLS = ("mqtt", "mqttv3.1")
WS_BINARY_ONLY = True


class _NotRunning:
    """The pump's flusher before ``run``: no pass is known to be alone, every publish waits."""

    runnable = 2


_NOT_RUNNING = _NotRunning()


class PublishPump:
    """Routes the PUBLISH packets connections received, after every reader of the pass ran.

    Why: clients such as Paho's interoperability suite send SUBSCRIBE on one connection and,
    microseconds later, PUBLISH on another, and expect the subscriber to get the message.
    Both sockets turn readable in the same event-loop pass, and trio runs the woken readers
    in either order (it reverses half of its batches on purpose). A connection therefore
    handles its SUBSCRIBE, UNSUBSCRIBE and acks at once but queues its PUBLISH packets here,
    and they are routed when the pass ends, so a subscription that arrived in the same pass
    as a publish is always in place first. A connection routes its own queued publishes
    before it handles any other packet of its own, so its order is kept.

    The end of the pass is the transport's ``Flusher`` (trio's ``before_io_wait``): the
    first publish deferred in a pass asks it for a hook, which routes them in the context of
    the task that called ``run`` (the node's log fields); the deliveries they make are
    written right after, in the pass the PUBLISH arrived in, with no task to wake.

    A reader alone in its pass (``flusher.runnable == 1``: a lone message at a low rate)
    has no other connection's packet to wait for, so its publishes are routed at once
    (``Inbound.publish`` asks ``flusher``), without the deferral.
    """

    def __init__(self) -> None:
        self.waiting: list[MqttConnection] = []
        self.flusher: Flusher | _NotRunning = _NOT_RUNNING
        self._context: contextvars.Context | None = None

    def defer(self, conn: MqttConnection) -> None:
        """Called from a reader (in the trio loop): route ``conn``'s publishes at the end of
        this pass."""
        if not self.waiting:
            flusher = self.flusher
            if not isinstance(flusher, Flusher):
                self.flusher = flusher = current_flusher()
            flusher.hooks.append(self._route_in_context)
        self.waiting.append(conn)

    async def run(self) -> None:
        """Take the context routing runs in (the node's log fields); nothing else to do."""
        self._context = contextvars.copy_context()
        self.flusher = current_flusher()
        await trio.sleep_forever()

    def _route_in_context(self) -> None:
        if self._context is not None:
            self._context.run(self.route)
        else:
            self.route()

    def route(self) -> None:
        """Route every deferred publish."""
        while self.waiting:
            conns, self.waiting = self.waiting, []
            for conn in conns:
                try:
                    conn.inbound.flush()
                except Exception as exc:
                    FAULTS.warn(log, "internal_error", "connection %d: %s routing publishes: %s; closing "
                                "the connection", conn.conn_id, type(exc).__name__, exc, exc=exc,
                                extra={"conn": conn.conn_id})
                    conn.inbound.drop_pending()
                    try:
                        conn.internal_error()  # 5.0: DISCONNECT 0x83, then close
                    except Exception:
                        conn.close_reason = conn.close_reason or ClosedReason.INTERNAL_ERROR
                        conn.closing = True
                    conn._wake()


def recover(broker: Any) -> None:
    """Rebuild MQTT's node state from the store's records (persistent sessions, QoS 2 ids,
    retained messages; ``persist.restore``). The node calls it after the store's recovery
    and before any listener opens; once per broker."""
    restore(broker)


async def serve_mqtt(broker: Any, host: str, port: int, *, connections: set | None = None,
                     accepting: list | None = None, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Listen for MQTT 3.1, 3.1.1 and 5.0 clients; reports the bound port through task_status.
    ``connections``, if given, holds the live sessions (the node closes them on shutdown).

    Settings come from the config file's ``[mqtt]`` section (``receive_maximum``,
    ``max_packet_size``, ``topic_alias_maximum``, ``server_keep_alive``, ``max_inflight``,
    ``allow_anonymous``, ``default_user``, ``default_pass``, ``deny_subscribe``,
    ``deny_publish``). Raises OSError when the port cannot be bound.
    """
    restore(broker)  # persistent sessions and retained messages from the store's records
    make, pump_task = session_factory(broker)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump_task)
            await serve_protocol("mqtt", host, port, make, log, sessions=connections,
                                 accepting=accepting, task_status=task_status)
    except BaseExceptionGroup as group:
        # A port that cannot be bound: raise the OSError itself, as the caller expects.
        if len(group.exceptions) == 1 and isinstance(group.exceptions[0], OSError):
            raise group.exceptions[0] from None
        raise


def session_factory(broker: Any) -> tuple[MakeSession, Callable[[], Awaitable[None]]]:
    """What makes an MQTT session for an accepted connection, and the publish pump's task,
    which must run while they do. Every listener of a node (TCP, TLS, WebSocket) that uses
    one factory shares its pump, so a SUBSCRIBE over one transport and a PUBLISH over
    another in the same pass keep their order (``PublishPump``)."""
    pump = PublishPump()

    def make(peer: str | None, conn_id: int) -> MqttConnection:
        return MqttConnection(broker, peer, conn_id, pump=pump)

    return make, pump.run
