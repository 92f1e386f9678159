"""Queue dispatch with JMS selectors and ActiveMQ message groups."""

from __future__ import annotations

import pytest

from test_activemq_support import consume, make_broker, publish


@pytest.mark.parametrize("engine", ["rabbitmq", "activemq"])
def test_selector_routes_to_matching_consumer(engine):
    broker, _ = make_broker(engine)
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    _, reds = consume(q, "red", "color = 'red'", no_ack=True)
    _, blues = consume(q, "blue", "color = 'blue'", no_ack=True)
    for i, color in enumerate(["red", "blue", "red", "green", "blue"]):
        publish(vh, f"{color}{i}".encode(), color=color)
    assert reds.bodies() == [b"red0", b"red2"]
    assert blues.bodies() == [b"blue1", b"blue4"]
    assert [e.message.body for e in q.ready] == [b"green3"]  # matches nobody: stays


def test_unmatched_entries_stay_in_order_for_later_consumers():
    broker, _ = make_broker()
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    consume(q, "a", "n > 100", no_ack=True)
    for i in range(5):
        publish(vh, str(i).encode(), n=i)
    assert [e.message.body for e in q.ready] == [b"0", b"1", b"2", b"3", b"4"]
    assert q.bytes_ready == 5
    _, odd = consume(q, "odd", "n % 2 = 1", no_ack=True)
    assert odd.bodies() == [b"1", b"3"]
    _, any_ = consume(q, "any", no_ack=True)
    assert any_.bodies() == [b"0", b"2", b"4"]
    assert not q.ready and q.bytes_ready == 0


def test_later_entries_pass_a_full_consumer_with_a_selector():
    broker, _ = make_broker()
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    a, owner_a = consume(q, "a", "kind = 'a'", prefetch=1)
    _, owner_b = consume(q, "b", "kind = 'b'", prefetch=10)
    for i, kind in enumerate("aabab"):
        publish(vh, f"{kind}{i}".encode(), kind=kind)
    assert owner_a.bodies() == [b"a0"]
    assert owner_b.bodies() == [b"b2", b"b4"]
    assert [e.message.body for e in q.ready] == [b"a1", b"a3"]
    q.ack(owner_a.got[0][1], a)
    q.dispatch()
    assert owner_a.bodies() == [b"a0", b"a1"]


def test_round_robin_among_matching_consumers_and_priority():
    broker, _ = make_broker()
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    _, o1 = consume(q, "c1", "x > 0", no_ack=True)
    _, o2 = consume(q, "c2", "x > 0", no_ack=True)
    for i in range(4):
        publish(vh, str(i).encode(), x=1)
    assert o1.bodies() == [b"0", b"2"] and o2.bodies() == [b"1", b"3"]
    _, hi = consume(q, "hi", "x > 0", no_ack=True, priority=5)
    publish(vh, b"p", x=1)
    assert hi.bodies() == [b"p"]


def test_plain_consumers_keep_the_fast_path_on_rabbitmq():
    broker, _ = make_broker("rabbitmq")
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    c, owner = consume(q, "plain", no_ack=True)
    assert not q._selective
    sel_c, _ = consume(q, "sel", "a = 1", no_ack=True)
    assert q._selective
    q.remove_consumer(sel_c)
    assert not q._selective
    publish(vh, b"x")
    assert owner.bodies() == [b"x"]


def test_selector_sees_redelivery():
    broker, _ = make_broker("rabbitmq")
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    c, owner = consume(q, "first", prefetch=1)
    publish(vh, b"m")
    q.remove_consumer(c)
    q.release_consumer_entries(c, [owner.got[0][1]])
    _, redo = consume(q, "redo", "JMSRedelivered = TRUE", no_ack=True)
    assert redo.bodies() == [b"m"]


def test_expired_entries_are_dropped_during_selective_dispatch():
    broker, clock = make_broker("rabbitmq")
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q", arguments={"x-message-ttl": 1000})
    consume(q, "none", "a = 1", no_ack=True)
    publish(vh, b"old", a=2)
    clock.now += 5
    _, owner = consume(q, "b", "a = 2", no_ack=True)
    assert owner.bodies() == [] and not q.ready


# -- message groups (ActiveMQ) ------------------------------------------------------------
def test_group_sticks_to_first_consumer():
    broker, _ = make_broker()
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    _, o1 = consume(q, "c1", no_ack=True)
    _, o2 = consume(q, "c2", no_ack=True)
    for i in range(6):
        publish(vh, f"A{i}".encode(), JMSXGroupID="A")
        publish(vh, f"B{i}".encode(), JMSXGroupID="B")
    assert o1.bodies() == [f"A{i}".encode() for i in range(6)]
    assert o2.bodies() == [f"B{i}".encode() for i in range(6)]
    publish(vh, b"u1")
    publish(vh, b"u2")
    assert o1.bodies()[-1:] + o2.bodies()[-1:] in ([b"u1", b"u2"], [b"u2", b"u1"])


