"""The trio transport (``protocols/transport.run_connection``) driven over trio's in-memory
streams with a small fake session and the autojump clock: batching, back-pressure, flush on
EOF, close reasons, a failing session, deadlines.

Waits are on facts: bytes arriving, EOF, or ``wait_all_tasks_blocked`` (every task parked,
so what has not happened yet will not happen until the test acts). The autojump clock turns
a deadlock into a prompt ``TooSlowError`` from ``fail_after``.
"""

from __future__ import annotations

import itertools
import logging
from typing import Callable

import pytest
import trio
import trio.testing

from mqemu.protocols.session_base import OUTBOUND_HIGH_WATER, READ_PAUSE_BYTES, ClosedReason, SessionBase
from mqemu.protocols.transport import run_connection

_ids = itertools.count(1)
TIMEOUT = 30  # mock-clock seconds: reached only by a deadlock


class FakeBroker:
    """What a session asks of its broker: the alarm and the memory alarm's counted sessions."""

    def __init__(self) -> None:
        self.alarm_listeners: set = set()
        self.memory_alarm = False
        self.held_outbound: set = set()
        self.held_input: set = set()


class FakeSession(SessionBase):
    """Hands every chunk it receives to ``reply(session, data)``; records timers, budget
    changes and ``connection_lost``."""

    def __init__(self, reply: Callable[[FakeSession, bytes], None] | None = None) -> None:
        super().__init__(FakeBroker(), "127.0.0.1", next(_ids))
        self.reply = reply or (lambda s, data: s.send(data))
        self.received: list[bytes] = []
        self.deadline: float | None = None
        self.timer: Callable[[FakeSession, float], None] | None = None
        self.timer_calls: list[float] = []
        self.budget_calls: list[bool] = []
        self.lost = 0
        self.deadline_asks = 0

    def data_received(self, data: bytes, now: float) -> None:
        self.received.append(bytes(data))
        self.reply(self, bytes(data))

    def next_deadline(self) -> float | None:
        # A writer that spins on a past deadline never blocks, so the mock clock never
        # reaches fail_after's deadline: fail here instead of hanging until pytest-timeout.
        self.deadline_asks += 1
        assert self.deadline_asks < 10_000, "the writer spins on a deadline"
        return self.deadline

    def on_timer(self, now: float) -> None:
        self.timer_calls.append(now)
        if self.timer is not None:
            self.timer(self, now)

    def budget_changed(self, over: bool) -> None:
        self.budget_calls.append(over)

    def connection_lost(self) -> None:
        self.lost += 1
        self.release_transport()

    def close_with(self, reason: ClosedReason, last: bytes = b"") -> None:
        if last:
            self.send(last)
        self.closing = True
        self.close_reason = reason


class ServerEnd:
    """The transport's end of an in-memory pair: records each ``send_all``; ``send_error``
    makes the next send fail, ``receive_error`` makes the next receive fail after its data
    arrived (as a reset socket does)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.sends: list[bytes] = []
        self.send_error: BaseException | None = None
        self.receive_error: BaseException | None = None

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.stream.receive_some(max_bytes)
        if self.receive_error is not None:
            raise self.receive_error
        return data

    async def send_all(self, data: bytes) -> None:
        if self.send_error is not None:
            raise self.send_error
        self.sends.append(bytes(data))
        await self.stream.send_all(data)

    async def aclose(self) -> None:
        await self.stream.aclose()


class Closes(logging.Handler):
    """Collects the transport's log records."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def reasons(self) -> dict[int, str]:
        return {r.conn: r.reason for r in self.records if r.getMessage() == "connection closed"}


