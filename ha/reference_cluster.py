"""The seeded nemesis against the reference three-node RabbitMQ 3.10 cluster
(``/work/shared/refbrokers/start.sh rabbitmq-cluster``), for ``bench/bench_nemesis.py --target
rabbitmq``: the same schedule, workloads and checker as against mqemu's cluster.

``reference_steps(steps)`` maps a cluster schedule onto what can be done to the reference
nodes on a shared machine: kill (SIGKILL of the node's ``beam.smp``, its pid file names it),
stop (SIGTERM: the Erlang VM shuts down cleanly) and pause (SIGSTOP, then SIGCONT) of a node
are kept at their offsets; partitions are dropped (the nodes talk over Erlang distribution
and epmd on 127.0.0.1: cutting them needs iptables rules on loopback, which would cut other
users of this machine too) and so is pausing the balancer (RabbitMQ has none here: the
workloads are given the three nodes' ports and walk through them).

``RabbitCluster`` offers what ``nemesis.Nemesis`` and ``harness.Harness`` ask of a
``TopologyThread``: ``status``, ``endpoints``, ``fault``, ``facts``. A killed or stopped
node takes from 6 s to about 2.5 min to start again (``start.sh``, retried: the first try
often fails right after a kill), so it is started in the background and the schedule goes
on; a step that comes while a node is not back yet is skipped (``Skipped``), so that, as
against mqemu, one node at most is faulty at a time.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable

from .nemesis import Step

log = logging.getLogger("mqemu.ha.reference_cluster")

REFERENCE_KINDS = ("kill", "stop", "pause")
START_SCRIPT = "/work/shared/refbrokers/start.sh"


def reference_steps(steps: list[Step]) -> tuple[list[Step], list[Step]]:
    """(kept, dropped): the node kills, stops and pauses at their offsets; partitions and
    the balancer's pauses dropped."""
    kept = [s for s in steps if s.kind in REFERENCE_KINDS and s.target.startswith("node-")]
    dropped = [s for s in steps if s not in kept]
    return kept, dropped


class Skipped(RuntimeError):
    """A step not applied: a node is still coming back from an earlier fault."""


def read_env(path: str) -> dict[str, str]:
    """The ``export NAME=value`` lines of the reference brokers' env file."""
    env: dict[str, str] = {}
    with open(path) as f:
        for line in f:
            if line.startswith("export ") and "=" in line:
                k, v = line[7:].strip().split("=", 1)
                env[k] = v.strip("'\"")
    return env


