"""``QuorumQueue`` in the core: a vhost given a replicator factory makes one for
``x-queue-type: quorum``; publishes are safe once committed; deliveries, acks, requeues,
basic.get, the delivery limit and dead-lettering go through committed commands; and a
member delivers to its own consumers whichever member leads; the leader removes the
consumers of an owner it cannot reach and their deliveries come back redelivered with their
delivery count. The replicators here are test doubles that commit
when the test says (``ha/raft/replicator.py`` is the real one, tested in ``test_raft_quorum``)."""

from __future__ import annotations

import pytest

from mqemu.broker.consumer import Consumer
from mqemu.broker.core import Broker
from mqemu.broker.errors import PreconditionFailed
from mqemu.broker.message import Message
from mqemu.broker.queue import Queue
from mqemu.broker.quorum import QuorumQueue
from mqemu.broker.quorum_codec import decode, join, split
from mqemu.broker.quorum_replication import Committed, LocalReplicator

pytestmark = pytest.mark.timeout(10)

QQ = {"x-queue-type": "quorum"}


class Owner:
    def __init__(self) -> None:
        self.blocked = False
        self.got: list = []
        self.cancelled: list = []

    def deliver(self, consumer, entry) -> None:
        self.got.append(entry)

    def consumer_cancelled(self, consumer) -> None:
        self.cancelled.append(consumer)

    def bodies(self) -> list[bytes]:
        return [e.message.body for e in self.got]


def persistent(body: bytes) -> Message:
    return Message("", "qq", body, {"delivery_mode": 2})


@pytest.fixture
def node():
    reps: list[LocalReplicator] = []

    def factory(vhost: str, queue: str) -> LocalReplicator:
        reps.append(LocalReplicator())
        return reps[-1]

    broker = Broker(replicators=factory)
    vh = broker.vhosts["/"]

    def flush() -> None:
        for r in reps:
            r.flush()
    return vh, flush


def test_without_a_factory_a_quorum_queue_stays_a_classic_queue():
    vh = Broker().vhosts["/"]
    assert type(vh.declare_queue("qq", durable=True, arguments=QQ)) is Queue


def test_declare_refuses_what_rabbitmq_refuses_for_quorum_queues(node):
    vh, _ = node
    assert isinstance(vh.declare_queue("qq", durable=True, arguments=QQ), QuorumQueue)
    for kw, text in (
        ({"durable": False}, "invalid property 'non-durable' for queue 'x' in vhost '/'"),
        ({"durable": True, "exclusive_owner": object()}, "invalid property 'exclusive-owner' for queue 'x' in vhost '/'"),
        ({"durable": True, "auto_delete": True}, "invalid property 'auto-delete' for queue 'x' in vhost '/'"),
        # the order of RabbitMQ 3.10's checks: auto-delete, exclusive, durable
        ({"durable": False, "exclusive_owner": object()},
         "invalid property 'exclusive-owner' for queue 'x' in vhost '/'"),
        ({"durable": False, "exclusive_owner": object(), "auto_delete": True},
         "invalid property 'auto-delete' for queue 'x' in vhost '/'"),
        ({"durable": True, "arguments": {**QQ, "x-max-priority": 5}},
         "invalid arg 'x-max-priority' for queue 'x' in vhost '/' of queue type rabbit_quorum_queue"),
        ({"durable": True, "arguments": {**QQ, "x-queue-mode": "lazy"}},
         "invalid arg 'x-queue-mode' for queue 'x' in vhost '/' of queue type rabbit_quorum_queue"),
    ):
        kw.setdefault("arguments", QQ)
        with pytest.raises(PreconditionFailed) as e:
            vh.declare_queue("x", **kw)
        assert str(e.value) == "PRECONDITION_FAILED - " + text


