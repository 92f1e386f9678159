"""Bad input over raw sockets: the exact connection.close / channel.close mqemu sends.

The scenarios (hand-built frames) live in ``tests/differential/amqp_raw.py``, shared with the
differential tests that run them against RabbitMQ too. Here each runs against mqemu while a
pika connection opened beforehand stays in use: after the bad client is gone, that
connection must still publish and consume.
"""

from __future__ import annotations

import os
import sys

import pika
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "differential"))
from amqp_raw import SCENARIOS, RawAMQP  # noqa: E402

from mqemu.protocols.amqp091 import spec  # noqa: E402


def _still_works(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"still here")
    method, _props, body = ch.basic_get(q, auto_ack=True)
    assert body == b"still here"
    ch.close()


@pytest.fixture
def rabbitmq_3_10(mqemu_start):
    """A node emulating RabbitMQ 3.10, the version the scenarios' outcomes were taken from."""
    return mqemu_start(engine_version="3.10")


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_bad_input_closes_as_rabbitmq_does(name, rabbitmq_3_10):
    port = rabbitmq_3_10.ports["amqp"]
    bystander = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    try:
        scenario, expected = SCENARIOS[name]
        outcome = scenario("127.0.0.1", port)
        assert outcome.key() == expected, outcome.text
        if outcome.kind == "header":
            assert outcome.raw == b"AMQP\x00\x00\x09\x01"
        _still_works(bystander)
    finally:
        bystander.close()


def test_connection_close_text_names_the_code(mqemu_server):
    with RawAMQP("127.0.0.1", mqemu_server.ports["amqp"]) as c:
        c.handshake()
        c.send(b"\x01\x00\x01\x00\x00\x00\x05\x00\x14\x00\x0a\x00\x00")  # bad frame end
        out = c.outcome()
        assert out.key() == ("connection", 501, 0, 0)
        assert out.text.startswith("FRAME_ERROR - ")
        assert c.wait_eof(3)  # the server closes the socket after our close-ok


def test_server_closes_without_close_ok_after_timeout(mqemu_server):
    """A peer that never answers connection.close is dropped (CLOSE_TIMEOUT, 2 s)."""
    with RawAMQP("127.0.0.1", mqemu_server.ports["amqp"]) as c:
        c.handshake()
        c.method(0, spec.QueueDeclare(queue="x"))
        f = c.read_frame()
        assert isinstance(f.method, spec.ConnectionClose)
        assert c.wait_eof(5)


def test_frames_after_connection_close_are_ignored(mqemu_server):
    with RawAMQP("127.0.0.1", mqemu_server.ports["amqp"]) as c:
        c.handshake()
        c.method(3, spec.QueueDeclare(queue="x"))  # channel 3 is not open: 504
        c.method(0, spec.ConnectionTuneOk(channel_max=0, frame_max=131072, heartbeat=0))
        c.method(1, spec.ChannelOpen())
        out = c.outcome()
        assert out.key() == ("connection", 504, 50, 10)
        assert c.read_frame(0.5) is None  # nothing after the close


def test_channel_usable_again_after_channel_error(mqemu_server):
    with RawAMQP("127.0.0.1", mqemu_server.ports["amqp"]) as c:
        c.handshake()
        c.open_channel(1)
        c.method(1, spec.QueueDeclare(queue="no-such-queue", passive=True))
        assert c.outcome().key() == ("channel", 404, 50, 10)
        c.open_channel(1)  # the number is free again once close-ok was sent
        c.method(1, spec.QueueDeclare(queue="", exclusive=True))
        assert c.expect(spec.QueueDeclareOk).queue.startswith("amq.gen-")
