"""The thin trio layer every protocol listener shares: accept, read, write, time, close.

A connection runs two tasks in one nursery:

- the reader takes whatever the socket has (up to 64 KiB at a time) and hands it to the
  session in one call, so the session handles every whole frame in it before the task
  yields;
- the writer sleeps until the session has output (``session.wake``) or its next deadline
  (heartbeats, keep-alive), then sends everything pending in one ``send_all``.

Sessions never touch the socket. What a session must offer is ``Session`` below. Deliveries
made by other connections' publishes land in this connection's ``outbound`` list and wake
its writer once per batch.
"""

from __future__ import annotations

import enum
import itertools
import logging
import math
from typing import Any, Callable, Protocol

import trio

READ_SIZE = 65536
# Outbound bytes a connection may hold before its consumers stop receiving deliveries.
OUTBOUND_HIGH_WATER = 1 << 20
# Outbound bytes past which the connection's own input is not read until its peer reads what
# it was sent (replies to a client that writes but never reads must not grow without bound).
READ_PAUSE_BYTES = 8 << 20


class ClosedReason(enum.Enum):
    """Why a connection ended: one value per cause, logged on every close."""

    CLIENT_CLOSED = "client_closed"  # a clean protocol close
    CLIENT_DISCONNECTED = "client_disconnected"  # EOF or reset without a protocol close
    PROTOCOL_ERROR = "protocol_error"
    AUTH_FAILED = "auth_failed"
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    TAKEN_OVER = "taken_over"
    SERVER_SHUTDOWN = "server_shutdown"
    INTERNAL_ERROR = "internal_error"
    SOCKET_ERROR = "socket_error"


class Session(Protocol):
    outbound: list[bytes]
    outbound_bytes: int
    closing: bool  # set when the session wants the socket closed once output is flushed
    close_reason: ClosedReason | None
    reading_paused: bool

    def bind_transport(self, wake: Callable[[], None], resume_reading: Callable[[], None]) -> None: ...
    def data_received(self, data: bytes, now: float) -> None: ...
    def next_deadline(self) -> float | None: ...
    def on_timer(self, now: float) -> None: ...
    def on_drained(self) -> None: ...
    def connection_lost(self) -> None: ...


def _nothing() -> None:
    pass


class SessionBase:
    """What every protocol session shares: the outbound buffer and its budget, the transport's
    wake-ups, the memory-alarm subscription and the once-per-read redispatch of queues.

    Subclasses override ``budget_changed`` (stop or resume deliveries when the outbound
    buffer passes ``OUTBOUND_HIGH_WATER`` or drains) and ``on_alarm`` (the broker's memory
    alarm), and call ``redispatch`` at the end of each ``data_received``.
    """

    def __init__(self, broker: Any, peer: str | None, conn_id: int) -> None:
        self.broker = broker
        self.peer = peer
        self.conn_id = conn_id
        self.outbound: list[bytes] = []
        self.outbound_bytes = 0
        self.closing = False
        self.close_reason: ClosedReason | None = None
        self.reading_paused = False
        self.over_budget = False
        self.dirty_queues: set = set()  # queues whose consumers got credit back in this read
        self.last_received = 0.0
        self.last_sent = 0.0
        self._now = 0.0
        self._wake: Callable[[], None] = _nothing
        self._resume_reading: Callable[[], None] = _nothing

    def bind_transport(self, wake: Callable[[], None], resume_reading: Callable[[], None]) -> None:
        self._wake = wake
        self._resume_reading = resume_reading
        self.broker.alarm_listeners.add(self.on_alarm)

    def release_transport(self) -> None:
        """Call from ``connection_lost``."""
        self.broker.alarm_listeners.discard(self.on_alarm)

    def send(self, data: bytes) -> None:
        """Queue bytes for the writer. The writer sleeps only while the buffer is empty, so
        only the first append after it drained needs to wake it."""
        out = self.outbound
        if not out:
            self._wake()
        out.append(data)
        self.outbound_bytes += len(data)
        if self.outbound_bytes > OUTBOUND_HIGH_WATER and not self.over_budget:
            self.over_budget = True
            self.budget_changed(True)

    def on_drained(self) -> None:
        self.last_sent = self._now
        if self.over_budget:
            self.over_budget = False
            self.budget_changed(False)

    def redispatch(self) -> None:
        """Acks of one read redispatch each queue they touched once."""
        if self.dirty_queues:
            queues, self.dirty_queues = self.dirty_queues, set()
            for q in queues:
                q.dispatch()

    def pause_publisher(self, high: bool, publishes: bool) -> None:
        """The memory alarm's effect on reading: a connection that publishes stops being read
        while the alarm is on (RabbitMQ blocks publishing connections)."""
        if high and publishes:
            self.reading_paused = True
        elif not high and self.reading_paused:
            self.reading_paused = False
            self._resume_reading()

    def budget_changed(self, over: bool) -> None:
        pass

    def on_alarm(self, high: bool) -> None:
        pass


