"""The sans-IO Raft member, scenario by scenario, with a hand-driven network."""

from __future__ import annotations

import random

from mqemu.ha.raft.member import CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE, Config, Member, Recovered
from mqemu.ha.raft.messages import APPEND, APPEND_RESP, SNAPSHOT, Message
from mqemu.ha.raft.storage import MemoryStorage


class Net:
    def __init__(self, n: int = 3, config: Config | None = None, recovered=None) -> None:
        self.cfg = config or Config(election_ticks=10)
        ids = list(range(n))
        self.storage = {i: MemoryStorage() for i in ids}
        self.m = {i: Member(i, ids, random.Random(i), self.cfg, recovered() if recovered else None) for i in ids}
        self.blocked: set[tuple[int, int]] = set()
        self.applied: dict[int, list[bytes]] = {i: [] for i in ids}
        self.reads: dict[int, list] = {i: [] for i in ids}
        self.sent: list[tuple[int, int, Message]] = []

    def isolate(self, i: int) -> None:
        for j in self.m:
            if j != i:
                self.blocked |= {(i, j), (j, i)}

    def flush(self) -> None:
        """Everyone's output, delivered, until the network is quiet."""
        moving = True
        while moving:
            moving = False
            for i, m in self.m.items():
                while m.has_ready():
                    moving = True
                    r = m.ready()
                    self.storage[i].save(r)
                    if r.last_index:
                        m.persisted(r.last_index, r.last_term)
                    self.applied[i].extend(d for d in r.committed if d)
                    self.reads[i].extend(r.reads)
                    for dst, msg in r.messages:
                        self.sent.append((i, dst, msg))
                        if (i, dst) not in self.blocked:
                            self.m[dst].step(msg)

    def tick(self, n: int = 1, only=None) -> None:
        for _ in range(n):
            for i, m in self.m.items():
                if only is None or i in only:
                    m.tick()
            self.flush()

    def leader(self) -> Member:
        leaders = [m for m in self.m.values() if m.role == LEADER]
        assert len(leaders) == 1, [(m.id, m.role, m.term) for m in self.m.values()]
        return leaders[0]

    def elect(self) -> Member:
        for _ in range(100):
            self.tick()
            if any(m.role == LEADER for m in self.m.values()):
                return self.leader()
        raise AssertionError("no leader")


def test_election_replication_and_commit():
    net = Net()
    leader = net.elect()
    assert leader.term == 1 and all(m.term == 1 for m in net.m.values())
    assert leader.propose([b"a", b"b"]) == 2   # 1 is the leader's no-op
    net.flush()
    net.tick()   # the heartbeat carries the commit to the followers
    assert all(net.applied[i] == [b"a", b"b"] for i in net.m)
    assert net.m[(leader.id + 1) % 3].propose([b"x"]) is None


def test_a_member_cut_off_does_not_raise_its_term_nor_depose_the_leader_on_return():
    net = Net()
    leader = net.elect()
    other = next(i for i in net.m if i != leader.id)
    net.isolate(other)
    net.tick(100)
    assert net.m[other].role in (PRE_CANDIDATE, FOLLOWER) and net.m[other].term == 1   # pre-votes only
    net.blocked.clear()
    net.tick(5)
    assert net.leader() is leader and leader.term == 1 and net.m[other].leader == leader.id


def test_without_pre_vote_the_returning_member_disrupts():
    """The counterpart: the same scenario without pre-vote raises the terms (so the test above can fail)."""
    net = Net(config=Config(election_ticks=10, pre_vote=False))
    leader = net.elect()
    other = next(i for i in net.m if i != leader.id)
    net.isolate(other)
    net.tick(100)
    assert net.m[other].role == CANDIDATE and net.m[other].term > 5


def test_a_leader_that_cannot_reach_a_majority_steps_down():
    net = Net()
    leader = net.elect()
    net.isolate(leader.id)
    net.tick(net.cfg.election_ticks * 2 + 1, only={leader.id})
    assert leader.role == FOLLOWER
    assert leader.propose([b"x"]) is None


def test_only_entries_of_the_leaders_term_are_committed_by_counting():
    """Raft §5.4.2: acknowledgements of an older term's entry do not commit it; the new
    leader's own entry does, and the older one with it."""
    def rec():
        return Recovered(term=1, terms=[1, 1], datas=[b"a", b"b"])
    net = Net(recovered=rec)
    m = net.m[0]
    m.term = 1
    m._campaign(False)
    m._become_leader()          # term 2, no-op at 3
    assert m.role == LEADER and m.last_index == 3
    m.ready()
    m.persisted(3, 2)
    for peer in (1, 2):
        m.step(Message(APPEND_RESP, peer, 2, 2))   # they match up to 2 (term 1)
    assert m.commit == 0
    m.step(Message(APPEND_RESP, 1, 2, 3))
    assert m.commit == 3


def test_leadership_transfer():
    net = Net()
    leader = net.elect()
    target = next(i for i in net.m if i != leader.id)
    leader.propose([b"a"])
    assert leader.transfer(target)
    assert leader.propose([b"refused"]) is None
    net.flush()
    assert net.leader().id == target and net.m[target].term == 2
    net.tick(2)
    assert all(net.applied[i] == [b"a"] for i in net.m)


def test_reads_on_the_lease_and_after_a_heartbeat_round():
    net = Net()
    leader = net.elect()
    net.tick(2)
    assert leader.lease_valid()
    leader.read("lease")
    net.flush()
    assert net.reads[leader.id] == [("lease", leader.commit)]
    net.isolate(leader.id)
    net.tick(net.cfg.election_ticks - net.cfg.lease_margin + 1, only={leader.id})
    assert leader.role == LEADER and not leader.lease_valid()
    leader.read("round")
    net.flush()
    assert net.reads[leader.id] == [("lease", leader.commit)]   # waits for a majority
    net.blocked.clear()
    net.tick(1, only=set())
    net.flush()
    leader.tick()
    net.flush()
    assert ("round", leader.commit) in net.reads[leader.id]
    follower = net.m[(leader.id + 1) % 3]
    follower.read("follower")
    net.flush()
    assert net.reads[follower.id] == [("follower", None)]


def test_a_lagging_follower_gets_the_snapshot():
    net = Net()
    leader = net.elect()
    lag = next(i for i in net.m if i != leader.id)
    net.isolate(lag)
    for k in range(20):
        leader.propose([b"%d" % k])
    net.tick(2, only={leader.id})
    net.flush()
    leader.compact(leader.applied, b"state-at-%d" % leader.applied)
    net.flush()
    assert leader.snap_index == 21
    net.blocked.clear()
    net.tick(3)
    assert any(msg.kind == SNAPSHOT and dst == lag for _, dst, msg in net.sent)
    assert net.storage[lag].state.snapshot == b"state-at-21" and net.m[lag].commit >= 21
    leader.propose([b"after"])
    net.tick(2)
    assert net.applied[lag] == [b"after"]   # the rest came in the snapshot


def test_appends_are_pipelined_and_batched():
    net = Net(config=Config(election_ticks=10, max_batch=3, max_inflight=2))
    leader = net.elect()
    net.tick(2)
    follower = (leader.id + 1) % 3
    leader.propose([b"x"] * 10)
    r = leader.ready()
    appends = [m for dst, m in r.messages if dst == follower and m.kind == APPEND]
    assert [len(m.terms) for m in appends] == [3, 3]   # two in flight, three entries each
    assert appends[1].index == appends[0].index + 3
