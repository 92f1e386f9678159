"""A lone message goes from its publisher's socket to its consumer's socket in the scheduler
pass it arrived in (issue 11 item 13): the delivery is written at the end of that pass
(``transport.Flusher``), and MQTT publishes are routed there first (the publish pump is a
hook of the flusher, not a task). No writer task and no pump task is woken for it. A reader
alone in its pass does not even wait for the pass's end: the delivery is written in the
publisher's reader step, and MQTT routes the publish there without deferring it to the pump
(``Writes`` tells the writes made in a reader's step from those made at the pass's end).

The node runs in the test's own trio loop (``mqemu_node``); a trio instrument counts steps
of the transport's writer tasks while messages go through one at a time, and the broker's
reads of its sockets (``os.read``) are counted: one per lone message, none that finds the
socket empty (the transport reads a plain socket only once epoll says it is readable). MQTT
and STOMP clients are raw sockets; AMQP uses pika in a worker thread.
"""

from __future__ import annotations

import os
import socket
import struct

import pika
import pytest
import trio

from mqemu.protocols import transport

TIMEOUT = 20
MESSAGES = 20


class WriterSteps(trio.abc.Instrument):
    """Counts the steps of the transport's writer tasks (and of any task named pump)."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith(".writer") or "pump" in task.name.lower():
            self.steps += 1


class Reads:
    """Counts the transport's reads (``os.read``) while ``counting``: those that returned
    bytes and those that found nothing (EAGAIN)."""

    def __init__(self) -> None:
        self.real = os.read
        self.counting = False
        self.data = 0
        self.empty = 0

    def __call__(self, fd: int, n: int) -> bytes:
        try:
            got = self.real(fd, n)
        except BlockingIOError:
            self.empty += self.counting
            raise
        self.data += self.counting
        return got


@pytest.fixture
def reads(monkeypatch) -> Reads:
    counter = Reads()
    monkeypatch.setattr(transport.os, "read", counter)
    return counter


class Writes:
    """Counts the transport's direct writes (``os.write``) while ``counting``: made in a
    reader task's step, or at the end of a pass (outside any task: trio's
    ``before_io_wait``)."""

    def __init__(self) -> None:
        self.real = os.write
        self.counting = False
        self.in_reader = 0
        self.at_pass_end = 0

    def __call__(self, fd: int, data: bytes) -> int:
        if self.counting:
            try:
                task = trio.lowlevel.current_task()
            except RuntimeError:
                self.at_pass_end += 1
            else:
                self.in_reader += task.name.endswith(".reader")
        return self.real(fd, data)


@pytest.fixture
def writes(monkeypatch) -> Writes:
    counter = Writes()
    monkeypatch.setattr(transport.os, "write", counter)
    return counter


@pytest.fixture
def deferred(monkeypatch) -> list:
    """The connections the MQTT publish pump was asked to route at the end of a pass."""
    from mqemu.protocols.mqtt.server import PublishPump
    calls: list = []
    real = PublishPump.defer

    def defer(self, conn):
        calls.append(conn)
        real(self, conn)

    monkeypatch.setattr(PublishPump, "defer", defer)
    return calls


class Raw:
    """A raw client: ``send`` is synchronous (no yield between two clients' sends), reads
    are trio's."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.tsock = trio.socket.from_stdlib_socket(self.sock)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)  # small frames: the socket buffer takes them at once

    async def read_until(self, marker: bytes) -> bytes:
        """Up to and with ``marker``; leading LFs (STOMP's NUL-then-LF frame ends) dropped."""
        while marker not in self.buf:
            chunk = await self.tsock.recv(65536)
            assert chunk, "the server closed the connection"
            self.buf += chunk
        head, _, self.buf = self.buf.partition(marker)
        return head.lstrip(b"\n") + marker

    async def read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = await self.tsock.recv(65536)
            assert chunk, "the server closed the connection"
            self.buf += chunk
        head, self.buf = self.buf[:n], self.buf[n:]
        return head

    async def mqtt_packet(self) -> tuple[int, bytes]:
        first = (await self.read_exactly(2))
        length, shift, byte = 0, 0, first[1]
        while True:
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            byte = (await self.read_exactly(1))[0]
        return first[0], await self.read_exactly(length)

    def close(self) -> None:
        self.sock.close()


def mqtt_string(s: bytes) -> bytes:
    return struct.pack("!H", len(s)) + s


def mqtt_connect(client_id: bytes) -> bytes:
    body = mqtt_string(b"MQTT") + b"\x04\x02\x00\x00" + mqtt_string(client_id)
    return bytes([0x10, len(body)]) + body


def mqtt_subscribe(pid: int, topic: bytes) -> bytes:
    body = struct.pack("!H", pid) + mqtt_string(topic) + b"\x00"
    return bytes([0x82, len(body)]) + body


def mqtt_publish(topic: bytes, payload: bytes) -> bytes:
    body = mqtt_string(topic) + payload
    return bytes([0x30, len(body)]) + body


async def mqtt_client(port: int, client_id: bytes) -> Raw:
    c = Raw(port)
    c.send(mqtt_connect(client_id))
    kind, body = await c.mqtt_packet()
    assert kind == 0x20 and body[1] == 0, (kind, body)
    return c


async def test_mqtt_lone_publish_wakes_no_task(mqemu_node, reads, writes, deferred):
    port = mqemu_node.ports["mqtt"]
    with trio.fail_after(TIMEOUT):
        sub = await mqtt_client(port, b"lat-sub")
        pub = await mqtt_client(port, b"lat-pub")
        sub.send(mqtt_subscribe(1, b"lat/t"))
        kind, _ = await sub.mqtt_packet()
        assert kind == 0x90
        steps = WriterSteps()
        trio.lowlevel.add_instrument(steps)
        reads.counting = writes.counting = True
        try:
            for i in range(MESSAGES):
                payload = b"m%02d" % i
                pub.send(mqtt_publish(b"lat/t", payload))
                kind, body = await sub.mqtt_packet()
                assert kind == 0x30 and body.endswith(payload)
        finally:
            reads.counting = writes.counting = False
            trio.lowlevel.remove_instrument(steps)
        assert steps.steps == 0
        assert (reads.data, reads.empty) == (MESSAGES, 0)  # one read per message (the publisher's)
        # each delivery written in the publisher's reader step, routed there without the pump
        assert (writes.in_reader, writes.at_pass_end) == (MESSAGES, 0)
        assert deferred == []
        sub.close()
        pub.close()


async def test_mqtt_subscribe_and_publish_in_one_pass_on_two_connections(mqemu_node):
    """The pump's reason to be: a SUBSCRIBE on one connection and a PUBLISH on another that
    arrive in the same pass are handled subscription first, whichever reader trio runs first
    (it runs a batch in either order). Both are sent in one step of this task, so both
    sockets are readable at the same I/O wait."""
    port = mqemu_node.ports["mqtt"]
    with trio.fail_after(TIMEOUT):
        for i in range(20):
            sub = await mqtt_client(port, b"pass-sub-%d" % i)
            pub = await mqtt_client(port, b"pass-pub-%d" % i)
            topic = b"pass/%d" % i
            sub.send(mqtt_subscribe(1, topic))
            pub.send(mqtt_publish(topic, b"first"))
            kind, _ = await sub.mqtt_packet()
            assert kind == 0x90
            kind, body = await sub.mqtt_packet()
            assert kind == 0x30 and body.endswith(b"first"), f"round {i}: {kind:#x} {body!r}"
            sub.close()
            pub.close()


async def stomp_client(port: int) -> Raw:
    c = Raw(port)
    c.send(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00")
    assert (await c.read_until(b"\x00")).startswith(b"CONNECTED")
    return c


async def test_stomp_lone_send_wakes_no_writer(mqemu_node, reads, writes):
    port = mqemu_node.ports["stomp"]
    with trio.fail_after(TIMEOUT):
        sub = await stomp_client(port)
        pub = await stomp_client(port)
        sub.send(b"SUBSCRIBE\nid:1\ndestination:/queue/lat\nreceipt:r1\n\n\x00")
        assert (await sub.read_until(b"\x00")).startswith(b"RECEIPT")
        steps = WriterSteps()
        trio.lowlevel.add_instrument(steps)
        reads.counting = writes.counting = True
        try:
            for i in range(MESSAGES):
                body = b"m%02d" % i
                pub.send(b"SEND\ndestination:/queue/lat\ncontent-length:3\n\n" + body + b"\x00")
                frame = await sub.read_until(b"\x00")
                assert frame.startswith(b"MESSAGE"), frame
                assert frame.endswith(body + b"\x00")
        finally:
            reads.counting = writes.counting = False
            trio.lowlevel.remove_instrument(steps)
        assert steps.steps == 0
        assert (reads.data, reads.empty) == (MESSAGES, 0)  # one read per message (the publisher's)
        assert (writes.in_reader, writes.at_pass_end) == (MESSAGES, 0)  # in the publisher's step
        sub.close()
        pub.close()


async def test_amqp_lone_publish_wakes_no_writer(mqemu_node):
    port = mqemu_node.ports["amqp"]
    params = pika.ConnectionParameters("127.0.0.1", port, heartbeat=0, blocked_connection_timeout=TIMEOUT)

    def setup():
        consumer = pika.BlockingConnection(params)
        publisher = pika.BlockingConnection(params)
        cch, pch = consumer.channel(), publisher.channel()
        cch.queue_declare("lat", exclusive=True)
        return consumer, publisher, cch, pch

    def one_by_one():
        got = []
        for i in range(MESSAGES):
            body = b"m%02d" % i
            pch.basic_publish("", "lat", body)
            for _method, _props, received in cch.consume("lat", auto_ack=True, inactivity_timeout=TIMEOUT):
                got.append(received)
                break
        return got

    with trio.fail_after(TIMEOUT * 2):
        consumer, publisher, cch, pch = await trio.to_thread.run_sync(setup)
        try:
            steps = WriterSteps()
            trio.lowlevel.add_instrument(steps)
            try:
                got = await trio.to_thread.run_sync(one_by_one)
            finally:
                trio.lowlevel.remove_instrument(steps)
            assert got == [b"m%02d" % i for i in range(MESSAGES)]
            assert steps.steps == 0
        finally:
            await trio.to_thread.run_sync(lambda: (consumer.close(), publisher.close()))
