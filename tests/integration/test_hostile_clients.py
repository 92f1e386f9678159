"""Issue 9, items 6 and 7 and the bounds before login, as attacks: a hostile client on one
connection (silent sockets, oversized frames before login, a session that fails) and a
well-behaved pika client on another that must see every message within a second.

Every hostile case asserts the exact answer (bytes, reply code, reason code) and that the
socket is closed."""

from __future__ import annotations

import logging
import socket
import struct
import time

import pika
import pytest

from mqemu.broker.config import BrokerConfig
from mqemu.protocols import transport
from mqemu.protocols.amqp091 import channel as amqp_channel
from mqemu.protocols.amqp091 import spec
from mqemu.protocols.amqp091.codec import PROTOCOL_HEADER
from mqemu.protocols.faults import RateLimitedLog
from mqemu.protocols.mqtt import server as mqtt_server
from mqemu.protocols.mqtt import connect as mqtt_connect
from mqemu.protocols.mqtt import inbound as mqtt_inbound
from mqemu.protocols.mqtt import subscriptions as mqtt_subscriptions
from mqemu.protocols.stomp import session as stomp_session

pytestmark = pytest.mark.timeout(60)

STOMP_CONNECT = b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00"
MQTT_CONNECT_311 = b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x00\x00\x02id"
MQTT_CONNECT_5 = b"\x10\x0f\x00\x04MQTT\x05\x02\x00\x00\x00\x00\x02id"
MQTT_SUBSCRIBE_311 = b"\x82\x06\x00\x01\x00\x01t\x00"
MQTT_SUBSCRIBE_5 = b"\x82\x07\x00\x01\x00\x00\x01t\x00"
STALL_BOUND = 1.0  # seconds a well-behaved client may wait for one round trip


# -- helpers ------------------------------------------------------------------------------
class Witness:
    """A well-behaved AMQP client: publishes with confirms and consumes its own messages,
    recording the slowest round trip. ``check()`` asserts nothing was lost or stalled."""

    def __init__(self, port: int) -> None:
        self.conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()
        self.queue = self.ch.queue_declare("", exclusive=True).method.queue
        self.sent = 0
        self.got: list[bytes] = []
        self.slowest = 0.0

    def round_trip(self) -> None:
        body = b"w%d" % self.sent
        t0 = time.monotonic()
        self.ch.basic_publish("", self.queue, body)
        self.sent += 1
        while True:
            method, _props, got = self.ch.basic_get(self.queue, auto_ack=True)
            if method is not None:
                break
            assert time.monotonic() - t0 < 5, "the witness's message did not come back"
        self.got.append(got)
        self.slowest = max(self.slowest, time.monotonic() - t0)

    def run_until(self, done, limit: float = 20.0) -> None:
        """Round trips until ``done()`` is true (at least one)."""
        deadline = time.monotonic() + limit
        self.round_trip()
        while not done():
            assert time.monotonic() < deadline, "the attack did not end in time"
            self.round_trip()

    def check(self) -> None:
        assert self.got == [b"w%d" % i for i in range(self.sent)]
        assert self.slowest < STALL_BOUND, f"a round trip took {self.slowest:.2f} s"
        self.conn.close()


def dial(port: int, data: bytes = b"") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if data:
        s.sendall(data)
    s.setblocking(False)
    return s


class Hostile:
    """A raw socket read without blocking, so the witness runs while it waits."""

    def __init__(self, port: int, data: bytes = b"") -> None:
        self.opened = time.monotonic()
        self.sock = dial(port, data)
        self.received = b""
        self.closed_after: float | None = None

    def poll(self) -> bool:
        """True once the server has closed the socket."""
        if self.closed_after is not None:
            return True
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.received += data
        except BlockingIOError:
            return False
        except ConnectionResetError:
            pass
        self.closed_after = time.monotonic() - self.opened
        self.sock.close()
        return True


def all_closed(hostiles: list[Hostile]):
    return lambda: all([h.poll() for h in hostiles])


def short_timeouts(seconds: float) -> BrokerConfig:
    cfg = BrokerConfig()
    cfg.extra = {"amqp": {"handshake_timeout": seconds}, "stomp": {"connect_timeout": seconds},
                 "mqtt": {"connect_timeout": seconds}}
    return cfg


def amqp_frames(data: bytes) -> list[tuple[int, int, bytes]]:
    out, pos = [], 0
    while pos + 7 <= len(data):
        ftype, channel, size = struct.unpack_from(">BHI", data, pos)
        out.append((ftype, channel, data[pos + 7:pos + 7 + size]))
        pos += 8 + size
    return out


