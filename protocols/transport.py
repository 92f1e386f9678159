"""The thin trio layer every protocol listener shares: accept, read, write, time, close.

A connection runs two tasks in one nursery:

- the reader takes whatever the socket has (up to 64 KiB at a time) and hands it to the
  session in one call, so the session handles every whole frame in it before the task
  yields;
- the writer sleeps until the session has output (``session.wake``) or its next deadline
  (heartbeats, keep-alive), then sends everything pending in one ``send_all``.

A listener may put a layer between the socket and the session (``Opener``: TLS in
``protocols/tls.py``, WebSocket in ``protocols/websocket.py``): it runs its handshake once per
connection, bounded by ``handshake_timeout``, before the session exists, and hands back a
stream with the same ``receive_some``/``send_all``, so sessions see the same byte stream on
every transport. A handshake that fails or stalls closes that connection only, with one log
line (info) and no traceback.

Sessions never touch the socket. What a session must offer is ``session_base.Session``.
Deliveries made by other connections' publishes land in this connection's ``outbound`` list
and wake its writer once per batch.

An exception a session raises (a bug, not bad input: sessions answer bad input themselves)
closes that connection only: the session's ``internal_error`` queues its protocol's error
(AMQP 541, a STOMP ERROR, MQTT 5 reason 0x83), the writer flushes it, then the socket is
closed. One rate-limited line is logged (``faults.FAULTS``). Accepting stops for a moment
when the process is out of file descriptors, with one warning per interval.
"""

from __future__ import annotations

import errno
import itertools
import logging
import math
import os
from typing import Any, Awaitable, Callable

import trio

from mqemu.protocols.faults import FAULTS
from mqemu.protocols.session_base import READ_PAUSE_BYTES, ClosedReason, Session

READ_SIZE = 65536
# After a clean close the client asked for (AMQP connection.close, STOMP DISCONNECT, MQTT
# DISCONNECT), the reply is flushed and input is read and discarded until the peer hangs up,
# at most this long: a client still writing never meets a reset before it reads the reply.
# RabbitMQ's reader does the same, with a 30 s limit.
CLOSE_DRAIN_TIMEOUT = 30.0
# accept(2) errors that mean "out of descriptors or memory": wait and retry, as trio does
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
ACCEPT_RETRY = 0.1  # seconds between accept attempts while at the limit

_conn_ids = itertools.count(1)

MakeSession = Callable[[str | None, int], Session]
# (the accepted socket stream, connection id) -> (the stream sessions read and write, the
# session factory for it or None for the listener's own), or None when the handshake failed
# (the opener logged why; the caller closes the socket).
Opener = Callable[[trio.abc.Stream, int], Awaitable["tuple[trio.abc.Stream, MakeSession | None] | None"]]


class HandshakeFailed(Exception):
    """An opener's handshake failed; the text says why, for one log line."""


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


async def run_connection(stream: trio.abc.Stream, session: Session, log: logging.Logger, conn_id: int) -> None:
    """Drive one connection until either side closes. Never raises except Cancelled."""
    writer_wake = _Wakeup()
    reader_wake = _Wakeup()
    drained = _Wakeup()
    reason: ClosedReason | None = None
    eof = False
    faults = 0

    def fault(exc: Exception, where: str) -> None:
        """A session method raised: the protocol's internal error, then close."""
        nonlocal faults
        faults += 1
        FAULTS.warn(log, "internal_error", "connection %d: %s in %s: %s; closing the connection",
                    conn_id, type(exc).__name__, where, exc, exc=exc, extra={"conn": conn_id})
        if faults == 1:
            try:
                session.internal_error()
            except Exception:
                faults += 1
        if faults > 1:
            # no second chance: a session that fails again is dropped
            session.close_reason = session.close_reason or ClosedReason.INTERNAL_ERROR
            session.closing = True
        writer_wake.set()

    try:
        session.bind_transport(writer_wake.set, reader_wake.set)
        made = getattr(session, "connection_made", None)  # optional: start a handshake timer
        if made is not None:
            made(trio.current_time())
    except Exception as exc:
        fault(exc, "connection_made")

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
            try:
                session.data_received(data, trio.current_time())  # type: ignore[arg-type]  # bytes from every stream used
            except Exception as exc:
                fault(exc, "data_received")
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
                    try:
                        session.on_timer(trio.current_time())
                    except Exception as exc:
                        fault(exc, "on_timer")
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
                try:
                    session.on_drained()
                except Exception as exc:
                    fault(exc, "on_drained")
                drained.set()
        cancel.cancel()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader, nursery.cancel_scope)
            nursery.start_soon(writer, nursery.cancel_scope)
    except* (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError, OSError):
        reason = ClosedReason.SOCKET_ERROR
    except* Exception as group:
        FAULTS.warn(log, "internal_error", "connection %d failed: %s; closing it", conn_id,
                    group.exceptions[0], exc=group.exceptions[0], extra={"conn": conn_id})
        reason = ClosedReason.INTERNAL_ERROR
    finally:
        try:
            session.connection_lost()
        except Exception as exc:
            FAULTS.warn(log, "internal_error", "connection %d: %s in connection_lost: %s", conn_id,
                        type(exc).__name__, exc, exc=exc, extra={"conn": conn_id})
        try:
            if session.drain_after_close and not eof:
                await _drain_until_eof(stream)
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(1):
                    try:
                        await stream.aclose()  # a TLS or WebSocket layer says goodbye first
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        pass
    final = session.close_reason or reason or ClosedReason.CLIENT_DISCONNECTED
    log.debug("connection closed", extra={"conn": conn_id, "reason": final.value})


