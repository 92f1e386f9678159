"""The Amazon MQ control plane's own times: how long a broker takes from CreateBroker to
RUNNING and from RebootBroker back to RUNNING, per deployment mode, what an app sees during
the reboot (the checker's unavailability windows for a STOMP workload through the broker's
endpoints), and the API's round trip (DescribeBroker through boto3).

usage: .venv/bin/python bench/bench_aws.py [--cycles 5]

Modes are interleaved per cycle (SINGLE_INSTANCE, then ACTIVE_STANDBY_MULTI_AZ, ActiveMQ
engine and a STOMP app; then CLUSTER_MULTI_AZ, RabbitMQ engine and an AMQP app through the
balancer; timing ``fast``, plain endpoints); medians are printed at the end.

Measured (2026-11-29, 3 cycles, 2 cores shared with other developers' test runs; medians):
SINGLE_INSTANCE created in 4.5 s, rebooted in 5.1 s, the STOMP app unable to publish for
5.4 s (the one node restarts); ACTIVE_STANDBY_MULTI_AZ created in 8.5 s, rebooted in 9.4 s
(the standby restarts first to read the new config, then the active stops), the app unable to
publish for 1.36 s (the failover); CLUSTER_MULTI_AZ created in 7.1 s, rebooted in 17.7 s
(three restarts, each waiting for the balancer to find the node healthy), the AMQP app
through the balancer unable to publish for 0.28 s (its reconnect lands on a node still up);
nothing receipted lost (ActiveMQ modes; the cluster's nodes share no queues yet, so the
consumer there may be on another node and loss is not counted); DescribeBroker through boto3
13-30 ms. The app is drained at the end (``Workload.finish``): before, ``stop()`` ended it at
once and counted what the consumer had not read yet as lost (25 in one single-instance cycle).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from mqemu.ha.aws.testing import AwsControlPlane
from mqemu.ha.checker import check
from mqemu.ha.history import read_history
from mqemu.ha.workload import Workload, WorkloadOptions
from mqemu.ha.workload_clients import Settings

PASSWORD = "mqemu-secret-1"
MODES = ("SINGLE_INSTANCE", "ACTIVE_STANDBY_MULTI_AZ", "CLUSTER_MULTI_AZ")
# mode -> (engine, the workload's protocol); a cluster is RabbitMQ's
ENGINES = {"SINGLE_INSTANCE": ("ACTIVEMQ", "stomp"), "ACTIVE_STANDBY_MULTI_AZ": ("ACTIVEMQ", "stomp"),
           "CLUSTER_MULTI_AZ": ("RABBITMQ", "amqp")}


def cycle(aws: AwsControlPlane, mode: str, n: int, workdir: str) -> dict[str, float]:
    c = aws.client
    engine, protocol = ENGINES[mode]
    began = time.monotonic()
    bid = c.create_broker(BrokerName=f"bench-{mode.lower()}-{n}".replace("_", "-"), DeploymentMode=mode,
                          EngineType=engine, HostInstanceType="mq.m5.large", PubliclyAccessible=False,
                          Users=[{"Username": "app", "Password": PASSWORD}])["BrokerId"]
    described = aws.wait_state(bid, "RUNNING")
    created = time.monotonic() - began
    rtt = []
    for _ in range(20):
        t = time.perf_counter()
        c.describe_broker(BrokerId=bid)
        rtt.append(time.perf_counter() - t)
    history = f"{workdir}/{bid}.jsonl"
    w = Workload(WorkloadOptions(protocol, aws.endpoints(described, protocol), seconds=600, rate=100, drain=2.0,
                                 settings=Settings(user="app", password=PASSWORD)), history).start()
    w.wait_until(lambda w: w.confirmed >= 100, 60)
    began = time.monotonic()
    w.fault("reboot", bid, "invoke")
    c.reboot_broker(BrokerId=bid)
    aws.wait_state(bid, "RUNNING", timeout=120)
    w.fault("reboot", bid, "ok")
    rebooted = time.monotonic() - began
    time.sleep(1.0)
    w.finish()  # publish no more; the consumer drains (stop() would end it at once: the rest counted lost)
    if not w.wait(60):
        w.stop()
    verdict = check(read_history(history))
    windows = [u.seconds for u in verdict.unavailable if u.kind in ("enqueue", "connect") and u.seconds is not None]
    c.delete_broker(BrokerId=bid)
    aws.wait_gone(bid)
    return {"create": created, "reboot": rebooted, "unavailable": max(windows, default=0.0),
            "describe_ms": statistics.median(rtt) * 1000,
            # a cluster's nodes share no queues yet: the consumer may sit on another node than
            # the publisher, so "lost" says nothing there (tests/ha/test_aws_cluster.py reads every node)
            **({"lost": verdict.counts.lost} if mode != "CLUSTER_MULTI_AZ" else {})}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    # plain endpoints: the workload's clients have no TLS
    with tempfile.TemporaryDirectory() as workdir, AwsControlPlane(workdir, endpoints="plain") as aws:
        for n in range(args.cycles):
            for mode in MODES:
                r = cycle(aws, mode, n, workdir)
                results[mode].append(r)
                print(mode, {k: round(v, 3) for k, v in r.items()}, flush=True)
    for mode, rs in results.items():
        med = {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]}
        lost = sum(r["lost"] for r in rs) if "lost" in rs[0] else "not counted: the nodes share no queues yet"
        print(f"median {mode}: {med}  (lost total {lost})")


if __name__ == "__main__":
    main()