def test_a_publish_is_safe_once_committed_and_then_delivered(node):
    vh, flush = node
    q = vh.declare_queue("qq", durable=True, arguments=QQ)
    routed, refused, promise = vh.publish_safe("", "qq", persistent(b"a"))
    assert (routed, refused) == (1, False) and isinstance(promise, Committed)
    kept: list = []
    promise.then(lambda: kept.append(1))
    owner = Owner()
    q.add_consumer(Consumer(q, "ctag", owner, no_ack=False, prefetch=10))
    assert kept == [] and owner.got == [] and len(q.ready) == 0
    flush()
    assert kept == [1] and owner.bodies() == [b"a"] and q.unacked == 1
    q.ack(owner.got[0], q.consumers[0])
    flush()
    assert q.machine.messages == {} and q.unacked == 0
    assert q.statistics().messages_ready == 0


def test_requeue_redelivers_with_a_delivery_count_and_the_limit_dead_letters(node):
    vh, flush = node
    vh.declare_exchange("dlx", "fanout")
    dead = vh.declare_queue("dead", durable=True, arguments={"x-queue-type": "classic"})
    vh.bind("dlx", "dead", "")
    q = vh.declare_queue("qq", durable=True, arguments={**QQ, "x-delivery-limit": 1, "x-dead-letter-exchange": "dlx"})
    owner = Owner()
    c = Consumer(q, "ctag", owner, no_ack=False, prefetch=1)
    q.add_consumer(c)
    vh.publish_safe("", "qq", persistent(b"poison"))
    flush()
    q.reject([owner.got[-1]], c, requeue=True)
    flush()
    second = owner.got[-1]
    assert second.redelivered and second.message.headers["x-delivery-count"] == 1
    assert "x-delivery-count" not in owner.got[0].message.headers  # RabbitMQ 3.10: a first delivery has none
    q.reject([second], c, requeue=True)
    flush()
    assert len(owner.got) == 2 and q.machine.messages == {}
    assert [e.message.body for e in dead.ready] == [b"poison"]
    assert dead.ready[0].message.headers["x-death"][0]["reason"] == "delivery_limit"


def test_basic_get_shows_a_delivery_count_of_zero_and_settles_by_ack(node):
    vh, flush = node
    q = vh.declare_queue("qq", durable=True, arguments=QQ)
    assert q.get(no_ack=False) is None
    vh.publish_safe("", "qq", persistent(b"x"))
    vh.publish_safe("", "qq", persistent(b"y"))
    flush()
    a = q.get(no_ack=False)
    b = q.get(no_ack=True)  # the next one: a's take is not committed yet
    assert (a.message.body, b.message.body) == (b"x", b"y")
    assert a.message.headers["x-delivery-count"] == 0 and not a.redelivered
    flush()
    assert not q.ready and list(q.machine.messages) == [a.seq]
    q.reject([a], None, requeue=True)
    flush()
    again = q.get(no_ack=False)
    assert again.redelivered and again.message.headers["x-delivery-count"] == 1
    q.ack(again, None)
    flush()
    assert q.machine.messages == {} and q.machine.consumers == {}


def test_purge(node):
    vh, flush = node
    q = vh.declare_queue("qq", durable=True, arguments=QQ)
    owner = Owner()
    q.add_consumer(Consumer(q, "ctag", owner, no_ack=False, prefetch=1))
    for body in (b"1", b"2", b"3"):
        vh.publish_safe("", "qq", persistent(body))
    flush()
    assert q.purge() == 2
    flush()
    assert not q.ready and list(q.machine.messages) == [owner.got[0].seq]
    q.ack(owner.got[0], q.consumers[0])
    flush()
    assert not q.ready and q.machine.messages == {}


def test_a_cancelled_consumer_can_still_ack_what_it_holds(node):
    vh, flush = node
    q = vh.declare_queue("qq", durable=True, arguments=QQ)
    owner = Owner()
    c = Consumer(q, "ctag", owner, no_ack=False, prefetch=1)
    q.add_consumer(c)
    vh.publish_safe("", "qq", persistent(b"1"))
    vh.publish_safe("", "qq", persistent(b"2"))
    flush()
    q.remove_consumer(c)
    flush()
    q.ack(owner.got[0], c)
    flush()
    assert owner.bodies() == [b"1"] and list(q.machine.messages) == [2] and q.machine.consumers == {}


