"""Quorum queues across three real nodes (issue 13 items 5 and 7), against mqemu's cluster
(``mqemu ha up --mode cluster``, a data directory per node: fsync real) or a real RabbitMQ
3.10 three-node cluster (``../shared/refbrokers/start.sh rabbitmq-cluster``, ``--target
rabbitmq``).

- ``failover``: per cycle a queue ``bench-qq`` whose leader is known, a pika publisher with
  confirms on a follower's node publishing one message at a time, kill -9 of the leader's
  node at t0; the measure is t0 -> the first confirm of a publish started after t0 (so after
  the one in flight at the kill: a new leader's). Then the node is started again and the
  next cycle waits until every node is back. At the end every confirmed body is looked for
  in the queue (drained): ``lost`` counts the confirmed ones missing.
- ``throughput``: ``../shared/bench/loadgen.py`` (raw client, persistent, confirms, manual
  acks, one producer and one consumer on the queue leader's node) on a quorum queue and on a
  durable classic queue, rounds interleaved (quorum, classic, quorum, ...).

usage: .venv/bin/python bench/bench_quorum_cluster.py [failover|throughput|all]
           [--target mqemu|rabbitmq|mqemu,rabbitmq] [--cycles 5] [--rounds 3] [--n 50000]
With both targets, both clusters run throughout and their failover cycles and throughput
rounds alternate (mqemu cycle 0, rabbitmq cycle 0, ...; mqemu quorum, mqemu classic,
rabbitmq quorum, rabbitmq classic, ...).
Prints each measure and the medians as JSON lines.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

import pika

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, os.pardir, os.pardir, "shared")
LOADGEN_DIR = os.path.join(SHARED, "bench")
REFBROKERS = os.path.join(SHARED, "refbrokers")
QUEUE = "bench-qq"


# -- targets ---------------------------------------------------------------------------------
class Mqemu:
    """mqemu's cluster in this process's supervisor thread (``harness.TopologyThread``)."""

    name = "mqemu"

    def __init__(self) -> None:
        from mqemu.ha.harness import TopologyThread

        self.dir = tempfile.mkdtemp(prefix="bench-qcluster-")
        self.topology = TopologyThread(mode="cluster", balancer_algorithm="round-robin",
                                       data_dir=os.path.join(self.dir, "data"))
        self.topology.start()
        self.topology.wait_until(lambda s: all((n.get("metadata") or {}).get("leader") for n in s["nodes"]),
                                 timeout=60, what="a metadata leader")
        self.nodes = [n["name"] for n in self.topology.status()["nodes"]]

    def close(self) -> None:
        self.topology.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def amqp(self, node: str) -> int:
        return next(n for n in self.topology.status()["nodes"] if n["name"] == node)["ports"]["amqp"]

    def leader(self, queue: str) -> str | None:
        q = self.topology.status()["queues"].get(queue)
        return q["leader"] if q and q["leader"] in q["online"] else None

    def all_up(self) -> bool:
        s = self.topology.status()
        return all(n["role"] == "member" for n in s["nodes"]) and all(
            st["out"] == st["in"] == "up" for n in s["nodes"] for st in n["links"].values())

    def kill(self, node: str) -> None:
        self.topology.kill(node)

    def start(self, node: str) -> None:
        self.topology.start_node(node)


class Rabbit:
    """The reference RabbitMQ 3.10 cluster (its variables from ``$MQEMU_REF_DIR/env``)."""

    name = "rabbitmq"

    def __init__(self) -> None:
        env_file = os.path.join(os.environ.get("MQEMU_REF_DIR", "/tmp/mqemu-ref"), "env")
        self.env: dict[str, str] = {}
        with open(env_file) as f:
            for line in f:
                if line.startswith("export ") and "=" in line:
                    k, v = line[7:].strip().split("=", 1)
                    self.env[k] = v
        self.nodes = [self.env[f"MQEMU_REF_RABBIT_CLUSTER_NODE{i}"] for i in (1, 2, 3)]
        self.dir = os.path.join(os.environ.get("MQEMU_REF_DIR", "/tmp/mqemu-ref"), "rabbitmq-cluster")

    def close(self) -> None:
        pass

    def _i(self, node: str) -> int:
        return self.nodes.index(node) + 1

    def amqp(self, node: str) -> int:
        return urllib.parse.urlparse(self.env[f"MQEMU_REF_RABBIT_CLUSTER_AMQP{self._i(node)}"]).port or 5672

    def _api(self, path: str) -> Any:
        for i in (1, 2, 3):
            url = urllib.parse.urlparse(self.env[f"MQEMU_REF_RABBIT_CLUSTER_HTTP{i}"])
            req = urllib.request.Request(f"http://{url.hostname}:{url.port}/api/{path}")
            req.add_header("authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
            try:
                with urllib.request.urlopen(req, timeout=2) as resp:
                    return json.loads(resp.read())
            except OSError:
                continue
        return None

    def leader(self, queue: str) -> str | None:
        q = self._api(f"queues/%2F/{queue}")
        if not q or not q.get("leader"):
            return None
        return q["leader"] if q["leader"] in (q.get("online") or []) else None

    def all_up(self) -> bool:
        nodes = self._api("nodes") or []
        return len([n for n in nodes if n.get("running")]) == 3

    def _pid(self, node: str) -> int:
        with open(os.path.join(self.dir, f"c{self._i(node)}", "pid")) as f:
            return int(f.read().strip())

    def kill(self, node: str) -> None:
        os.kill(self._pid(node), signal.SIGKILL)

    def start(self, node: str) -> None:
        # a node killed a moment ago may still be registered with epmd: start.sh then fails
        # once and succeeds on the next try
        for _attempt in range(3):
            done = subprocess.run(["bash", os.path.join(REFBROKERS, "start.sh"), "rabbitmq-cluster"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if done.returncode == 0:
                return
            time.sleep(1)
        raise RuntimeError(f"start.sh rabbitmq-cluster failed 3 times (restarting {node})")


def _until(condition: Any, timeout: float = 120, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)


def _conn(port: int) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, connection_attempts=3,
                                                             retry_delay=0.2, socket_timeout=5))


# -- failover --------------------------------------------------------------------------------
class Publisher(threading.Thread):
    """One message at a time with confirms: (started, confirmed) monotonic times, per body."""

    def __init__(self, port: int, prefix: str) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.prefix = prefix
        self.times: list[tuple[float, float]] = []
        self.confirmed: list[bytes] = []
        self.stop = False
        self.error: str | None = None

    def run(self) -> None:
        try:
            conn = _conn(self.port)
            ch = conn.channel()
            ch.confirm_delivery()
            k = 0
            while not self.stop:
                body = f"{self.prefix}-{k}".encode()
                t = time.monotonic()
                ch.basic_publish("", QUEUE, body, pika.BasicProperties(delivery_mode=2), mandatory=True)
                self.times.append((t, time.monotonic()))
                self.confirmed.append(body)
                k += 1
            conn.close()
        except Exception as e:  # noqa: BLE001 - reported by the caller
            self.error = f"{type(e).__name__}: {e}"


def _declare(target: Any) -> None:
    conn = _conn(target.amqp(target.nodes[0]))
    conn.channel().queue_declare(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    conn.close()


def _cycle(target: Any, cycle: int) -> tuple[float, list[bytes]]:
    """One kill -9 of the leader's node: (seconds to the new leader's first confirm, bodies
    confirmed). The node is started again before returning."""
    _until(target.all_up, what="every node up")
    _until(lambda: target.leader(QUEUE) is not None, what="a leader")
    leader = target.leader(QUEUE)
    follower = next(n for n in target.nodes if n != leader)
    pub = Publisher(target.amqp(follower), f"c{cycle}")
    pub.start()
    _until(lambda: len(pub.times) >= 200 or pub.error is not None, what="publishing")
    t0 = time.monotonic()
    target.kill(leader)
    _until(lambda: any(s > t0 for s, _ in pub.times) or pub.error is not None, timeout=60,
           what="a confirm after the kill")
    done = next(end for start, end in pub.times if start > t0)
    pub.stop = True
    pub.join(30)
    if pub.error:
        raise RuntimeError(pub.error)
    print(json.dumps({"target": target.name, "cycle": cycle, "killed": leader, "publisher_on": follower,
                      "failover_s": round(done - t0, 4), "confirmed": len(pub.confirmed)}), flush=True)
    target.start(leader)
    return done - t0, pub.confirmed


def _lost(target: Any, confirmed: list[bytes]) -> int:
    """Every confirmed body must be in the queue: the number missing (the queue is deleted)."""
    _until(target.all_up, what="every node up")
    _until(lambda: target.leader(QUEUE) is not None, what="a leader")
    conn = _conn(target.amqp(target.leader(QUEUE)))
    ch = conn.channel()
    seen: set[bytes] = set()
    while True:
        method, _, body = ch.basic_get(QUEUE, auto_ack=True)
        if method is None:
            break
        seen.add(body)
    ch.queue_delete(QUEUE)
    conn.close()
    return sum(1 for b in confirmed if b not in seen)


def failover(targets: list[Any], cycles: int) -> list[dict[str, Any]]:
    """Cycles interleaved across targets (t1 cycle 0, t2 cycle 0, t1 cycle 1, ...)."""
    for target in targets:
        _declare(target)
    times: dict[str, list[float]] = {t.name: [] for t in targets}
    confirmed: dict[str, list[bytes]] = {t.name: [] for t in targets}
    for cycle in range(cycles):
        for target in targets:
            took, bodies = _cycle(target, cycle)
            times[target.name].append(took)
            confirmed[target.name] += bodies
    out = []
    for target in targets:
        t = times[target.name]
        out.append({"target": target.name, "failover_median_s": round(statistics.median(t), 4),
                    "failover_min_s": round(min(t), 4), "failover_max_s": round(max(t), 4), "cycles": cycles,
                    "confirmed": len(confirmed[target.name]), "lost": _lost(target, confirmed[target.name])})
    return out


# -- throughput ------------------------------------------------------------------------------
_LOADGEN_WRAPPER = """
import sys, struct
sys.path.insert(0, sys.argv[1])
import loadgen
queue, qtype = sys.argv[2], sys.argv[3]
def setup(self):
    self.queue = queue
    self.ctl = loadgen.AmqpConn(self.a, "producer")
    self.ctl.rpc(50, 10, struct.pack(">H", 0) + loadgen._short(queue) + bytes((2,))
                 + loadgen._table({"x-queue-type": qtype}), 11)
