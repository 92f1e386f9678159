"""A seeded nemesis under load: a topology, a workload per protocol through its endpoints for
the whole run, faults drawn from a seed (``ha/nemesis.py``), and the checker's verdict: what
was lost, duplicated, redelivered, and how long each client could not publish or consume.

usage: python bench/bench_nemesis.py [--mode active-standby|cluster] [--minutes 10] [--seed 1]
           [--protocols stomp,amqp,mqtt] [--rate 50] [--kinds kill,pause,...]
           [--queue-type quorum|classic] [--target mqemu|rabbitmq] [--json FILE]

The same seed gives the same faults at the same offsets (``--dry-run`` prints them). A
fault is held 1-4 s and followed by 3-6 s of quiet, so the checker's windows stay apart.
Workloads publish persistent messages with confirms / receipts / QoS 1 and consume with
acknowledgements, reconnecting through the endpoint list (``ha/workload.py``). ``lost``
counts messages the broker acknowledged and no consumer ever received.

In ``--mode cluster`` the AMQP and STOMP workloads declare their queue ``x-queue-type:
quorum`` by default (``--queue-type``; STOMP with the header on its SEND and SUBSCRIBE to
``/queue/NAME``): a member on every node, so a client that reconnects to another node finds
its messages. ``--queue-type classic`` puts the queue on the node that declared it, unavailable
while that node is down. MQTT's session queues stay classic, as on RabbitMQ: the verdict says
so (``mqtt_queue``).

``--target rabbitmq`` (cluster mode) runs the same seed against the reference three-node
RabbitMQ 3.10 cluster (``/work/shared/refbrokers/start.sh rabbitmq-cluster``, running) with
the same workloads and checker (``ha/reference_cluster.py``): a node's kill, stop and pause
are signals to its Erlang VM at the same offsets; partitions and the balancer's pauses are
dropped (no safe way to cut Erlang distribution on a shared loopback; RabbitMQ has no balancer
here: the workloads walk through the three nodes' ports). A killed or stopped node is started
again in the background (``start.sh``, 6 s to ~2.5 min); a step that comes while a node is
not back yet is skipped (``faults_skipped``). The three nodes run again at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mqemu.ha.checker import Verdict  # noqa: E402
from mqemu.ha.harness import Harness, TopologyThread  # noqa: E402
from mqemu.ha.nemesis import Nemesis, schedule  # noqa: E402
from mqemu.ha.reference_cluster import RabbitCluster, reference_steps  # noqa: E402
from mqemu.ha.workload_clients import Settings  # noqa: E402


def run(args: argparse.Namespace) -> dict:
    seconds = args.minutes * 60
    steps = schedule(args.seed, seconds, args.mode, kinds=args.kinds)
    if args.dry_run:
        if args.target == "rabbitmq":
            kept, dropped = reference_steps(steps)
            return {"steps": [asdict(s) for s in kept], "dropped": [asdict(s) for s in dropped]}
        return {"steps": [asdict(s) for s in steps]}
    protocols = args.protocols.split(",")
    if args.target == "rabbitmq":
        return run_reference(args, steps, protocols)
    with tempfile.TemporaryDirectory(prefix="mqemu-nemesis-") as tmp:
        workdir = args.workdir or tmp
        topology = TopologyThread(mode=args.mode, workdir=workdir, protocols=tuple(protocols),
                                  engine="rabbitmq" if args.mode == "cluster" else None).start()
        try:
            harness = Harness(topology, workdir)
            for proto in protocols:
                harness.workload(proto, seconds=seconds, rate=args.rate, drain=15.0,
                                 settings=Settings(queue_type=queue_type(args)))
            began = time.monotonic()
            nemesis = Nemesis(topology, steps).start()
            nemesis.join(seconds + 120)
            verdict = harness.check(timeout=seconds + 180)
            elapsed = time.monotonic() - began
        finally:
            topology.stop()
    return summarise(args, steps, nemesis, verdict, elapsed)


def run_reference(args: argparse.Namespace, steps: list, protocols: list[str]) -> dict:
    """The same schedule's node faults, workloads and checker against the reference cluster."""
    kept, dropped = reference_steps(steps)
    seconds = args.minutes * 60
    cluster = RabbitCluster.from_env()
    if len(cluster.running()) != 3:
        raise SystemExit(f"the reference cluster is not running three nodes: {cluster.running()}")
    settings = Settings(queue_type=queue_type(args))
    queues = [settings.queue, f"mqtt-subscription-{settings.client_id}-consumerqos1"]  # the MQTT session's
    cluster.delete_queues(queues)  # what an earlier run left behind (another queue type, messages)
    with tempfile.TemporaryDirectory(prefix="mqemu-nemesis-ref-") as tmp:
        workdir = args.workdir or tmp
        nemesis = Nemesis(cluster, kept)
        try:
            harness = Harness(cluster, workdir)  # type: ignore[arg-type]  # a TopologyThread's reading and faults
            for proto in protocols:
                harness.workload(proto, seconds=seconds, rate=args.rate, drain=15.0, settings=settings)
            began = time.monotonic()
            nemesis.start().join(seconds + 120)
            verdict = harness.check(timeout=seconds + 180)
            elapsed = time.monotonic() - began
        finally:
            if nemesis.applied:
                nemesis.stop()
            running = cluster.restore()
            cluster.delete_queues(queues)
    result = summarise(args, kept, nemesis, verdict, elapsed)
    skipped = [a for a in nemesis.applied if a.error and a.error.startswith("skipped")]
    result.update({
        "target": "rabbitmq 3.10 (three nodes, no balancer: the clients walk through the nodes' ports)",
        "faults": len(kept) - len(skipped), "faults_skipped": len(skipped),
        "faults_dropped": {k: sum(s.kind == k for s in dropped) for k in sorted({s.kind for s in dropped})},
        "fault_errors": [a for a in nemesis.report() if a["error"] and not a["error"].startswith("skipped")],
        "applied": [{"kind": a.step.kind, "target": a.step.target, "at": a.step.at}
                    for a in nemesis.applied if not a.error],
        "nodes_running_at_end": running,
    })
    return result