_conn_ids = itertools.count(1)


class _Wakeup:
    """A resettable flag the writer sleeps on; setting it twice costs nothing."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = trio.Event()

    def set(self) -> None:
        ev = self.event
        if not ev.is_set():
            ev.set()

    def reset(self) -> None:
        if self.event.is_set():
            self.event = trio.Event()


async def run_connection(stream: trio.SocketStream, session: Session, log: logging.Logger, conn_id: int) -> None:
    """Drive one connection until either side closes. Never raises except Cancelled."""
    writer_wake = _Wakeup()
    reader_wake = _Wakeup()
    drained = _Wakeup()
    session.bind_transport(writer_wake.set, reader_wake.set)
    made = getattr(session, "connection_made", None)  # optional: start a handshake timer
    if made is not None:
        made(trio.current_time())
    reason: ClosedReason | None = None
    eof = False

    async def reader(cancel: trio.CancelScope) -> None:
        nonlocal reason, eof
        while not session.closing:
            if session.reading_paused:
                reader_wake.reset()
                if session.reading_paused:
                    await reader_wake.event.wait()
                    continue
            if session.outbound_bytes > READ_PAUSE_BYTES:
                drained.reset()
                await drained.event.wait()
                continue
            data = await stream.receive_some(READ_SIZE)
            if not data:
                # The peer may only have shut down its side: the writer still flushes what
                # the session queued (a CONNECTED frame, an ERROR), then closes.
                reason = reason or ClosedReason.CLIENT_DISCONNECTED
                eof = True
                writer_wake.set()
                return
            session.data_received(data, trio.current_time())
            writer_wake.set()

    async def writer(cancel: trio.CancelScope) -> None:
        while True:
            if not session.outbound:
                if session.closing or eof:
                    break
                deadline = session.next_deadline()
                with trio.move_on_at(math.inf if deadline is None else deadline):
                    await writer_wake.event.wait()
                writer_wake.reset()
                if deadline is not None and trio.current_time() >= deadline:
                    session.on_timer(trio.current_time())
            if session.outbound:
                data = b"".join(session.outbound) if len(session.outbound) > 1 else session.outbound[0]
                session.outbound.clear()
                session.outbound_bytes = 0
                try:
                    await stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    if eof:  # the peer closed both ways: nothing more to flush
                        break
                    raise
                session.on_drained()
                drained.set()
        cancel.cancel()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader, nursery.cancel_scope)
            nursery.start_soon(writer, nursery.cancel_scope)
    except* (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError, OSError):
        reason = ClosedReason.SOCKET_ERROR
    except* Exception:
        log.exception("connection %d failed; closing it", conn_id)
        reason = ClosedReason.INTERNAL_ERROR
    finally:
        try:
            session.connection_lost()
        except Exception:
            log.exception("connection %d: cleanup failed", conn_id)
        with trio.CancelScope(shield=True):
            with trio.move_on_after(1):
                await stream.aclose()
    final = session.close_reason or reason or ClosedReason.CLIENT_DISCONNECTED
    log.debug("connection closed", extra={"conn": conn_id, "reason": final.value})


async def serve_protocol(
    name: str,
    host: str,
    port: int,
    make_session: Callable[[str | None, int], Session],
    log: logging.Logger,
    *,
    sessions: set | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on host:port (0 = a free port) and run a session per accepted connection.

    Reports the bound port through task_status. ``sessions``, if given, holds the live
    sessions (the node closes them politely on shutdown). Raises OSError when the port cannot
    be bound (the caller says which listener failed).
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]

    async def handle(stream: trio.SocketStream) -> None:
        conn_id = next(_conn_ids)
        try:
            peer = stream.socket.getpeername()[0]
            stream.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, 1)
        except OSError:
            peer = None
        log.debug("connection accepted", extra={"conn": conn_id, "protocol": name, "peer": peer})
        session = make_session(peer, conn_id)
        if sessions is not None:
            sessions.add(session)
        try:
            await run_connection(stream, session, log, conn_id)
        finally:
            if sessions is not None:
                sessions.discard(session)

    async with trio.open_nursery() as nursery:
        task_status.started(bound)
        await trio.serve_listeners(handle, listeners, handler_nursery=nursery)

