"""Connections: login, vhosts, the loopback rule, tuning, heartbeats, the memory alarm
(connection.blocked), direct reply-to, update-secret, large messages and many channels."""

from __future__ import annotations

import os
import sys
import time

import pika
import pytest
from pika.exceptions import AMQPConnectionError

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "differential"))
from amqp_raw import RawAMQP  # noqa: E402

from mqemu.broker.auth import AuthRegistry  # noqa: E402
from mqemu.broker.config import BrokerConfig  # noqa: E402
from mqemu.broker.errors import AuthenticationFailed  # noqa: E402
from mqemu.protocols.amqp091 import spec  # noqa: E402


def params(port, **kw):
    return pika.ConnectionParameters("127.0.0.1", port, **kw)


@pytest.fixture
def port(mqemu_server):
    return mqemu_server.ports["amqp"]


def test_wrong_password_is_access_refused(port):
    creds = pika.PlainCredentials("guest", "wrong")
    with pytest.raises((pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError)) as e:
        pika.BlockingConnection(params(port, credentials=creds, connection_attempts=1))
    assert "ACCESS_REFUSED" in str(e.value)


def test_unknown_vhost_is_530(port):
    with pytest.raises(AMQPConnectionError) as e:
        pika.BlockingConnection(params(port, virtual_host="nowhere"))
    assert "530" in repr(e.value) and "vhost nowhere not found" in repr(e.value)


def test_guest_only_from_loopback():
    auth = AuthRegistry.default()
    with pytest.raises(AuthenticationFailed) as e:
        auth.authenticate("guest", "guest", "10.0.0.1")
    assert e.value.text == "User 'guest' can only connect via localhost"
    assert auth.authenticate("guest", "guest", "127.0.0.1").name == "guest"
    assert auth.authenticate("guest", "guest", "::1").name == "guest"
    auth.loopback_users.clear()
    assert auth.authenticate("guest", "guest", "10.0.0.1").name == "guest"


def test_frame_max_and_channel_max_negotiation(port):
    conn = pika.BlockingConnection(params(port, frame_max=8192, channel_max=3))  # 8192: RabbitMQ 4.1+ floor
    try:
        assert conn._impl.params.frame_max == 8192
        assert conn._impl.params.channel_max == 3
        chans = [conn.channel() for _ in range(3)]
        with pytest.raises(pika.exceptions.NoFreeChannels):
            conn.channel()
        chans[0].close()
        conn.channel()
    finally:
        conn.close()


def test_channel_count_over_negotiated_max_is_530(port):
    with RawAMQP("127.0.0.1", port) as c:
        c.handshake(channel_max=2)
        c.open_channel(5)  # numbers are free; the count is limited (RabbitMQ 3.10)
        c.open_channel(9)
        c.method(3, spec.ChannelOpen())
        out = c.outcome()
    assert out.key() == ("connection", 530, 0, 0)
    assert out.text == "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)"


def test_large_message_across_many_frames(port):
    conn = pika.BlockingConnection(params(port, frame_max=8192))
    try:
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        body = os.urandom(1 << 20)
        ch.basic_publish("", q, body)
        got = []
        ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            conn.process_data_events(0.05)
        assert got == [body]
    finally:
        conn.close()


def test_many_channels(port):
    conn = pika.BlockingConnection(params(port))
    try:
        chans = [conn.channel() for _ in range(200)]
        q = chans[0].queue_declare("", exclusive=True).method.queue
        for i, ch in enumerate(chans):
            ch.basic_publish("", q, str(i).encode())
        assert chans[-1].queue_declare(q, passive=True).method.message_count == 200
        for ch in chans[::2]:
            ch.close()
        assert chans[1].basic_get(q, auto_ack=True)[2] == b"0"
    finally:
        conn.close()


def test_client_heartbeats_keep_an_idle_connection(port):
    conn = pika.BlockingConnection(params(port, heartbeat=1))
    try:
        assert conn._impl.params.heartbeat == 1
        conn.sleep(3.5)  # pika sends and expects heartbeats while it sleeps
        assert conn.is_open
        ch = conn.channel()
        ch.queue_declare("", exclusive=True)
    finally:
        conn.close()


def test_silent_client_is_dropped_after_missed_heartbeats(port):
    with RawAMQP("127.0.0.1", port) as c:
        tune = c.handshake(heartbeat=1)
        assert tune.heartbeat == 60  # the server's proposal; the client chose 1
        start = time.monotonic()
        assert c.wait_eof(6)
        assert time.monotonic() - start < 4
        assert b"\x08\x00\x00\x00\x00\x00\x00\xce" in c.raw  # the server sent heartbeats first


def test_memory_alarm_blocks_publishers(mqemu_start):
    node = mqemu_start(config=BrokerConfig(memory_high_watermark=100_000))
    port = node.ports["amqp"]
    pub = pika.BlockingConnection(params(port))
    events = []
    pub.add_on_connection_blocked_callback(lambda conn, frame: events.append("blocked"))
    pub.add_on_connection_unblocked_callback(lambda conn, frame: events.append("unblocked"))
    try:
        ch = pub.channel()
        ch.queue_declare("heavy")
        for _ in range(3):
            ch.basic_publish("", "heavy", b"x" * 50_000)
        deadline = time.monotonic() + 5
        while "blocked" not in events and time.monotonic() < deadline:
            pub.process_data_events(0.05)
        assert events == ["blocked"]
        consumer = pika.BlockingConnection(params(port))
        try:
            assert consumer.channel().queue_purge("heavy").method.message_count == 3
        finally:
            consumer.close()
        deadline = time.monotonic() + 5
        while "unblocked" not in events and time.monotonic() < deadline:
            pub.process_data_events(0.05)
        assert events == ["blocked", "unblocked"]
        ch.basic_publish("", "heavy", b"after")
        assert ch.queue_declare("heavy", passive=True).method.message_count == 1
    finally:
        pub.close()


def test_direct_reply_to_rpc(port):
    server = pika.BlockingConnection(params(port))
    client = pika.BlockingConnection(params(port))
    try:
        sch = server.channel()
        sch.queue_declare("rpc", exclusive=True)

        def on_request(ch, method, props, body):
            ch.basic_publish("", props.reply_to, body.upper(),
                             pika.BasicProperties(correlation_id=props.correlation_id))
            ch.basic_ack(method.delivery_tag)

        sch.basic_consume("rpc", on_request)
        cch = client.channel()
        replies = []
        cch.basic_consume("amq.rabbitmq.reply-to", lambda c, m, p, b: replies.append((p.correlation_id, b)),
                          auto_ack=True)
        cch.basic_publish("", "rpc", b"ping", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to",
                                                                    correlation_id="c1"))
        deadline = time.monotonic() + 5
        while not replies and time.monotonic() < deadline:
            server.process_data_events(0.01)
            client.process_data_events(0.01)
        assert replies == [("c1", b"PING")]
    finally:
        server.close()
        client.close()


def test_reply_to_without_consumer_is_406(port):
    conn = pika.BlockingConnection(params(port))
    try:
        ch = conn.channel()
        ch.basic_publish("", "rpc", b"x", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare("", exclusive=True)
        assert (e.value.reply_code, e.value.reply_text) == (406, "PRECONDITION_FAILED - fast reply consumer does not exist")
    finally:
        conn.close()


def test_update_secret(port):
    conn = pika.BlockingConnection(params(port))
    try:
        conn.update_secret("new-secret", "rotation")
        assert conn.is_open
        conn.channel().queue_declare("", exclusive=True)
    finally:
        conn.close()