def amqp_close(data: bytes) -> tuple[int, int, int, str]:
    """(reply code, class id, method id, text) of the connection.close in data."""
    for ftype, _channel, payload in amqp_frames(data):
        if ftype == 1 and payload[:4] == b"\x00\x0a\x00\x32":
            code, n = struct.unpack_from(">HB", payload, 4)
            text = payload[7:7 + n].decode()
            cls, meth = struct.unpack_from(">HH", payload, 7 + n)
            return code, cls, meth, text
    raise AssertionError(f"no connection.close in {data[:200]!r}")


# -- item 7: silent sockets are closed ----------------------------------------------------
def test_silent_and_stalled_sockets_are_closed_on_every_protocol(mqemu_start):
    """Sockets that never send a byte, or stop inside the first frame, are closed at the
    connect timeout (1 s here) without a word; a client on another connection is not slowed."""
    node = mqemu_start(config=short_timeouts(1.0))
    p = node.ports
    hostiles = {
        "stomp half CONNECT": Hostile(p["stomp"], b"CONNECT\naccept-version:1.2\n"),
        "mqtt half CONNECT": Hostile(p["mqtt"], MQTT_CONNECT_311[:5]),
        "amqp header only": Hostile(p["amqp"], PROTOCOL_HEADER),
    }
    for i in range(50):  # many at once: each is closed on time
        for protocol in ("stomp", "mqtt", "amqp"):
            hostiles[f"{protocol} silent {i}"] = Hostile(p[protocol])
    witness = Witness(p["amqp"])
    witness.run_until(all_closed(list(hostiles.values())))
    witness.check()
    for name, h in hostiles.items():
        if name == "amqp header only":
            assert amqp_frames(h.received)[0][2][:4] == b"\x00\x0a\x00\x0a"  # connection.start, then silence
            assert len(amqp_frames(h.received)) == 1
        else:
            assert h.received == b"", name
        assert 0.9 <= h.closed_after < 5.0, (name, h.closed_after)


def test_stomp_connect_after_a_silent_start_is_still_bounded(mqemu_start):
    """The timeout counts from the accept, not from the first byte: a client that waits
    0.6 s and then dribbles a CONNECT is still closed at 1 s."""
    node = mqemu_start(config=short_timeouts(1.0))
    h = Hostile(node.ports["stomp"])
    time.sleep(0.6)
    h.sock.sendall(b"CONNECT\n")
    witness = Witness(node.ports["amqp"])
    witness.run_until(all_closed([h]))
    witness.check()
    assert h.received == b"" and h.closed_after < 2.0


def test_connected_clients_are_not_hit_by_the_connect_timeout(mqemu_start):
    node = mqemu_start(config=short_timeouts(0.5))
    s = socket.create_connection(("127.0.0.1", node.ports["stomp"]), timeout=5)
    s.sendall(STOMP_CONNECT)
    assert s.recv(4096).startswith(b"CONNECTED\n")
    m = socket.create_connection(("127.0.0.1", node.ports["mqtt"]), timeout=5)
    m.sendall(MQTT_CONNECT_311)
    assert m.recv(4) == b"\x20\x02\x00\x00"
    witness = Witness(node.ports["amqp"])
    deadline = time.monotonic() + 1.5  # three times the connect timeout
    witness.run_until(lambda: time.monotonic() > deadline)
    witness.check()
    s.sendall(b"SEND\ndestination:/queue/alive\nreceipt:r1\n\nx\x00")
    assert b"RECEIPT\nreceipt-id:r1" in s.recv(4096)
    m.sendall(b"\xc0\x00")  # PINGREQ
    assert m.recv(2) == b"\xd0\x00"
    s.close()
    m.close()


# -- item 3: bounded input before login ---------------------------------------------------
def test_stomp_frame_before_connect_is_bounded(mqemu_start):
    node = mqemu_start()
    hostiles = [
        # a CONNECT that never ends its headers
        Hostile(node.ports["stomp"], b"CONNECT\naccept-version:1.2\nlogin:" + b"x" * 9000 + b"\nx:" + b"y" * 9000),
        # a CONNECT announcing a 1 MiB body: refused before the body is waited for
        Hostile(node.ports["stomp"], b"CONNECT\naccept-version:1.2\ncontent-length:1048576\n\n"),
    ]
    witness = Witness(node.ports["amqp"])
    witness.run_until(all_closed(hostiles))
    witness.check()
    for h in hostiles:
        assert h.received.startswith(b"ERROR\n") and b"message:Frame too large" in h.received
        assert b"16384 bytes" in h.received
        assert h.closed_after < 5


def test_stomp_large_frame_after_connect_is_allowed(mqemu_start):
    node = mqemu_start()
    s = socket.create_connection(("127.0.0.1", node.ports["stomp"]), timeout=5)
    s.sendall(STOMP_CONNECT)
    assert s.recv(4096).startswith(b"CONNECTED\n")
    body = b"b" * 100_000
    s.sendall(b"SEND\ndestination:/queue/big\ncontent-length:%d\nreceipt:r1\n\n" % len(body) + body + b"\x00")
    reply = b""
    while b"\x00" not in reply:
        reply += s.recv(4096)
    assert reply.startswith(b"RECEIPT\nreceipt-id:r1")
    s.close()


