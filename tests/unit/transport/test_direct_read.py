"""Reads straight from the socket (``transport._Connection.reader`` on a plain TCP socket):
the reader waits until its descriptor is readable and makes one ``os.read``, so a lone
message costs one read, with no speculative read that fails with EAGAIN and no trio stream
wrapper; a read that fills the buffer is followed by another after a checkpoint. A reset
ends the connection as any socket error does.

``os.read`` is counted while the tests run, so "one read per message" is a fact checked, not
a time measured.
"""

from __future__ import annotations

import logging
import os
import socket
import struct

import pytest
import trio
import trio.testing

from mqemu.protocols import transport

from test_direct_write import TIMEOUT, connect, receive_exactly, relay  # noqa: F401  (fixture)


class ReadCounter:
    """Wraps ``os.read``: counts the reads that returned bytes and those that found nothing
    (EAGAIN)."""

    def __init__(self) -> None:
        self.real = os.read
        self.data = 0
        self.empty = 0
        self.sizes: list[int] = []

    def __call__(self, fd: int, n: int) -> bytes:
        try:
            got = self.real(fd, n)
        except BlockingIOError:
            self.empty += 1
            raise
        self.data += 1
        self.sizes.append(len(got))
        return got


@pytest.fixture
def reads(monkeypatch) -> ReadCounter:
    counter = ReadCounter()
    monkeypatch.setattr(transport.os, "read", counter)
    return counter


async def test_a_lone_message_is_one_read_and_no_read_that_finds_nothing(relay, reads):  # noqa: F811
    port, registry = relay
    with trio.fail_after(TIMEOUT):
        producer = await connect(port, b"p", b"c")
        consumer = await connect(port, b"c")
        data0, empty0 = reads.data, reads.empty
        for i in range(20):
            message = b"message %02d" % i
            await producer.send_all(message)
            assert await receive_exactly(consumer, len(message)) == message
        # one read per message: the broker read each one exactly once and never tried the
        # socket before it was readable (trio's receive_some tries once more after each
        # read, which fails with EAGAIN: 20 more system calls and exceptions)
        assert reads.data - data0 == 20
        assert reads.empty - empty0 == 0
        await producer.aclose()
        await consumer.aclose()


async def test_input_larger_than_a_read_arrives_whole_and_in_order(relay, reads):  # noqa: F811
    port, registry = relay
    big = os.urandom(1 << 20)  # 16 reads of READ_SIZE at least
    with trio.fail_after(TIMEOUT):
        producer = await connect(port, b"p", b"c")
        consumer = await connect(port, b"c")

        async def send() -> None:
            await producer.send_all(big)
            await producer.send_all(b"end")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            got = await receive_exactly(consumer, len(big) + 3)
        assert got == big + b"end"
        assert max(reads.sizes) <= transport.READ_SIZE
        await producer.aclose()
        await consumer.aclose()


async def test_a_reset_ends_the_connection_with_a_socket_error(relay, reads, caplog):  # noqa: F811
    port, registry = relay
    caplog.set_level(logging.DEBUG, logger="test.transport.direct")
    with trio.fail_after(TIMEOUT):
        client = await connect(port, b"r")
        session = registry[b"r"]
        lost = trio.Event()
        original = session.connection_lost

        def connection_lost() -> None:
            original()
            lost.set()

        session.connection_lost = connection_lost  # type: ignore[method-assign]
        client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await client.aclose()  # RST: the broker's read fails with ECONNRESET
        await lost.wait()
        await trio.testing.wait_all_tasks_blocked()  # the close is logged after connection_lost
        reasons = [getattr(r, "reason", None) for r in caplog.records if r.getMessage() == "connection closed"]
        assert reasons == ["socket_error"]
        other = await connect(port, b"s")  # the listener goes on
        await other.aclose()


async def test_a_pause_that_comes_while_the_reader_waits_holds_the_next_read(relay, reads):  # noqa: F811
    """The memory alarm pauses a publisher while its reader waits for the socket: the input
    that wakes the reader stays in the socket until reading resumes (it is not read and
    routed first)."""
    port, registry = relay
    with trio.fail_after(TIMEOUT):
        producer = await connect(port, b"p", b"c")
        consumer = await connect(port, b"c")
        session = registry[b"p"]
        await trio.testing.wait_all_tasks_blocked()  # the producer's reader waits for input
        session.pause_publisher(True, True)
        data0 = reads.data
        await producer.send_all(b"held")
        # the reader is woken by the input, sees the pause and sleeps until the resume
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert reads.data == data0  # not read, so not routed either
        session.pause_publisher(False, True)
        assert await receive_exactly(consumer, 4) == b"held"
        assert reads.data == data0 + 1
        await producer.aclose()
        await consumer.aclose()
