"""The link channel ``queues`` (``ha/clustering/remote_codec.py``, ``remote.py``): records as
exact bytes, every malformed payload refused, and three brokers in one trio program over real
``NodeLinks`` (with their metadata group): a classic queue declared on node-1 is a stand-in on
node-2, a publish there is confirmed once node-1 has it, a consumer there is served through
node-1; bytes from a peer that are no records close that link (logged) and the node goes on
serving once the peer reconnects."""

from __future__ import annotations

import logging
import struct

import pytest
import trio

from mqemu.broker.consumer import Consumer
from mqemu.broker.core import Broker
from mqemu.broker.message import Message
from mqemu.broker.message_wire import dump_message, dump_value
from mqemu.ha.clustering.meta import ClusterMeta
from mqemu.ha.clustering.remote import RemoteQueues
from mqemu.ha.clustering.remote_codec import RemoteError, decode, encode
from mqemu.ha.clustering.standin import RemoteBatch, StandIn
from mqemu.ha.links import LINK_TIMINGS, NodeLinks
from mqemu.ha.raft.hub import RaftHub
from mqemu.ha.raft.member import Config

pytestmark = pytest.mark.timeout(60)

NAMES = ["node-1", "node-2", "node-3"]
CLASSIC = {"x-queue-type": "classic"}


def _u32(n):
    return struct.pack(">I", n)


def _s(text):
    return b"s" + _u32(len(text)) + text.encode()


def _i(n):
    return b"i" + struct.pack(">q", n)


def test_records_as_exact_bytes():
    assert encode([["a", [1, 2]]]) == (b"l" + _u32(1) + b"l" + _u32(2) + _s("a") + b"l" + _u32(2) + _i(1) + _i(2))
    assert encode([["x", "t1"], ["P", 7, [0, 2]]]) == (
        b"l" + _u32(2) + b"l" + _u32(2) + _s("x") + _s("t1") + b"l" + _u32(3) + _s("P") + _i(7)
        + b"l" + _u32(2) + _i(0) + _i(2))
    assert encode([["G", 3, None, False, None, 0]]) == (
        b"l" + _u32(1) + b"l" + _u32(6) + _s("G") + _i(3) + b"N" + b"F" + b"N" + _i(0))
    msg = dump_message(Message("", "q", b"body", {"delivery_mode": 2}))
    payload = encode([["p", 1, [["/", "q", [msg]]]], ["D", "t", [5, True, msg]]])
    assert payload == (b"l" + _u32(2)
                       + b"l" + _u32(3) + _s("p") + _i(1) + b"l" + _u32(1) + b"l" + _u32(3) + _s("/") + _s("q")
                       + b"l" + _u32(1) + b"b" + _u32(len(msg)) + msg
                       + b"l" + _u32(3) + _s("D") + _s("t") + b"l" + _u32(3) + _i(5) + b"T" + b"b" + _u32(len(msg)) + msg)
    assert decode(payload) == [["p", 1, [["/", "q", [msg]]]], ["D", "t", [5, True, msg]]]


@pytest.mark.parametrize("value", [
    {"a": 1},                                   # not a list
    [["zz", 1]],                                # unknown kind
    [[]],                                       # no kind
    [[1, 2]],                                   # a kind that is no str
    [["a", [1, "2"]]],                          # an id that is no int
    [["a"]],                                    # too short
    [["x", "t", "extra"]],                      # too long
    [["P", 1, "0"]],                            # wrong type
    [["P", True, []]],                          # a bool is no int
    [["P", 1, [0]]],                            # refused messages not in pairs
    [["P", 1, [0, "1"]]],                       # an index that is no int
    [["p", 1, [["/", "q", ["not bytes"]]]]],    # a message that is no bytes
    [["p", 1, [["/", "q"]]]],                   # a part too short
    [["D", "t", [1, True]]],                    # deliveries not in threes
    [["D", "t", [1, 1, b"m"]]],                 # redelivered no bool
    [["c", "/", "q", "t", 1, False, False, 0, []]],  # arguments no dict
])
def test_malformed_records_are_refused(value):
    with pytest.raises(RemoteError):
        decode(dump_value(value))


def test_bytes_that_are_no_value_are_refused():
    for junk in (b"", b"\xff", b"l\x00\x00\x00\x05", encode([["x", "t"]]) + b"more"):
        with pytest.raises(RemoteError):
            decode(junk)


async def _until(condition, timeout=20.0):
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


class _Owner:
    blocked = False

    def __init__(self):
        self.got = []
        self.cancelled = []

    def deliver(self, consumer, entry):
        self.got.append(entry)

    def consumer_cancelled(self, consumer):
        self.cancelled.append(consumer)


