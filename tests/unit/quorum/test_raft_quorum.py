"""Quorum queues over Raft in one trio process: three members (a broker, its vhost and the
queue's ``RaftReplicator`` each) over the loopback transport with file storage (fsync).
Publishes on a follower forwarded to the leader and applied once, delivered by the member
whose consumer it is; the leader killed: the new leader loses nothing confirmed and
redelivers what was unacked, with ``x-delivery-count``; a member that was down catches up
from a snapshot."""

from __future__ import annotations

import random

import pytest
import trio

from mqemu.broker.consumer import Consumer
from mqemu.broker.core import Broker
from mqemu.broker.message import Message
from mqemu.broker.quorum import QuorumQueue
from mqemu.ha.raft.member import Config
from mqemu.ha.raft.replicator import RaftReplicator
from mqemu.ha.raft.runtime import LoopbackNetwork
from mqemu.ha.raft.storage import FileStorage

pytestmark = pytest.mark.timeout(60)

# Elections after 0.4-0.8 s of silence: three members share one process (and, in the whole
# suite, a loaded machine), so a shorter timeout lets a stalled loop start an election the
# test did not ask for.

IDS = [0, 1, 2]
QQ = {"x-queue-type": "quorum"}


class Owner:
    def __init__(self) -> None:
        self.blocked = False
        self.got: list = []
        self.changed = trio.Event()

    def deliver(self, consumer, entry) -> None:
        self.got.append(entry)
        self.changed.set()

    def consumer_cancelled(self, consumer) -> None:
        pass

    async def wait_for(self, n: int) -> None:
        while len(self.got) < n:
            self.changed = trio.Event()
            await self.changed.wait()


class Node:
    def __init__(self, net: LoopbackNetwork, i: int, path, snapshot_every: int = 10000,
                 peers: "dict[int, Node] | None" = None) -> None:
        self.net, self.i, self.path, self.snapshot_every = net, i, path, snapshot_every
        self.peers = peers if peers is not None else {}
        self.peers[i] = self
        self.scope = trio.CancelScope()
        self.alive = False

    def forward(self, leader: int, payload: bytes) -> None:
        """What the cluster's link does: a follower's entries to the leader (cut as the net is)."""
        target = self.peers.get(leader)
        if target is not None and target.alive and (self.i, leader) not in self.net.blocked:
            target.rep.forwarded(payload)

    async def start(self, nursery: trio.Nursery) -> None:
        self.rep = RaftReplicator(self.i, IDS, FileStorage(str(self.path / f"m{self.i}")), self.net.transport(self.i),
                                  tick=0.01, config=Config(election_ticks=40, snapshot_every=self.snapshot_every),
                                  rng=random.Random(self.i), forward=self.forward, owner=f"n{self.i}")
        self.vhost = Broker(replicators=lambda vh, q: self.rep).vhosts["/"]
        self.queue = self.vhost.declare_queue("qq", durable=True, arguments=QQ)
        assert isinstance(self.queue, QuorumQueue)
        self.owner = Owner()
        self.scope = trio.CancelScope()
        self.alive = True

        async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
            with self.scope:
                await self.rep.run(task_status=task_status)

        await nursery.start(run)

    def consume(self, prefetch: int = 0) -> None:
        self.consumer = Consumer(self.queue, "c", self.owner, no_ack=False, prefetch=prefetch)
        self.queue.add_consumer(self.consumer)

    def kill(self) -> None:
        self.scope.cancel()
        self.alive = False
        self.rep.leading = False


def group(net: LoopbackNetwork, path, **kw) -> list[Node]:
    peers: dict[int, Node] = {}
    return [Node(net, i, path, peers=peers, **kw) for i in IDS]


async def leader_of(nodes: list[Node], exclude: int | None = None) -> Node:
    while True:
        for n in nodes:
            if n.i != exclude and n.rep.leading:
                return n
        await trio.sleep(0.01)


async def kept(promise) -> None:
    done = trio.Event()
    promise.then(done.set)
    await done.wait()


def publish(node: Node, body: bytes):
    routed, refused, promise = node.vhost.publish_safe("", "qq", Message("", "qq", body, {"delivery_mode": 2}))
    assert (routed, refused) == (1, False) and promise is not None
    return promise


async def until(predicate) -> None:
    while not predicate():
        await trio.sleep(0.01)


