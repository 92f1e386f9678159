"""The thin trio layer every protocol listener shares: accept, read, write, time, close.

A connection runs two tasks in one nursery:

- the reader takes whatever the socket has (up to 64 KiB at a time) and hands it to the
  session in one call, so the session handles every whole frame in it before the task
  yields. On a plain TCP socket it reads the descriptor itself: it waits until the socket
  is readable (``wait_readable``), then makes one ``os.read``; only a read that filled the
  buffer is followed by another at once (after a checkpoint). So a lone message costs one
  read, where trio's ``receive_some`` made a second one that failed with EAGAIN (an
  exception) through four layers of wrappers. TLS, WebSocket and in-memory streams are read
  with ``receive_some``;
- the writer sleeps until the session has output (``session.wake``) or its next deadline
  (heartbeats, keep-alive), then sends everything pending in one ``send_all``.

A listener may put a layer between the socket and the session (``Opener``: TLS in
``protocols/tls.py``, WebSocket in ``protocols/websocket.py``): it runs its handshake once per
connection, bounded by ``handshake_timeout``, before the session exists, and hands back a
stream with the same ``receive_some``/``send_all``, so sessions see the same byte stream on
every transport. A handshake that fails or stalls closes that connection only, with one log
line (info) and no traceback.

Sessions never touch the socket. What a session must offer is ``session_base.Session``.
Deliveries made by other connections' publishes land in this connection's ``outbound`` list.
At the end of every scheduler pass (trio's ``before_io_wait``, ``Flusher``) each connection
that got output in that pass is written at once with one non-blocking write, while its
writer sleeps: a message goes out in the pass it came in, with no task hop and no extra
pass, and everything one pass made for a connection leaves in one write (what the socket
does not take, the writer sends). The writer is woken only when there is something left for
it: output it must send, a close, an earlier deadline.

An exception a session raises (a bug, not bad input: sessions answer bad input themselves)
closes that connection only: the session's ``internal_error`` queues its protocol's error
(AMQP 541, a STOMP ERROR, MQTT 5 reason 0x83), the writer flushes it, then the socket is
closed. One rate-limited line is logged (``faults.FAULTS``). Accepting stops for a moment
when the process is out of file descriptors, with one warning per interval.
"""

from __future__ import annotations

import contextvars
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

# Output of one pass larger than this goes to the writer, one pass later, as before the direct
# writes: at high rates that pass's output joins the next one's in one send_all (fewer,
# larger writes; the client reads bigger batches), while a message at a low rate (a few
# hundred bytes a pass) leaves at once.
DIRECT_WRITE_MAX = 16 << 10
_conn_ids = itertools.count(1)
_log = logging.getLogger("mqemu.protocols")

# A connection's place in the pass's batch of direct writes (``_Connection.flush_state``).
_IDLE, _QUEUED, _FLUSHED = 0, 1, 2
_FLUSHER: trio.lowlevel.RunVar = trio.lowlevel.RunVar("mqemu_flusher")