async def _drain_until_eof(stream: trio.abc.Stream) -> None:
    """The session is gone already (its queues and sessions released); only the socket waits.
    Our side is shut down first, so a client that reads until EOF gets it at once; its late
    writes are still read (and dropped), never met with a reset. A stream that cannot
    half-close (TLS, WebSocket) skips the shutdown and only reads."""
    with trio.move_on_after(CLOSE_DRAIN_TIMEOUT):
        try:
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
            while await stream.receive_some(READ_SIZE):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


async def serve_protocol(
    name: str,
    host: str,
    port: int,
    make_session: MakeSession,
    log: logging.Logger,
    *,
    sessions: set | None = None,
    accepting: list | None = None,
    opener: Opener | None = None,
    handshake_timeout: float = 10.0,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on host:port (0 = a free port) and run a session per accepted connection.

    ``opener``, if given, runs first on each connection (a TLS or WebSocket handshake), at
    most ``handshake_timeout`` seconds; the session reads and writes the stream it returns.

    Reports the bound port through task_status. ``sessions``, if given, holds the live
    sessions (the node closes them politely on shutdown); ``accepting`` gets the cancel scope
    of each accept loop (cancelled, the port closes and refuses while connections go on). Raises OSError when the port cannot
    be bound (the caller says which listener failed).
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]

    async def handle(sock: trio.SocketStream) -> None:
        conn_id = next(_conn_ids)
        try:
            peer = sock.socket.getpeername()[0]
            sock.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, 1)
        except OSError:
            peer = None
        log.debug("connection accepted", extra={"conn": conn_id, "protocol": name, "peer": peer})
        stream: trio.abc.Stream = sock
        make = make_session
        if opener is not None:
            opened = await _open(opener, sock, conn_id, peer)
            if opened is None:
                return
            stream, chosen = opened
            make = chosen or make_session
        try:
            session = make(peer, conn_id)
        except Exception as exc:  # a bug must not stop the listener
            FAULTS.warn(log, "internal_error", "connection %d: cannot start a %s session: %s",
                        conn_id, name, exc, exc=exc, extra={"conn": conn_id})
            await trio.aclose_forcefully(stream)
            return
        try:
            session.addresses = (stream.socket.getpeername()[:2], stream.socket.getsockname()[:2])  # type: ignore[attr-defined]
        except (OSError, AttributeError):
            pass
        if sessions is not None:
            sessions.add(session)
        try:
            await run_connection(stream, session, log, conn_id)
        finally:
            if sessions is not None:
                sessions.discard(session)

    async def _open(opener: Opener, sock: trio.SocketStream, conn_id: int,
                    peer: str | None) -> tuple[trio.abc.Stream, MakeSession | None] | None:
        why = None
        opened = None
        with trio.move_on_after(handshake_timeout) as scope:
            try:
                opened = await opener(sock, conn_id)
            except HandshakeFailed as e:
                why = str(e)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                why = f"{type(e).__name__}: {e.__cause__ or e}"
        if scope.cancelled_caught:
            why = f"no handshake within {handshake_timeout:g} s"
        if opened is None:
            log.info("%s handshake failed: %s; connection closed", name, why or "refused",
                     extra={"conn": conn_id, "protocol": name, "peer": peer})
            await trio.aclose_forcefully(sock)
        return opened

    async def accept_until_cancelled(listener: Any, scope: trio.CancelScope) -> None:
        with scope:
            await accept_loop(listener, handle, nursery, log, name)

    async with trio.open_nursery() as nursery:
        for listener in listeners:
            scope = trio.CancelScope()
            if accepting is not None:
                accepting.append(scope)
            nursery.start_soon(accept_until_cancelled, listener, scope)
        task_status.started(bound)


async def accept_loop(listener: Any, handle: Callable[[Any], Any], nursery: trio.Nursery,
                      log: logging.Logger, name: str) -> None:
    """Accept connections for ever, each handled in ``nursery``. At the file-descriptor
    limit (EMFILE and the like) accept is retried every ACCEPT_RETRY seconds with one
    warning per interval instead of a traceback per attempt."""
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                FAULTS.warn(log, f"accept:{name}",
                            "%s listener cannot accept connections: %s (%s); new clients wait. "
                            "Raise the open-files limit (ulimit -n, systemd LimitNOFILE) or close "
                            "idle connections", name.upper(), errno.errorcode.get(exc.errno, exc.errno),
                            os.strerror(exc.errno) if exc.errno else exc)
                await trio.sleep(ACCEPT_RETRY)
                continue
            nursery.start_soon(handle, stream)