class Group:
    """Members that apply every committed batch in one order; the test names the leader.
    A follower's proposals reach the log as the cluster forwards them (its replicator's)."""

    def __init__(self) -> None:
        self.members: list[GroupReplicator] = []
        self.leader: GroupReplicator | None = None

    def elect(self, new: "GroupReplicator") -> None:
        if self.leader is not None:
            self.leader.member.leadership(False)
        self.leader = new
        new.member.leadership(True)

    def flush(self) -> None:
        while any(r.pending for r in self.members):
            for proposer in self.members:
                if not proposer.pending:
                    continue
                batch, proposer.pending = join(proposer.pending), []
                promise, proposer.promise = proposer.promise, None
                for r in self.members:
                    self.hand(r, split(batch))
                if promise is not None:
                    promise.keep()

    def hand(self, r: "GroupReplicator", commands: list[bytes]) -> None:
        """A committed batch reaches member ``r``."""
        for command in commands:
            r.member.apply(command)


class GroupReplicator(LocalReplicator):
    def __init__(self, group: Group, owner: str) -> None:
        super().__init__()
        self.group = group
        self.owner = owner
        group.members.append(self)

    @property  # type: ignore[override]
    def is_leader(self) -> bool:
        return self.group.leader is self

    def start(self, member) -> None:
        self.member = member


def test_every_member_delivers_to_its_own_consumers_and_a_leader_change_keeps_them():
    group = Group()
    nodes = [Broker(replicators=lambda vh, q, o=f"n{i}": GroupReplicator(group, o)).vhosts["/"] for i in range(2)]
    qs = [vh.declare_queue("qq", durable=True, arguments=QQ) for vh in nodes]
    group.elect(group.members[0])
    owners = [Owner(), Owner()]
    for q, owner in zip(qs, owners):
        q.add_consumer(Consumer(q, "c", owner, no_ack=False, prefetch=1))
    for body in (b"1", b"2", b"3"):
        nodes[1].publish_safe("", "qq", persistent(body))  # published on the follower's node
    group.flush()
    assert owners[0].bodies() == [b"1"] and owners[1].bodies() == [b"2"]  # round-robin across nodes
    assert all(tag.startswith(("n0/", "n1/")) for tag in qs[0].machine.consumers)
    assert qs[1].machine.snapshot() == qs[0].machine.snapshot()  # the follower applied the same
    group.elect(group.members[1])  # consumers stay registered across a change of leader
    qs[0].ack(owners[0].got[0], qs[0].consumers[0])  # a follower's ack counts
    group.flush()
    assert owners[0].bodies() == [b"1", b"3"] and not owners[0].got[1].redelivered
    assert qs[0].drop_owners({"n0"}) == 0  # only the leader removes an owner's consumers
    assert qs[1].drop_owners({"n0"}) == 1
    group.flush()
    # n0's consumer lost what it held (3 went back, redelivered, its count raised) and was
    # registered again by its own member (its node is back), which gets 3 once more
    assert owners[0].bodies() == [b"1", b"3", b"3"]
    again = owners[0].got[2]
    assert again.redelivered and again.message.headers["x-delivery-count"] == 1
    qs[1].ack(owners[1].got[0], qs[1].consumers[0])
    qs[0].ack(again, qs[0].consumers[0])
    group.flush()
    assert len(qs[0].machine.messages) == 0 and qs[0].machine.snapshot() == qs[1].machine.snapshot()
    # the snapshot of one member restores another
    qs[0].restore(qs[1].snapshot())
    assert qs[0].machine.snapshot() == qs[1].machine.snapshot()