class Flusher(trio.abc.Instrument):
    """Writes, at the end of each scheduler pass, the output of the connections that got
    some in it (one per trio run: ``current_flusher``).

    ``before_io_wait`` runs when every task of the pass has run and before the loop waits
    for I/O: first the ``hooks`` asked for this pass (each called once: the MQTT publish
    pump routes there), then one direct write per pending connection
    (``_Connection.flush``). The loop's timeout was fixed before the hook; if the hook made
    a task runnable (a writer with output left, a paused reader, the store's flusher) the
    loop is told not to sleep. Runs in the context of the task that made it, so log lines
    keep the node's fields.

    A pass whose only task is one reader (a lone message at a low rate) does not wait for
    its end: the reader calls ``end_pass_early`` once the session has handled what it read,
    so the output leaves before the reader re-arms its epoll registration and before trio's
    loop comes round, and the end of the pass finds nothing to do. ``runnable`` counts the
    tasks scheduled since the last pass ended with trio's run queue empty (``task_scheduled``);
    1 means the running reader is alone in its pass, so no other task of the pass (a
    SUBSCRIBE on another connection, say) can run between that early end and the real one.
    """

    def __init__(self) -> None:
        self.pending: list[_Connection] = []
        self.hooks: list[Callable[[], None]] = []
        # tasks scheduled since a pass ended with the run queue empty (2 and up: not known
        # to be empty, so no pass ends early)
        self.runnable = 2
        self._token = trio.lowlevel.current_trio_token()
        self._context = contextvars.copy_context()

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        self.runnable += 1

    def before_io_wait(self, timeout: float) -> None:
        if self.pending or self.hooks:
            before = self.runnable
            self.end_pass()
            if self.runnable != before and timeout > 0:
                self._token.run_sync_soon(_nothing)  # a task has work: the loop must not sleep
                timeout = 0
        # A positive timeout means trio's run queue is empty: the next pass runs exactly the
        # tasks scheduled from now on.
        self.runnable = 0 if timeout > 0 else 2

    def end_pass(self) -> None:
        """Run this pass's hooks and direct writes now."""
        try:
            self._context.run(self._end_of_pass)
        except Exception as exc:  # trio would drop an instrument that raises: keep writing
            FAULTS.warn(_log, "internal_error", "writing at the end of a pass failed: %s", exc, exc=exc)

    def _end_of_pass(self) -> None:
        if self.hooks:
            hooks, self.hooks = self.hooks, []
            for hook in hooks:
                hook()
        pending = self.pending
        i = 0
        while i < len(pending):  # a connection woken while these are written joins the list
            conn = pending[i]
            conn.flush_state = _FLUSHED  # woken again in this pass: its writer does it
            conn.flush()
            i += 1
        for conn in pending:
            conn.flush_state = _IDLE
        pending.clear()


def current_flusher() -> Flusher:
    """The running trio loop's ``Flusher``, made and added as an instrument on first use."""
    flusher = _FLUSHER.get(None)
    if flusher is None:
        flusher = Flusher()
        _FLUSHER.set(flusher)
        trio.lowlevel.add_instrument(flusher)
    return flusher


def _nothing() -> None:
    pass

MakeSession = Callable[[str | None, int], Session]
# (the accepted socket stream, connection id) -> (the stream sessions read and write, the
# session factory for it or None for the listener's own), or None when the handshake failed
# (the opener logged why; the caller closes the socket).
Opener = Callable[[trio.abc.Stream, int], Awaitable["tuple[trio.abc.Stream, MakeSession | None] | None"]]


class HandshakeFailed(Exception):
    """An opener's handshake failed; the text says why, for one log line. ``hung_up``: the
    peer closed before the handshake was done, which probes do (logged at debug level)."""

    def __init__(self, why: str, hung_up: bool = False) -> None:
        super().__init__(why)
        self.hung_up = hung_up


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
    await _Connection(stream, session, log, conn_id).run()


