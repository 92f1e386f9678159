"""Floods into something that never drains, with paging on (the default): the memory alarm
counts the pager's backlog and blocks the flooding publisher per protocol (AMQP
``connection.blocked``, STOMP and MQTT no longer read) until it clears, while a
well-behaved client on another connection keeps being served and loses nothing; an MQTT
QoS 0 subscriber that does not read has its messages dropped past ``max_queued_messages``.

The page file is held still (a disk slower than the flood) so the backlog builds up within a
few seconds and the alarm holds until the test lets it go; ``bench/bench_memory.py`` floods a real node for a minute and reports RSS.
"""

from __future__ import annotations

import os
import queue
import socket
import struct
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pika
import pytest
import stomp
from paho.mqtt.enums import CallbackAPIVersion

from mqemu.broker.config import BrokerConfig
from mqemu.broker.store import pagefile
from mqemu.protocols.amqp091 import spec
from mqemu.protocols.amqp091.codec import encode_content

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "differential"))
from amqp_raw import RawAMQP  # noqa: E402

pytestmark = pytest.mark.timeout(60)

KIB = b"x" * 1024
WATERMARK = 4 << 20


@pytest.fixture
def stuck_pager(monkeypatch):
    """The page file takes nothing until the test sets the event it yields (a disk slower
    than any flood): the pager's backlog grows as in the field, and the alarm holds as long
    as the test needs it."""
    release = threading.Event()
    real_work = pagefile.Pager._work

    def work(self, writes, reads, discards):
        if writes:
            release.wait(30)
        return real_work(self, writes, reads, discards)

    monkeypatch.setattr(pagefile.Pager, "_work", work)
    yield release
    release.set()  # before the node stops (fixtures are torn down in reverse order)


