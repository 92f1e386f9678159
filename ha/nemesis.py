"""A seeded nemesis: faults drawn from a seed and applied to a running topology while
workloads run, so a soak can be repeated fault for fault.

``schedule(seed, seconds, mode)`` is pure: the same seed gives the same steps at the same
offsets. Each ``Step`` is one fault held for ``hold`` seconds and then ended (a killed or
stopped node started again, a paused one resumed, a network fault or partition healed),
followed by a quiet ``gap`` in which the topology recovers, so the checker's fault windows
never overlap; a node an earlier step could not bring back is started before the next. ``Nemesis(topology, steps).start()`` applies them from a thread of its own
through a ``harness.TopologyThread``; each fault reaches the histories through the
topology's facts (``Harness.check``), wherever it was asked for.

Faults by topology mode:
- ``active-standby``: kill, stop, pause the active; restart the standby; a network ``down``
  of the active's endpoints.
- ``cluster``: kill, stop, pause any node; partition a node from the others (full, one way,
  or silent); pause the balancer.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger("mqemu.ha.nemesis")

# (kind, target) pairs a schedule draws from, per topology mode; a cluster's node targets
# are drawn from its node names.
ACTIVE_STANDBY = [("kill", "active"), ("stop", "active"), ("pause", "active"), ("restart", "standby"),
                  ("down", "active")]
CLUSTER = [("kill", "node"), ("stop", "node"), ("pause", "node"), ("partition", "node"),
           ("partition-one-way", "node"), ("partition-silent", "node"), ("pause", "balancer")]
MENUS = {"active-standby": ACTIVE_STANDBY, "cluster": CLUSTER}


@dataclass(frozen=True, slots=True)
class Step:
    at: float  # seconds after the nemesis starts
    kind: str
    target: str  # a role ("active", "standby", "balancer") or a node name
    hold: float  # seconds the fault lasts before it is ended (0 for restart)


@dataclass(slots=True)
class Applied:
    step: Step
    nodes: list[str] = field(default_factory=list)
    started: float | None = None  # time.monotonic() when applied, and when ended
    ended: float | None = None
    error: str | None = None


def schedule(seed: int, seconds: float, mode: str = "active-standby", *, nodes: int = 3,
             hold: tuple[float, float] = (1.0, 4.0), gap: tuple[float, float] = (3.0, 6.0),
             warmup: float = 2.0, kinds: list[str] | None = None) -> list[Step]:
    """The steps of one run: faults from ``warmup`` until ``seconds`` (the last one starts
    early enough to end, with its gap, by then)."""
    if mode not in MENUS:
        raise ValueError(f"no nemesis for mode {mode!r}; one of {', '.join(MENUS)}")
    menu = [m for m in MENUS[mode] if kinds is None or m[0] in kinds]
    if not menu:
        raise ValueError(f"none of the faults {kinds} applies to mode {mode}")
    rng = random.Random(seed)
    steps: list[Step] = []
    t = warmup
    while True:
        kind, target = rng.choice(menu)
        if target == "node":
            target = f"node-{rng.randint(1, nodes)}"
        held = 0.0 if kind == "restart" else round(rng.uniform(*hold), 3)
        pause = round(rng.uniform(*gap), 3)
        if t + held + pause > seconds:
            return steps
        steps.append(Step(round(t, 3), kind, target, held))
        t += held + pause


class Nemesis:
    """Applies ``steps`` to a ``TopologyThread`` from a daemon thread; ``stop()`` ends the
    fault in force and the run, ``join()`` waits for the last step."""

    def __init__(self, topology: Any, steps: list[Step]) -> None:
        self.topology = topology
        self.steps = steps
        self.applied: list[Applied] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqemu-nemesis", daemon=True)

    def start(self) -> "Nemesis":
        self._thread.start()
        return self

    def stop(self, timeout: float = 60) -> None:
        self._stopping.set()
        self.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def report(self) -> list[dict[str, Any]]:
        return [{**asdict(a.step), "nodes": a.nodes, "error": a.error} for a in self.applied]

    def _run(self) -> None:
        began = time.monotonic()
        for step in self.steps:
            if self._stopping.wait(max(0.0, began + step.at - time.monotonic())):
                return
            applied = Applied(step)
            self.applied.append(applied)
            try:
                self._restore()
                applied.nodes = self._begin(step)
                applied.started = time.monotonic()
                self._stopping.wait(step.hold)
            except Exception as e:  # a fault that could not be applied is reported, the run goes on
                applied.error = str(e) or type(e).__name__
                log.warning("nemesis step failed", extra={"step": asdict(step), "error": applied.error})
            finally:
                try:
                    self._end(step, applied.nodes)
                except Exception as e:
                    applied.error = applied.error or f"ending it: {e}"
                    log.warning("nemesis could not end a fault", extra={"step": asdict(step), "error": str(e)})
                applied.ended = time.monotonic()

    def _restore(self) -> None:
        """A node an earlier step could not bring back is started before the next fault."""
        for node in self.topology.status()["nodes"]:
            if node.get("role") == "down":
                log.info("nemesis starts a node left down", extra={"node": node["name"]})
                self.topology.fault("start", node["name"])

    def _begin(self, step: Step) -> list[str]:
        t = self.topology
        if step.kind.startswith("partition"):
            t.partition(step.target, one_way=step.kind.endswith("one-way"), silent=step.kind.endswith("silent"))
            return [step.target]
        if step.kind == "down":
            with_nodes = t.fault("down", step.target, name="nemesis-down")
            return list(with_nodes.get("nodes", []))
        return list(t.fault(step.kind, step.target).get("nodes", []))

    def _end(self, step: Step, nodes: list[str]) -> None:
        t = self.topology
        if step.kind in ("kill", "stop"):
            for node in nodes:
                t.fault("start", node)
        elif step.kind == "pause":
            t.fault("resume", nodes[0] if nodes else step.target)
        elif step.kind == "down":
            for node in nodes:
                t.heal(node, name="nemesis-down")
        elif step.kind.startswith("partition"):
            t.heal()
