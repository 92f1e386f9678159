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


@pytest.mark.timeout(300)
def test_a_short_seeded_run_on_a_cluster_with_quorum_queues_loses_nothing_acknowledged(mqemu_cluster, tmp_path):
    """As bench/bench_nemesis.py --mode cluster runs it (quorum queues for AMQP and STOMP), in
    seconds: kill, pause and partition nodes while workloads reconnect across the nodes."""
    from mqemu.ha.harness import Harness
    from mqemu.ha.workload_clients import Settings

    c = mqemu_cluster
    c.wait_until(lambda s: all((n.get("metadata") or {}).get("leader") for n in s["nodes"]),
                 what="a metadata leader every node names")
    h = Harness(c, str(tmp_path))
    steps = schedule(1, 18, "cluster", kinds=["kill", "pause", "partition"], hold=(0.8, 1.5), gap=(2.0, 3.0),
                     warmup=1.5)
    # this seed: a node paused, a node cut off, the balancer paused, a node killed
    assert {s.kind for s in steps} == {"kill", "pause", "partition"} and len(steps) >= 4
    for proto in ("amqp", "stomp"):
        h.workload(proto, seconds=18, rate=20, drain=15.0, settings=Settings(queue_type="quorum"))
    nemesis = Nemesis(c, steps).start()
    assert nemesis.join(120)
    verdict = h.check(timeout=150)
    assert [a["error"] for a in nemesis.report()] == [None] * len(steps)
    counts = verdict.counts
    print({"lost": counts.lost, "duplicated": counts.duplicated, "redelivered": counts.redelivered,
           "acknowledged": counts.acknowledged, "steps": [(s.kind, s.target) for s in steps]})
    assert counts.lost == 0, counts.lost_ids
    assert counts.unexpected == 0
    assert counts.acknowledged > 0 and counts.delivered >= counts.acknowledged
    # every fault is a window of the verdict (partitions too, until their heal)
    assert [f.action for f in verdict.faults if f.action not in ("start", "resume", "heal")] == \
        [s.kind for s in steps]