def test_a_restarted_member_removes_the_consumers_of_its_owner_s_earlier_process():
    group = Group()
    nodes = [Broker(replicators=lambda vh, q, o=f"n{i}": GroupReplicator(group, o)).vhosts["/"] for i in range(2)]
    qs = [vh.declare_queue("qq", durable=True, arguments=QQ) for vh in nodes]
    group.elect(group.members[0])
    owner = Owner()
    qs[1].add_consumer(Consumer(qs[1], "c", owner, no_ack=False, prefetch=1))
    nodes[0].publish_safe("", "qq", persistent(b"1"))
    group.flush()
    assert owner.bodies() == [b"1"]
    # n1's process restarts: a new broker and queue object of owner n1
    group.members.remove(group.members[1])
    restarted = Broker(replicators=lambda vh, q: GroupReplicator(group, "n1")).vhosts["/"]
    fresh = restarted.declare_queue("qq", durable=True, arguments=QQ)
    fresh.restore(qs[0].snapshot())
    assert fresh.drop_stale() == 1 and fresh.drop_stale() == 0
    group.flush()
    assert fresh.machine.consumers == {} and list(fresh.machine.ready) == [1]
    assert fresh.machine.messages[1].redelivered


def test_a_delivery_to_a_consumer_cancelled_meanwhile_goes_back(node):
    vh, flush = node
    q = vh.declare_queue("qq", durable=True, arguments=QQ)
    owner, other = Owner(), Owner()
    c = Consumer(q, "ctag", owner, no_ack=False, prefetch=1)
    q.add_consumer(c)
    flush()
    vh.publish_safe("", "qq", persistent(b"1"))  # proposed before the cancel: delivered to c
    q.remove_consumer(c)
    q.add_consumer(Consumer(q, "other", other, no_ack=False, prefetch=1))
    flush()
    assert owner.got == [] and other.bodies() == [b"1"] and other.got[0].redelivered


def test_overflow_as_rabbitmq_3_10_quorum_queues_do_it(node):
    """Checked on RabbitMQ 3.10: with x-max-length 1, reject-publish takes a second message
    and refuses the third; reject-publish-dlx acks all and drops the head (drop-head)."""
    vh, flush = node
    dead = vh.declare_queue("dead", durable=True, arguments={"x-queue-type": "classic"})
    dl = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead", "x-max-length": 1}
    rp = vh.declare_queue("rp", durable=True, arguments={**QQ, **dl, "x-overflow": "reject-publish"})
    dlx = vh.declare_queue("rpd", durable=True, arguments={**QQ, **dl, "x-overflow": "reject-publish-dlx"})
    refused = []
    for body in (b"1", b"2", b"3"):
        refused.append(vh.publish_safe("", "rp", persistent(body))[1])
        assert vh.publish_safe("", "rpd", persistent(body))[1] is False
        flush()
    assert refused == [False, False, True] and len(rp.ready) == 2
    assert [dlx.machine.messages[i].message.body for i in dlx.ready] == [b"3"]
    assert [e.message.body for e in dead.ready] == [b"1", b"2"]


class CutOffReplicator(GroupReplicator):
    """A member whose node and the leader do not reach each other both ways until the test
    says (the cluster's ``leader_reachable``: both link directions up)."""

    reachable = False

    def leader_reachable(self) -> bool:
        return self.reachable


def test_a_one_way_partition_removes_a_consumer_once_and_it_registers_again_when_reachable():
    """The leader removes the consumers of a node it does not reach both ways at every look
    (every 0.5 s in the cluster); with one direction up, the removal reaches that node, which
    registered its consumer again at once: removed again at the next look, and so on, each
    time returning what it held with its delivery count raised (towards x-delivery-limit)."""
    group = Group()
    reps: list[GroupReplicator] = []

    def factory(o: str):
        reps.append((CutOffReplicator if o == "n1" else GroupReplicator)(group, o))
        return reps[-1]
    nodes = [Broker(replicators=lambda vh, q, o=f"n{i}": factory(o)).vhosts["/"] for i in range(2)]
    qs = [vh.declare_queue("qq", durable=True, arguments=QQ) for vh in nodes]
    group.elect(group.members[0])
    owner = Owner()
    qs[1].add_consumer(Consumer(qs[1], "c", owner, no_ack=False, prefetch=1))
    nodes[0].publish_safe("", "qq", persistent(b"1"))
    group.flush()
    assert owner.bodies() == [b"1"]
    removed = 0
    for _ in range(5):  # the leader's looks while the partition lasts
        removed += qs[0].drop_owners({"n1"})
        qs[1].rejoin()  # the cluster's tidy on n1's side
        group.flush()
    assert removed == 1 and owner.bodies() == [b"1"]
    assert not any(t.startswith("n1/") for t in qs[0].machine.consumers)
    assert qs[0].machine.messages[1].delivery_count == 1  # returned once, not once per look
    reps[1].reachable = True  # healed: both ways again; the leader stops removing
    assert qs[1].rejoin() == 1 and qs[1].rejoin() == 0
    group.flush()
    assert owner.bodies() == [b"1", b"1"] and owner.got[1].message.headers["x-delivery-count"] == 1
    assert qs[0].machine.snapshot() == qs[1].machine.snapshot()


