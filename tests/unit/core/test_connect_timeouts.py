"""Connect timeouts per engine and from the config file, the bounds before login, and the
rate-limited fault log, driven without sockets (time is an argument)."""

from __future__ import annotations

import logging

import pytest

from mqemu.broker.config import BrokerConfig, ConfigError, load_config
from mqemu.broker.core import Broker
from mqemu.protocols.amqp091.session import AMQPConnection
from mqemu.protocols.faults import RateLimitedLog
from mqemu.protocols.mqtt.session import MqttConnection
from mqemu.protocols.session_base import ClosedReason
from mqemu.protocols.stomp.session import StompSession

SESSIONS = {"amqp": AMQPConnection, "stomp": StompSession, "mqtt": MqttConnection}


def make(protocol: str, engine: str = "rabbitmq", extra: dict | None = None):
    cfg = BrokerConfig(engine=engine)
    cfg.extra = extra or {}
    session = SESSIONS[protocol](Broker(cfg), "127.0.0.1", 1)
    session.bind_transport(lambda: None, lambda: None)
    return session


@pytest.mark.parametrize("protocol, engine, seconds", [
    ("amqp", "rabbitmq", 10.0),  # RabbitMQ's handshake_timeout
    ("stomp", "rabbitmq", 10.0),  # measured: RabbitMQ 3.10 closes a silent STOMP socket at 10 s
    ("mqtt", "rabbitmq", 10.0),  # and a silent MQTT socket at 10 s
    ("stomp", "activemq", 30.0),  # ActiveMQ 5.17: transport.connectAttemptTimeout, 30 s
    ("mqtt", "activemq", 30.0),
])
def test_silent_socket_closed_at_the_engines_connect_timeout(protocol, engine, seconds):
    s = make(protocol, engine)
    s.connection_made(100.0)  # accepted; not a byte received
    assert s.next_deadline() == 100.0 + seconds
    s.on_timer(100.0 + seconds - 0.01)
    assert not s.closing
    s.on_timer(100.0 + seconds)
    assert s.closing and s.close_reason is ClosedReason.PROTOCOL_ERROR
    assert s.outbound == []  # closed without a word, as the engines do


@pytest.mark.parametrize("protocol, key", [("amqp", "handshake_timeout"), ("stomp", "connect_timeout"),
                                           ("mqtt", "connect_timeout")])
def test_connect_timeout_from_the_config(protocol, key):
    s = make(protocol, extra={protocol: {key: 2.5}})
    s.connection_made(0.0)
    assert s.next_deadline() == 2.5


def test_the_deadline_is_not_moved_by_a_slow_first_byte():
    s = make("stomp")
    s.connection_made(0.0)
    s.data_received(b"CONN", 9.0)
    assert s.next_deadline() == 10.0
    m = make("mqtt")
    m.connection_made(0.0)
    m.data_received(b"\x10", 9.0)
    assert m.next_deadline() == 10.0


def test_mqtt_keep_alive_replaces_the_connect_timeout_after_connect():
    m = make("mqtt")
    m.connection_made(0.0)
    m.data_received(b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02id", 1.0)  # keep alive 60 s
    assert m.outbound == [b"\x20\x02\x00\x00"]
    assert m.next_deadline() == 1.0 + 90.0


@pytest.mark.parametrize("value", [0, -1, "10", True])
def test_bad_timeout_in_the_config_file(tmp_path, value):
    path = tmp_path / "mqemu.toml"
    path.write_text(f"[stomp]\nconnect_timeout = {value!r}\n".replace("'", '"').replace("True", "true"))
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value).startswith("[stomp] connect_timeout must be a number of seconds above 0")


def test_timeout_in_the_config_file(tmp_path):
    path = tmp_path / "mqemu.toml"
    path.write_text("[mqtt]\nconnect_timeout = 3\n[amqp]\nhandshake_timeout = 0.5\n")
    cfg = load_config(str(path))
    assert cfg.seconds("mqtt", "connect_timeout", 10.0) == 3.0
    assert cfg.seconds("amqp", "handshake_timeout", 10.0) == 0.5
    assert cfg.seconds("stomp", "connect_timeout", 10.0) == 10.0


def test_stomp_connect_frame_is_bounded_before_login():
    s = make("stomp")
    s.connection_made(0.0)
    headers = b"".join(b"h%d:%s\n" % (i, b"v" * 1000) for i in range(17))  # 17 KB of short headers
    s.data_received(b"CONNECT\naccept-version:1.2\n" + headers, 1.0)
    assert b"".join(s.outbound) == (
        b"ERROR\nmessage:Frame too large\ncontent-type:text/plain\ncontent-length:62\n\n"
        b"The frame headers exceed the maximum frame size of 16384 bytes\x00\n")  # NUL, LF as RabbitMQ
    assert s.closing and s.decoder.buffered < 20000


def test_stomp_frame_limit_is_lifted_after_connected():
    s = make("stomp")
    s.connection_made(0.0)
    s.data_received(b"CONNECT\naccept-version:1.2\nlogin:guest\npasscode:guest\n\n\x00", 1.0)
    assert b"".join(s.outbound).startswith(b"CONNECTED\n")
    assert s.decoder.max_frame_size == 4 * 1024 * 1024


def test_rate_limited_log_counts_what_it_leaves_out(caplog):
    now = [0.0]
    faults = RateLimitedLog(interval=10.0, clock=lambda: now[0])
    log = logging.getLogger("mqemu.test.faults")
    caplog.set_level(logging.WARNING, logger="mqemu.test.faults")
    exc = RuntimeError("x")
    assert faults.warn(log, "k", "fault %d", 1, exc=exc)
    for i in range(5):
        now[0] += 1.0
        assert not faults.warn(log, "k", "fault %d", 2 + i, exc=exc)
    assert faults.warn(log, "other", "another kind")  # keys are limited separately
    now[0] = 10.0
    assert faults.warn(log, "k", "fault %d", 7, exc=exc)
    lines = [(r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert lines == [("fault 1", True), ("another kind", False),
                     ("fault 7 (5 more since the last such line)", False)]
