"""The seeded nemesis (``ha/nemesis.py``): its schedule is a pure function of the seed, and a
short run against an active/standby pair, with a workload per protocol, ends with nothing
the broker acknowledged lost (the soak itself is ``bench/bench_nemesis.py``)."""

from __future__ import annotations

import pytest

from mqemu.ha.nemesis import Nemesis, schedule


def test_a_seed_gives_the_same_faults_and_they_never_overlap():
    a = schedule(11, 120, "active-standby")
    assert a == schedule(11, 120, "active-standby")
    assert a != schedule(12, 120, "active-standby")
    for before, after in zip(a, a[1:]):
        assert after.at >= before.at + before.hold + 3.0  # the gap after each fault
    assert a[0].at == 2.0 and a[-1].at + a[-1].hold <= 120
    assert {s.kind for s in schedule(1, 600, "active-standby")} == {"kill", "stop", "pause", "restart", "down"}
    cluster = schedule(5, 600, "cluster")
    assert {s.target for s in cluster if s.target != "balancer"} == {"node-1", "node-2", "node-3"}
    assert {s.kind for s in schedule(2, 120, "cluster", kinds=["kill"])} == {"kill"}
    with pytest.raises(ValueError, match="no nemesis for mode"):
        schedule(1, 60, "single")
    with pytest.raises(ValueError, match="applies to mode"):
        schedule(1, 60, "active-standby", kinds=["partition"])


@pytest.mark.timeout(240)
def test_a_short_seeded_run_loses_nothing_acknowledged(mqemu_harness):
    h = mqemu_harness
    steps = schedule(7, 16, "active-standby", kinds=["kill", "stop", "pause", "down"], hold=(0.5, 1.0),
                     gap=(1.5, 2.5), warmup=1.0)
    assert len(steps) >= 4
    for proto in ("stomp", "amqp", "mqtt"):
        h.workload(proto, seconds=16, rate=20, drain=10.0)
    nemesis = Nemesis(h.topology, steps).start()
    assert nemesis.join(120)
    verdict = h.check(timeout=150)
    assert [a["error"] for a in nemesis.report()] == [None] * len(steps)
    c = verdict.counts
    assert c.lost == 0, c.lost_ids
    assert c.unexpected == 0 and c.duplicated == 0 and verdict.valid
    assert c.acknowledged > 0 and c.delivered >= c.acknowledged
    # every fault the nemesis applied is a window of the verdict, in its order (and so is
    # each start or resume that ended one)
    assert [f.action for f in verdict.faults if f.action not in ("start", "resume")] == [s.kind for s in steps]
