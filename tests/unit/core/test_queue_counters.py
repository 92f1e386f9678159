"""The queue's counters the web page computes rates from: ``enqueued`` (messages taken) and
``delivered`` (to consumers and basic.get, redeliveries included)."""

from __future__ import annotations

from test_activemq_support import consume, make_broker, publish


def test_enqueued_and_delivered_count_plain_and_selective_dispatch():
    broker, _ = make_broker("rabbitmq")  # no message groups: the plain dispatch path
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    for i in range(4):
        publish(vh, str(i).encode())
    assert (q.counts.enqueued, q.counts.delivered) == (4, 0)
    entry = q.get(no_ack=False)
    assert entry is not None and q.counts.delivered == 1
    q.reject([entry], None, requeue=True)  # back in the queue: not a new enqueue
    _, owner = consume(q, "c", no_ack=True)  # the plain path
    assert len(owner.got) == 4 and (q.counts.enqueued, q.counts.delivered) == (4, 5)
    s = vh.declare_queue("s")
    _, reds = consume(s, "red", "color = 'red'", no_ack=True)  # the selective path
    for color in ("red", "blue", "red"):
        publish(vh, color.encode(), queue="s", color=color)
    assert len(reds.got) == 2 and (s.counts.enqueued, s.counts.delivered) == (3, 2)


def test_a_refused_publish_is_not_counted():
    broker, _ = make_broker("rabbitmq")
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    publish(vh, b"a")
    publish(vh, b"b")  # refused: the queue is full
    assert (len(q.ready), q.counts.enqueued) == (1, 1)
