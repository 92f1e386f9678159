"""Running a topology from Python: ``open_topology`` inside a trio program, ``TopologyThread``
for synchronous code (plain pytest tests, scripts), both with the control endpoint on.

``TopologyThread`` offers the faults as methods: ``kill("active")``, ``stop``, ``start``,
``restart``, ``pause``, ``resume``, ``toxic(...)``/``heal(...)`` and ``with t.down("active"):``
for a network fault that ends with the block; for a cluster ``partition("node-1",
from_=["node-2"])``, ``heal()`` and ``balancer_endpoint("amqp")``.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager, contextmanager
from typing import Any, AsyncIterator, Iterator

import trio

from .control import ControlServer
from .node import LoopThread
from .topology import Topology, TopologyOptions


@asynccontextmanager
async def open_topology_of(topology: Topology) -> AsyncIterator[Topology]:
    """Run ``topology`` and its control endpoint for the body of the block."""
    # The control endpoint first: the nodes are started with its URL (their web page shows
    # the topology); it answers 503 until the topology has started.
    control = ControlServer(topology)
    closed = False
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(topology.run)
            topology.write_ready_file()  # with the control URL
            try:
                yield topology
            finally:
                closed = True
                await trio.to_thread.run_sync(control.close)
                nursery.cancel_scope.cancel()
    finally:
        if not closed:
            await trio.to_thread.run_sync(control.close)


@asynccontextmanager
async def open_topology(**options: Any) -> AsyncIterator[Topology]:
    """Run a topology (``TopologyOptions`` fields as keywords) for the body of the block."""
    async with open_topology_of(Topology(TopologyOptions(**options))) as topology:
        yield topology


class TopologyThread(LoopThread):
    """A topology run by a thread of its own; ``start()`` returns once every node has a role."""

    thread_name = "mqemu-topology"

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.topology = Topology(TopologyOptions(**options))

    def start(self, timeout: float = 60) -> "TopologyThread":
        return super().start(timeout)

    def stop(self, timeout: float = 30) -> None:
        super().stop(timeout)

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with open_topology_of(self.topology):
            task_status.started()
            await trio.sleep_forever()

    # -- reading -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return self.call(self.topology.status)

    def endpoints(self, protocol: str) -> list[tuple[str, int]]:
        """The (host, port) list clients of ``protocol`` try in turn."""
        out = []
        for e in self.status()["endpoints"][protocol]:
            host, _, port = e.rpartition(":")
            out.append((host, int(port)))
        return out

    def failover(self, protocol: str) -> str:
        return self.status()["failover"][protocol]

    def balancer_endpoint(self, protocol: str) -> tuple[str, int]:
        """A cluster's one (host, port) for ``protocol``: its balancer."""
        return self.topology.options.host, self.status()["balancer"][protocol]

    def links(self, node: str) -> dict[str, dict[str, Any]]:
        """A cluster member's link states as it last reported them, by peer."""
        return self.node(node).get("links", {})

    def wait_until(self, condition: Any, timeout: float = 30, what: str = "the condition") -> dict[str, Any]:
        """Poll ``condition(status)`` until it is true; returns that status."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if condition(status):
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not hold within {timeout} s: {status['nodes']}")
            time.sleep(0.02)

    def node(self, target: str) -> dict[str, Any]:
        """The status of the one node named or in the role ``target``."""
        names = {n.name for n in self.call(self.topology.resolve, target)}
        (node,) = [n for n in self.status()["nodes"] if n["name"] in names]
        return node

    def wait_for_role(self, target: str, role: str, timeout: float = 30) -> dict[str, Any]:
        """Wait until the node named ``target`` (or some node, for a role) has ``role``."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for n in self.status()["nodes"]:
                if n["role"] == role and target in (n["name"], role):
                    return n
            time.sleep(0.02)
        raise TimeoutError(f"no {target} became {role} within {timeout} s: {self.status()['nodes']}")

    # -- faults ------------------------------------------------------------------------------
    def fault(self, action: str, target: str, **params: Any) -> dict[str, Any]:
        assert self._token is not None
        return trio.from_thread.run(lambda: self.topology.fault(action, target, **params), trio_token=self._token)

    def kill(self, target: str) -> dict[str, Any]:
        return self.fault("kill", target)

    def stop_node(self, target: str) -> dict[str, Any]:
        return self.fault("stop", target)

    def start_node(self, target: str) -> dict[str, Any]:
        return self.fault("start", target)

    def restart(self, target: str) -> dict[str, Any]:
        return self.fault("restart", target)

    def pause(self, target: str) -> dict[str, Any]:
        return self.fault("pause", target)

    def resume(self, target: str) -> dict[str, Any]:
        return self.fault("resume", target)

    def toxic(self, kind: str, target: str, **params: Any) -> list[str]:
        return self.fault(kind, target, **params)["toxics"]

    def heal(self, target: str = "all", **params: Any) -> list[str]:
        """Remove network faults (on every node for ``all``, and then every partition too)."""
        done = self.fault("heal", target, **params)
        return done["removed"] + done.get("healed", [])

    def partition(self, node: str, from_: list[str] | None = None, *, one_way: bool = False,
                  silent: bool = False) -> list[str]:
        """Cut ``node`` off from ``from_`` (default: every other node); returns the links cut."""
        return self.fault("partition", node, from_=from_ or [], one_way=one_way, silent=silent)["links"]

    @contextmanager
    def down(self, target: str, **params: Any) -> Iterator[list[str]]:
        """The target's endpoints refuse and cut connections for the block."""
        names = {n.name for n in self.call(self.topology.resolve, target)}
        self.toxic("down", target, name="down", **params)
        try:
            yield sorted(names)
        finally:
            for name in names:
                self.heal(name, name="down")


