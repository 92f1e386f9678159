"""Classic queues used from every node (issue 13 item 4): confirmed publishes and consumer
throughput through a stand-in against on the queue's home node, over real processes.

A three-node cluster (fast timings); one durable classic queue declared on node-1. Three
cases, interleaved per round (the first round warms up and is dropped):

- ``home``: publisher and consumer on node-1;
- ``publish-remote``: the publisher on node-2 (its publishes go to node-1 in batches, its
  confirms wait for node-1's), the consumer on node-1;
- ``consume-remote``: the publisher on node-1, the consumer on node-2 (served through node-1).

The load is ``../shared/bench/loadgen.py``'s raw AMQP client (persistent 256-byte messages,
confirms, manual acks, prefetch 200), pointed at the pre-declared queue with its producer and
consumer on the nodes above. Prints each case's median msg/s and the ratios to ``home``.
Run: ``.venv/bin/python bench/bench_cluster_classic.py [--rounds 3] [--n 20000]``.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import io
import json
import os
import statistics
import sys
from contextlib import redirect_stdout

import pika

from mqemu.ha.harness import TopologyThread

LOADGEN = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "shared", "bench", "loadgen.py")
QUEUE = "bench.classic"


def _loadgen():
    sys.path.insert(0, os.path.dirname(LOADGEN))
    spec = importlib.util.spec_from_file_location("loadgen", LOADGEN)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _proto(lg, consumer_port: int):
    class ClassicQueue(lg.AmqpProto):
        """The loadgen's AMQP client on a queue declared beforehand, its consumer on another port."""

        def __init__(self, a, run_id):
            super().__init__(a, run_id)
            self.queue = QUEUE

        def setup(self):
            self.ctl = lg.AmqpConn(self.a, "producer")

        def consumer(self, idx):
            a = self.a
            self.a = copy.copy(a)
            self.a.port = consumer_port
            try:
                return super().consumer(idx)
            finally:
                self.a = a

    return ClassicQueue


def _run(lg, producer_port: int, consumer_port: int, n: int) -> float:
    lg.PROTOS["amqp"] = _proto(lg, consumer_port)
    out = io.StringIO()
    with redirect_stdout(out):
        lg.main(["--proto", "amqp", "--port", str(producer_port), "--n", str(n), "--persistent", "--confirm",
                 "--ack", "manual", "--prefetch", "200", "--timeout", "60"])
    res = json.loads(out.getvalue().strip().splitlines()[-1])
    if not res.get("ok"):
        raise SystemExit(f"loadgen failed: {res}")
    return float(res["msgs_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=20000)
    args = parser.parse_args()
    lg = _loadgen()
    with TopologyThread(mode="cluster") as c:
        c.wait_until(lambda s: all(st["out"] == "up" and st["in"] == "up" for nd in s["nodes"]
                                   for st in (nd.get("links") or {}).values())
                     and (s.get("metadata") or {}).get("leader") is not None, what="the cluster up")
        ports = {nd["name"]: nd["ports"]["amqp"] for nd in c.status()["nodes"]}
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", ports["node-1"]))
        conn.channel().queue_declare(QUEUE, durable=True, arguments={"x-queue-type": "classic"})
        conn.close()

        def there(_s):
            conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", ports["node-2"]))
            try:
                conn.channel().queue_declare(QUEUE, durable=True, passive=True)
                return True
            except pika.exceptions.ChannelClosedByBroker:
                return False
            finally:
                if conn.is_open:
                    conn.close()
        c.wait_until(there, what="the queue's stand-in on node-2")
        cases = {"home": (ports["node-1"], ports["node-1"]),
                 "publish-remote": (ports["node-2"], ports["node-1"]),
                 "consume-remote": (ports["node-1"], ports["node-2"])}
        results: dict[str, list[float]] = {name: [] for name in cases}
        for r in range(args.rounds + 1):
            for name, (pp, cp) in cases.items():
                v = _run(lg, pp, cp, args.n)
                if r:
                    results[name].append(v)
                print(f"round {r} {name}: {v:.0f} msg/s", file=sys.stderr)
    base = statistics.median(results["home"])
    for name, values in results.items():
        med = statistics.median(values)
        print(f"{name}: median {med:.0f} msg/s (min {min(values):.0f}, max {max(values):.0f}, n={len(values)}) "
              f"ratio to home {med / base:.2f}")


if __name__ == "__main__":
    main()
