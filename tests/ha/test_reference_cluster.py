"""The nemesis against the reference RabbitMQ cluster (``ha/reference_cluster.py``): which of
a seed's steps it keeps, and how its node faults go without touching a real node (a stand-in
process for each node's Erlang VM). The 10-minute run itself is ``bench/bench_nemesis.py
--target rabbitmq``; nothing here needs the reference brokers."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from mqemu.ha.nemesis import Nemesis, Step, schedule
from mqemu.ha.reference_cluster import RabbitCluster, Skipped, reference_steps


@pytest.mark.timeout(30)
def test_partitions_and_the_balancer_are_dropped_and_the_rest_keep_their_offsets():
    steps = schedule(1, 600, "cluster")
    kept, dropped = reference_steps(steps)
    assert kept and dropped and sorted(kept + dropped, key=lambda s: s.at) == steps
    assert {s.kind for s in kept} == {"kill", "stop", "pause"}
    assert all(s.target.startswith("node-") for s in kept)
    assert {s.kind for s in dropped} <= {"partition", "partition-one-way", "partition-silent", "pause"}
    assert all(s.target == "balancer" for s in dropped if s.kind == "pause")
    assert reference_steps([Step(2.0, "pause", "balancer", 1.0)]) == ([], [Step(2.0, "pause", "balancer", 1.0)])


@pytest.fixture
def fake_cluster(tmp_path):
    """Three sleeping processes as the nodes' VMs (their pid files where start.sh keeps
    them), and a start script that starts a new one for any node whose process is gone."""
    env = {}
    for i in (1, 2, 3):
        (tmp_path / f"c{i}").mkdir()
        env.update({f"MQEMU_REF_RABBIT_CLUSTER_AMQP{i}": f"amqp://guest:guest@127.0.0.1:{5700 + i}/",
                    f"MQEMU_REF_RABBIT_CLUSTER_STOMP{i}": f"127.0.0.1:{61700 + i}",
                    f"MQEMU_REF_RABBIT_CLUSTER_MQTT{i}": f"127.0.0.1:{1960 + i}",
                    f"MQEMU_REF_RABBIT_CLUSTER_HTTP{i}": "http://guest:guest@127.0.0.1:9/api/"})
    script = tmp_path / "start.sh"
    script.write_text(f"""for i in 1 2 3; do
  kill -0 "$(cat {tmp_path}/c$i/pid)" 2>/dev/null && continue
  nohup {sys.executable} -c 'import time; time.sleep(60)' >/dev/null 2>&1 &
  echo $! > {tmp_path}/c$i/pid
done
""")
    # started by a shell that exits, as the nodes' VMs are: no zombie of ours once killed
    subprocess.run(["bash", str(script)], check=True, timeout=10)
    cluster = RabbitCluster(env, str(tmp_path), start_script=str(script))
    yield cluster
    for i in (1, 2, 3):
        try:
            os.kill(cluster.pid(f"node-{i}"), 9)
        except OSError:
            pass


@pytest.mark.timeout(30)
def test_a_killed_node_starts_again_in_the_background_and_a_step_meanwhile_is_skipped(fake_cluster):
    c = fake_cluster
    assert c.endpoints("amqp") == [("127.0.0.1", 5701), ("127.0.0.1", 5702), ("127.0.0.1", 5703)]
    assert c.endpoints("mqtt")[2] == ("127.0.0.1", 1963)
    before = c.pid("node-2")
    assert c.fault("kill", "node-2") == {"nodes": ["node-2"]}
    assert {n["name"]: n["role"] for n in c.status()["nodes"]}["node-2"] == "down"
    with pytest.raises(Skipped, match="node-2 not back yet"):
        c.fault("pause", "node-1")
    c.fault("resume", "node-1")  # the skipped pause's end: nothing to resume
    c.fault("start", "node-2")
    deadline = time.monotonic() + 20
    while c.status()["nodes"][1]["role"] != "up":
        assert time.monotonic() < deadline, c.status()
        time.sleep(0.05)
    assert c.pid("node-2") != before and c.alive("node-2")
    (kill,) = c.facts()["faults"]
    assert (kill["action"], kill["target"]) == ("kill", "node-2") and kill["end"] > kill["time"]


@pytest.mark.timeout(30)
def test_a_paused_node_is_resumed_and_the_nemesis_reports_skipped_steps(fake_cluster):
    c = fake_cluster
    steps = [Step(0.0, "pause", "node-1", 0.2), Step(0.3, "stop", "node-3", 0.1), Step(0.5, "pause", "node-2", 0.1)]
    n = Nemesis(c, steps).start()
    assert n.join(20)
    report = n.report()
    assert [r["error"] for r in report[:2]] == [None, None]
    # the stop's node is started in the background: the pause after it comes too soon
    assert report[2]["error"].startswith("skipped: node-3")
    with open(f"/proc/{c.pid('node-1')}/stat") as f:
        assert f.read().split()[2] != "T"  # resumed
    deadline = time.monotonic() + 20
    while any(n["role"] != "up" for n in c.status()["nodes"]):
        assert time.monotonic() < deadline, c.status()
        time.sleep(0.05)
    assert [f["action"] for f in c.facts()["faults"]] == ["pause", "stop"]