async def test_a_stand_in_serves_through_the_home_and_a_bad_payload_closes_only_that_link(caplog):
    caplog.set_level(logging.INFO)
    async with trio.open_nursery() as nursery:
        links, brokers, remotes, metas = {}, {}, {}, {}
        changes = []
        for x in NAMES:
            links[x] = NodeLinks(x, "c1", {y: ("127.0.0.1", 1) for y in NAMES if y != x}, timing=LINK_TIMINGS["fast"])
            await nursery.start(links[x].run)
        for x in NAMES:
            for y in NAMES:
                if x != y:
                    links[x].peers[y].address = ("127.0.0.1", links[y].port)
        for x in NAMES:
            brokers[x] = Broker()
            hub = RaftHub(links[x], NAMES)
            await nursery.start(hub.run)
            remotes[x] = RemoteQueues(brokers[x], links[x])

            def changed(peer, direction, up, x=x):
                changes.append((x, peer, direction, up))
                remotes[x].link_changed(peer)
                metas[x].refresh_homes()
            links[x].on_change = changed
            await nursery.start(remotes[x].run)
            metas[x] = ClusterMeta(brokers[x], links[x], hub, None, tick=0.01, config=Config(election_ticks=15))
            metas[x].remote = remotes[x]
            await nursery.start(metas[x].run)
        await _until(lambda: all(m.available() for m in metas.values())
                     and all(links[x].up(y) for x in NAMES for y in NAMES if x != y))
        vh = {x: brokers[x].vhosts["/"] for x in NAMES}
        home = vh["node-1"].declare_queue("q", durable=True, arguments=CLASSIC)
        await _until(lambda: all(isinstance(vh[x].queues.get("q"), StandIn) for x in ("node-2", "node-3")))
        s2 = vh["node-2"].queues["q"]
        # a publish on node-2: the promise of its pass's batch, kept once node-1 has it
        routed, refused, safe = vh["node-2"].publish_safe("", "q", Message("", "q", b"one", {}))
        assert (routed, refused) == (1, False) and isinstance(safe, RemoteBatch) and safe.can_break
        kept = []
        safe.then_or(lambda: kept.append("kept"), lambda: kept.append("broken"))
        await _until(lambda: kept)
        assert kept == ["kept"] and len(home.ready) == 1 and len(s2.ready) == 1
        # a consumer on node-3 is served through node-1, its ack settles it there
        owner = _Owner()
        s3 = vh["node-3"].queues["q"]
        c = Consumer(s3, "c1", owner, no_ack=False, prefetch=5)
        s3.add_consumer(c)
        await _until(lambda: owner.got)
        (entry,) = owner.got
        assert entry.message.body == b"one" and not entry.redelivered and home.unacked == 1
        s3.ack(entry, c)
        await _until(lambda: home.unacked == 0 and not home.ready)
        # reject-publish through a stand-in: only the messages the home refused are nacked,
        # not the whole pass's batch they travelled in
        vh["node-1"].declare_queue("rp", durable=True, arguments={**CLASSIC, "x-max-length": 1,
                                                                   "x-overflow": "reject-publish"})
        await _until(lambda: isinstance(vh["node-2"].queues.get("rp"), StandIn))
        answers: list = []
        for body, queue in ((b"r1", "rp"), (b"q1", "q"), (b"r2", "rp"), (b"r3", "rp")):
            p = vh["node-2"].publish_safe("", queue, Message("", queue, body, {}))[2]
            p.then_or(lambda body=body: answers.append((body, "ack")), lambda body=body: answers.append((body, "nack")))
        await _until(lambda: len(answers) == 4)
        assert sorted(answers) == [(b"q1", "ack"), (b"r1", "ack"), (b"r2", "nack"), (b"r3", "nack")]
        assert len(vh["node-1"].queues["rp"].ready) == 1
        await _until(lambda: len(owner.got) == 2)  # q1, to node-3's consumer
        s3.ack(owner.got[1], c)
        # node-2 sends node-1 bytes that are no records: node-1 closes that link and logs it
        changes.clear()
        assert links["node-2"].send("node-1", "queues", b"\x00junk")
        await _until(lambda: ("node-1", "node-2", "in", False) in changes)
        assert "incoming link failed" in caplog.text and "RemoteError" in caplog.text
        # node-2 reconnects; node-1 serves it again
        await _until(lambda: links["node-1"].up("node-2") and links["node-2"].up("node-1") and s2.reachable)
        vh["node-2"].publish_safe("", "q", Message("", "q", b"two", {}))[2].then(lambda: kept.append("two"))
        await _until(lambda: "two" in kept)
        assert [e.message.body for e in owner.got] == [b"one", b"q1", b"two"]
        # exclusive use is checked on the home, across nodes (c on node-3 is not exclusive)
        answers = []
        x2 = Consumer(s2, "x2", _Owner(), no_ack=False, exclusive=True)
        s2.consume_later(x2, answers.append)
        await _until(lambda: answers)
        assert answers == ["queue 'q' in vhost '/' in exclusive use"] and x2 not in s2.consumers
        s3.remove_consumer(c)
        await _until(lambda: not home.consumers)
        # a consumer's arguments travel, and a channel-wide prefetch caps the home's credit
        shared = _Owner()
        shared.global_prefetch = 3
        x2 = Consumer(s2, "x2", shared, no_ack=False, exclusive=True, priority=5,
                      arguments={"x-priority": 5, "x-cancel-on-ha-failover": True})
        s2.consume_later(x2, answers.append)
        await _until(lambda: len(answers) == 2)
        assert answers[1] is None and len(home.consumers) == 1
        (at_home,) = home.consumers
        assert at_home.exclusive and at_home.prefetch == 3 and at_home.priority == 5
        assert at_home.arguments == {"x-priority": 5, "x-cancel-on-ha-failover": True}
        other = _Owner()
        c3 = Consumer(s3, "c3", other, no_ack=False)
        s3.add_consumer(c3)  # one that did not wait for the check (not AMQP's): cancelled
        await _until(lambda: other.cancelled)
        assert c3 not in s3.consumers and len(home.consumers) == 1
        nursery.cancel_scope.cancel()
