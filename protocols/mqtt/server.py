"""The MQTT listener: a session per accepted socket, run by the shared transport, and the
publish pump that routes PUBLISH packets at the end of each scheduler pass."""

from __future__ import annotations

import contextvars
import logging
from typing import Any

import trio
from mqemu.protocols.faults import FAULTS
from mqemu.protocols.session_base import ClosedReason
from mqemu.protocols.transport import flush_batch, open_write_batch, serve_protocol

from .persist import restore
from .session import MqttConnection

__all__ = ["PublishPump", "recover", "serve_mqtt"]

log = logging.getLogger("mqemu.protocols.mqtt")


class PublishPump(trio.abc.Instrument):
    """Routes the PUBLISH packets connections received, after every reader of the pass ran.

    Why: clients such as Paho's interoperability suite send SUBSCRIBE on one connection and,
    microseconds later, PUBLISH on another, and expect the subscriber to get the message.
    Both sockets turn readable in the same event-loop pass, and trio runs the woken readers
    in either order (it reverses half of its batches on purpose). A connection therefore
    handles its SUBSCRIBE, UNSUBSCRIBE and acks at once but queues its PUBLISH packets here,
    and they are routed when the pass ends, so a subscription that arrived in the same pass
    as a publish is always in place first. A connection routes its own queued publishes
    before it handles any other packet of its own, so its order is kept.

    The end of the pass is trio's ``before_io_wait`` (this is an instrument, added to the run
    by ``run``): the publishes are routed and their deliveries written (``flush_batch``)
    before the loop waits for I/O again, in the pass the PUBLISH arrived in, with no task to
    wake. Routing runs in the context of the task that called ``run`` (the node's log
    fields). If it made a task runnable (a writer with output left, the store's flusher),
    the loop is told not to sleep (``run_sync_soon``), as its timeout was fixed before.
    """

    def __init__(self) -> None:
        self.waiting: list[MqttConnection] = []
        self._batch: list = []
        self._context: contextvars.Context | None = None
        self._token: trio.lowlevel.TrioToken | None = None

    def defer(self, conn: MqttConnection) -> None:
        self.waiting.append(conn)

    async def run(self) -> None:
        """Route at the end of every pass until cancelled."""
        self._token = trio.lowlevel.current_trio_token()
        self._context = contextvars.copy_context()
        self._context.run(self._open_batch)
        trio.lowlevel.add_instrument(self)
        try:
            await trio.sleep_forever()
        finally:
            trio.lowlevel.remove_instrument(self)

    def _open_batch(self) -> None:
        self._batch = open_write_batch()

    def before_io_wait(self, timeout: float) -> None:
        if not self.waiting or self._context is None:
            return
        try:
            self._context.run(self.route)
        except Exception as exc:  # trio would drop an instrument that raises: keep routing
            FAULTS.warn(log, "internal_error", "routing publishes failed: %s", exc, exc=exc)
        if timeout > 0 and trio.lowlevel.current_statistics().tasks_runnable and self._token is not None:
            self._token.run_sync_soon(_nothing)  # the loop must not sleep: a task has work

    def route(self) -> None:
        """Route every deferred publish and write what it delivered."""
        batch = self._batch
        while self.waiting:
            conns, self.waiting = self.waiting, []
            for conn in conns:
                try:
                    conn.flush_publishes()
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
            if batch:
                flush_batch(batch)


def _nothing() -> None:
    pass


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
    pump = PublishPump()

    def make(peer: str | None, conn_id: int) -> MqttConnection:
        return MqttConnection(broker, peer, conn_id, pump=pump)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump.run)
            await serve_protocol("mqtt", host, port, make, log, sessions=connections,
                                 accepting=accepting, task_status=task_status)
    except BaseExceptionGroup as group:
        # A port that cannot be bound: raise the OSError itself, as the caller expects.
        if len(group.exceptions) == 1 and isinstance(group.exceptions[0], OSError):
            raise group.exceptions[0] from None
        raise
