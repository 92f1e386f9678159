"""A publish to a queue with nothing ready and a consumer with credit is delivered at once
(``Queue.publish`` without the trip through the ready deque): the same deliveries, order,
counters and credit as through ``dispatch``."""

from __future__ import annotations

import pytest

from mqemu.broker.message import Message
from mqemu.broker.promise import ON_DISK

from test_activemq_support import Owner, consume, make_broker, publish

pytestmark = pytest.mark.timeout(30)


def queue():
    broker, _ = make_broker("rabbitmq")
    vh = broker.vhosts["/"]
    return vh, vh.declare_queue("q")


def test_delivered_at_once_with_the_counters_and_credit_of_dispatch():
    vh, q = queue()
    c, owner = consume(q, "c", prefetch=2)
    publish(vh, b"a", persistent=False)
    assert owner.bodies() == [b"a"]
    assert (len(q.ready), q.bytes_ready, q.unacked, c.unacked) == (0, 0, 1, 1)
    assert (q.counts.enqueued, q.counts.delivered) == (1, 1)
    publish(vh, b"b", persistent=False)
    publish(vh, b"c", persistent=False)  # no credit left: it waits
    assert owner.bodies() == [b"a", b"b"] and [e.message.body for e in q.ready] == [b"c"]
    assert (q.bytes_ready, q.unacked, c.unacked, q.counts.delivered) == (1, 2, 2, 2)


def test_a_message_never_overtakes_one_ready_before_it():
    vh, q = queue()
    c, owner = consume(q, "c", prefetch=1)
    for body in (b"a", b"b", b"c"):
        publish(vh, body, persistent=False)
    q.ack(owner.got[-1][1], c)
    publish(vh, b"d", persistent=False)  # credit again, but b and c are ready before it
    q.dispatch()
    for _ in range(3):
        q.ack(owner.got[-1][1], c)
        q.dispatch()
    assert owner.bodies() == [b"a", b"b", b"c", b"d"]


def test_a_publish_made_while_a_delivery_is_made_follows_it():
    vh, q = queue()

    class Republisher(Owner):
        def deliver(self, consumer, entry) -> None:
            super().deliver(consumer, entry)
            if entry.message.body == b"first":
                publish(vh, b"second", persistent=False)  # into the queue being delivered from

    _, owner = consume(q, "c", no_ack=True, owner=Republisher())
    publish(vh, b"first", persistent=False)
    assert owner.bodies() == [b"first", b"second"]
    assert (len(q.ready), q.counts.enqueued, q.counts.delivered) == (0, 2, 2)


def test_no_ack_settles_the_stored_copy():
    _, q = queue()
    removed: list[int] = []
    q._persist, q._store_add, q._store_remove = True, lambda message: 7, removed.append
    _, owner = consume(q, "c", no_ack=True)
    assert q.publish(Message("", "q", b"kept", {"delivery_mode": 2}), 0.0) is ON_DISK
    assert owner.bodies() == [b"kept"] and removed == [7] and q.unacked == 0
