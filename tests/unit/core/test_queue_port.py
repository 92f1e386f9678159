"""A queue talks to the node only through its ``QueuePort``: a queue built directly on a
stand-in vhost (no VirtualHost, no Broker) publishes, expires, dead-letters, stores and
deletes itself through it."""

from __future__ import annotations

from mqemu.broker.message import Message
from mqemu.broker.profile import RABBITMQ
from mqemu.broker.queue import Consumer, Queue
from mqemu.broker.queue_port import QueuePort
from mqemu.broker.timers import Timers


class Store:
    keeps_messages = True

    def __init__(self):
        self.rows: dict[int, tuple[tuple[str, str], bytes]] = {}

    def add_message(self, key, message):
        handle = len(self.rows) + 1
        self.rows[handle] = (key, message.body)
        return handle

    def remove_message(self, key, handle):
        assert self.rows.pop(handle)[0] == key


class StandIn:
    """Only what ``QueuePort`` reads of a vhost."""

    name = "vh"
    profile = RABBITMQ
    activemq = None
    budget = None

    def __init__(self):
        self.now = 10.0
        self.timers = Timers()
        self.store = Store()
        self.dead: list[tuple[str, bytes, str]] = []
        self.deleted: list[str] = []
        self.expiring: list[str] = []

    def clock(self):
        return self.now

    def dead_letter(self, queue, entries, reason):
        self.dead.extend((queue.name, e.message.body, reason) for e in entries)

    def delete_queue(self, name, internal=False):
        assert internal
        self.deleted.append(name)

    def schedule_queue_expiry(self, queue):
        self.expiring.append(queue.name)


class Owner:
    blocked = False

    def __init__(self):
        self.got = []

    def deliver(self, consumer, entry):
        self.got.append(entry)

    def consumer_cancelled(self, consumer):
        pass


def persistent(body: bytes, **props) -> Message:
    return Message("", "", body, {"delivery_mode": 2, **props})


def test_a_queue_on_a_stand_in_vhost_goes_through_its_port():
    vh = StandIn()
    port = QueuePort(vh, "q", durable=True)
    assert port.key == ("vh", "q") and port.persists
    q = Queue(port, "q", durable=True, arguments={"x-message-ttl": 1000})
    assert not hasattr(q, "vhost")
    q.publish(persistent(b"a"), vh.now)
    q.publish(Message("", "", b"transient"), vh.now)
    handles = [e.store_id for e in q.ready]
    assert handles[0] is not None and handles[1] is None
    assert vh.store.rows == {handles[0]: (("vh", "q"), b"a")}  # stored by value, message untouched
    vh.now += 2
    assert vh.timers.run_due(vh.now) == 1  # the head's expiry, scheduled through the port
    assert vh.dead == [("q", b"a", "expired"), ("q", b"transient", "expired")]
    assert vh.store.rows == {}  # the expired row was settled through the port


def test_ack_settles_through_the_port_and_the_last_consumer_leaving_deletes():
    vh = StandIn()
    q = Queue(QueuePort(vh, "q", durable=True), "q", durable=True, auto_delete=True)
    owner = Owner()
    c = Consumer(q, "c", owner, no_ack=False)
    q.add_consumer(c)
    q.publish(persistent(b"x"), vh.now)
    (entry,) = owner.got
    assert entry.store_id in vh.store.rows
    q.ack(entry, c)
    assert vh.store.rows == {} and entry.store_id is None
    q.remove_consumer(c)
    assert vh.deleted == ["q"]


def test_a_transient_queue_stores_nothing_and_schedules_its_expiry():
    vh = StandIn()
    port = QueuePort(vh, "t")
    assert not port.persists
    q = Queue(port, "t", arguments={"x-expires": 5000})
    q.publish(persistent(b"x"), vh.now)
    assert vh.store.rows == {} and q.ready[0].store_id is None
    c = Consumer(q, "c", Owner(), no_ack=True)
    q.add_consumer(c)
    q.remove_consumer(c)
    assert vh.expiring == ["t"]
