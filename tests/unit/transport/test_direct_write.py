"""Low-latency writes over real sockets (``protocols/transport.serve_protocol`` on port 0):
output made while a reader handles its input is written at the end of that scheduler pass
(``transport.Flusher``), without waking any writer task; only what the socket does not take
is left to the writer.

A trio instrument counts the steps of the transport's writer tasks, so "no task hop" is a
fact the test checks, not a time it measures.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import socket

import pytest
import trio

from mqemu.protocols.session_base import ClosedReason, SessionBase
from mqemu.protocols.transport import serve_protocol

TIMEOUT = 20
_ids = itertools.count(1)
log = logging.getLogger("test.transport.direct")


class FakeBroker:
    def __init__(self) -> None:
        self.alarm_listeners: set = set()
        self.memory_alarm = False
        self.held_outbound: set = set()
        self.held_input: set = set()


class Relay(SessionBase):
    """The first line a connection sends names it and the connection it forwards to
    (``name target\\n``); afterwards every byte it sends goes to that connection (as a
    publish is delivered to a consumer's connection), or is answered by ``reply`` when that
    is set."""

    def __init__(self, registry: dict[bytes, Relay]) -> None:
        super().__init__(FakeBroker(), None, next(_ids))
        self.registry = registry
        self.name: bytes | None = None
        self.target = b""
        self.reply = None
        self.drained = 0

    def data_received(self, data: bytes, now: float) -> None:
        if self.name is None:
            self.name, _, self.target = bytes(data).rstrip(b"\n").partition(b" ")
            self.registry[self.name] = self
            self.send(b"ok\n")
            return
        if self.reply is not None:
            self.reply(self, bytes(data))
            return
        self.registry[self.target].send(bytes(data))

    def next_deadline(self) -> float | None:
        return None

    def on_timer(self, now: float) -> None:
        pass

    def on_drained(self) -> None:
        self.drained += 1
        super().on_drained()

    def connection_lost(self) -> None:
        self.release_transport()


class WriterSteps(trio.abc.Instrument):
    """Counts the steps of the transport's writer tasks."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith(".writer"):  # the transport's writer tasks
            self.steps += 1


@pytest.fixture
async def relay(nursery):
    registry: dict[bytes, Relay] = {}
    port = await nursery.start(functools.partial(
        serve_protocol, "test", "127.0.0.1", 0, lambda peer, conn_id: Relay(registry), log))
    return port, registry


async def connect(port: int, name: bytes, target: bytes = b"") -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(name + b" " + target + b"\n")
    assert await receive_exactly(stream, 3) == b"ok\n"
    return stream


async def receive_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        chunk = await stream.receive_some(n - len(got))
        assert chunk, f"EOF after {len(got)} of {n} bytes"
        got += chunk
    return bytes(got)


async def test_accepted_sockets_have_nagle_off(relay):
    port, registry = relay
    with trio.fail_after(TIMEOUT):
        client = await connect(port, b"a")
        mine = client.socket.getsockname()
        found = []
        for fd in map(int, os.listdir("/proc/self/fd")):
            try:
                sock = socket.socket(fileno=os.dup(fd))
            except OSError:
                continue
            with sock:
                try:
                    if sock.type == socket.SOCK_STREAM and sock.getpeername() == mine:
                        found.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                except OSError:
                    pass
        assert found and all(found), found  # the server's end of our connection: TCP_NODELAY
        await client.aclose()


async def test_a_lone_delivery_is_written_by_the_reader_without_waking_a_writer(relay):
    port, registry = relay
    with trio.fail_after(TIMEOUT):
        producer = await connect(port, b"p", b"c")
        consumer = await connect(port, b"c")
        steps = WriterSteps()
        trio.lowlevel.add_instrument(steps)
        try:
            for i in range(20):
                message = b"message %02d" % i
                await producer.send_all(message)
                assert await receive_exactly(consumer, len(message)) == message
        finally:
            trio.lowlevel.remove_instrument(steps)
        # 20 deliveries, none of them through a writer task (nor a wake-up of the
        # producer's writer, which had nothing to send)
        assert steps.steps == 0
        assert registry[b"c"].drained >= 20
        await producer.aclose()
        await consumer.aclose()


async def test_what_the_socket_does_not_take_is_sent_by_the_writer_in_order(relay):
    port, registry = relay
    big = bytes(range(256)) * (16 << 10)  # 4 MiB a chunk: more than a socket buffer holds
    with trio.fail_after(TIMEOUT):
        producer = await connect(port, b"p", b"c")
        consumer = await connect(port, b"c")
        steps = WriterSteps()
        trio.lowlevel.add_instrument(steps)
        try:
            for tag in (b"1", b"2", b"3"):  # the consumer reads nothing yet
                await producer.send_all(tag + big[:100] + tag)
            await producer.send_all(big)
            await producer.send_all(b"tail")
            total = 3 * 102 + len(big) + 4
            got = await receive_exactly(consumer, total)
        finally:
            trio.lowlevel.remove_instrument(steps)
        expected = b"".join(t + big[:100] + t for t in (b"1", b"2", b"3")) + big + b"tail"
        assert got == expected
        assert steps.steps > 0  # the rest of the big chunk went through the writer
        await producer.aclose()
        await consumer.aclose()


async def test_a_reply_then_close_is_written_then_the_socket_closes(relay):
    port, registry = relay
    with trio.fail_after(TIMEOUT):
        client = await connect(port, b"x")

        def goodbye(s: Relay, data: bytes) -> None:
            s.send(b"bye:" + data)
            s.closing = True
            s.close_reason = ClosedReason.CLIENT_CLOSED

        registry[b"x"].reply = goodbye
        await client.send_all(b"now")
        got = b""
        while chunk := await client.receive_some():
            got += chunk
        assert got == b"bye:now"
        await client.aclose()
