"""The metadata group over real node processes (``mqemu ha up --mode cluster``, fast timings).

- ``spread``: a queue declared with pika on node-1 -> the same name found by a passive
  declare with pika on node-2 (polled without pause): the time a definition takes to reach
  another node (proposal to the leader, commit, apply there).
- ``declare``: queue.declare + queue.delete round trips on node-1 with and without the
  metadata group (a one-node ``single`` topology for the latter), interleaved A/B/A: what replication
  adds to a client's declare.
  With ``perf stat``: CPU time of the node processes per declare+delete (all three cluster
  nodes together, and the single node).
- ``leader``: kill -9 of the metadata leader's node -> the next declare on a surviving node
  that is applied on the other survivor.

usage: .venv/bin/python bench/bench_cluster_meta.py [--cycles 20]
Prints medians and ranges.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import statistics
import tempfile
import time

import pika

from mqemu.ha.harness import TopologyThread


def _conn(port: int) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, connection_attempts=3,
                                                             socket_timeout=5))


def _exists(port: int, name: str) -> bool:
    conn = _conn(port)
    try:
        conn.channel().queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if conn.is_open:
            conn.close()


def _wait_exists(ch_conn: pika.BlockingConnection, name: str, timeout: float = 10) -> float:
    deadline = time.monotonic() + timeout
    ch = ch_conn.channel()
    while True:
        try:
            ch.queue_declare(name, passive=True)
            return time.monotonic()
        except pika.exceptions.ChannelClosedByBroker:
            if time.monotonic() > deadline:
                raise TimeoutError(name) from None
            ch = ch_conn.channel()


def _node_port(c: TopologyThread, name: str) -> int:
    (n,) = [n for n in c.status()["nodes"] if n["name"] == name]
    return n["ports"]["amqp"]


def _declares(port: int, n: int) -> float:
    conn = _conn(port)
    ch = conn.channel()
    start = time.perf_counter()
    for i in range(n):
        ch.queue_declare(f"bench-{i}", durable=True, arguments={"x-queue-type": "classic"})
        ch.queue_delete(f"bench-{i}")
    took = time.perf_counter() - start
    conn.close()
    return took / n


def _cpu(pids: list[int], port: int, n: int) -> float:
    """CPU seconds the node processes ``pids`` spend per declare+delete (perf stat's task-clock;
    instruction counters are not available on this virtual machine)."""
    perf = subprocess.Popen(["perf", "stat", "-x", ",", "-e", "task-clock", "-p", ",".join(map(str, pids))],
                            stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    _declares(port, n)
    perf.send_signal(signal.SIGINT)
    _, err = perf.communicate()
    msecs = [float(line.split(",")[0]) for line in err.splitlines() if line.split(",")[0].replace(".", "").isdigit()]
    return sum(msecs) / 1000 / n


def _summary(name: str, values: list[float], unit: str = "ms", scale: float = 1000) -> None:
    v = sorted(x * scale for x in values)
    print(f"{name}: median {statistics.median(v):.2f} {unit} (min {v[0]:.2f}, max {v[-1]:.2f}, n={len(v)})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--declares", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        c = TopologyThread(mode="cluster", workdir=work).start()
        try:
            c.wait_until(lambda s: (s.get("metadata") or {}).get("leader") is not None, what="a leader")
            p1, p2 = _node_port(c, "node-1"), _node_port(c, "node-2")
            writer, reader = _conn(p1), _conn(p2)
            wch = writer.channel()
            spread = []
            for i in range(args.cycles):
                name = f"spread-{i}"
                t0 = time.monotonic()
                wch.queue_declare(name, durable=True, arguments={"x-queue-type": "classic"})
                spread.append(_wait_exists(reader, name) - t0)
            _summary("spread (declare on node-1 -> found on node-2, incl. the -ok)", spread)
            writer.close()
            reader.close()
            os.makedirs(f"{work}/single")
            single = TopologyThread(mode="single", workdir=f"{work}/single").start()
            try:
                sp = single.status()["nodes"][0]["ports"]["amqp"]
                rounds: dict[str, list[float]] = {"cluster": [], "single": []}
                for _ in range(3):
                    rounds["cluster"].append(_declares(p1, args.declares))
                    rounds["single"].append(_declares(sp, args.declares))
                    rounds["cluster"].append(_declares(p1, args.declares))
                cpids = [n["pid"] for n in c.status()["nodes"]]
                spid = [single.status()["nodes"][0]["pid"]]
                work_c, work_s = [], []
                for _ in range(3):
                    work_c.append(_cpu(cpids, p1, args.declares))
                    work_s.append(_cpu(spid, sp, args.declares))
            finally:
                single.stop()
            _summary("CPU per declare+delete, the three cluster nodes together", work_c)
            _summary("CPU per declare+delete, the single node", work_s)
            _summary("declare+delete round trip, cluster node (metadata group)", rounds["cluster"])
            _summary("declare+delete round trip, single node", rounds["single"])
            ratio = statistics.median(rounds["cluster"]) / statistics.median(rounds["single"])
            print(f"ratio cluster/single: {ratio:.2f}")
            leader_failover = []
            for i in range(min(3, args.cycles)):
                status = c.wait_until(lambda s: (s.get("metadata") or {}).get("leader") is not None
                                      and all(n["role"] == "member" for n in s["nodes"]), what="a leader")
                leader = status["metadata"]["leader"]
                a, b = [n for n in ("node-1", "node-2", "node-3") if n != leader][:2]
                pa, pb = _node_port(c, a), _node_port(c, b)
                conn_b = _conn(pb)
                t0 = time.monotonic()
                c.kill(leader)
                while True:
                    try:
                        conn_a = _conn(pa)
                        conn_a.channel().queue_declare(f"after-kill-{i}", durable=True,
                                                       arguments={"x-queue-type": "classic"})
                        conn_a.close()
                        break
                    except pika.exceptions.AMQPError:
                        time.sleep(0.01)
                leader_failover.append(_wait_exists(conn_b, f"after-kill-{i}") - t0)
                conn_b.close()
                c.start_node(leader)
            _summary("kill -9 of the leader's node -> a declare on a survivor applied on the other", leader_failover)
        finally:
            c.stop()


if __name__ == "__main__":
    main()