class Harness:
    """Workloads against a running topology, faults recorded in their histories, and the
    checker's verdict: what the ``mqemu_harness`` fixture gives a test.

    ``workload("stomp", count=500)`` starts a publisher and a consumer through the topology's
    endpoints for that protocol (``workload.Workload``), recording into a history file in
    ``workdir``; ``fault("kill", "active")`` applies a fault; ``check()`` waits for the
    workloads to finish, adds to their histories every fault the topology applied meanwhile
    (however it was asked) and the nodes' events (lock, recovery, listeners, roles), and
    returns the verdict (``checker.Verdict``) on all their histories together.
    """

    def __init__(self, topology: TopologyThread, workdir: str) -> None:
        self.topology = topology
        self.workdir = workdir
        self.workloads: list[Any] = []
        self.histories: list[str] = []

    def workload(self, protocol: str, **options: Any) -> Any:
        from .workload import Workload, WorkloadOptions

        path = os.path.join(self.workdir, f"history-{len(self.histories) + 1}-{protocol}.jsonl")
        w = Workload(WorkloadOptions(protocol, self.topology.endpoints(protocol), **options), path).start()
        self.workloads.append(w)
        self.histories.append(path)
        return w

    def fault(self, action: str, target: str, **params: Any) -> dict[str, Any]:
        """Apply a fault. The topology keeps it with its start and end (``Topology.facts``),
        as it keeps any other fault (``topology.down(...)``, ``mqemu fault`` from a shell):
        ``check()`` adds them all to the histories."""
        return self.topology.fault(action, target, **params)

    def check(self, timeout: float = 120) -> Any:
        """Wait for every workload (then stop what is left), add the topology's facts (its
        faults, the nodes' events) to each history file, and judge them together."""
        from .checker import check
        from .history import append_facts, read_histories

        for w in self.workloads:
            if not w.wait(timeout):
                w.stop()
        facts = self.topology.call(self.topology.topology.facts)
        for path in self.histories:
            append_facts(path, facts)
        return check(read_histories(self.histories))