def wait_for(predicate, seconds: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(0.01)


def sessions(node, kind: str) -> list:
    return [s for s in list(node.node.sessions) if type(s).__name__ == kind]


class Flooder(threading.Thread):
    """Writes one pre-encoded batch over and over until stopped; records when its writes
    stop going through (the broker no longer reads it)."""

    def __init__(self, sock: socket.socket, batch: bytes) -> None:
        super().__init__(daemon=True)
        self.sock, self.batch = sock, batch
        self.stop = threading.Event()
        self.sent = 0

    def run(self) -> None:
        self.sock.settimeout(0.1)
        view = memoryview(self.batch)
        while not self.stop.is_set():
            pos = 0
            while pos < len(view) and not self.stop.is_set():
                try:
                    pos += self.sock.send(view[pos:])
                except socket.timeout:
                    continue
                except OSError:
                    return
            self.sent += 1


def params(port: int) -> pika.ConnectionParameters:
    return pika.ConnectionParameters("127.0.0.1", port, blocked_connection_timeout=30)


def test_amqp_flood_into_a_queue_without_consumer_blocks_the_publisher(mqemu_start, stuck_pager):
    node = mqemu_start(config=BrokerConfig(memory_high_watermark=WATERMARK))
    port = node.ports["amqp"]
    good_pub = pika.BlockingConnection(params(port))
    gch = good_pub.channel()
    gch.confirm_delivery()
    gch.queue_declare("work")
    for i in range(200):
        gch.basic_publish("", "work", b"%03d" % i)
    good_pub.close()

    flood = pika.BlockingConnection(params(port))
    events: list[str] = []
    flood.add_on_connection_blocked_callback(lambda c, f: events.append(f.method.reason))
    flood.add_on_connection_unblocked_callback(lambda c, f: events.append("unblocked"))
    consumer = pika.BlockingConnection(params(port))
    try:
        fch = flood.channel()
        fch.queue_declare("flood")
        deadline = time.monotonic() + 30
        sent = 0
        while not events:
            assert time.monotonic() < deadline, f"no connection.blocked after {sent} messages"
            for _ in range(200):
                fch.basic_publish("", "flood", KIB)
            sent += 200
            flood.process_data_events(0)
        assert events == ["low on memory"] and node.broker.memory_alarm
        assert node.broker.memory_in_use >= WATERMARK
        flooder = [s for s in sessions(node, "AMQPConnection") if s.published]
        assert len(flooder) == 1 and flooder[0].reading_paused

        # The well-behaved consumer (it never published) is served in full while it holds.
        cch = consumer.channel()
        started = time.monotonic()
        got = []
        for method, _, body in cch.consume("work", auto_ack=True, inactivity_timeout=1):
            assert method is not None, f"consumer stalled after {len(got)} messages"
            got.append(body)
            if len(got) == 200:
                break
        assert got == [b"%03d" % i for i in range(200)] and time.monotonic() - started < 1.0
        cch.cancel()
        assert node.broker.memory_alarm

        # A connection that starts publishing while the alarm holds is blocked too.
        with RawAMQP("127.0.0.1", port) as late:
            late.handshake()
            late.method(1, spec.ChannelOpen())  # answered after connection.blocked
            late.send(encode_content(1, spec.BasicPublish(exchange="", routing_key="flood", mandatory=False,
                                                          immediate=False), {}, b"late", 131072))
            wait_for(lambda: sum(s.reading_paused for s in sessions(node, "AMQPConnection")) == 2, 5,
                     "the late publisher to be paused")

        # Once the flood is purged and the backlog written, the publisher is unblocked.
        purged = cch.queue_purge("flood").method.message_count
        assert purged > 0
        stuck_pager.set()
        deadline = time.monotonic() + 15
        while "unblocked" not in events:
            assert time.monotonic() < deadline, "no connection.unblocked"
            flood.process_data_events(0.05)
        assert events == ["low on memory", "unblocked"] and not node.broker.memory_alarm
        fch.queue_purge("flood")
        fch.basic_publish("", "flood", b"after")
        assert fch.queue_declare("flood", passive=True).method.message_count == 1
    finally:
        consumer.close()
        flood.close()


def stomp_raw(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00")
    assert read_frame(s).startswith(b"CONNECTED")
    return s


def read_frame(s: socket.socket, timeout: float = 5) -> bytes:
    s.settimeout(timeout)
    data = b""
    while b"\x00" not in data:
        part = s.recv(4096)
        assert part, "connection closed"
        data += part
    return data


def test_stomp_subscriber_that_never_reads_blocks_the_publisher_not_others(mqemu_start, stuck_pager):
    node = mqemu_start(config=BrokerConfig(memory_high_watermark=WATERMARK))
    port = node.ports["stomp"]
    feeder = stomp.Connection12([("127.0.0.1", port)], vhost="/")
    feeder.connect("guest", "guest", wait=True)
    for i in range(200):
        feeder.send("/queue/good", b"%03d" % i, headers={"receipt": f"g{i}"} if i == 199 else {})
    feeder.disconnect()

    stuck = stomp_raw(port)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(b"SUBSCRIBE\nid:0\ndestination:/topic/flood\nreceipt:r\n\n\x00")
    assert read_frame(stuck).startswith(b"RECEIPT")  # and never read again
    pub = stomp_raw(port)
    flooder = Flooder(pub, b"SEND\ndestination:/topic/flood\ncontent-length:1024\n\n%s\x00" % KIB * 64)
    flooder.start()
    good = stomp.Connection12([("127.0.0.1", port)], vhost="/")
    inbox: queue.Queue = queue.Queue()

    class Listener(stomp.ConnectionListener):
        def on_message(self, frame) -> None:
            inbox.put((time.monotonic(), frame.body))

    good.set_listener("", Listener())
    try:
        wait_for(lambda: node.broker.memory_alarm, 30, "the memory alarm")
        wait_for(lambda: any(s.reading_paused for s in sessions(node, "StompSession")), 5, "a paused publisher")
        paused = [s for s in sessions(node, "StompSession") if s.reading_paused]
        assert len(paused) == 1 and paused[0].published
        # Nothing more of it is routed (what it writes waits in the socket buffers).
        flood_queue = max(node.broker.vhosts["/"].queues.values(), key=lambda q: len(q.ready))
        queued = len(flood_queue.ready)
        time.sleep(0.5)
        assert len(flood_queue.ready) == queued and node.broker.memory_alarm

        # A consumer on another connection gets everything, without a stall.
        good.connect("guest", "guest", wait=True)
        started = time.monotonic()
        good.subscribe("/queue/good", id="g", ack="auto")
        got = [inbox.get(timeout=5) for _ in range(200)]
        assert [b for _, b in got] in ([b"%03d" % i for i in range(200)],
                                       ["%03d" % i for i in range(200)])
        assert got[-1][0] - started < 1.0

        # The stuck subscriber goes: its queue is deleted, the alarm clears, the publisher
        # is read again and its next frame is answered.
        stuck.close()
        stuck_pager.set()
        wait_for(lambda: not node.broker.memory_alarm, 15, "the alarm to clear")
        flooder.stop.set()
        flooder.join(5)
        pub.settimeout(5)
        pub.sendall(b"SEND\ndestination:/queue/after\nreceipt:done\n\nafter\x00")
        data = b""
        while b"receipt-id:done" not in data:
            part = pub.recv(65536)
            assert part, "publisher connection closed"
            data += part
    finally:
        flooder.stop.set()
        pub.close()
        stuck.close()
        if good.is_connected():
            good.disconnect()


def mqtt_raw(port: int, client_id: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    var = b"\x00\x04MQTT\x04\x02\x00\x00" + struct.pack(">H", len(client_id)) + client_id
    s.sendall(bytes([0x10, len(var)]) + var)
    s.settimeout(5)
    assert s.recv(4) == b"\x20\x02\x00\x00"
    return s


def test_mqtt_qos0_subscriber_that_never_reads_has_messages_dropped(mqemu_start):
    node = mqemu_start(config=BrokerConfig(memory_high_watermark=64 << 20))
    port = node.ports["mqtt"]
    stuck = mqtt_raw(port, b"stuck")
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(b"\x82\x0a\x00\x01\x00\x05flood\x00")
    assert stuck.recv(5) == b"\x90\x03\x00\x01\x00"  # SUBACK, QoS 0 granted; never read again
    pub = mqtt_raw(port, b"flooder")
    one = b"\x00\x05flood" + KIB
    flooder = Flooder(pub, (b"\x30" + bytes([len(one) & 0x7F | 0x80, len(one) >> 7]) + one) * 64)
    flooder.start()

    good = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="good")
    inbox: queue.Queue = queue.Queue()
    subscribed = threading.Event()
    good.on_message = lambda c, u, m: inbox.put((time.monotonic(), m.payload))
    good.on_subscribe = lambda *a: subscribed.set()
    good.connect("127.0.0.1", port)
    good.loop_start()
    try:
        assert good.subscribe("good/#", qos=1)[0] == mqtt.MQTT_ERR_SUCCESS and subscribed.wait(5)
        stuck_session = [s for s in sessions(node, "MqttConnection") if s.client_id == "stuck"][0]
        wait_for(lambda: stuck_session.dropped > 1000, 30, "QoS 0 drops")
        for i in range(100):
            good.publish("good/x", b"%03d" % i, qos=1)
        got = [inbox.get(timeout=5) for _ in range(100)]
        assert sorted(b for _, b in got) == [b"%03d" % i for i in range(100)]
        gaps = [b[0] - a[0] for a, b in zip(got, got[1:])]
        assert max(gaps) < 1.0
        assert node.broker.messages_dropped >= stuck_session.dropped > 1000
        # What the stuck client holds stays bounded: its buffer (the high-water mark plus
        # max_queued_messages more) and, at most as large, the chunk the writer is sending.
        held = stuck_session.outbound_bytes + stuck_session.sending_bytes
        assert held < 2 * ((1 << 20) + 1000 * 1100)
        assert not node.broker.memory_alarm and not flooder.stop.is_set()
        sent = flooder.sent
        wait_for(lambda: flooder.sent > sent + 10, 5, "the QoS 0 publisher to keep going")
    finally:
        flooder.stop.set()
        good.disconnect()
        good.loop_stop()
        pub.close()
        stuck.close()
