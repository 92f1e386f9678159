"""consumer_timeout on the AMQP session, sans-IO with a fake clock: the channel's timer never
closes it before a delivery is the timeout old, closes it within two ticks (a quarter of the
timeout each) after, with RabbitMQ 3.10's 406, and requeues what it held; acks keep it open;
no timer when the timeout is off or nothing needs acking."""

import pytest
from test_amqp091_session import Client

from mqemu.broker.config import BrokerConfig
from mqemu.broker.core import Broker
from mqemu.protocols.amqp091 import spec
from mqemu.protocols.amqp091.codec import encode_content

pytestmark = pytest.mark.timeout(10)

TEXT = ("PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 1000 ms. "
        "This timeout value can be configured, see consumers doc guide to learn more")


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def client(timeout_ms=1000):
    clock = Clock()
    config = BrokerConfig()
    if timeout_ms is not None:
        config.extra["amqp"] = {"consumer_timeout": timeout_ms}
    c = Client(Broker(config, clock=clock)).open()
    c.clock = clock
    c.channel()
    c.method(1, spec.QueueDeclare(queue="q"))
    return c


def publish(c, body=b"m"):
    return c.send(encode_content(1, spec.BasicPublish(exchange="", routing_key="q"), None, body, 131072))


def advance(c, to):
    c.clock.now = c.now = to
    c.broker.timers.run_due(to)
    return c.methods(c.received())


def test_a_delivery_held_past_the_timeout_closes_the_channel_and_is_requeued():
    c = client()
    publish(c)
    c.method(1, spec.BasicConsume(queue="q", consumer_tag="t"))
    for t in (0.25, 0.5, 0.75):
        assert advance(c, t) == []
    assert advance(c, 1.0) == [spec.ChannelClose(reply_code=406, reply_text=TEXT, class_id=0, method_id=0)]
    c.method(1, spec.ChannelCloseOk())
    c.channel(2)
    got = c.methods(c.method(2, spec.BasicGet(queue="q", no_ack=True)))
    assert [m.__class__ for m in got] == [spec.BasicGetOk] and got[0].redelivered  # requeued
    assert advance(c, 5.0) == []  # the timer stopped with the channel
    assert c.broker.timers.next_deadline() is None


def test_a_later_delivery_is_judged_by_its_own_age():
    c = client()
    c.method(1, spec.BasicConsume(queue="q", consumer_tag="t"))
    advance(c, 0.5)
    c.clock.now = c.now = 0.6
    publish(c)  # delivered at 0.6
    for t in (0.75, 1.0, 1.25, 1.5):
        assert advance(c, t) == []
    assert [m.reply_code for m in advance(c, 1.75)] == [406]  # noted at 0.75, so late at 1.75


def test_acks_in_time_keep_the_channel():
    c = client()
    c.method(1, spec.BasicConsume(queue="q", consumer_tag="t"))
    tag = 0
    for step in range(1, 41):  # 10 s, a delivery and its ack every quarter
        publish(c)
        tag += 1
        c.method(1, spec.BasicAck(delivery_tag=tag))
        assert advance(c, step * 0.25) == []


def test_basic_get_without_ack_starts_the_timer():
    c = client()
    publish(c)
    c.method(1, spec.BasicGet(queue="q"))
    assert advance(c, 0.75) == []
    assert [m.reply_code for m in advance(c, 1.0)] == [406]


def test_no_timer_when_off_or_without_acks():
    c = client(None)
    publish(c)
    c.method(1, spec.BasicConsume(queue="q", consumer_tag="t"))
    assert c.broker.timers.next_deadline() is None
    assert advance(c, 3600.0) == []
    c = client(0)  # Amazon MQ's "infinite"
    c.method(1, spec.BasicConsume(queue="q", consumer_tag="t"))
    assert c.broker.timers.next_deadline() is None
    c = client()
    c.method(1, spec.BasicConsume(queue="q", consumer_tag="t", no_ack=True))
    assert c.broker.timers.next_deadline() is None


def test_the_timer_stops_once_the_channel_has_no_consumer_nor_delivery():
    c = client()
    c.method(1, spec.BasicConsume(queue="q", consumer_tag="t"))
    advance(c, 0.25)
    c.method(1, spec.BasicCancel(consumer_tag="t"))
    advance(c, 0.5)
    assert c.broker.timers.next_deadline() is None