@pytest.mark.parametrize("hello, expected", [
    (b"\x10\xff\xff\xff\x7f\x00\x04MQTT\x04", b""),  # 3.1.1 CONNECT of 256 MiB: close
    (b"\x10\x81\x80\x04\x00\x04MQTT\x05", 0x95),  # 5.0, 64 KiB + 1: CONNACK 0x95
])
def test_mqtt_connect_over_64k_is_refused(mqemu_start, hello, expected):
    node = mqemu_start()
    h = Hostile(node.ports["mqtt"], hello)
    witness = Witness(node.ports["amqp"])
    witness.run_until(all_closed([h]))
    witness.check()
    if expected == b"":
        assert h.received == b""
    else:
        assert h.received[0] == 0x20 and h.received[3] == expected


def test_amqp_frames_before_tune_are_bounded(mqemu_start):
    node = mqemu_start()
    big_start_ok = PROTOCOL_HEADER + b"\x01\x00\x00" + struct.pack(">I", 5000)  # and no payload
    huge = PROTOCOL_HEADER + b"\x01\x00\x00" + struct.pack(">I", 1 << 30)
    hostiles = [Hostile(node.ports["amqp"], big_start_ok), Hostile(node.ports["amqp"], huge)]
    witness = Witness(node.ports["amqp"])
    witness.run_until(all_closed(hostiles))
    witness.check()
    for h, size in zip(hostiles, (5000, 1 << 30)):
        code, cls, meth, text = amqp_close(h.received)
        assert (code, cls, meth) == (501, 0, 0)
        assert text == f"FRAME_ERROR - type 1, frame_too_large {size} > 4088 (frame_max 4096)"


# -- item 6: every error before (and after) login is answered -----------------------------
def test_amqplain_nested_deep_is_answered_with_a_close(mqemu_start):
    node = mqemu_start()
    body = b""
    for _ in range(500):
        body = b"\x01kF" + struct.pack(">I", len(body)) + body
    from mqemu.protocols.amqp091.codec import encode_method
    start_ok = encode_method(0, spec.ConnectionStartOk(client_properties={}, mechanism="AMQPLAIN",
                                                        response=body, locale="en_US"))
    h = Hostile(node.ports["amqp"], PROTOCOL_HEADER + start_ok)
    witness = Witness(node.ports["amqp"])
    witness.run_until(all_closed([h]))
    witness.check()
    assert amqp_close(h.received) == (502, 10, 11, "SYNTAX_ERROR - field table nested more than 100 "
                                      "levels deep (the AMQPLAIN response of connection.start-ok)")


def _boom(*args, **kwargs):
    raise RuntimeError("boom")


@pytest.fixture
def faults(monkeypatch):
    """A fresh node-wide fault log with a clock the test moves."""
    now = [0.0]
    log = RateLimitedLog(interval=10.0, clock=lambda: now[0])
    monkeypatch.setattr(transport, "FAULTS", log)
    monkeypatch.setattr(mqtt_server, "FAULTS", log)
    return now


def _fault_lines(caplog) -> list[logging.LogRecord]:
    """What the node logged at INFO or above: for a fault, only the rate-limited warning."""
    return [r for r in caplog.records if r.name.startswith("mqemu.protocols") and r.levelno >= logging.INFO]


def test_amqp_session_failure_is_541_and_one_log_line(mqemu_start, monkeypatch, faults, caplog):
    node = mqemu_start()
    witness = Witness(node.ports["amqp"])  # declares its queue before the patch
    monkeypatch.setitem(amqp_channel._HANDLERS, spec.QueueDeclare, _boom)
    caplog.set_level(logging.INFO)
    for _ in range(3):
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.ports["amqp"]))
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
            ch.queue_declare("victim")
        assert info.value.reply_code == 541
        assert info.value.reply_text == "INTERNAL_ERROR - the broker failed to handle a frame on this connection"
        witness.round_trip()
    lines = _fault_lines(caplog)
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "RuntimeError in data_received: boom; closing the connection" in lines[0].getMessage()
    assert lines[0].exc_info is not None  # the first one of the process carries the traceback
    faults[0] = 11.0  # the interval has passed: the next line counts what it left out
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.ports["amqp"]))
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker):
        conn.channel().queue_declare("victim")
    lines = _fault_lines(caplog)
    assert len(lines) == 2
    assert lines[1].getMessage().endswith("(2 more since the last such line)")
    assert lines[1].exc_info is None
    witness.check()


