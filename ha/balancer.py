"""A TCP load balancer in front of a cluster's nodes, as Amazon MQ's Network Load Balancer.

One listener per protocol (``amqp``, ``stomp``, ``mqtt``); behind each, one target per node
(the node's own port for that protocol, set and changed at run time). Each target is health
checked as an NLB checks a TCP target group: a TCP connect every ``interval`` that must
succeed within ``timeout``; ``healthy_threshold`` successes in a row make a target healthy,
``unhealthy_threshold`` failures unhealthy. A new target starts ``initial`` and gets no
traffic until it is healthy.

A new connection goes to a healthy target of its protocol, chosen by ``algorithm``:
``flow-hash`` (what an NLB does for TCP: a hash of the flow's addresses and ports, so one
flow always lands on one target and new flows spread at random), ``round-robin`` or
``least-connections``. With no healthy target the NLB fails open, routing to every
registered target: so does this one. When a target becomes unhealthy its connections are
reset (the NLB's connection termination on unhealthy targets, on by default); a node that
dies resets them itself.

Each listener is a ``proxy.Proxy`` whose upstream is picked per connection, so the
balancer's links take every toxic of the proxies (``down`` for a dead balancer, ``timeout``
for a stalled one).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import trio

from .proxy import Address, Proxy, _Connection

log = logging.getLogger("mqemu.ha.balancer")

ALGORITHMS = ("flow-hash", "round-robin", "least-connections")


@dataclass(frozen=True, slots=True)
class HealthTiming:
    interval: float
    timeout: float
    healthy_threshold: int
    unhealthy_threshold: int


# ``engine``: an NLB's defaults for a TCP target group (30 s, 10 s, 5 and 2).
# ``fast``: for tests: a dead node is out within about 0.4 s, back within 0.4 s of listening.
HEALTH_TIMINGS = {"fast": HealthTiming(0.2, 1.0, 2, 2), "engine": HealthTiming(30.0, 10.0, 5, 2)}


class Target:
    """One node's port for one protocol, its health and its connections."""

    __slots__ = ("node", "protocol", "address", "state", "successes", "failures", "conns", "wake")

    def __init__(self, node: str, protocol: str, address: Address | None) -> None:
        self.node = node
        self.protocol = protocol
        self.address = address
        self.state = "initial"
        self.successes = 0
        self.failures = 0
        self.conns: set[_Connection] = set()
        self.wake = trio.Event()  # set to check at once (the address changed)

    @property
    def connections(self) -> int:
        return sum(not c.closed for c in self.conns)


class _Listener(Proxy):
    """A balancer's port for one protocol: a proxy whose upstream is a target per connection."""

    def __init__(self, balancer: "Balancer", protocol: str, listen: Address) -> None:
        super().__init__(f"balancer/{protocol}", ("127.0.0.1", 1), listen,
                         tags={"role": "balancer", "protocol": protocol})
        self.balancer = balancer
        self.protocol = protocol

    async def _serve(self, conn: _Connection, upstream: Address) -> None:
        target = self.balancer.pick(self.protocol, conn)
        if target is None or target.address is None:
            conn.close(reset=True)
            self._conns.discard(conn)
            return
        target.conns.add(conn)
        try:
            await super()._serve(conn, target.address)
        finally:
            target.conns.discard(conn)


