"""The thin trio layer every protocol listener shares: accept, read, write, time, close.

A connection runs two tasks in one nursery:

- the reader takes whatever the socket has (up to 64 KiB at a time) and hands it to the
  session in one call, so the session handles every whole frame in it before the task
  yields;
- the writer sleeps until the session has output (``session.wake``) or its next deadline
  (heartbeats, keep-alive), then sends everything pending in one ``send_all``.

Sessions never touch the socket. What a session must offer is ``session_base.Session``.
Deliveries made by other connections' publishes land in this connection's ``outbound`` list
and wake its writer once per batch.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Any, Callable

import trio

from mqemu.protocols.session_base import READ_PAUSE_BYTES, ClosedReason, Session

READ_SIZE = 65536

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
                session.sending_bytes = len(data)  # still held: the memory alarm counts it
                try:
                    await stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    if eof:  # the peer closed both ways: nothing more to flush
                        break
                    raise
                session.sending_bytes = 0
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

