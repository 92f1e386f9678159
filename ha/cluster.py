"""A cluster topology's own parts, owned by the supervisor (``topology.Topology``): the
balancer in front of the nodes, one link proxy per directed pair of nodes, and the faults
on them (partitions, the ``balancer`` role).

Node A reaches node B's cluster port only through the proxy ``link/A->B`` (A's ``--peers``
names that proxy's port), and what A sends B only ever travels on A's own connection
(``links.NodeLinks``), so cutting that proxy cuts exactly the direction A -> B. A proxy
listens while its destination node is a member and forwards to that node's cluster port
(which changes when the node restarts) from the moment that node listens there: before
its client listeners open, so a starting node finds the metadata group's leader at once.

Partitions: ``partition(node, from_=[...])`` cuts both directions between ``node`` and each
of ``from_``; ``one_way=True`` only what ``node`` sends them (it still hears them).
``silent=True`` drops the bytes and keeps the connections open (as a real partition: the
nodes notice by their heartbeat timeout, and a reconnect's hello gets no answer); otherwise
the link proxies refuse and cut at once. ``heal()`` removes every partition and resets the
connections that lived through a silent one (a TCP stream never skips bytes, so they must
not carry on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .balancer import HEALTH_TIMINGS, Balancer
from .proxy import Proxy, ProxySet

if TYPE_CHECKING:
    from .topology import NodeProcess, Topology

PARTITION = "partition"  # the name of the toxics a partition puts on link proxies


class ClusterParts:
    def __init__(self, topology: "Topology") -> None:
        self.topology = topology
        o = topology.options
        self.balancer = Balancer(tuple(o.protocols), host=o.host, algorithm=o.balancer_algorithm,
                                 timing=HEALTH_TIMINGS[o.timing])
        self.partitions: list[dict[str, Any]] = []
        self._balancer_stall = False
        topology.add_role("leader-of:", self._leader_of)
        topology.add_role("follower-of:", self._followers_of)

    async def start(self, proxies: ProxySet, nursery: Any) -> None:
        """Make the link proxies (disabled until their node is up) and start the balancer;
        give each node its ``--cluster-port``/``--peers`` arguments."""
        o = self.topology.options
        nodes = self.topology.nodes
        for a in nodes:
            for b in nodes:
                if a is not b:
                    await proxies.add(self.link_name(a.name, b.name), (o.host, 1), (o.host, 0), enabled=False,
                                      tags={"link": f"{a.name}->{b.name}", "from": a.name, "to": b.name})
        for node in nodes:
            for proto in o.protocols:
                self.balancer.register(node.name, proto)
        await nursery.start(self.balancer.run)
        for a in nodes:
            peers = ",".join(f"{b.name}={o.host}:{proxies[self.link_name(a.name, b.name)].listen_port}"
                             for b in nodes if b is not a)
            a.extra_argv = ["--cluster-port", "0", "--cluster-name", o.cluster_name, "--peers", peers]

    @staticmethod
    def link_name(a: str, b: str) -> str:
        return f"link/{a}->{b}"

    def refresh(self, node: "NodeProcess", role: str, status: dict[str, Any]) -> None:
        """Point the node's link proxies at its cluster port while it listens there (a
        starting node's links open before its client listeners: it waits for the metadata
        group's leader, which needs them) and its balancer targets at its client ports while
        it is a member."""
        t = self.topology
        assert t.proxies is not None
        host = t.options.host
        member = role == "member"
        cluster_port = status.get("cluster_port") if role in ("starting", "member") else None
        for proxy in t.proxies.select(to=node.name):
            if cluster_port:
                if proxy.upstream != (host, cluster_port):
                    proxy.upstream = (host, cluster_port)
                if not proxy.enabled:
                    t._enable(proxy)
            elif proxy.enabled:
                proxy.disable()
        ports = status.get("ports", {}) if member else {}
        for proto in t.options.protocols:
            port = ports.get(proto)
            self.balancer.set_address(node.name, proto, (host, port) if port else None)

    def ready(self) -> bool:
        """Every node is a member the balancer finds healthy."""
        return all(self.balancer.healthy(n.name) for n in self.topology.nodes)

    # -- faults -------------------------------------------------------------------------------
    def partition(self, node: "NodeProcess", others: list["NodeProcess"], *, one_way: bool = False,
                  silent: bool = False) -> list[str]:
        pairs = [(node.name, o.name) for o in others if o is not node]
        if not one_way:
            pairs += [(b, a) for a, b in pairs]
        cut = []
        for a, b in pairs:
            proxy = self._link(a, b)
            if any(t.name == PARTITION for t in proxy.toxics):
                continue  # already cut
            if silent:
                proxy.add_toxic("timeout", name=PARTITION, stream="upstream", timeout=0)
                proxy.add_toxic("timeout", name=PARTITION + "-back", stream="downstream", timeout=0)
            else:
                proxy.add_toxic("down", name=PARTITION)
            cut.append(f"{a}->{b}")
        self.partitions.append({"node": node.name, "from": [o.name for o in others], "one_way": one_way,
                                "silent": silent, "links": cut})
        return cut

    def heal(self) -> list[str]:
        """Remove every partition; returns the links it restored."""
        healed = []
        for proxy in self._links():
            names = [t.name for t in proxy.toxics if t.name in (PARTITION, PARTITION + "-back")]
            for name in names:
                proxy.remove_toxic(name)
            if names:
                proxy.cut(reset=True)  # a connection that lost bytes must not carry on
                healed.append(proxy.tags["link"])
        self.partitions.clear()
        return healed

    def _link(self, a: str, b: str) -> Proxy:
        assert self.topology.proxies is not None
        return self.topology.proxies[self.link_name(a, b)]

    def _links(self) -> list[Proxy]:
        assert self.topology.proxies is not None
        return [p for p in self.topology.proxies if "link" in p.tags]

    def balancer_fault(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """The ``balancer`` role: ``kill``/``stop`` (its ports refuse, its connections are
        reset), ``start``/``restart`` (listening again), ``pause``/``resume`` (every
        connection through it stalls: bytes are held back, nothing is closed), a network
        fault (a toxic on every listener, or one with ``protocol``) or ``heal`` (no toxic)."""
        listeners = list(self.balancer.listeners.values())
        protocol = params.pop("protocol", None)
        if protocol:
            listeners = [self.balancer.listeners[protocol]]
        if action in ("kill", "stop"):
            for listener in listeners:
                listener.cut(reset=action == "kill")
                listener.disable()
        elif action in ("start", "restart"):
            for listener in listeners:
                if action == "restart":
                    listener.cut(reset=True)
                listener.enable()
        elif action == "pause":
            for listener in listeners:
                for stream in ("upstream", "downstream"):
                    if not any(t.name == f"pause_{stream}" for t in listener.toxics):
                        listener.add_toxic("latency", name=f"pause_{stream}", stream=stream, latency=2**31 - 1)
        elif action in ("resume", "heal"):  # heal: every toxic, resume: the pause
            removed = []
            for listener in listeners:
                for toxic in listener.toxics:
                    if action == "heal" or toxic.name.startswith("pause_"):
                        listener.remove_toxic(toxic.name)
                        removed.append(f"{listener.name}:{toxic.name}")
            return {"removed": removed}
        else:
            return {"toxics": self.topology._toxics_on(listeners, action, params)}
        return {}

    def status(self) -> dict[str, Any]:
        return {"balancer": self.balancer.ports, "load_balancer": self.balancer.status(),
                "partitions": list(self.partitions), "queues": self.queues()}

    # -- quorum queues ----------------------------------------------------------------------
    def queues(self) -> dict[str, dict[str, Any]]:
        """Each quorum queue (``vhost/name``, or its name in ``/``) as the live members report
        it: ``members``, ``leader`` (the one the members of the highest term name), ``term``,
        ``online`` (the members that report it)."""
        reports: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for node in self.topology.nodes:
            if node.alive:
                for key, q in (node.last_status.get("quorum") or {}).items():
                    reports.setdefault(key, []).append((node.name, q))
        out: dict[str, dict[str, Any]] = {}
        for key, found in sorted(reports.items()):
            best = max((q for _, q in found), key=lambda q: (q["term"], q["leader"] is not None))
            out[key] = {"vhost": best["vhost"], "name": best["name"], "members": best["members"],
                        "leader": best["leader"], "term": best["term"], "online": sorted(n for n, _ in found)}
        return out

    def _leader_of(self, target: str) -> "list[NodeProcess]":
        q = self.queues().get(target.partition(":")[2])
        leader = q["leader"] if q else None
        return [n for n in self.topology.nodes if n.name == leader]

    def _followers_of(self, target: str) -> "list[NodeProcess]":
        q = self.queues().get(target.partition(":")[2])
        if not q or q["leader"] is None:
            return []
        return [n for n in self.topology.nodes if n.name in q["members"] and n.name != q["leader"]]