@pytest.mark.parametrize("engine, message", [("rabbitmq", b"Processing error"), ("activemq", b"Internal error")])
def test_stomp_session_failure_is_an_error_frame(mqemu_start, monkeypatch, faults, engine, message):
    monkeypatch.setitem(stomp_session._HANDLERS, "SUBSCRIBE", _boom)
    node = mqemu_start(engine=engine)
    h = Hostile(node.ports["stomp"], STOMP_CONNECT + b"SUBSCRIBE\nid:1\ndestination:/queue/q\n\n\x00")
    witness = Witness(node.ports["amqp"])
    witness.run_until(all_closed([h]))
    witness.check()
    assert h.received.startswith(b"CONNECTED\n")
    error = h.received[h.received.index(b"ERROR\n"):]
    assert error.startswith(b"ERROR\n") and b"message:" + message + b"\n" in error
    assert b"The broker failed to handle a frame on this connection; it is closed\n\x00" in error


@pytest.mark.parametrize("level", [5, 4])
def test_mqtt_session_failure_after_connack(mqemu_start, monkeypatch, faults, level):
    """5.0: DISCONNECT 0x83 after the CONNACK; 3.1.1: CONNACK, then the socket is closed."""
    monkeypatch.setattr(mqtt_subscriptions.Subscriber, "on_subscribe", _boom)
    node = mqemu_start()
    hello = MQTT_CONNECT_5 + MQTT_SUBSCRIBE_5 if level == 5 else MQTT_CONNECT_311 + MQTT_SUBSCRIBE_311
    h = Hostile(node.ports["mqtt"], hello)
    witness = Witness(node.ports["amqp"])
    witness.run_until(all_closed([h]))
    witness.check()
    connack = h.received[:2 + h.received[1]]
    assert connack[0] == 0x20 and connack[3] == 0x00  # accepted
    if level == 4:
        assert h.received == b"\x20\x02\x00\x00"
        return
    disconnect = h.received[len(connack):]
    assert disconnect[0] == 0xE0 and disconnect[2] == 0x83  # implementation specific error
    assert disconnect.endswith(b"\x1f\x007the broker failed to handle a packet on this connection")


@pytest.mark.parametrize("hello, expected", [
    (MQTT_CONNECT_5, 0x83),  # 5.0: CONNACK refusal 0x83
    (MQTT_CONNECT_311, None),  # 3.1.1: just closed
])
def test_mqtt_session_failure_before_connack(mqemu_start, monkeypatch, faults, hello, expected):
    monkeypatch.setattr(mqtt_connect.Connector, "take_session", _boom)
    node = mqemu_start()
    h = Hostile(node.ports["mqtt"], hello)
    witness = Witness(node.ports["amqp"])
    witness.run_until(all_closed([h]))
    witness.check()
    if expected is None:
        assert h.received == b""
    else:
        assert h.received[0] == 0x20 and h.received[3] == expected


def test_failure_in_a_timer_closes_that_connection_only(mqemu_start, monkeypatch, faults, caplog):
    """The writer's path: a session's on_timer raises at the connect timeout."""
    monkeypatch.setattr(stomp_session.StompSession, "on_timer", _boom)
    caplog.set_level(logging.INFO)
    node = mqemu_start(config=short_timeouts(0.5))
    h = Hostile(node.ports["stomp"])
    witness = Witness(node.ports["amqp"])
    witness.run_until(all_closed([h]))
    witness.check()
    assert h.received.startswith(b"ERROR\nmessage:Processing error\n")
    lines = [r.getMessage() for r in _fault_lines(caplog)]
    assert len(lines) == 1 and "RuntimeError in on_timer: boom; closing the connection" in lines[0]


def test_mqtt_failure_in_the_publish_pump_is_0x83(mqemu_start, monkeypatch, faults, caplog):
    """Publishes are routed by the pump task, or by the reader itself when it is alone in its
    scheduler pass (the low-latency path): the same answer either way."""
    monkeypatch.setattr(mqtt_inbound.Inbound, "_route", _boom)
    caplog.set_level(logging.INFO)
    node = mqemu_start()
    publish = b"\x32\x07\x00\x01t\x00\x01\x00x"  # QoS 1, packet id 1, no properties, body "x"
    h = Hostile(node.ports["mqtt"], MQTT_CONNECT_5 + publish)
    witness = Witness(node.ports["amqp"])
    witness.run_until(all_closed([h]))
    witness.check()
    connack = h.received[:2 + h.received[1]]
    assert connack[3] == 0x00
    disconnect = h.received[len(connack):]
    assert disconnect[0] == 0xE0 and disconnect[2] == 0x83
    lines = [r.getMessage() for r in _fault_lines(caplog)]
    assert len(lines) == 1 and ("RuntimeError routing publishes: boom; closing the connection" in lines[0]
                                or "RuntimeError in data_received: boom; closing the connection" in lines[0])
