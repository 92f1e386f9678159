"""Partial input counts for the memory alarm: a connection holding a large partial frame or
the first body frames of a large message is in ``Broker.held_input`` until it is whole."""

from mqemu.broker.config import BrokerConfig
from mqemu.broker.core import Broker
from mqemu.protocols.amqp091 import spec
from mqemu.protocols.amqp091.codec import encode_content
from test_amqp091_session import Client

FRAME_MAX = 131072


def test_multi_frame_body_counts_until_complete_and_when_the_channel_goes():
    broker = Broker(BrokerConfig(memory_high_watermark=1_000_000))
    c = Client(broker).open()
    c.channel()
    c.method(1, spec.QueueDeclare(queue="q"))
    body = bytes(range(256)) * 4096  # 1 MiB: eight body frames
    data = encode_content(1, spec.BasicPublish(routing_key="q"), {}, body, FRAME_MAX)
    cut = len(data) - 1000  # all but the end of the last body frame
    c.send(data[:cut])
    held = c.conn.input_held()
    # The whole body frames kept by the channel plus the partial last frame the decoder holds.
    assert c.conn in broker.held_input and len(body) - 1000 <= held <= len(body)
    broker.check_memory()
    assert broker.memory_alarm and broker.memory_in_use >= held  # ready bodies: none yet
    c.send(data[cut:])
    assert c.conn.input_held() == 0 and c.conn not in broker.held_input
    broker.check_memory()
    assert broker.memory_in_use == len(body) and broker.memory_alarm  # now a ready body
    c.send(data[:cut])
    assert c.conn.partial_bodies > 0
    c.conn.connection_lost()
    assert c.conn.partial_bodies == 0 and c.conn not in broker.held_input


def test_small_partial_frames_are_not_tracked():
    broker = Broker()
    c = Client(broker).open()
    c.channel()
    data = encode_content(1, spec.BasicPublish(routing_key="q"), {}, b"x" * 1000, FRAME_MAX)
    c.send(data[:500])
    assert 0 < c.conn.input_held() < 1000 and not broker.held_input
