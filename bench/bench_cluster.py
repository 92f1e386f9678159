"""What a cluster topology's own parts cost and how fast they notice (``ha/balancer.py``,
``ha/links.py``), over real node processes (``mqemu ha up --mode cluster``, fast timings).

- ``failover``: per cycle, a pika client on a node through the balancer, kill -9 of that
  node: kill -> the client's error, kill -> the balancer marks it unhealthy, kill -> a new
  connection through the same port works (on a live node), restart -> healthy again.
- ``partition``: partition one node from the others, refused (the link proxies cut) and
  silent (bytes dropped: the heartbeat timeout finds it): fault -> every affected link down
  as the nodes report it (through their status files), heal -> every link up.
- ``throughput``: ``../shared/bench/loadgen.py`` AMQP throughput (transient, no-ack) on a
  one-node cluster, direct to the node and through the balancer, rounds interleaved.

usage: .venv/bin/python bench/bench_cluster.py [--cycles 5] [--rounds 3] [--n 100000]
Prints the medians (and ranges) per measure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import pika

from mqemu.ha.harness import TopologyThread

LOADGEN = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "shared", "bench", "loadgen.py")


def _until(cluster: TopologyThread, condition, timeout: float = 30) -> float:
    deadline = time.monotonic() + timeout
    while not condition(cluster.status()):
        if time.monotonic() > deadline:
            raise TimeoutError(cluster.status()["nodes"])
        time.sleep(0.005)
    return time.monotonic()


def _node(status, name):
    return next(n for n in status["nodes"] if n["name"] == name)


def failover(cycles: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"client_error": [], "unhealthy": [], "reconnected": [], "healthy_again": []}
    with TopologyThread(mode="cluster", balancer_algorithm="round-robin") as c:
        for i in range(cycles):
            victim = f"node-{i % 3 + 1}"
            _until(c, lambda s: all(n["health"]["amqp"] == "healthy" for n in s["nodes"]))
            conns = [pika.BlockingConnection(pika.ConnectionParameters(*c.balancer_endpoint("amqp")))
                     for _ in range(3)]
            t0 = time.monotonic()
            c.kill(victim)
            broken = None
            while broken is None:  # one of the three is on the victim: the first to fail
                for conn in conns:
                    try:
                        conn.process_data_events(0)
                    except pika.exceptions.AMQPError:
                        broken = conn
                        break
            out["client_error"].append(time.monotonic() - t0)
            out["unhealthy"].append(_until(c, lambda s, victim=victim: _node(s, victim)["health"]["amqp"] == "unhealthy") - t0)
            while True:  # until the balancer stops sending new clients to the dead node
                try:
                    conn = pika.BlockingConnection(pika.ConnectionParameters(*c.balancer_endpoint("amqp")))
                    conn.channel()
                    out["reconnected"].append(time.monotonic() - t0)
                    conn.close()
                    break
                except pika.exceptions.AMQPError:
                    continue
            for conn in conns:
                if conn.is_open:
                    conn.close()
            t1 = time.monotonic()
            c.start_node(victim)
            out["healthy_again"].append(_until(c, lambda s, victim=victim: _node(s, victim)["health"]["amqp"] == "healthy") - t1)
    return out


def _links_down(status, node, others):
    return all(_node(status, node)["links"][o]["out"] == "down" and _node(status, o)["links"][node]["in"] == "down"
               for o in others)


def _links_up(status):
    return all(st["out"] == "up" and st["in"] == "up" for n in status["nodes"] for st in n["links"].values())


def partitions(cycles: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"refused_down": [], "silent_down": [], "heal_up": []}
    with TopologyThread(mode="cluster") as c:
        for i in range(cycles):
            for silent in (False, True):
                _until(c, _links_up)
                node = f"node-{i % 3 + 1}"
                others = [f"node-{j}" for j in (1, 2, 3) if f"node-{j}" != node]
                t0 = time.monotonic()
                c.partition(node, from_=others, silent=silent)
                key = "silent_down" if silent else "refused_down"
                out[key].append(_until(c, lambda s, node=node, others=others: _links_down(s, node, others)) - t0)
                t1 = time.monotonic()
                c.heal()
                out["heal_up"].append(_until(c, _links_up) - t1)
    return out


def throughput(rounds: int, n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"direct": [], "balancer": []}
    with TopologyThread(mode="cluster", nodes=1) as c:
        status = c.status()
        pid = status["nodes"][0]["pid"]
        direct = json.load(open(os.path.join(status["workdir"], "node-1.status.json")))["ports"]["amqp"]
        targets = {"direct": direct, "balancer": status["balancer"]["amqp"]}
        for _ in range(rounds + 1):  # the first round warms up and is dropped
            for name, port in targets.items():
                line = subprocess.run([sys.executable, LOADGEN, "--proto", "amqp", "--port", str(port), "--n", str(n),
                                       "--broker-pid", str(pid)], capture_output=True, text=True, check=True).stdout
                out[name].append(json.loads(line.strip().splitlines()[-1])["msgs_per_s"])
        for name in out:
            out[name] = out[name][1:]
    return out


def report(title: str, results: dict[str, list[float]], unit: str) -> None:
    for name, values in results.items():
        if values:
            print(f"{title} {name}: median {statistics.median(values):.3f} {unit} "
                  f"(min {min(values):.3f}, max {max(values):.3f}, n={len(values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--only", choices=("failover", "partition", "throughput"), default=None)
    args = parser.parse_args()
    if args.only in (None, "failover"):
        report("failover", failover(args.cycles), "s")
    if args.only in (None, "partition"):
        report("partition", partitions(args.cycles), "s")
    if args.only in (None, "throughput"):
        t = throughput(args.rounds, args.n)
        report("throughput", t, "msg/s")
        ratios = [b / d for b, d in zip(t["balancer"], t["direct"])]
        print(f"throughput balancer/direct: median {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
