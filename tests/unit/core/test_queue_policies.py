"""Queue policies against a real core and a hand-driven clock: TTL, expiry, limits,
dead-lettering, priorities, consumers."""

import pytest

from mqemu.broker.core import Broker
from mqemu.broker.errors import PreconditionFailed
from mqemu.broker.message import Message
from mqemu.broker.queue import Consumer


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Owner:
    """A consumer owner that records deliveries."""

    def __init__(self):
        self.blocked = False
        self.got = []
        self.cancelled = []

    def deliver(self, consumer, entry):
        self.got.append((consumer.tag, entry))

    def consumer_cancelled(self, consumer):
        self.cancelled.append(consumer.tag)

    def bodies(self):
        return [e.message.body for _, e in self.got]


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def broker(clock):
    return Broker(clock=clock)


@pytest.fixture
def vh(broker):
    return broker.vhosts["/"]


def send(vh, key, body, **props):
    return vh.publish("", key, Message("", key, body, props))


def advance(broker, clock, seconds):
    clock.now += seconds
    broker.timers.run_due(clock.now)


def dlx_setup(vh, **args):
    vh.declare_exchange("dlx", "fanout")
    vh.declare_queue("dead")
    vh.bind("dlx", "dead", "")
    return vh.declare_queue("work", arguments={"x-dead-letter-exchange": "dlx", **args})


def test_queue_ttl_expires_head_and_dead_letters_with_x_death(broker, vh, clock):
    dlx_setup(vh, **{"x-message-ttl": 500})
    send(vh, "work", b"m1")
    advance(broker, clock, 0.4)
    assert len(vh.queues["work"].ready) == 1
    advance(broker, clock, 0.2)
    assert len(vh.queues["work"].ready) == 0
    dead = vh.queues["dead"].ready[0].message
    death = dead.headers["x-death"][0]
    assert {k: death[k] for k in ("count", "reason", "queue", "exchange", "routing-keys")} == {
        "count": 1, "reason": "expired", "queue": "work", "exchange": "", "routing-keys": ["work"]}
    assert dead.headers["x-first-death-reason"] == "expired"
    assert dead.headers["x-first-death-queue"] == "work"


def test_per_message_expiration_is_kept_as_original_expiration(broker, vh, clock):
    dlx_setup(vh)
    send(vh, "work", b"m", expiration="100")
    advance(broker, clock, 0.2)
    dead = vh.queues["dead"].ready[0].message
    assert "expiration" not in dead.properties
    assert dead.headers["x-death"][0]["original-expiration"] == "100"


def test_ttl_zero_delivers_to_a_waiting_consumer_else_expires(broker, vh, clock):
    q = vh.declare_queue("z", arguments={"x-message-ttl": 0})
    send(vh, "z", b"lost")
    assert len(q.ready) == 0
    owner = Owner()
    q.add_consumer(Consumer(q, "c", owner, no_ack=True))
    send(vh, "z", b"kept")
    assert owner.bodies() == [b"kept"]


def test_max_length_drop_head_dead_letters_oldest(vh):
    dlx_setup(vh, **{"x-max-length": 2})
    for body in (b"1", b"2", b"3"):
        assert send(vh, "work", body) == (1, False)
    assert [e.message.body for e in vh.queues["work"].ready] == [b"2", b"3"]
    dead = vh.queues["dead"].ready[0].message
    assert dead.body == b"1" and dead.headers["x-death"][0]["reason"] == "maxlen"