class _Connection:
    """One connection's reader and writer, and the direct write (``flush``) that other tasks
    make on its behalf at the end of their step while its writer sleeps."""

    __slots__ = ("stream", "session", "log", "conn_id", "fd", "writer_wake", "reader_wake", "drained",
                 "reason", "eof", "faults", "sending", "writer_deadline", "flush_state", "done", "flusher")

    def __init__(self, stream: trio.abc.Stream, session: Session, log: logging.Logger, conn_id: int) -> None:
        self.stream = stream
        self.session = session
        self.log = log
        self.conn_id = conn_id
        # Direct writes need the socket itself: a plain trio.SocketStream only (not TLS, not
        # the in-memory streams of the unit tests: those always go through the writer).
        self.fd = stream.socket.fileno() if type(stream) is trio.SocketStream else -1
        self.flusher = current_flusher() if self.fd >= 0 else None
        self.writer_wake = _Wakeup()
        self.reader_wake = _Wakeup()
        self.drained = _Wakeup()
        self.reason: ClosedReason | None = None
        self.eof = False
        self.faults = 0
        self.sending = False  # the writer is inside send_all: only it may write now
        # the deadline the sleeping writer waits for (inf: none); -inf while it is not asleep
        # (it reads the session's deadline again before it sleeps)
        self.writer_deadline = -math.inf
        self.flush_state = _IDLE
        self.done = False

    def fault(self, exc: Exception, where: str) -> None:
        """A session method raised: the protocol's internal error, then close."""
        session = self.session
        self.faults += 1
        FAULTS.warn(self.log, "internal_error", "connection %d: %s in %s: %s; closing the connection",
                    self.conn_id, type(exc).__name__, where, exc, exc=exc, extra={"conn": self.conn_id})
        if self.faults == 1:
            try:
                session.internal_error()
            except Exception:
                self.faults += 1
        if self.faults > 1:
            # no second chance: a session that fails again is dropped
            session.close_reason = session.close_reason or ClosedReason.INTERNAL_ERROR
            session.closing = True
        self.writer_wake.set()

    def wake(self) -> None:
        """The session has output (or news for its writer). While the writer sleeps, the
        connection joins the pass's batch and is written at its end (``Flusher``) without
        waking the writer; otherwise the writer is woken."""
        state = self.flush_state
        if state == _QUEUED:
            return
        flusher = self.flusher
        if state == _IDLE and not self.sending and flusher is not None:
            self.flush_state = _QUEUED
            flusher.pending.append(self)
            return
        self.writer_wake.set()

    def flush(self) -> None:
        """Write the session's output now, at the end of the pass that made it, if the writer
        is asleep (nothing of ours is in flight) and the socket takes it all; whatever is
        left, and any other reason the session woke us for, goes to the writer."""
        session = self.session
        out = session.outbound
        if not out or self.fd < 0 or self.sending or self.done or session.outbound_bytes > DIRECT_WRITE_MAX:
            self.writer_wake.set()
            return
        data = b"".join(out) if len(out) > 1 else out[0]
        try:
            sent = os.write(self.fd, data)
        except OSError:  # EAGAIN, or a broken socket: the writer's send_all finds out which
            sent = 0
        if sent < len(data):
            out.clear()
            out.append(data[sent:] if sent else data)
            session.outbound_bytes = len(data) - sent
            self.writer_wake.set()
            return
        out.clear()
        session.outbound_bytes = 0
        self.written()
        self.deadline_changed()

    def deadline_changed(self) -> None:
        """Wake the writer when it must act sooner than it planned (an earlier deadline, a
        close); a later deadline waits until the old one passes (``on_timer`` checks)."""
        session = self.session
        if session.closing:
            self.writer_wake.set()
            return
        deadline = session.next_deadline()
        if deadline is not None and deadline < self.writer_deadline:
            self.writer_wake.set()

    async def run(self) -> None:
        session, log, conn_id = self.session, self.log, self.conn_id
        try:
            session.bind_transport(self.wake, self.reader_wake.set)
            made = getattr(session, "connection_made", None)  # optional: start a handshake timer
            if made is not None:
                made(trio.current_time())
        except Exception as exc:
            self.fault(exc, "connection_made")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.reader)
                nursery.start_soon(self.writer, nursery.cancel_scope)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError, OSError):
            self.reason = ClosedReason.SOCKET_ERROR
        except* Exception as group:
            FAULTS.warn(log, "internal_error", "connection %d failed: %s; closing it", conn_id,
                        group.exceptions[0], exc=group.exceptions[0], extra={"conn": conn_id})
            self.reason = ClosedReason.INTERNAL_ERROR
        finally:
            self.done = True  # no direct write from now on: the descriptor is about to close
            self.fd = -1
            try:
                session.connection_lost()
            except Exception as exc:
                FAULTS.warn(log, "internal_error", "connection %d: %s in connection_lost: %s", conn_id,
                            type(exc).__name__, exc, exc=exc, extra={"conn": conn_id})
            try:
                if session.drain_after_close and not self.eof:
                    await _drain_until_eof(self.stream)
            finally:
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(1):
                        try:
                            await self.stream.aclose()  # a TLS or WebSocket layer says goodbye first
                        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                            pass
        final = session.close_reason or self.reason or ClosedReason.CLIENT_DISCONNECTED
        log.debug("connection closed", extra={"conn": conn_id, "reason": final.value})

    async def reader(self) -> None:
        session, stream, fd = self.session, self.stream, self.fd
        reader_wake, drained = self.reader_wake, self.drained
        wait_readable, checkpoint = trio.lowlevel.wait_readable, trio.lowlevel.checkpoint
        now = trio.lowlevel.current_clock().current_time  # trio.current_time without its wrappers
        full = True  # the first read does not wait: the client may have written already
        ready = False  # the wait is over: read at once, unless the session paused meanwhile
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
            data: bytes | bytearray
            if fd >= 0:
                # A plain socket is read straight from its descriptor: wait until it is
                # readable, then one read (no speculative read that fails with EAGAIN, no
                # stream wrapper). A full read may have left more: read again after a
                # checkpoint, without asking epoll, as trio's receive_some would.
                if not ready:
                    if full:
                        await checkpoint()
                    else:
                        await wait_readable(fd)
                    ready = True
                    continue  # a pause (or a close) may have come while this task waited
                ready = False
                try:
                    data = os.read(fd, READ_SIZE)
                except BlockingIOError:
                    full = False
                    continue
                full = len(data) == READ_SIZE
            else:
                data = await stream.receive_some(READ_SIZE)
            if not data:
                # The peer may only have shut down its side: the writer still flushes what
                # the session queued (a CONNECTED frame, an ERROR), then closes.
                self.reason = self.reason or ClosedReason.CLIENT_DISCONNECTED
                self.eof = True
                self.writer_wake.set()
                return
            try:
                session.data_received(data, now())  # type: ignore[arg-type]  # bytes from every stream used
            except Exception as exc:
                self.fault(exc, "data_received")
            flusher = self.flusher
            if flusher is not None and flusher.runnable == 1 and (flusher.pending or flusher.hooks):
                flusher.end_pass()  # alone in this pass: its end need not be waited for
            self.deadline_changed()

    async def writer(self, cancel: trio.CancelScope) -> None:
        session, stream, writer_wake = self.session, self.stream, self.writer_wake
        while True:
            if not session.outbound:
                if session.closing or self.eof:
                    break
                deadline = session.next_deadline()
                self.writer_deadline = math.inf if deadline is None else deadline
                with trio.move_on_at(self.writer_deadline):
                    await writer_wake.event.wait()
                self.writer_deadline = -math.inf
                writer_wake.reset()
                if deadline is not None and trio.current_time() >= deadline:
                    try:
                        session.on_timer(trio.current_time())
                    except Exception as exc:
                        self.fault(exc, "on_timer")
            if session.outbound:
                data = b"".join(session.outbound) if len(session.outbound) > 1 else session.outbound[0]
                session.outbound.clear()
                session.outbound_bytes = 0
                session.sending_bytes = len(data)  # still held: the memory alarm counts it
                self.sending = True
                try:
                    await stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    if self.eof:  # the peer closed both ways: nothing more to flush
                        break
                    raise
                finally:
                    self.sending = False
                session.sending_bytes = 0
                self.written()
        cancel.cancel()

    def written(self) -> None:
        """The outbound buffer went out (a direct write or the writer's): tell the session and
        wake a reader that paused on the buffer."""
        try:
            self.session.on_drained()
        except Exception as exc:
            self.fault(exc, "on_drained")
        self.drained.set()


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
        if opener is not None and isinstance(stream, trio.SSLStream):
            from .tls import certificate_subject

            session.tls_subject = certificate_subject(stream)  # type: ignore[attr-defined]
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
        level = logging.INFO
        with trio.move_on_after(handshake_timeout) as scope:
            try:
                opened = await opener(sock, conn_id)
            except HandshakeFailed as e:
                why = str(e)
                if e.hung_up:
                    level = logging.DEBUG
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                why = f"{type(e).__name__}: {e.__cause__ or e}"
        if scope.cancelled_caught:
            why = f"no handshake within {handshake_timeout:g} s"
        if opened is None:
            log.log(level, "%s handshake failed: %s; connection closed", name, why or "refused",
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