def queue_type(args: argparse.Namespace) -> str | None:
    """The AMQP/STOMP queue's type: quorum by default in a cluster, the broker's otherwise."""
    if args.queue_type is not None:
        return str(args.queue_type)
    return "quorum" if args.mode == "cluster" else None


def summarise(args: argparse.Namespace, steps: list, nemesis: Nemesis, verdict: Verdict, elapsed: float) -> dict:
    c = verdict.counts
    gaps = [u.seconds for u in verdict.unavailable if u.seconds is not None]
    back = [f.seconds for f in verdict.faults if f.seconds is not None]
    return {
        "target": args.target, "mode": args.mode, "seed": args.seed, "minutes": args.minutes, "protocols": args.protocols,
        "queue_type": queue_type(args) or "default",
        "mqtt_queue": "classic (session queues, as on RabbitMQ)" if args.mode == "cluster" else "default",
        "rate": args.rate, "elapsed": round(elapsed, 1), "faults": len(steps),
        "fault_errors": [a for a in nemesis.report() if a["error"]],
        "attempted": c.attempted, "acknowledged": c.acknowledged, "delivered": c.delivered,
        "lost": c.lost, "duplicated": c.duplicated, "redelivered": c.redelivered, "unexpected": c.unexpected,
        "valid": verdict.valid,
        "unavailable_windows": len(verdict.unavailable),
        "never_available_again": sum(u.end is None for u in verdict.unavailable),
        "unavailable_median_s": round(statistics.median(gaps), 3) if gaps else None,
        "unavailable_max_s": round(max(gaps), 3) if gaps else None,
        "unavailable_total_s": round(sum(gaps), 3),
        "fault_to_delivery_median_s": round(statistics.median(back), 3) if back else None,
        "per_client": per_client(verdict),
        "lost_ids": c.lost_ids[:20],
    }


def per_client(verdict: Verdict) -> dict:
    """Per client: how many windows it could not work, their total and longest seconds."""
    out: dict = {}
    for u in verdict.unavailable:
        c = out.setdefault(u.process, {"windows": 0, "total_s": 0.0, "max_s": 0.0, "open": 0})
        c["windows"] += 1
        if u.seconds is None:
            c["open"] += 1
        else:
            c["total_s"] = round(c["total_s"] + u.seconds, 3)
            c["max_s"] = round(max(c["max_s"], u.seconds), 3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", default="active-standby", choices=["active-standby", "cluster"])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--protocols", default="stomp,amqp,mqtt")
    p.add_argument("--rate", type=float, default=50.0, help="publishes per second per protocol")
    p.add_argument("--kinds", type=lambda s: s.split(","), default=None, help="only these fault kinds")
    p.add_argument("--queue-type", choices=["quorum", "classic"], default=None,
                   help="the AMQP/STOMP queue's x-queue-type (default: quorum in cluster mode)")
    p.add_argument("--target", choices=["mqemu", "rabbitmq"], default="mqemu",
                   help="rabbitmq: the reference three-node RabbitMQ 3.10 cluster (cluster mode)")
    p.add_argument("--json", help="also write the result here")
    p.add_argument("--workdir", help="keep the nodes' logs and the histories here (default: removed)")
    p.add_argument("--dry-run", action="store_true", help="print the seed's faults and exit")
    args = p.parse_args()
    if args.target == "rabbitmq" and args.mode != "cluster":
        p.error("--target rabbitmq needs --mode cluster")
    for client in ("pika", "stomp.py"):  # their reconnect attempts, one line each
        logging.getLogger(client).setLevel(logging.CRITICAL)
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