async def test_publishes_on_a_follower_reach_a_consumer_on_another_member_each_applied_once(tmp_path):
    net = LoopbackNetwork(IDS)
    nodes = group(net, tmp_path)
    async with trio.open_nursery() as nursery:
        for n in nodes:
            await n.start(nursery)
        with trio.fail_after(30):
            leader = await leader_of(nodes)
            pub, con = [n for n in nodes if n is not leader]
            con.consume()
            promises = [publish(pub, b"m%d" % k) for k in range(20)]
            assert len({id(p) for p in promises}) == 1  # one scheduler pass: one batch, one entry
            pub.rep._push([e for e, _ in pub.rep._unacked.values()])  # sent twice: applied once
            await kept(promises[-1])
            await con.owner.wait_for(20)
            assert [e.message.body for e in con.owner.got] == [b"m%d" % k for k in range(20)]
            for e in con.owner.got[:5]:
                con.queue.ack(e, con.consumer)  # a follower's acks
            await until(lambda: all(len(n.queue.machine.messages) == 15 for n in nodes))
            assert all(n.queue.machine.snapshot() == con.queue.machine.snapshot() for n in nodes)
            assert leader.owner.got == [] and pub.owner.got == []
            assert pub.rep.seqs == con.rep.seqs == leader.rep.seqs
        nursery.cancel_scope.cancel()


async def test_a_new_leader_loses_nothing_confirmed_and_redelivers_what_was_unacked(tmp_path):
    net = LoopbackNetwork(IDS)
    nodes = group(net, tmp_path)
    async with trio.open_nursery() as nursery:
        for n in nodes:
            await n.start(nursery)
        with trio.fail_after(30):
            first = await leader_of(nodes)
            first.consume()
            pub = next(n for n in nodes if n is not first)
            await kept(publish(pub, b"x"))  # the consumer is registered before what follows
            promises = [publish(first, b"m%d" % k) for k in range(20)]
            await kept(promises[-1])
            await first.owner.wait_for(21)
            for e in first.owner.got[:6]:
                first.queue.ack(e, first.consumer)
            await until(lambda: len(first.queue.machine.messages) == 15)
            await until(lambda: all(n.queue.machine.snapshot() == first.queue.machine.snapshot() for n in nodes))
            first.kill()
            net.isolate(first.i)
            second = await leader_of(nodes, exclude=first.i)
            second.consume()
            assert second.queue.drop_owners({f"n{first.i}"}) == 1  # the cluster does this when a node is lost
            await second.owner.wait_for(15)
            got = second.owner.got
            assert [e.message.body for e in got] == [b"m%d" % k for k in range(5, 20)]
            assert all(e.redelivered and e.message.headers["x-delivery-count"] == 1 for e in got)
            await kept(publish(second, b"after"))
            await second.owner.wait_for(16)
            assert got[-1].message.body == b"after" and not got[-1].redelivered
        nursery.cancel_scope.cancel()


async def test_publishes_during_an_election_are_confirmed_late_by_the_next_leader(tmp_path):
    net = LoopbackNetwork(IDS)
    nodes = group(net, tmp_path)
    async with trio.open_nursery() as nursery:
        for n in nodes:
            await n.start(nursery)
        with trio.fail_after(30):
            first = await leader_of(nodes)
            await kept(publish(first, b"before"))
            others = [n for n in nodes if n is not first]
            first.kill()
            net.isolate(first.i)
            waiting = [publish(n, b"during-%d" % n.i) for n in others]  # no leader yet
            second = await leader_of(nodes, exclude=first.i)
            for w in waiting:
                await kept(w)
            second.consume()
            await second.owner.wait_for(3)
            bodies = [e.message.body for e in second.owner.got]
            assert bodies[0] == b"before" and sorted(bodies[1:]) == sorted(b"during-%d" % n.i for n in others)
        nursery.cancel_scope.cancel()


async def test_a_member_down_while_the_log_is_compacted_catches_up_from_a_snapshot(tmp_path):
    net = LoopbackNetwork(IDS)
    nodes = group(net, tmp_path, snapshot_every=20)
    async with trio.open_nursery() as nursery:
        for n in nodes:
            await n.start(nursery)
        with trio.fail_after(40):
            leader = await leader_of(nodes)
            leader.consume()
            down = next(n for n in nodes if n is not leader)
            down.kill()
            net.isolate(down.i)
            for k in range(60):  # one entry each, past snapshot_every
                await kept(publish(leader, b"x%d" % k))
                if k % 2:
                    await leader.owner.wait_for(k + 1)
                    leader.queue.ack(leader.owner.got[-1], leader.consumer)
            assert leader.rep.runner.member is not None and leader.rep.runner.member.snap_index > 0
            net.heal()
            await down.start(nursery)  # a fresh broker and queue on the same files
            await until(lambda: down.queue.machine.snapshot() == leader.queue.machine.snapshot())
            assert down.rep.runner.member is not None and down.rep.runner.member.snap_index > 0
            assert down.rep.seqs == leader.rep.seqs
            assert len(leader.queue.machine.messages) == 30
        nursery.cancel_scope.cancel()