class Balancer:
    """Run with ``await nursery.start(balancer.run)``; ``ports`` then holds each listener's port."""

    def __init__(self, protocols: tuple[str, ...], *, host: str = "127.0.0.1", algorithm: str = "flow-hash",
                 timing: HealthTiming = HEALTH_TIMINGS["fast"], seed: int = 0) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")
        self.host = host
        self.algorithm = algorithm
        self.timing = timing
        self.listeners = {proto: _Listener(self, proto, (host, 0)) for proto in protocols}
        self.targets: dict[tuple[str, str], Target] = {}
        self._next: dict[str, int] = {proto: 0 for proto in protocols}
        self._salt = str(seed).encode()
        self._nursery: trio.Nursery | None = None

    @property
    def ports(self) -> dict[str, int]:
        return {proto: listener.listen_port for proto, listener in self.listeners.items()}

    # -- targets ----------------------------------------------------------------------------
    def register(self, node: str, protocol: str, address: Address | None = None) -> Target:
        target = Target(node, protocol, address)
        self.targets[(node, protocol)] = target
        if self._nursery is not None:
            self._nursery.start_soon(self._check_loop, target)
        return target

    def set_address(self, node: str, protocol: str, address: Address | None) -> None:
        """The node's port for ``protocol`` (None: the node has none now); checked at once."""
        target = self.targets[(node, protocol)]
        if target.address != address:
            target.address = address
            target.wake.set()

    def of(self, protocol: str) -> list[Target]:
        return [t for t in self.targets.values() if t.protocol == protocol]

    def pick(self, protocol: str, conn: _Connection) -> Target | None:
        targets = self.of(protocol)
        healthy = [t for t in targets if t.state == "healthy"]
        if not healthy:  # fail open, as an NLB does: every registered target with an address
            healthy = [t for t in targets if t.address is not None]
            if not healthy:
                return None
        if self.algorithm == "round-robin":
            i = self._next[protocol] % len(healthy)
            self._next[protocol] = i + 1
            return healthy[i]
        if self.algorithm == "least-connections":
            return min(healthy, key=lambda t: t.connections)
        try:
            flow = repr((conn.client.socket.getpeername(), conn.client.socket.getsockname())).encode()
        except OSError:
            flow = b""
        digest = hashlib.blake2b(flow, digest_size=8, key=self._salt[:64]).digest()
        return healthy[int.from_bytes(digest, "big") % len(healthy)]

    # -- health checks ----------------------------------------------------------------------
    async def _check_loop(self, target: Target) -> None:
        timing = self.timing
        while True:
            healthy = await self._probe(target.address)
            self._record(target, healthy)
            with trio.move_on_after(timing.interval):
                await target.wake.wait()
            target.wake = trio.Event()

    async def _probe(self, address: Address | None) -> bool:
        if address is None:
            return False
        with trio.move_on_after(self.timing.timeout):
            try:
                stream = await trio.open_tcp_stream(*address)
            except OSError:
                return False
            await trio.aclose_forcefully(stream)
            return True
        return False

    def _record(self, target: Target, healthy: bool) -> None:
        timing = self.timing
        if healthy:
            target.successes += 1
            target.failures = 0
            if target.state != "healthy" and target.successes >= timing.healthy_threshold:
                self._set_state(target, "healthy")
        else:
            target.failures += 1
            target.successes = 0
            if target.state == "healthy" and target.failures >= timing.unhealthy_threshold:
                self._set_state(target, "unhealthy")
                cut = 0
                for conn in list(target.conns):
                    if not conn.closed:
                        conn.close(reset=True)
                        cut += 1
                if cut:
                    log.info("connections of an unhealthy target reset",
                             extra={"target": target.node, "protocol": target.protocol, "count": cut})

    def _set_state(self, target: Target, state: str) -> None:
        target.state = state
        log.info("target %s", state, extra={"target": target.node, "protocol": target.protocol})

    def healthy(self, node: str) -> bool:
        """Every protocol's target of ``node`` is healthy."""
        targets = [t for t in self.targets.values() if t.node == node]
        return bool(targets) and all(t.state == "healthy" for t in targets)

    # -- running ------------------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for listener in self.listeners.values():
                await nursery.start(listener.run)
            self._nursery = nursery
            for target in self.targets.values():
                nursery.start_soon(self._check_loop, target)
            task_status.started(self.ports)

    def status(self) -> dict[str, Any]:
        """Per node: each protocol's health and the node's open connections through here."""
        nodes: dict[str, dict[str, Any]] = {}
        for t in self.targets.values():
            entry = nodes.setdefault(t.node, {"health": {}, "connections": 0})
            entry["health"][t.protocol] = t.state
            entry["connections"] += t.connections
        return {"algorithm": self.algorithm, "ports": self.ports,
                "listening": {p: listener.listening for p, listener in self.listeners.items()},
                "health_check": {"interval": self.timing.interval, "timeout": self.timing.timeout,
                                 "healthy_threshold": self.timing.healthy_threshold,
                                 "unhealthy_threshold": self.timing.unhealthy_threshold},
                "targets": nodes}