def test_max_length_reject_publish_refuses_new(vh):
    vh.declare_queue("r", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    assert send(vh, "r", b"1") == (1, False)
    assert send(vh, "r", b"2") == (1, True)
    assert [e.message.body for e in vh.queues["r"].ready] == [b"1"]


def test_max_length_bytes(vh):
    vh.declare_queue("b", arguments={"x-max-length-bytes": 5})
    send(vh, "b", b"abc")
    send(vh, "b", b"def")
    assert [e.message.body for e in vh.queues["b"].ready] == [b"def"]


def test_reject_without_requeue_dead_letters_and_repeated_death_counts(vh):
    q = dlx_setup(vh)
    owner = Owner()
    c = Consumer(q, "c", owner, no_ack=False)
    q.add_consumer(c)
    send(vh, "work", b"m")
    _, entry = owner.got[0]
    q.reject([entry], c, requeue=False)
    dead = vh.queues["dead"].ready[0].message
    assert dead.headers["x-death"][0]["reason"] == "rejected"
    assert q.unacked == 0 and c.unacked == 0


def test_requeue_puts_back_at_head_redelivered(vh):
    q = vh.declare_queue("q")
    send(vh, "q", b"1")
    send(vh, "q", b"2")
    e1 = q.get(no_ack=False)
    q.reject([e1], None, requeue=True)
    again = q.get(no_ack=True)
    assert again.message.body == b"1" and again.redelivered


def test_priority_queue_serves_highest_first(vh):
    q = vh.declare_queue("p", arguments={"x-max-priority": 5})
    for body, prio in ((b"low", 0), (b"high", 5), (b"mid", 3), (b"over", 9)):
        send(vh, "p", body, priority=prio)
    assert [q.get(True).message.body for _ in range(4)] == [b"high", b"over", b"mid", b"low"]


def test_round_robin_and_prefetch(vh):
    q = vh.declare_queue("q")
    a, b = Owner(), Owner()
    q.add_consumer(Consumer(q, "a", a, no_ack=False, prefetch=1))
    q.add_consumer(Consumer(q, "b", b, no_ack=False, prefetch=1))
    for i in range(4):
        send(vh, "q", b"%d" % i)
    assert (a.bodies(), b.bodies()) == ([b"0"], [b"1"])
    assert len(q.ready) == 2
    ca = q.consumers[0]
    q.ack(a.got[0][1], ca)
    q.dispatch()
    assert a.bodies() == [b"0", b"2"]


def test_consumer_priority_wins_while_it_has_credit(vh):
    q = vh.declare_queue("q")
    low, high = Owner(), Owner()
    q.add_consumer(Consumer(q, "low", low, no_ack=False))
    q.add_consumer(Consumer(q, "high", high, no_ack=False, priority=10, prefetch=2))
    for i in range(3):
        send(vh, "q", b"%d" % i)
    assert high.bodies() == [b"0", b"1"] and low.bodies() == [b"2"]


def test_single_active_consumer(vh):
    q = vh.declare_queue("s", arguments={"x-single-active-consumer": True})
    first, second = Owner(), Owner()
    c1 = Consumer(q, "1", first, no_ack=True)
    q.add_consumer(c1)
    q.add_consumer(Consumer(q, "2", second, no_ack=True))
    send(vh, "s", b"a")
    send(vh, "s", b"b")
    assert first.bodies() == [b"a", b"b"] and second.bodies() == []
    q.remove_consumer(c1)
    send(vh, "s", b"c")
    assert second.bodies() == [b"c"]


def test_quorum_delivery_count_and_limit(vh):
    vh.declare_exchange("dlx", "fanout")
    vh.declare_queue("dead")
    vh.bind("dlx", "dead", "")
    q = vh.declare_queue("qq", durable=True, arguments={
        "x-queue-type": "quorum", "x-delivery-limit": 1, "x-dead-letter-exchange": "dlx"})
    send(vh, "qq", b"m")
    e = q.get(no_ack=False)
    q.reject([e], None, requeue=True)
    e = q.get(no_ack=False)
    assert e.message.headers["x-delivery-count"] == 1
    q.reject([e], None, requeue=True)
    assert len(q.ready) == 0
    assert vh.queues["dead"].ready[0].message.headers["x-death"][0]["reason"] == "delivery_limit"


def test_quorum_queue_must_be_durable(vh):
    with pytest.raises(PreconditionFailed, match="non-durable"):
        vh.declare_queue("qq", arguments={"x-queue-type": "quorum"})


def test_queue_expires_when_unused(broker, vh, clock):
    vh.declare_queue("temp", arguments={"x-expires": 1000})
    advance(broker, clock, 0.5)
    vh.declare_queue("temp", arguments={"x-expires": 1000})  # a redeclare counts as use
    advance(broker, clock, 0.8)
    assert "temp" in vh.queues
    advance(broker, clock, 0.3)
    assert "temp" not in vh.queues


def test_auto_delete_queue_goes_after_last_consumer(vh):
    q = vh.declare_queue("ad", auto_delete=True)
    owner = Owner()
    c = Consumer(q, "c", owner, no_ack=True)
    q.add_consumer(c)
    q.remove_consumer(c)
    assert "ad" not in vh.queues


def test_deleting_a_queue_cancels_its_consumers(vh):
    q = vh.declare_queue("q")
    owner = Owner()
    q.add_consumer(Consumer(q, "c", owner, no_ack=True))
    vh.delete_queue("q")
    assert owner.cancelled == ["c"]


@pytest.mark.parametrize("args, text", [
    ({"x-message-ttl": -1}, "x-message-ttl"),
    ({"x-max-length": "ten"}, "x-max-length"),
    ({"x-overflow": "explode"}, "x-overflow"),
    ({"x-max-priority": 300}, "x-max-priority"),
    ({"x-queue-type": "lazy"}, "x-queue-type"),
])
def test_bad_queue_arguments(vh, args, text):
    with pytest.raises(PreconditionFailed, match=text):
        vh.declare_queue("bad", arguments=args)


def test_blocked_owner_gets_nothing_until_dispatch(vh):
    q = vh.declare_queue("q")
    owner = Owner()
    owner.blocked = True
    q.add_consumer(Consumer(q, "c", owner, no_ack=True))
    send(vh, "q", b"m")
    assert owner.got == []
    owner.blocked = False
    q.dispatch()
    assert owner.bodies() == [b"m"]