def test_group_waits_for_its_full_owner_and_others_pass():
    broker, _ = make_broker()
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    c1, o1 = consume(q, "c1", prefetch=1)
    _, o2 = consume(q, "c2", prefetch=10)
    publish(vh, b"A0", JMSXGroupID="A")
    publish(vh, b"A1", JMSXGroupID="A")
    publish(vh, b"x")
    assert o1.bodies() == [b"A0"]
    assert o2.bodies() == [b"x"]
    assert [e.message.body for e in q.ready] == [b"A1"]
    q.ack(o1.got[0][1], c1)
    q.dispatch()
    assert o1.bodies() == [b"A0", b"A1"]


def test_group_reassigned_when_owner_goes_away():
    broker, _ = make_broker()
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    c1, o1 = consume(q, "c1", no_ack=True)
    _, o2 = consume(q, "c2", no_ack=True)
    publish(vh, b"A0", JMSXGroupID="A")
    q.remove_consumer(c1)
    publish(vh, b"A1", JMSXGroupID="A")
    assert o1.bodies() == [b"A0"] and o2.bodies() == [b"A1"]
    assert q._groups["A"].tag == "c2"


def test_group_closed_by_negative_sequence():
    broker, _ = make_broker()
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    _, o1 = consume(q, "c1", no_ack=True)
    _, o2 = consume(q, "c2", no_ack=True)
    publish(vh, b"A0", JMSXGroupID="A", JMSXGroupSeq="1")  # STOMP sends strings
    publish(vh, b"A-end", JMSXGroupID="A", JMSXGroupSeq=-1)
    assert o1.bodies() == [b"A0", b"A-end"]
    assert "A" not in q._groups
    publish(vh, b"x")  # c2's turn in the round robin
    publish(vh, b"A-new", JMSXGroupID="A")
    assert o1.bodies()[-1] == b"A-new" or o2.bodies()[-1] == b"A-new"


def test_groups_ignored_on_rabbitmq():
    broker, _ = make_broker("rabbitmq")
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    _, o1 = consume(q, "c1", no_ack=True)
    _, o2 = consume(q, "c2", no_ack=True)
    for i in range(4):
        publish(vh, str(i).encode(), JMSXGroupID="A")
    assert len(o1.got) == 2 and len(o2.got) == 2


def test_group_owner_selector_still_applies():
    broker, _ = make_broker()
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    _, o1 = consume(q, "c1", "k = 1", no_ack=True)
    _, o2 = consume(q, "c2", no_ack=True)
    publish(vh, b"A0", JMSXGroupID="A", k=1)
    publish(vh, b"A1", JMSXGroupID="A", k=2)  # owner c1 does not select it: it waits
    assert o1.bodies() == [b"A0"] and o2.bodies() == []
    assert [e.message.body for e in q.ready] == [b"A1"]


def test_a_scan_stops_after_a_window_of_entries_nobody_takes():
    """ActiveMQ dispatches from at most maxPageSize (200) paged-in messages: a match behind
    200 entries that match no consumer waits until the head moves; a scan evaluates no more."""
    from mqemu.broker.selective import SCAN_WINDOW

    broker, _ = make_broker()
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    calls = 0

    def counting(c):
        real = c.selector.matches

        def matches(m, e=None):
            nonlocal calls
            calls += 1
            return real(m, e)
        c.selector = type("Counted", (), {"matches": staticmethod(matches)})()
        return c
    hit_c, hits = consume(q, "hit", "kind = 'hit'", no_ack=True)
    counting(hit_c)
    for i in range(SCAN_WINDOW + 50):
        publish(vh, f"m{i}".encode(), kind="miss", n=i)
    publish(vh, b"hit", kind="hit")
    assert hits.bodies() == []  # behind the window
    calls = 0
    consume(q, "again", "kind = 'none'", no_ack=True)  # a new consumer: a full scan
    assert calls == SCAN_WINDOW  # one evaluation per entry in the window, none behind it
    _, low = consume(q, "low", "n < 60", no_ack=True)  # takes 60 head entries: the window moves
    assert low.bodies() == [f"m{i}".encode() for i in range(60)]
    assert hits.bodies() == [b"hit"]
    assert len(q.ready) == SCAN_WINDOW + 50 - 60
