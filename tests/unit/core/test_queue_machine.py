"""The queue machine (``broker.queue_machine``): commands in, effects out, exactly; and a
recorded command log replayed on a fresh machine reaches the same state, as a follower of a
replicated queue does."""

from __future__ import annotations

import random

import pytest

from mqemu.broker.message import Message
from mqemu.broker.queue_machine import QueueMachine

pytestmark = pytest.mark.timeout(10)


def msg(body: bytes, persistent: bool = True, expiration: str | None = None) -> Message:
    props: dict = {"delivery_mode": 2 if persistent else 1}
    if expiration is not None:
        props["expiration"] = expiration
    return Message("", "q", body, props)


def test_enqueue_stores_persistent_messages_of_a_durable_queue_only():
    m = QueueMachine()
    assert m.enqueue(msg(b"a"), 0.0) == [("store", 1)]
    assert m.enqueue(msg(b"b", persistent=False), 0.0) == []
    assert QueueMachine(durable=False).enqueue(msg(b"c"), 0.0) == []
    assert list(m.ready) == [1, 2] and m.bytes_ready == 2


def test_consumers_get_what_their_prefetch_allows_round_robin_and_settling_frees_credit():
    m = QueueMachine()
    for body in (b"1", b"2", b"3", b"4"):
        m.enqueue(msg(body), 0.0)
    assert m.consumer_added("a", 1, 0.0) == [("deliver", "a", 1, False)]
    assert m.consumer_added("b", 2, 0.0) == [("deliver", "b", 2, False), ("deliver", "b", 3, False)]
    assert m.settle("b", [2, 3], 0.0) == [("unstore", [2, 3]), ("deliver", "b", 4, False)]
    assert m.enqueue(msg(b"5"), 0.0) == [("store", 5), ("deliver", "b", 5, False)]
    assert m.settle("a", [99], 0.0) == []  # not checked out by a: nothing


def test_requeue_puts_messages_back_at_their_place_flagged_redelivered():
    m = QueueMachine()
    for body in (b"1", b"2", b"3"):
        m.enqueue(msg(body), 0.0)
    m.consumer_added("a", 2, 0.0)  # takes 1 and 2
    fx = m.requeue("a", [2, 1], 0.0)
    assert fx == [("deliver", "a", 1, True), ("deliver", "a", 2, True)]
    assert list(m.ready) == [3] and m.messages[1].delivery_count == 1


def test_the_delivery_limit_dead_letters_on_the_return_past_it():
    m = QueueMachine(delivery_limit=1)
    m.enqueue(msg(b"x"), 0.0)
    m.consumer_added("a", 1, 0.0)
    assert m.requeue("a", [1], 0.0) == [("deliver", "a", 1, True)]
    assert m.requeue("a", [1], 0.0) == [("dead_letter", "delivery_limit", [1]), ("unstore", [1])]
    assert m.messages == {} and not m.ready


def test_reject_dead_letters_and_a_removed_consumer_returns_what_it_held():
    m = QueueMachine()
    for body in (b"1", b"2", b"3"):
        m.enqueue(msg(body), 0.0)
    m.consumer_added("a", 2, 0.0)
    assert m.reject("a", [1], 0.0) == [("dead_letter", "rejected", [1]), ("unstore", [1]),
                                       ("deliver", "a", 3, False)]
    m.consumer_added("b", 0, 0.0)
    assert m.consumer_removed("a", 0.0) == [("deliver", "b", 2, True), ("deliver", "b", 3, True)]


def test_ttl_arms_a_timer_for_the_head_and_expires_there():
    m = QueueMachine(message_ttl=1000)
    assert m.enqueue(msg(b"1"), 10.0) == [("store", 1), ("timer", 11.0)]
    assert m.enqueue(msg(b"2", expiration="500"), 10.2) == [("store", 2)]  # behind the head: no timer
    assert m.expire(11.0) == [("dead_letter", "expired", [1, 2]), ("unstore", [1, 2])]
    assert m.enqueue(msg(b"3", persistent=False), 12.0) == [("timer", 13.0)]
    # a consumer arriving after the deadline never gets the expired head
    assert m.consumer_added("a", 0, 13.5) == [("dead_letter", "expired", [3])]


def test_max_length_drops_the_head_or_refuses():
    m = QueueMachine(max_length=2)
    m.enqueue(msg(b"1"), 0.0)
    m.enqueue(msg(b"2"), 0.0)
    assert m.enqueue(msg(b"3"), 0.0) == [("dead_letter", "maxlen", [1]), ("unstore", [1]), ("store", 3)]
    r = QueueMachine(max_length=1, overflow="reject-publish")
    r.enqueue(msg(b"1"), 0.0)
    assert r.enqueue(msg(b"2"), 0.0) == [("refused",)]
    assert list(r.ready) == [1]


def test_a_logged_command_sequence_replayed_on_a_fresh_machine_reaches_the_same_state():
    rnd = random.Random(13)
    log: list = []
    leader = QueueMachine(message_ttl=5000, max_length=50, delivery_limit=3, log=log)
    effects = []
    now = 0.0
    for _ in range(2000):
        now += rnd.random() / 10
        op = rnd.random()
        tags = list(leader.consumers)
        if op < 0.45:
            effects.append(leader.enqueue(msg(str(rnd.random()).encode(), rnd.random() < 0.8), now))
        elif op < 0.5 and len(tags) < 3:
            effects.append(leader.consumer_added(f"c{rnd.randrange(1000)}", rnd.randrange(0, 5), now))
        elif op < 0.53 and tags:
            effects.append(leader.consumer_removed(rnd.choice(tags), now))
        elif op < 0.95 and tags:
            tag = rnd.choice(tags)
            held = list(leader.consumers[tag].checked_out)
            some = rnd.sample(held, rnd.randint(0, len(held)))
            kind = rnd.choice(["settle", "settle", "requeue", "reject"])
            effects.append(getattr(leader, kind)(tag, some, now))
        else:
            effects.append(leader.expire(now))
    assert any(fx for fx in effects)  # the run did something
    follower = QueueMachine(message_ttl=5000, max_length=50, delivery_limit=3)
    replayed = [follower.apply(command) for command in log]
    assert replayed == effects
    assert follower.snapshot() == leader.snapshot()
    assert len(log) == len(effects)


def test_apply_refuses_an_unknown_command():
    with pytest.raises(ValueError):
        QueueMachine().apply(("snapshot",))
