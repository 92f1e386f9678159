"""Durable MQTT state without sockets: acks held until the store's batch is on disk (in
order), session and retained records read back by a new broker, and shared-subscription
queues that outlive their connected members while a persistent member's session exists."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from mqemu.broker.core import Broker
from mqemu.broker.promise import Promise
from mqemu.broker.store.memory import MemoryStore
from mqemu.protocols.mqtt.packets import (
    Disconnect,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscription,
    Unsubscribe,
)
from mqemu.protocols.mqtt.persist import QOS2_IN, SESSIONS, restore
from mqemu.protocols.mqtt.session import State
from mqemu.protocols.mqtt.sessions import registry
from mqemu.protocols.session_base import ClosedReason
from test_session import Client, Clock


@pytest.fixture
def broker() -> Broker:
    return Broker(clock=Clock())


class SlowStore(MemoryStore):
    """A store that keeps data and commits only when the test says so."""

    keeps_messages = True

    def __init__(self) -> None:
        super().__init__()
        self.ticket = 0
        self.durable = 0
        self.waiting: list[tuple[int, Callable[[], None]]] = []

    def put_record(self, namespace: str, key: str, value: bytes) -> None:
        super().put_record(namespace, key, value)
        self.ticket += 1

    def add_message(self, queue, message) -> None:
        self.ticket += 1

    def barrier(self) -> int:
        return self.ticket

    def when_durable(self, ticket: int, callback: Callable[[], None]) -> None:
        if ticket <= self.durable:
            callback()
        else:
            self.waiting.append((ticket, callback))

    def commit(self) -> None:
        self.durable = self.ticket
        waiting, self.waiting = self.waiting, []
        for _, cb in waiting:
            cb()


def test_puback_waits_for_the_disk_and_keeps_order() -> None:
    store = SlowStore()
    broker = Broker(store=store, clock=Clock())
    sub = Client(broker)
    sub.connect("s", clean=False)
    sub.subscribe(Subscription("t", 1))
    store.commit()
    pub = Client(broker)
    pub.connect("p")
    pub.send(Publish("t", b"1", qos=1, packet_id=1), Publish("nowhere", b"2", qos=0),
             Publish("t", b"3", qos=2, packet_id=3))
    assert pub.recv() == []  # nothing acknowledged before the commit
    pub.send(Pubrel(9))  # an ack needing no write still waits behind the held ones
    assert pub.recv() == []
    store.commit()
    assert pub.recv() == [Puback(1), Pubrec(3), Pubcomp(9)]
    assert not store.records.get(QOS2_IN)  # a clean session keeps no records


def test_sessions_and_retained_come_back_in_a_new_broker() -> None:
    store = SlowStore()
    broker = Broker(store=store, clock=Clock())
    c = Client(broker, 5)
    c.connect("keep", clean=False, properties={"session_expiry_interval": 600})
    c.subscribe(Subscription("a/+", 1, no_local=True), subscription_identifier=7)
    c.subscribe(Subscription("$share/g/j/#", 1), pid=2)
    c.send(Publish("a/r", b"retained", qos=1, packet_id=1, retain=True))
    c.send(Publish("q2", b"x", qos=2, packet_id=5))
    c.conn.connection_lost()
    gone = Client(broker)
    gone.connect("clean")
    gone.subscribe(Subscription("a/#", 1))
    assert set(store.records[SESSIONS]) == {"/\x00keep"}

    again = Broker(store=store, clock=Clock())
    again.records = store.records
    restore(again)
    state = registry(again)[("/", "keep")]
    assert state.expiry == 600 and state.awaiting_rel == {5}
    sub = state.subs["a/+"]
    assert (sub.qos, sub.no_local, sub.sub_id) == (1, True, 7)
    assert "mqtt-shared-g-j/#" in again.vhosts["/"].queues
    c = Client(again, 5)
    assert c.connect("keep", clean=False, properties={"session_expiry_interval": 600}).session_present
    c.subscribe(Subscription("a/#", 1), pid=3)
    (ret,) = [p for p in c.recv() if isinstance(p, Publish)]
    assert (ret.topic, ret.payload, ret.retain) == ("a/r", b"retained", True)
    c.send(Puback(ret.packet_id))
    other = Client(again)
    other.connect("o")
    other.send(Publish("a/b", b"routed", qos=0))
    got = c.recv()
    assert [p.payload for p in got if isinstance(p, Publish)] == [b"routed"]
    c.send(Publish("q2", b"x", qos=2, packet_id=5, dup=True))  # awaiting PUBREL: not routed again
    assert c.recv() == [Pubrec(5)]


def test_retained_record_written_and_cleared() -> None:
    store = SlowStore()
    broker = Broker(store=store, clock=Clock())
    c = Client(broker)
    c.connect("r")
    c.send(Publish("x/y", b"keep", qos=1, packet_id=1, retain=True))
    store.commit()
    assert c.recv() == [Puback(1)]
    assert list(store.records["mqtt.retained"]) == ["/\x00x/y"]
    c.send(Publish("x/y", b"", qos=1, packet_id=2, retain=True))
    store.commit()
    assert c.recv() == [Puback(2)]
    assert store.records["mqtt.retained"] == {}
    again = Broker(store=store, clock=Clock())
    again.records = store.records
    restore(again)
    r = Client(again)
    r.connect("n")
    r.subscribe(Subscription("x/#", 1))
    assert [p for p in r.recv() if isinstance(p, Publish)] == []


def test_shared_group_queue_lives_while_a_persistent_member_does(broker: Broker) -> None:
    keep = Client(broker)
    keep.connect("keep", clean=False)
    keep.subscribe(Subscription("$share/g/s/#", 1))
    clean = Client(broker)
    clean.connect("clean")
    clean.subscribe(Subscription("$share/g/s/#", 1))
    keep.conn.connection_lost()  # offline, its session stays
    clean.conn.connection_lost()  # its session ends; the persistent member still holds the group
    queues = broker.vhosts["/"].queues
    assert "mqtt-shared-g-s/#" in queues
    p = Client(broker)
    p.connect("p")
    p.send(Publish("s/1", b"kept for the group", qos=1, packet_id=1))
    keep = Client(broker)
    assert keep.connect("keep", clean=False).session_present
    assert [x.payload for x in keep.extra if isinstance(x, Publish)] == [b"kept for the group"]
    keep.conn.connection_lost()
    Client(broker).connect("keep", clean=True)  # the last member's session ends
    assert "mqtt-shared-g-s/#" not in queues


def test_unsubscribe_of_last_member_deletes_group_queue(broker: Broker) -> None:
    a = Client(broker, 5)
    a.connect("a")
    a.subscribe(Subscription("$share/g/u", 0))
    a.send(Unsubscribe(2, ("$share/g/u",)))
    a.recv()
    assert "mqtt-shared-g-u" not in broker.vhosts["/"].queues


def test_puback_waits_for_the_core_promise_only() -> None:
    """A QoS 1 message that no durable queue keeps (a clean session's queue) is safe at once;
    a retained one waits for its record, and acks keep their order behind it."""
    store = SlowStore()
    broker = Broker(store=store, clock=Clock())
    sub = Client(broker)
    sub.connect("s", clean=True)
    sub.subscribe(Subscription("t", 1))
    pub = Client(broker)
    pub.connect("p")
    pub.send(Publish("t", b"1", qos=1, packet_id=1))
    assert pub.recv() == [Puback(1)]  # no write to wait for
    pub.send(Publish("t", b"2", qos=1, packet_id=2, retain=True), Publish("t", b"3", qos=1, packet_id=3))
    assert pub.recv() == []  # the retained record is not on disk; 3 waits behind 2
    store.commit()
    assert pub.recv() == [Puback(2), Puback(3)]


class Breakable(Promise):
    """A promise that a test keeps or breaks (a cluster queue's home node lost)."""

    can_break = True

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[[], None], Callable[[], None]]] = []

    def then(self, callback: Callable[[], None]) -> None:
        raise AssertionError("a breakable promise must be waited on with then_or")

    def then_or(self, kept: Callable[[], None], broken: Callable[[], None]) -> None:
        self.calls.append((kept, broken))

    def end(self, kept: bool) -> None:
        for k, b in self.calls:
            (k if kept else b)()