class RabbitCluster:
    """The reference cluster's nodes as ``node-1``..``node-3`` (``mqemu-c1@localhost``...)."""

    names = ("node-1", "node-2", "node-3")

    def __init__(self, env: dict[str, str], folder: str, start_script: str = START_SCRIPT) -> None:
        self.env = env
        self.folder = folder
        self.start_script = start_script
        self.faults: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._paused: dict[str, dict[str, Any]] = {}  # node -> its open fault
        self._down: dict[str, dict[str, Any]] = {}  # node -> its open kill/stop fault
        self._starting: dict[str, threading.Thread] = {}

    @classmethod
    def from_env(cls, ref_dir: str | None = None) -> "RabbitCluster":
        ref_dir = ref_dir or os.environ.get("MQEMU_REF_DIR", "/tmp/mqemu-ref")
        return cls(read_env(os.path.join(ref_dir, "env")), os.path.join(ref_dir, "rabbitmq-cluster"))

    # what Harness asks of a TopologyThread: ``topology.call(topology.topology.facts)``
    @property
    def topology(self) -> "RabbitCluster":
        return self

    def call(self, fn: Callable[[], Any]) -> Any:
        return fn()

    # -- reading -----------------------------------------------------------------------------
    def _i(self, node: str) -> int:
        if node not in self.names:
            raise ValueError(f"no reference node {node!r}; one of {', '.join(self.names)}")
        return self.names.index(node) + 1

    def endpoints(self, protocol: str) -> list[tuple[str, int]]:
        """The three nodes' (host, port) for ``protocol``: no balancer in front of them."""
        key = {"amqp": "AMQP", "stomp": "STOMP", "mqtt": "MQTT"}[protocol]
        out = []
        for i in (1, 2, 3):
            value = self.env[f"MQEMU_REF_RABBIT_CLUSTER_{key}{i}"]
            url = urllib.parse.urlsplit(value if "//" in value else f"//{value}")
            assert url.hostname is not None and url.port is not None
            out.append((url.hostname, url.port))
        return out

    def pid(self, node: str) -> int:
        """The node's Erlang VM (``beam.smp``) pid, from its pid file."""
        with open(os.path.join(self.folder, f"c{self._i(node)}", "pid")) as f:
            return int(f.read().strip())

    def alive(self, node: str) -> bool:
        try:
            os.kill(self.pid(node), 0)
        except (OSError, ValueError):
            return False
        return True

    def status(self) -> dict[str, Any]:
        with self._lock:
            nodes = []
            for name in self.names:
                if name in self._starting:
                    role = "starting"
                elif name in self._paused:
                    role = "paused"
                elif name in self._down or not self.alive(name):
                    role = "down"
                else:
                    role = "up"
                nodes.append({"name": name, "role": role})
        return {"nodes": nodes}

    def api(self, path: str, method: str = "GET") -> Any:
        """The management API of the first node that answers; None if none does."""
        for i in (1, 2, 3):
            url = urllib.parse.urlsplit(self.env[f"MQEMU_REF_RABBIT_CLUSTER_HTTP{i}"])
            req = urllib.request.Request(f"http://{url.hostname}:{url.port}/api/{path}", method=method)
            req.add_header("authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    body = resp.read()
                    return json.loads(body) if body else {}
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    return None
                continue
            except OSError:
                continue
        return None

    def running(self) -> list[str]:
        """The node names the cluster's API reports running."""
        return sorted(n["name"] for n in self.api("nodes") or [] if n.get("running"))

    def delete_queues(self, names: list[str]) -> None:
        for name in names:
            self.api(f"queues/%2F/{urllib.parse.quote(name, safe='')}", method="DELETE")

    # -- faults ------------------------------------------------------------------------------
    def fault(self, action: str, target: str, **_params: Any) -> dict[str, Any]:
        if action in REFERENCE_KINDS:
            return self._begin(action, target)
        if action == "resume":
            self._resume(target)
        elif action == "start":
            self._start(target)
        else:
            raise ValueError(f"the reference cluster has no fault {action!r}")
        return {"nodes": [target]}

    def _begin(self, action: str, node: str) -> dict[str, Any]:
        with self._lock:
            busy = sorted(set(self._starting) | set(self._paused) | set(self._down)
                          | {n for n in self.names if not self.alive(n)})
            if busy:
                raise Skipped(f"skipped: {', '.join(busy)} not back yet from an earlier fault")
            pid = self.pid(node)
            os.kill(pid, {"kill": signal.SIGKILL, "stop": signal.SIGTERM, "pause": signal.SIGSTOP}[action])
            entry = {"id": len(self.faults) + 1, "action": action, "target": node, "nodes": [node], "pid": pid,
                     "time": time.monotonic(), "wall": time.time(), "end": None}
            self.faults.append(entry)
            (self._paused if action == "pause" else self._down)[node] = entry
        log.info("reference fault", extra={"action": action, "node": node, "pid": pid})
        return {"nodes": [node]}

    def _resume(self, node: str) -> None:
        with self._lock:
            entry = self._paused.pop(node, None)
            if entry is None:
                return
            os.kill(entry["pid"], signal.SIGCONT)
            entry["end"] = time.monotonic()

    def _start(self, node: str) -> None:
        """Start the node again in the background; its fault ends once ``start.sh`` has it
        back (its AMQP, STOMP and MQTT ports open, three nodes running)."""
        with self._lock:
            if node in self._starting:
                return
            entry = self._down.get(node)
            thread = threading.Thread(target=self._restart, args=(node, entry), daemon=True,
                                      name=f"mqemu-ref-start-{node}")
            self._starting[node] = thread
        thread.start()

    def _restart(self, node: str, entry: dict[str, Any] | None) -> None:
        try:
            if entry is not None:  # a stopped VM may take a while to shut down
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and _pid_alive(entry["pid"]):
                    time.sleep(0.1)
            for attempt in range(5):
                done = subprocess.run(["bash", self.start_script, "rabbitmq-cluster"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if done.returncode == 0 and self.alive(node):
                    break
                log.info("start.sh rabbitmq-cluster failed; again", extra={"node": node, "attempt": attempt})
                time.sleep(2)
            else:
                log.warning("could not start a reference node again", extra={"node": node})
                return
            with self._lock:
                if entry is not None:
                    entry["end"] = time.monotonic()
                    self._down.pop(node, None)
        finally:
            with self._lock:
                self._starting.pop(node, None)

    def restore(self, timeout: float = 600) -> list[str]:
        """End every fault (resume paused nodes, start stopped ones) and wait until the API
        reports the three nodes running; returns them."""
        for node in list(self._paused):
            self._resume(node)
        for node in self.names:
            if node in self._down or not self.alive(node):
                self._start(node)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                starting = list(self._starting.values())
            for t in starting:
                t.join(max(0.0, deadline - time.monotonic()))
            running = self.running()
            if len(running) == 3:
                return running
            time.sleep(1)
        return self.running()

    def facts(self) -> dict[str, Any]:
        """As ``Topology.facts``: the faults with their start and end (CLOCK_MONOTONIC)."""
        with self._lock:
            faults = [dict(f) for f in self.faults]
        return {"clock": {"time": time.monotonic(), "wall": time.time()}, "faults": faults,
                "events": [], "nodes": {}}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