loadgen.AmqpProto.setup = setup
sys.exit(loadgen.main(sys.argv[4:]))
"""


def _loadgen_round(target: Any, qtype: str, name: str, n: int) -> float:
    port = target.amqp(target.nodes[0])
    out = subprocess.run([sys.executable, "-c", _LOADGEN_WRAPPER, LOADGEN_DIR, name, qtype,
                          "--proto", "amqp", "--port", str(port), "--persistent", "--confirm",
                          "--ack", "manual", "--n", str(n), "--timeout", "60"],
                         capture_output=True, text=True)
    line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "{}"
    res = json.loads(line)
    conn = _conn(port)
    conn.channel().queue_delete(name)
    conn.close()
    if not res.get("ok"):
        raise RuntimeError(f"{target.name} loadgen {qtype}: {res.get('error') or out.stderr[-500:]}")
    return float(res.get("throughput") or res.get("msgs_per_s") or res.get("rate"))


def throughput(targets: list[Any], rounds: int, n: int) -> list[dict[str, Any]]:
    """Rounds interleaved across targets and queue types: (t1 quorum, t1 classic, t2 quorum,
    t2 classic) per round, so every target runs under the same machine's load."""
    rates: dict[str, dict[str, list[float]]] = {t.name: {"quorum": [], "classic": []} for t in targets}
    for r in range(rounds):
        for target in targets:
            for qtype in ("quorum", "classic"):
                rate = _loadgen_round(target, qtype, f"bench-tp-{qtype}-{r}", n)
                rates[target.name][qtype].append(rate)
                print(json.dumps({"target": target.name, "round": r, "queue": qtype,
                                  "confirmed_msgs_per_s": round(rate)}), flush=True)
    out = []
    for target in targets:
        q, c = statistics.median(rates[target.name]["quorum"]), statistics.median(rates[target.name]["classic"])
        out.append({"target": target.name, "quorum_median": round(q), "classic_median": round(c),
                    "ratio": round(q / c, 3), "rounds": rounds, "n": n})
    if len(targets) > 1:
        first = rates[targets[0].name]["quorum"]
        for target in targets[1:]:
            out.append({"quorum_ratio": f"{targets[0].name}/{target.name}",
                        "value": round(statistics.median(first) / statistics.median(rates[target.name]["quorum"]), 3)})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", nargs="?", default="all", choices=["failover", "throughput", "all"])
    p.add_argument("--target", default="mqemu",
                   help="mqemu, rabbitmq, or both comma-separated (rounds interleaved)")
    p.add_argument("--cycles", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--n", type=int, default=50_000)
    a = p.parse_args()
    kinds = {"mqemu": Mqemu, "rabbitmq": Rabbit}
    names = a.target.split(",")
    if not names or any(name not in kinds for name in names):
        p.error(f"--target: one or more of {', '.join(kinds)}")
    targets: list[Any] = []
    try:
        for name in names:
            targets.append(kinds[name]())
        if a.mode in ("failover", "all"):
            for line in failover(targets, a.cycles):
                print(json.dumps(line), flush=True)
        if a.mode in ("throughput", "all"):
            for line in throughput(targets, a.rounds, a.n):
                print(json.dumps(line), flush=True)
    finally:
        for target in targets:
            target.close()


if __name__ == "__main__":
    main()
