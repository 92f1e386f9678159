"""Raft under seeded fault schedules (``mqemu.ha.raft.sim``): safety checked on every step,
then liveness once the faults stop. A longer run: ``bench/bench_raft_sim.py``."""

from __future__ import annotations

import pytest

from mqemu.ha.raft.member import Member
from mqemu.ha.raft.messages import PRE, VOTE_RESP, Message
from mqemu.ha.raft.sim import Sim, Violation

pytestmark = pytest.mark.timeout(120)

SEEDS_3 = range(0, 40)
SEEDS_5 = range(1000, 1015)


def run(seed: int, members: int, ticks: int = 1000) -> Sim:
    sim = Sim(seed, members)
    sim.run(ticks)
    sim.liveness()
    return sim


@pytest.mark.parametrize("members, seeds", [(3, SEEDS_3), (5, SEEDS_5)])
def test_safety_and_liveness_over_seeds(members, seeds):
    totals: dict[str, int] = {}
    for seed in seeds:
        sim = run(seed, members)
        for k, v in sim.stats.items():
            totals[k] = totals.get(k, 0) + v
    # the schedules did exercise what they are meant to
    for what in ("elections", "crashes", "pauses", "partitions", "snapshots_installed", "reads", "applied",
                 "early_sends"):
        assert totals[what] > 0, (what, totals)


def test_a_seed_replays_exactly():
    a, b = Sim(7, 3), Sim(7, 3)
    a.run(600)
    b.run(600)
    assert a.committed == b.committed and a.stats == b.stats and a.commit_max > 50


class DoubleVoter(Member):
    """Broken on purpose: grants every vote, even a second one in the same term."""

    def _on_vote(self, m: Message) -> None:
        self._send(m.src, Message(VOTE_RESP, self.id, m.term, flags=m.flags & PRE))


def test_the_checker_catches_a_member_that_votes_twice():
    for seed in range(50):
        try:
            Sim(seed, 3, member_class=DoubleVoter).run(1000)
        except Violation as e:
            assert "leader" in str(e)
            return
    pytest.fail("50 seeds with double voting and no violation found")


class ForgetfulFollower(Member):
    """Broken on purpose: acknowledges entries without keeping them (a lost fsync)."""

    def _on_append(self, m: Message) -> None:
        super()._on_append(m)
        if self.last_index > self.commit + 1 and self.role != "leader":
            self._truncate(self.commit + 1)


def test_the_checker_catches_a_member_that_loses_acknowledged_entries():
    for seed in range(50):
        try:
            Sim(seed, 3, member_class=ForgetfulFollower).run(1000)
        except Violation:
            return
    pytest.fail("50 seeds with forgetful followers and no violation found")
