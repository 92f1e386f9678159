"""A requeued entry goes back to its place in the queue's order of arrival, as on RabbitMQ,
however the entries come back: one reject at a time, in reverse, in a batch (a channel or
consumer closing, basic.recover), or mixed with entries never delivered."""

from hypothesis import given, settings, strategies as st

from mqemu.broker.core import Broker
from mqemu.broker.message import Message


def _queue(**arguments):
    vh = Broker().vhosts["/"]
    return vh, vh.declare_queue("q", arguments=arguments or None)


def _send(vh, *bodies, **props):
    for b in bodies:
        vh.publish("", "q", Message("", "q", b, props))


def _drain(q):
    out = []
    while (e := q.get(no_ack=True)) is not None:
        out.append(e.message.body)
    return out


def test_rejects_one_by_one_in_delivery_order_redeliver_in_order():
    vh, q = _queue()
    _send(vh, b"1", b"2", b"3", b"4", b"5")
    got = [q.get(no_ack=False) for _ in range(5)]
    for e in got:
        q.reject([e], None, requeue=True)
    assert _drain(q) == [b"1", b"2", b"3", b"4", b"5"]


def test_rejects_in_reverse_order_redeliver_in_order():
    vh, q = _queue()
    _send(vh, b"1", b"2", b"3")
    got = [q.get(no_ack=False) for _ in range(3)]
    for e in reversed(got):
        q.reject([e], None, requeue=True)
    assert _drain(q) == [b"1", b"2", b"3"]


def test_requeued_entries_go_before_the_ones_never_delivered():
    vh, q = _queue()
    _send(vh, b"1", b"2", b"3", b"4")
    e1, e2 = q.get(no_ack=False), q.get(no_ack=False)
    q.reject([e2], None, requeue=True)
    q.release_consumer_entries(None, [e1])  # as when a channel closes with e1 unacked
    assert _drain(q) == [b"1", b"2", b"3", b"4"]


def test_priority_queue_requeues_within_each_level_in_order():
    vh, q = _queue(**{"x-max-priority": 2})
    for body, prio in ((b"a0", 0), (b"b2", 2), (b"c0", 0), (b"d2", 2)):
        _send(vh, body, priority=prio)
    got = [q.get(no_ack=False) for _ in range(4)]  # b2 d2 a0 c0
    for e in got:
        q.reject([e], None, requeue=True)
    assert _drain(q) == [b"b2", b"d2", b"a0", b"c0"]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=12),
    st.lists(st.tuples(st.sampled_from(["get", "reject", "batch"]), st.integers(0, 11)), max_size=40),
)
def test_any_mix_of_gets_and_requeues_keeps_arrival_order(n, steps):
    vh, q = _queue()
    _send(vh, *[b"%02d" % i for i in range(n)])
    held = []
    for op, i in steps:
        if op == "get":
            e = q.get(no_ack=False)
            if e is not None:
                held.append(e)
        elif held and op == "reject":
            q.reject([held.pop(i % len(held))], None, requeue=True)
        elif held:
            k = i % len(held) + 1
            batch, held = held[:k], held[k:]
            q.release_consumer_entries(None, batch[::-1])
    rest = _drain(q)
    assert rest == sorted(rest)  # what is ready is always in arrival order