@pytest.mark.parametrize("level", [4, 5])
def test_a_broken_publish_promise_ends_the_connection_and_acks_nothing_after_it(level) -> None:
    broker = Broker(clock=Clock())
    vhost = broker.vhosts["/"]
    promises: list[Breakable] = []
    real = vhost.publish_safe

    def publish_safe(exchange, key, msg):
        routed, refused, _ = real(exchange, key, msg)
        promises.append(Breakable())
        return routed, refused, promises[-1]

    vhost.publish_safe = publish_safe  # type: ignore[method-assign]
    pub = Client(broker, level=level)
    pub.connect("p")
    pub.send(Publish("t", b"1", qos=1, packet_id=1))
    pub.send(Publish("t", b"2", qos=1, packet_id=2))
    assert pub.recv() == []
    promises[0].end(kept=True)
    assert pub.recv() == [Puback(1)]
    promises[1].end(kept=False)  # the second publish was not stored
    out = pub.recv()
    assert out == ([Disconnect(0x80, {"reason_string": "a queue's node is unreachable: publish again"})]
                   if level == 5 else [])
    assert pub.conn.state is State.CLOSED and pub.conn.close_reason is ClosedReason.INTERNAL_ERROR


def test_a_kept_breakable_promise_acknowledges_as_any_other() -> None:
    broker = Broker(clock=Clock())
    vhost = broker.vhosts["/"]
    promise = Breakable()
    real = vhost.publish_safe
    vhost.publish_safe = lambda e, k, m: (*real(e, k, m)[:2], promise)  # type: ignore[method-assign]
    pub = Client(broker)
    pub.connect("p")
    pub.send(Publish("t", b"1", qos=1, packet_id=1), Publish("t", b"2", qos=2, packet_id=2))
    assert pub.recv() == []
    promise.end(kept=True)
    assert pub.recv() == [Puback(1), Pubrec(2)]
    assert pub.conn.state is State.CONNECTED


def test_a_closed_connection_leaves_nothing_held_by_a_promise_that_may_wait_long() -> None:
    """A quorum queue's promise waits as long as its group has no leader: the connection's
    close makes it forget the gate's callback (issue 13's gaps)."""
    from mqemu.broker.quorum_replication import Committed

    broker = Broker(clock=Clock())
    vhost = broker.vhosts["/"]
    promise = Committed()
    real = vhost.publish_safe
    vhost.publish_safe = lambda e, k, m: (*real(e, k, m)[:2], promise)  # type: ignore[method-assign]
    pub = Client(broker)
    pub.connect("p")
    pub.send(Publish("t", b"1", qos=1, packet_id=1), Publish("t", b"2", qos=1, packet_id=2))
    assert pub.recv() == [] and len(promise.callbacks or []) == 1  # one callback per promise
    pub.send(Disconnect())
    assert promise.callbacks == []
    promise.keep()  # committed after the heal: nothing for the closed connection
    assert pub.recv() == []
