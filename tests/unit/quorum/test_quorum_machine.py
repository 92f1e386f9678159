"""What a quorum queue adds to the queue machine: basic.get (``take``), purge, cancel with
deliveries outstanding, no-ack consumers, consumer priorities, single active consumer,
``x-max-length-bytes``, the messages a command dropped kept readable for its effects, and a
logged run replayed through the log's bytes."""

from __future__ import annotations

import random

import pytest

from mqemu.broker.message import Message
from mqemu.broker.queue_machine import QueueMachine
from mqemu.broker.quorum_codec import decode, encode

pytestmark = pytest.mark.timeout(10)


def msg(body: bytes) -> Message:
    return Message("", "q", body, {"delivery_mode": 2})


def filled(n: int, **kw) -> QueueMachine:
    m = QueueMachine(durable=False, **kw)
    for i in range(1, n + 1):
        m.enqueue(msg(str(i).encode()), 0.0)
    return m


def test_take_checks_a_named_ready_message_out_to_a_holder_that_settles_like_a_consumer():
    m = filled(3)
    assert m.take("g", 1, False, 0.0) == [("took", "g", 1, False)]
    assert list(m.ready) == [2, 3] and list(m.consumers["g"].checked_out) == [1]
    assert m.take("g", 1, False, 0.0) == [("took", "g", None, False)]  # no longer ready
    assert m.requeue("g", [1], 0.0) == []
    assert "g" not in m.consumers  # an emptied holder is forgotten
    assert list(m.ready) == [1, 2, 3] and m.messages[1].delivery_count == 1
    assert m.take("g", 1, True, 0.0) == [("took", "g", 1, True)]  # no-ack: settled at once
    assert 1 not in m.messages and m.gone[1].message.body == b"1"
    m.purge(0.0)
    assert m.gone == {} or 1 not in m.gone  # gone lasts one command


def test_purge_drops_the_ready_messages_only():
    m = filled(4)
    m.consumer_added("a", 1, 0.0)
    assert m.purge(0.0) == [("purged", 3)]
    assert not m.ready and list(m.messages) == [1]


def test_a_cancelled_consumer_gets_nothing_more_but_keeps_what_it_holds_until_settled():
    m = filled(3)
    m.consumer_added("a", 1, 0.0)
    assert m.cancel("a", 0.0) == []
    assert m.enqueue(msg(b"4"), 0.0) == []  # no delivery to a cancelled consumer
    assert list(m.consumers["a"].checked_out) == [1]
    m.consumer_added("b", 0, 0.0)
    assert m.settle("a", [1], 0.0) == []
    assert "a" not in m.consumers and 1 not in m.messages
    assert m.cancel("nobody", 0.0) == [] and m.settle("nobody", [2], 0.0) == []


def test_a_no_ack_consumer_settles_on_delivery():
    m = filled(2)
    assert m.consumer_added("a", 0, 0.0, 0, True) == [("deliver", "a", 1, False), ("deliver", "a", 2, False)]
    assert m.messages == {} and sorted(m.gone) == [1, 2]


def test_the_highest_priority_consumer_with_credit_is_served_first_and_equals_round_robin():
    m = filled(6)
    m.consumer_added("low", 0, 0.0)  # takes all six at once: a new machine for the check
    m = QueueMachine(durable=False)
    m.consumer_added("low", 0, 0.0)
    m.consumer_added("hi1", 1, 0.0, 5)
    m.consumer_added("hi2", 1, 0.0, 5)
    fx = [m.enqueue(msg(str(i).encode()), 0.0)[0][1] for i in range(4)]
    assert fx == ["hi1", "hi2", "low", "low"]


def test_a_single_active_consumer_takes_everything_until_it_goes():
    m = filled(3, single_active=True)
    assert m.consumer_added("a", 2, 0.0) == [("deliver", "a", 1, False), ("deliver", "a", 2, False)]
    assert m.consumer_added("b", 0, 0.0) == []
    assert m.consumer_removed("a", 0.0) == [("deliver", "b", 1, True), ("deliver", "b", 2, True),
                                            ("deliver", "b", 3, False)]


def test_max_length_bytes_drops_the_head():
    m = QueueMachine(durable=False, max_length_bytes=5)
    m.enqueue(msg(b"abc"), 0.0)
    assert m.enqueue(msg(b"def"), 0.0) == [("dead_letter", "maxlen", [1])]
    assert m.gone[1].message.body == b"abc"


def test_a_logged_run_replayed_from_its_bytes_reaches_the_same_state():
    rnd = random.Random(21)
    log: list = []
    leader = QueueMachine(message_ttl=3000, max_length=30, delivery_limit=2, log=log)
    effects = []
    now = 0.0
    for i in range(1500):
        now += rnd.random() / 10
        op = rnd.random()
        live = [t for t, c in leader.consumers.items() if c.prefetch >= 0]
        held = [(t, list(c.checked_out)) for t, c in leader.consumers.items() if c.checked_out]
        if op < 0.4:
            effects.append(leader.enqueue(msg(str(rnd.random()).encode()), now))
        elif op < 0.45 and len(live) < 3:
            effects.append(leader.consumer_added(f"c{i}", rnd.randrange(0, 4), now, rnd.randrange(0, 2),
                                                 rnd.random() < 0.1))
        elif op < 0.47 and live:
            effects.append(leader.cancel(rnd.choice(live), now))
        elif op < 0.49 and held:
            effects.append(leader.consumer_removed(rnd.choice(held)[0], now))
        elif op < 0.52 and leader.ready:
            effects.append(leader.take("g", leader.ready[rnd.randrange(len(leader.ready))], rnd.random() < 0.3, now))
        elif op < 0.53:
            effects.append(leader.purge(now))
        elif op < 0.95 and held:
            tag, ids = rnd.choice(held)
            kind = rnd.choice(["settle", "settle", "requeue", "reject"])
            effects.append(getattr(leader, kind)(tag, rnd.sample(ids, rnd.randint(0, len(ids))), now))
        else:
            effects.append(leader.expire(now))
    kinds = {fx[0] for batch in effects for fx in batch}
    assert {"deliver", "took", "purged", "dead_letter"} <= kinds
    follower = QueueMachine(message_ttl=3000, max_length=30, delivery_limit=2)
    replayed = [follower.apply(decode(encode(command))) for command in log]
    assert replayed == effects
    assert follower.snapshot() == leader.snapshot()