def test_a_consumer_s_acks_in_one_pass_are_one_settle_command():
    log: list[bytes] = []
    rep = LocalReplicator(log=log)
    vh = Broker(replicators=lambda v, n: rep).vhosts["/"]
    q = vh.declare_queue("qq", durable=True, arguments=QQ)
    owner = Owner()
    c = Consumer(q, "ctag", owner, no_ack=False, prefetch=10)
    q.add_consumer(c)
    for body in (b"1", b"2", b"3", b"4"):
        q.publish(persistent(body), 0.0)
    rep.flush()
    log.clear()
    first, second, third, fourth = owner.got
    q.ack(first, c)
    q.ack(second, c)
    q.ack(third, c)
    q.publish(persistent(b"5"), 0.0)  # another command in between: the next ack starts a new settle
    q.ack(fourth, c)
    rep.flush()
    kinds = [decode(cmd) for cmd in split(log[0])]
    assert [k[0] for k in kinds] == ["settle", "enqueue", "settle"]
    assert kinds[0][2] == [first.seq, second.seq, third.seq] and kinds[2][2] == [fourth.seq]
    assert list(q.machine.messages) == [5] and q.unacked == 1 and owner.bodies()[-1] == b"5"
    q.ack(owner.got[-1], c)  # the batch was taken: a new command
    rep.flush()
    assert [decode(cmd)[0] for cmd in split(log[1])] == ["settle"] and q.machine.messages == {}


def test_coalesced_acks_apply_the_same_on_a_member_that_decodes_them():
    group = Group()
    nodes = [Broker(replicators=lambda vh, q, o=f"n{i}": GroupReplicator(group, o)).vhosts["/"] for i in range(2)]
    a, b = (vh.declare_queue("qq", durable=True, arguments=QQ) for vh in nodes)
    group.elect(group.members[0])
    owner = Owner()
    c = Consumer(a, "ctag", owner, no_ack=False, prefetch=2)
    a.add_consumer(c)
    for n in range(6):
        a.publish(persistent(b"%d" % n), 0.0)
    group.flush()
    while owner.got:
        got, owner.got = owner.got, []
        for e in got:
            a.ack(e, c)
        group.flush()
    assert a.machine.snapshot() == b.machine.snapshot() and a.machine.messages == {}
    assert a.counts.delivered == 6