@pytest.fixture
def log() -> tuple[logging.Logger, Closes]:
    logger = logging.getLogger(f"test.transport.{next(_ids)}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = Closes()
    logger.addHandler(handler)
    return logger, handler


async def receive_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        chunk = await stream.receive_some()
        assert chunk, f"EOF after {len(got)} of {n} bytes"
        got += chunk
    return bytes(got)


async def receive_until_eof(stream: trio.abc.ReceiveStream) -> bytes:
    got = bytearray()
    while chunk := await stream.receive_some():
        got += chunk
    return bytes(got)


async def start(nursery: trio.Nursery, session: FakeSession, log, lockstep: bool = False):
    """Run ``session`` on one end of a fresh pair; return (client stream, server end)."""
    client, server = trio.testing.lockstep_stream_pair() if lockstep else trio.testing.memory_stream_pair()
    end = ServerEnd(server)
    nursery.start_soon(run_connection, end, session, log[0], session.conn_id)
    return client, end


async def test_pending_output_leaves_in_one_send_all(autojump_clock, log):
    session = FakeSession()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            client, end = await start(nursery, session, log, lockstep=True)
            session.send(b"first")  # a delivery from another connection's publish
            await trio.testing.wait_all_tasks_blocked()  # the writer is in send_all until we read
            for piece in (b"a", b"bb", b"ccc"):
                session.send(piece)
            assert await receive_exactly(client, 5) == b"first"
            assert await receive_exactly(client, 6) == b"abbccc"
            assert end.sends == [b"first", b"abbccc"]
            await client.aclose()
    assert session.lost == 1


async def test_replies_to_one_read_leave_in_one_send_all(autojump_clock, log):
    def three_frames(s: FakeSession, data: bytes) -> None:
        for i in range(3):
            s.send(b"%d:%s;" % (i, data))

    session = FakeSession(three_frames)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            client, end = await start(nursery, session, log)
            await client.send_all(b"x")
            assert await receive_exactly(client, 12) == b"0:x;1:x;2:x;"
            assert end.sends == [b"0:x;1:x;2:x;"]
            await client.aclose()


async def test_a_peer_that_stops_reading_pauses_the_reader_past_read_pause_bytes(autojump_clock, log):
    def reply(s: FakeSession, data: bytes) -> None:
        if data == b"at-limit":
            s.send(b"a" * READ_PAUSE_BYTES)
        elif data == b"past-limit":
            s.send(b"p" * (READ_PAUSE_BYTES + 1))

    session = FakeSession(reply)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            client, end = await start(nursery, session, log, lockstep=True)
            # Exactly READ_PAUSE_BYTES unread by the peer: input is still read.
            await client.send_all(b"at-limit")
            nursery.start_soon(client.send_all, b"more")
            await trio.testing.wait_all_tasks_blocked()
            assert session.received == [b"at-limit", b"more"]
            assert await receive_exactly(client, READ_PAUSE_BYTES) == b"a" * READ_PAUSE_BYTES
            await trio.testing.wait_all_tasks_blocked()  # that send_all returned: the writer sleeps
            # One byte more: the next input waits until the peer has read the reply.
            await client.send_all(b"past-limit")
            nursery.start_soon(client.send_all, b"held")
            await trio.testing.wait_all_tasks_blocked()
            assert session.received == [b"at-limit", b"more", b"past-limit"]
            assert await receive_exactly(client, READ_PAUSE_BYTES + 1) == b"p" * (READ_PAUSE_BYTES + 1)
            await trio.testing.wait_all_tasks_blocked()
            assert session.received == [b"at-limit", b"more", b"past-limit", b"held"]
            assert [len(s) for s in end.sends] == [READ_PAUSE_BYTES, READ_PAUSE_BYTES + 1]
            await client.aclose()


async def test_outbound_high_water_sets_over_budget_and_draining_clears_it(autojump_clock, log):
    half = OUTBOUND_HIGH_WATER // 2

    def burst(s: FakeSession, data: bytes) -> None:
        for _ in range(3):
            s.send(b"d" * half)

    session = FakeSession(burst)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            client, end = await start(nursery, session, log, lockstep=True)
            await client.send_all(b"go")
            await trio.testing.wait_all_tasks_blocked()  # the writer is in send_all
            assert session.over_budget and session.budget_calls == [True]
            assert await receive_exactly(client, 3 * half) == b"d" * (3 * half)
            await trio.testing.wait_all_tasks_blocked()  # the writer returned and drained
            assert not session.over_budget and session.budget_calls == [True, False]
            assert [len(s) for s in end.sends] == [3 * half]
            await client.aclose()


async def test_eof_from_the_peer_flushes_what_the_session_queued(autojump_clock, log):
    session = FakeSession(lambda s, data: s.send(b"reply to " + data))
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            client, end = await start(nursery, session, log, lockstep=True)
            await client.send_all(b"last words")
            await client.send_eof()  # half-close: the peer still reads
            await trio.testing.wait_all_tasks_blocked()  # EOF seen, the reply still unsent
            assert session.lost == 0
            assert await receive_until_eof(client) == b"reply to last words"
    assert session.received == [b"last words"]
    assert session.lost == 1
    assert log[1].reasons() == {session.conn_id: ClosedReason.CLIENT_DISCONNECTED.value}


@pytest.mark.parametrize("reason", [ClosedReason.CLIENT_CLOSED, ClosedReason.PROTOCOL_ERROR,
                                    ClosedReason.AUTH_FAILED, ClosedReason.TAKEN_OVER,
                                    ClosedReason.SERVER_SHUTDOWN])
async def test_a_session_that_closes_flushes_then_closes_with_its_reason(autojump_clock, log, reason):
    session = FakeSession(lambda s, data: s.close_with(reason, b"goodbye"))
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            client, end = await start(nursery, session, log)
            await client.send_all(b"anything")
            assert await receive_until_eof(client) == b"goodbye"
    assert session.lost == 1
    assert log[1].reasons() == {session.conn_id: reason.value}


async def test_a_peer_that_resets_is_a_socket_error(autojump_clock, log):
    session = FakeSession()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            client, end = await start(nursery, session, log)
            end.receive_error = ConnectionResetError(104, "Connection reset by peer")
            await client.send_all(b"x")
            assert await receive_until_eof(client) == b""
    assert session.received == []
    assert session.lost == 1
    assert log[1].reasons() == {session.conn_id: ClosedReason.SOCKET_ERROR.value}


async def test_a_failed_send_is_a_socket_error(autojump_clock, log):
    session = FakeSession()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            client, end = await start(nursery, session, log)
            end.send_error = trio.BrokenResourceError("peer went away")
            await client.send_all(b"echo me")
            assert await receive_until_eof(client) == b""
    assert session.received == [b"echo me"]
    assert log[1].reasons() == {session.conn_id: ClosedReason.SOCKET_ERROR.value}


async def test_an_exception_in_a_session_closes_that_connection_only(autojump_clock, log):
    def explode(s: FakeSession, data: bytes) -> None:
        raise ValueError("a bug in the session")

    broken, healthy = FakeSession(explode), FakeSession()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            client_a, _ = await start(nursery, broken, log)
            client_b, _ = await start(nursery, healthy, log)
            await client_a.send_all(b"boom")
            await receive_until_eof(client_a)  # closed (after whatever the session flushed)
            for i in range(3):  # the other connection goes on
                await client_b.send_all(b"ping %d" % i)
                assert await receive_exactly(client_b, 6) == b"ping %d" % i
            await client_b.aclose()
    assert broken.lost == 1 and healthy.lost == 1
    assert log[1].reasons() == {broken.conn_id: ClosedReason.INTERNAL_ERROR.value,
                                healthy.conn_id: ClosedReason.CLIENT_DISCONNECTED.value}
    faults = [r for r in log[1].records if r.levelno >= logging.WARNING]
    assert len(faults) == 1  # one line for the fault, none for the healthy connection


async def test_deadlines_call_on_timer_at_their_time(autojump_clock, log):
    def heartbeat(s: FakeSession, now: float) -> None:
        if len(s.timer_calls) < 3:
            s.send(b"beat;")
            s.deadline = now + 10
        else:
            s.close_with(ClosedReason.HEARTBEAT_TIMEOUT, b"timeout;")

    session = FakeSession()
    session.timer = heartbeat
    with trio.fail_after(TIMEOUT * 10):
        async with trio.open_nursery() as nursery:
            t0 = trio.current_time()
            session.deadline = t0 + 10
            client, end = await start(nursery, session, log)
            assert await receive_until_eof(client) == b"beat;beat;timeout;"
    assert session.timer_calls == [t0 + 10, t0 + 20, t0 + 30]
    assert end.sends == [b"beat;", b"beat;", b"timeout;"]
    assert log[1].reasons() == {session.conn_id: ClosedReason.HEARTBEAT_TIMEOUT.value}
