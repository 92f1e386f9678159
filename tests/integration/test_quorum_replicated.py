"""Replicated quorum queues with real clients: a node whose broker runs each quorum queue's
three-member Raft group in process (``InProcessGroups``, file storage with fsync), driven by
pika over a socket: confirms after commit, basic.get with x-delivery-count (0 on a first
get, as RabbitMQ 3.10), requeue, consume with acks, the delivery limit, and the declare
checks. STOMP receipts wait for the same promise."""

from __future__ import annotations

import time

import pika
import pytest
import stomp
from pika.exceptions import ChannelClosedByBroker

from mqemu.broker.quorum import QuorumQueue
from mqemu.ha.raft.member import Config
from mqemu.ha.raft.replicator import InProcessGroups

pytestmark = pytest.mark.timeout(60)

QQ = {"x-queue-type": "quorum"}


@pytest.fixture
def node(mqemu_start, tmp_path):
    running = mqemu_start()
    groups = InProcessGroups(str(tmp_path), config=Config(election_ticks=40, snapshot_every=200))
    running.broker.replicators = groups
    for vh in running.broker.vhosts.values():
        vh.replicators = groups
    return running


@pytest.fixture
def ch(node):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.ports["amqp"]))
    yield conn.channel()
    conn.close()


def get(ch, queue: str, deadline: float = 10.0):
    """basic.get until a message comes (a quorum queue serves once its member leads)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        method, props, body = ch.basic_get(queue)
        if method is not None:
            return method, props, body
        ch.connection.sleep(0.01)
    raise AssertionError(f"nothing from {queue}")


def test_confirms_get_requeue_and_consume_through_the_log(node, ch):
    ch.confirm_delivery()
    ch.queue_declare("qq", durable=True, arguments=QQ)
    assert isinstance(node.broker.vhosts["/"].queues["qq"], QuorumQueue)
    for k in range(50):
        ch.basic_publish("", "qq", b"m%d" % k, pika.BasicProperties(delivery_mode=2), mandatory=True)
    method, props, body = get(ch, "qq")
    assert body == b"m0" and props.headers == {"x-delivery-count": 0} and not method.redelivered
    ch.basic_nack(method.delivery_tag, requeue=True)
    method, props, body = get(ch, "qq")
    assert body == b"m0" and props.headers == {"x-delivery-count": 1} and method.redelivered
    ch.basic_ack(method.delivery_tag)
    got = []

    def on_message(c, m, p, b):
        got.append(b)
        c.basic_ack(m.delivery_tag)

    ch.basic_qos(prefetch_count=10)
    ch.basic_consume("qq", on_message)
    end = time.monotonic() + 20
    while len(got) < 49 and time.monotonic() < end:
        ch.connection.process_data_events(0.05)
    assert got == [b"m%d" % k for k in range(1, 50)]
    q = node.broker.vhosts["/"].queues["qq"]
    end = time.monotonic() + 5
    while q.machine.messages and time.monotonic() < end:
        ch.connection.process_data_events(0.02)
    assert q.machine.messages == {}


def test_the_delivery_limit_dead_letters_and_declares_are_checked(node, ch):
    ch.queue_declare("dead", durable=True, arguments={"x-queue-type": "classic"})
    ch.queue_declare("qq2", durable=True, arguments={**QQ, "x-delivery-limit": 1, "x-dead-letter-exchange": "",
                                                     "x-dead-letter-routing-key": "dead"})
    ch.basic_publish("", "qq2", b"poison")
    for count in (0, 1):
        method, props, _ = get(ch, "qq2")
        assert props.headers["x-delivery-count"] == count
        ch.basic_nack(method.delivery_tag, requeue=True)
    _, props, body = get(ch, "dead")
    assert body == b"poison" and props.headers["x-death"][0]["reason"] == "delivery_limit"
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare("qq3", durable=True, exclusive=True, arguments=QQ)
    assert e.value.reply_text == "PRECONDITION_FAILED - invalid property 'exclusive-owner' for queue 'qq3' in vhost '/'"


def test_a_stomp_receipt_waits_for_the_commit(node, ch):
    ch.queue_declare("qq4", durable=True, arguments=QQ)
    c = stomp.Connection([("127.0.0.1", node.ports["stomp"])])
    listener = stomp.listener.WaitingListener("r1")
    c.set_listener("w", listener)
    c.connect("guest", "guest", wait=True)
    c.send("/amq/queue/qq4", "hello", headers={"persistent": "true", "receipt": "r1"})
    listener.wait_on_receipt()
    c.disconnect()
    _, _, body = get(ch, "qq4")
    assert body == b"hello"
