"""What a client sees change with ``--engine-version``: the version the node reports (AMQP
server properties, STOMP ``server``), an unknown exchange type (RabbitMQ 3.x closes the
connection with 503, 4.x the channel with 406), the smallest frame_max (4.1+: 8192) and the
largest STOMP frame (3.13+: 4 MiB; 3.10: none of its own)."""

from __future__ import annotations

import os
import subprocess
import sys

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker, ProbableAccessDeniedError

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "differential"))
from stomp_raw import RawStomp  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def amqp(node, **kw):
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.ports["amqp"],
                                                             connection_attempts=1, **kw))


@pytest.mark.parametrize("version,release", [("4.2", "4.2.1"), ("3.13", "3.13.7"), ("3.10", "3.10.25")])
def test_amqp_server_properties_name_the_version(mqemu_start, version, release):
    conn = amqp(mqemu_start(engine_version=version, ports={"stomp": "off", "mqtt": "off"}))
    try:
        props = conn._impl.server_properties
        assert (props["product"], props["version"]) == ("RabbitMQ", release)
    finally:
        conn.close()


def test_unknown_exchange_type_closes_the_connection_on_rabbitmq_3(mqemu_start):
    conn = amqp(mqemu_start(engine_version="3.13", ports={"stomp": "off", "mqtt": "off"}))
    ch = conn.channel()
    with pytest.raises(ConnectionClosedByBroker) as e:
        ch.exchange_declare("x.odd", "x-no-such-type")
    assert (e.value.reply_code, e.value.reply_text) == (503, "COMMAND_INVALID - unknown exchange type 'x-no-such-type'")
    assert not conn.is_open


def test_unknown_exchange_type_closes_the_channel_on_rabbitmq_4(mqemu_start):
    conn = amqp(mqemu_start(ports={"stomp": "off", "mqtt": "off"}))  # the default: 4.2
    try:
        ch = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as e:
            ch.exchange_declare("x.odd", "x-no-such-type")
        assert (e.value.reply_code, e.value.reply_text) == (
            406, "PRECONDITION_FAILED - unknown exchange type 'x-no-such-type'")
        assert conn.is_open
        conn.channel().exchange_declare("x.fine", "direct", auto_delete=True)
    finally:
        conn.close()


def test_frame_max_4096_is_refused_from_rabbitmq_4_1(mqemu_start):
    node = mqemu_start(ports={"stomp": "off", "mqtt": "off"})
    with pytest.raises(ProbableAccessDeniedError) as e:
        amqp(node, frame_max=4096)
    assert "(530) 'NOT_ALLOWED - frame_max=4096 < 8192 min size'" in str(e.value)
    old = amqp(mqemu_start(engine_version="3.13", ports={"stomp": "off", "mqtt": "off"}), frame_max=4096)
    try:
        assert old._impl.params.frame_max == 4096
    finally:
        old.close()


@pytest.mark.parametrize("engine,version,server", [
    ("rabbitmq", None, "RabbitMQ/4.2.1"), ("rabbitmq", "3.10", "RabbitMQ/3.10.25"),
    ("activemq", None, "ActiveMQ/5.18.6"), ("activemq", "5.17", "ActiveMQ/5.17.6"),
])
def test_stomp_connected_names_the_version(mqemu_start, engine, version, server):
    node = mqemu_start(engine=engine, engine_version=version, ports={"amqp": "off", "mqtt": "off"})
    with RawStomp(("127.0.0.1", node.ports["stomp"])) as c:
        answer = c.connect(engine)
    assert (answer.command, answer.headers["server"]) == ("CONNECTED", server)


def _send_big(node, size: int):
    """SEND a body of size bytes with a receipt; the answer frame."""
    with RawStomp(("127.0.0.1", node.ports["stomp"])) as c:
        assert c.connect("rabbitmq").command == "CONNECTED"
        c.send(b"SEND\ndestination:/queue/big\nreceipt:r1\ncontent-length:%d\n\n" % size
               + b"x" * size + b"\x00")
        return c.read(10)


def test_a_16_mib_stomp_send_works_on_rabbitmq_3_10(mqemu_start):
    node = mqemu_start(engine_version="3.10", ports={"amqp": "off", "mqtt": "off"})
    answer = _send_big(node, 16 << 20)
    assert (answer.command, answer.headers.get("receipt-id")) == ("RECEIPT", "r1")


def test_stomp_frames_over_4_mib_are_refused_from_rabbitmq_3_13(mqemu_start):
    node = mqemu_start(engine_version="3.13", ports={"amqp": "off", "mqtt": "off"})
    with RawStomp(("127.0.0.1", node.ports["stomp"])) as c:
        assert c.connect("rabbitmq").command == "CONNECTED"
        # the headers say it all: the ERROR comes before the body is read
        c.send(b"SEND\ndestination:/queue/big\nreceipt:r1\ncontent-length:%d\n\n" % (16 << 20))
        answer = c.read(10)
        assert c.wait_closed()
    assert answer.command == "ERROR"
    assert "4194304" in answer.headers["message"] + answer.body.decode()


def test_serve_refuses_a_version_the_engine_has_not():
    out = subprocess.run([sys.executable, "-m", "mqemu.ha.cli", "serve", "--engine-version", "3.9",
                          "--amqp-port", "0", "--stomp-port", "off", "--mqtt-port", "off"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "engine_version for rabbitmq must be one of 4.2, 3.13, 3.10, not '3.9'" in out.stderr


@pytest.mark.parametrize("version,queue_type", [("4.2", "quorum"), ("3.13", "classic")])
def test_a_durable_queue_declared_without_type_is_quorum_on_4_2(mqemu_start, version, queue_type):
    """Amazon MQ's RabbitMQ 4.2 makes it a quorum queue: a requeued message carries
    x-delivery-count; on 3.13 it is a classic queue and carries none."""
    conn = amqp(mqemu_start(engine_version=version, ports={"stomp": "off", "mqtt": "off"}))
    try:
        ch = conn.channel()
        ch.queue_declare("dqt", durable=True)
        ch.basic_publish("", "dqt", b"m")
        method, _props, _body = ch.basic_get("dqt")
        ch.basic_nack(method.delivery_tag, requeue=True)
        method, props, _body = ch.basic_get("dqt", auto_ack=True)
        assert method.redelivered
        count = (props.headers or {}).get("x-delivery-count")
        assert count == (1 if queue_type == "quorum" else None)
        ch.queue_delete("dqt")
    finally:
        conn.close()