def test_basic_get_on_a_follower_takes_the_head_when_committed_and_settles_there():
    group = Group()
    nodes = [Broker(replicators=lambda vh, q, o=f"n{i}": GroupReplicator(group, o)).vhosts["/"] for i in range(2)]
    leader_q, follower_q = [vh.declare_queue("qq", durable=True, arguments=QQ) for vh in nodes]
    group.elect(group.members[0])
    for body in (b"1", b"2", b"3"):
        nodes[0].publish_safe("", "qq", persistent(body))
    group.flush()
    got: list = []
    follower_q.get_later(False, got.append)
    follower_q.get_later(True, got.append)
    leader_q.get_later(False, got.append)  # the leader answers at once: the head as it knows it
    assert [e.message.body for e in got] == [b"1"]
    assert leader_q.ready_count == 2  # basic.get-ok's count: not the one its take is taking
    group.flush()  # the follower's takes of the head apply after the leader's: 2, then 3
    first, second = got[1], got[2]
    assert (first.message.body, second.message.body) == (b"2", b"3")
    assert first.message.headers["x-delivery-count"] == 0 and not first.redelivered
    assert follower_q.unacked == 1 and leader_q.machine.snapshot() == follower_q.machine.snapshot()
    assert not leader_q.ready and len(follower_q.ready) == 0
    follower_q.get_later(False, got.append)  # nothing ready when it applies
    group.flush()
    assert got[3] is None
    follower_q.reject([first], None, requeue=True)  # returned from the follower's node
    group.flush()
    follower_q.get_later(False, got.append)
    group.flush()
    again = got[4]
    assert again.message.body == b"2" and again.redelivered and again.message.headers["x-delivery-count"] == 1
    follower_q.ack(again, None)
    leader_q.ack(got[0], None)
    group.flush()
    assert leader_q.machine.messages == {} and follower_q.machine.snapshot() == leader_q.machine.snapshot()


class PausableGroup(Group):
    """A group whose members apply in batches, as Raft's runner does (``applied_all`` after
    each), and one of which can be paused: what commits meanwhile reaches it as one batch
    when it resumes."""

    def __init__(self) -> None:
        super().__init__()
        self.paused: dict[GroupReplicator, list[bytes]] = {}

    def hand(self, r: GroupReplicator, commands: list[bytes]) -> None:
        if r in self.paused:
            self.paused[r] += commands
        else:
            super().hand(r, commands)
            r.member.applied_all()

    def resume(self, r: GroupReplicator) -> None:
        self.hand(r, self.paused.pop(r))
        self.flush()


class BatchingReplicator(GroupReplicator):
    def applied_all(self) -> None:
        """Has batches: the group calls its member's ``applied_all`` after each."""


def test_a_member_catching_up_does_not_deliver_what_the_leader_took_back_meanwhile():
    """A node paused while the log handed messages to its consumer, then removed that
    consumer (the leader gave the messages to another, flagged redelivered): on its resume
    the member applies both in one batch and its consumer gets none of them, so no consumer
    holds an unflagged copy of a message another consumer has."""
    group = PausableGroup()
    nodes = [Broker(replicators=lambda vh, q, o=f"n{i}": BatchingReplicator(group, o)).vhosts["/"] for i in range(2)]
    leader_q, paused_q = [vh.declare_queue("qq", durable=True, arguments=QQ) for vh in nodes]
    group.elect(group.members[0])
    here, there = Owner(), Owner()
    leader_q.add_consumer(Consumer(leader_q, "a", here, no_ack=False, prefetch=10))
    paused_q.add_consumer(Consumer(paused_q, "b", there, no_ack=False, prefetch=10))
    group.flush()
    group.paused[group.members[1]] = []
    for body in (b"1", b"2", b"3", b"4"):
        nodes[0].publish_safe("", "qq", persistent(body))
    group.flush()  # the log hands 2 and 4 to the paused node's consumer
    assert here.bodies() == [b"1", b"3"]
    assert leader_q.drop_owners({"n1"}) == 1
    group.flush()
    assert here.bodies() == [b"1", b"3", b"2", b"4"] and all(e.redelivered for e in here.got[2:])
    group.resume(group.members[1])
    assert there.bodies() == []  # before: 2 and 4 again, unflagged
    assert paused_q.machine.snapshot() == leader_q.machine.snapshot()
    assert paused_q.unacked == 0
    assert any(tag.startswith("n1/") for tag in leader_q.machine.consumers)  # it registered again
    first = leader_q.consumers[0]
    for e in here.got:
        leader_q.ack(e, first)
    leader_q.remove_consumer(first)
    nodes[1].publish_safe("", "qq", persistent(b"5"))  # the resumed node's consumer is served
    group.flush()
    assert there.bodies() == [b"5"] and not there.got[0].redelivered
