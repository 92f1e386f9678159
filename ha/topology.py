"""Topologies: node processes behind fault proxies, with one supervisor that owns them.

``Topology.run`` starts each node as its own OS process (``mqemu serve``, in a new process
group that dies with the supervisor, so a kill -9 is real and nothing outlives the run) and
one proxy per node and protocol (``proxy.Proxy``). Clients use the proxies' ports. The
supervisor watches each node's status file: a proxy listens, forwarding to its node's own
port, only while its node is active, so a standby's endpoint refuses connections as
ActiveMQ's does, and a node that dies takes its clients' connections with it.

Modes: ``single`` (one node), ``active-standby`` (two nodes on one data directory: the
first to take the lock is active; the other waits as a standby and takes over, see
``node.Node``), ``cluster`` (three nodes or ``nodes``, each with its own data directory,
linked to each other through one proxy per directed pair, behind a balancer: see
``cluster.ClusterParts``) and ``external``: no node process, only proxies in front of TCP
endpoints someone else runs (a real RabbitMQ or ActiveMQ), always listening, so a scenario's
network faults can be replayed against the real engine. Faults (``fault``) are addressed to a
node by name or by role (``active``, ``standby``, ``member``, ``balancer``, ``all``, and
whatever ``add_role`` registers): process faults (kill, stop, start, restart, pause, resume;
not on an external node), network faults on the node's proxies (the toxics of ``toxics``, and
``down``) and, in a cluster, partitions between nodes. Every role change and fault is kept in
``events`` with its time, every fault in ``faults`` with its start and end, and ``facts()``
gives them with each node's own events for a workload's history (``history.facts_records``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import trio

from .listeners import KINDS, LAYOUTS, endpoint_names
from .node import PROTOCOLS
from .proxy import ProxySet, open_proxies
from .toxics import TOXIC_TYPES

log = logging.getLogger("mqemu.ha.topology")

MODES = {"single": 1, "active-standby": 2, "cluster": 3, "external": 0}  # mode -> its default number of nodes (external: one per target node name)
PROCESS_FAULTS = ("kill", "stop", "start", "restart", "pause", "resume")
NETWORK_FAULTS = tuple(TOXIC_TYPES)  # "down" included
ROLES = ("active", "standby", "member", "all")
SERVING = ("active", "member")  # roles whose client proxies listen
WATCH_INTERVAL = 0.02  # how often the supervisor reads its nodes' status files
STOP_GRACE = 5.0  # seconds a stopped node has to exit before it is killed


def _scheme(name: str) -> str:
    """An endpoint's scheme in an ActiveMQ failover URI: tcp, ssl, ws or wss."""
    kind = KINDS.get(name)
    if kind is None or not (kind.tls or kind.websocket):
        return "tcp"
    if kind.websocket:
        return "wss" if kind.tls else "ws"
    return "ssl"


class TopologyError(Exception):
    """A fault or start that cannot be done; the text says why."""


@dataclass(slots=True)
class TopologyOptions:
    mode: str = "active-standby"
    engine: str | None = None  # default: activemq for active-standby, rabbitmq for single
    data_dir: str | None = None  # default for active-standby: a directory in workdir
    timing: str = "fast"
    host: str = "127.0.0.1"
    workdir: str | None = None  # status files and node logs (default: a temporary one, removed at the end)
    config_file: str | None = None
    activemq_xml: str | None = None  # the nodes' --activemq-xml (read again at every restart)
    rabbitmq_conf: str | None = None  # the nodes' --rabbitmq-conf (read again at every restart)
    ready_file: str | None = None
    protocols: tuple[str, ...] = tuple(PROTOCOLS)
    nodes: int | None = None  # cluster: how many nodes (default 3)
    balancer_algorithm: str = "flow-hash"  # cluster: see balancer.ALGORITHMS
    cluster_name: str = "mqemu"
    # the proxies' ports by "node-1/stomp" (absent: a free port), to keep endpoints across runs
    listen_ports: dict[str, int] = field(default_factory=dict)
    # TLS and WebSocket endpoints (``Topology.tls_argv``): ``tls`` gives every node one
    # certificate from one CA the topology makes (in DATA_DIR/tls, else WORKDIR/tls; reused
    # when there), or the user's ``tls_cert``/``tls_key``/``tls_ca``; the nodes open their TLS
    # listeners (amqps, stomps, mqtts) and, with ``websocket``, their WebSocket ones, each
    # behind its own proxy (the balancer in a cluster), the handshake passing through as an
    # NLB's TCP listener does. ``layout="amazon-mq"``: only Amazon MQ's TLS endpoints.
    tls: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_verify_clients: bool = False
    websocket: bool = False
    layout: str = "engine"
    # external mode: "PROTOCOL" or "NODE/PROTOCOL" -> "HOST:PORT" of the broker to proxy
    # (NODE defaults to node-1), e.g. {"amqp": "127.0.0.1:5672", "node-2/stomp": "10.0.0.2:61613"}
    targets: dict[str, str] | None = None


def parse_targets(targets: dict[str, str]) -> dict[str, dict[str, tuple[str, int]]]:
    """External mode's targets by node: {"node-1": {"amqp": ("h", 5672)}}. Raises TopologyError."""
    nodes: dict[str, dict[str, tuple[str, int]]] = {}
    for key, address in targets.items():
        node, _, proto = key.rpartition("/")
        if proto not in PROTOCOLS:
            raise TopologyError(f"target {key!r}: the protocol is one of {', '.join(PROTOCOLS)}")
        host, _, port = str(address).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise TopologyError(f"target {key}={address!r}: give HOST:PORT")
        nodes.setdefault(node or "node-1", {})[proto] = (host.strip("[]"), int(port))
    if not nodes:
        raise TopologyError("external mode needs at least one target, e.g. amqp=127.0.0.1:5672")
    return nodes


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the node gets SIGKILL if the supervisor dies, even by kill -9."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class NodeProcess:
    """One ``mqemu serve`` process and what it reports in its status file."""

    def __init__(self, name: str, argv: list[str], workdir: str) -> None:
        self.name = name
        self.status_path = os.path.join(workdir, f"{name}.status.json")
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.argv = argv + ["--name", name, "--status-file", self.status_path]
        self.proc: subprocess.Popen | None = None
        self.paused = False
        self.events: list[dict[str, Any]] = []  # the running process's own events (its status file)
        self.extra_argv: list[str] = []  # set by the supervisor before the start (a cluster's links)
        self.control_url: str | None = None  # the topology's control endpoint, for the node's web page
        self.last_status: dict[str, Any] = {}
        self.past_events: list[dict[str, Any]] = []  # those of its earlier processes (before a restart)
        self._harvested = False  # the status file was read once more after the process ended

    def start(self) -> None:
        """Start the process (from the trio thread: the death signal follows that thread)."""
        try:
            with open(self.status_path) as f:  # the last words of the previous process
                self.events = json.load(f).get("events", self.events)
        except (OSError, ValueError):
            pass
        self.past_events += self.events
        self.events = []
        self._harvested = False
        try:
            os.unlink(self.status_path)
        except FileNotFoundError:
            pass
        with open(self.log_path, "ab") as out:
            control = ["--control-url", self.control_url] if self.control_url else []
            self.proc = subprocess.Popen(self.argv + self.extra_argv + control, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=_die_with_parent)
        self.paused = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Signal the node's whole process group."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def status(self) -> dict[str, Any]:
        """What the node last wrote (role, its own ports), or the role ``down`` (with, the
        first time, the events its status file still holds: its last words)."""
        if not self.alive:
            if self._harvested or self.proc is None:
                return {"role": "down", "ports": {}}
            self._harvested = True
            return {**self._read(), "role": "down", "ports": {}}
        return self._read() or {"role": "starting", "ports": {}}

    def _read(self) -> dict[str, Any]:
        try:
            with open(self.status_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    async def wait_exit(self, timeout: float) -> bool:
        with trio.move_on_after(timeout):
            while self.alive:
                await trio.sleep(WATCH_INTERVAL)
            return True
        return False


class Topology:
    def __init__(self, options: TopologyOptions) -> None:
        if options.mode not in MODES:
            raise TopologyError(f"unknown mode {options.mode!r}; known: {', '.join(MODES)}")
        self.options = options
        self.mode = options.mode
        self.engine = options.engine or ("activemq" if options.mode == "active-standby" else "rabbitmq")
        self._own_workdir = options.workdir is None  # made here: removed when the run ends
        self.workdir = options.workdir or tempfile.mkdtemp(prefix="mqemu-ha-")
        self.data_dir = options.data_dir
        if self.data_dir is None and options.mode in ("active-standby", "cluster"):
            self.data_dir = os.path.join(self.workdir, "data")
        self.external: dict[str, dict[str, tuple[str, int]]] = {}
        self.tls_files: dict[str, str] | None = None  # cert, key, ca: what every node is given
        if options.mode != "external":
            self._plan_endpoints()
            options = self.options
        elif options.tls or options.tls_cert or options.websocket or options.layout != "engine":
            raise TopologyError("TLS, WebSocket and layouts are for the nodes mqemu runs: an external broker's "
                                "TLS endpoint is a target like any other (the handshake passes through)")
        self.cluster: Any = None  # cluster.ClusterParts in cluster mode
        # role -> the nodes in it now; a prefix ending in ":" takes an argument (leader-of:QUEUE)
        self.role_resolvers: dict[str, Callable[[str], list[NodeProcess]]] = {}
        if options.mode == "external":
            self.external = parse_targets(options.targets or {})
            self.engine = options.engine or "external"
            self.nodes = [NodeProcess(name, [], self.workdir) for name in self.external]
        else:
            if options.targets:
                raise TopologyError("targets are for --mode external (proxies in front of a broker mqemu does "
                                    "not run)")
            count = MODES[options.mode]
            if options.nodes is not None:
                if options.mode != "cluster" or options.nodes < 1:
                    raise TopologyError("nodes: only a cluster takes a number of nodes (1 or more)")
                count = options.nodes
            self.nodes = [NodeProcess(f"node-{i + 1}", self._argv(f"node-{i + 1}"), self.workdir)
                          for i in range(count)]
            if self.mode == "cluster":
                from .cluster import ClusterParts
                self.cluster = ClusterParts(self)
        self.proxies: ProxySet | None = None
        self.roles: dict[str, str] = {name: "external" for name in self.external}
        self.events: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []  # every fault with its start and end (``facts``)
        self._open_toxics: dict[str, dict[str, Any]] = {}  # "proxy:toxic" -> the fault that added it
        self.control_url: str | None = None
        self._port_taken: set[str] = set()  # proxies whose port another socket holds now

    def add_role(self, role: str, resolve: Callable[[str], list[NodeProcess]]) -> None:
        """Make ``role`` a fault target: ``resolve(target)`` gives its nodes now. A role ending
        in ``:`` is a prefix, e.g. ``add_role("leader-of:", ...)`` for ``leader-of:orders``."""
        self.role_resolvers[role] = resolve

    def _plan_endpoints(self) -> None:
        """Widen ``options.protocols`` to the listener names every node opens and the
        proxies (or the balancer) expose, ``amqps`` or ``wss`` as well as ``amqp``
        (``listeners.endpoint_names``), and make or find the TLS files."""
        o = self.options
        if o.layout not in LAYOUTS:
            raise TopologyError(f"unknown layout {o.layout!r}; known: {', '.join(LAYOUTS)}")
        if (o.tls_cert is None) != (o.tls_key is None):
            raise TopologyError("tls_cert and tls_key go together")
        tls = o.tls or o.tls_cert is not None or o.layout == "amazon-mq"
        if o.tls_verify_clients and not tls:
            raise TopologyError("tls_verify_clients needs TLS (tls=True, or tls_cert and tls_key)")
        if o.tls_verify_clients and o.tls_cert is not None and o.tls_ca is None:
            raise TopologyError("tls_verify_clients with the user's certificate needs tls_ca")
        protocols = tuple(p for p in o.protocols if p in PROTOCOLS)
        names = endpoint_names(self.engine, protocols, tls=tls, websocket=o.websocket, layout=o.layout)
        # listeners asked for by name (``amqps``, ``https``: a caller that starts its nodes
        # with their own TLS arguments, as the control plane does) are proxied too
        names += tuple(p for p in o.protocols if p not in PROTOCOLS and p not in names)
        self.options = replace(o, protocols=names)
        if not tls:
            return
        if o.tls_cert is not None:
            self.tls_files = {"cert": o.tls_cert, "key": o.tls_key or "", "ca": o.tls_ca or ""}
            return
        from .tls import TLSError, generate
        try:  # one CA and one node certificate for every node, so clients trust one file
            made = generate(self.data_dir or self.workdir, o.host)
        except TLSError as e:
            raise TopologyError(str(e)) from e
        self.tls_files = {"cert": made.cert_file, "key": made.key_file, "ca": made.ca_file or ""}

    def tls_argv(self) -> list[str]:
        """What a node is given for TLS and WebSocket (nothing without them)."""
        o = self.options
        argv: list[str] = []
        if self.tls_files is not None:
            f = self.tls_files
            argv += ["--tls-cert", f["cert"], "--tls-key", f["key"], "--https-port", "0"]
            argv += ["--tls-ca", f["ca"]] if f["ca"] else []
            argv += ["--tls-verify-clients"] if o.tls_verify_clients else []
        if o.websocket:
            argv.append("--ws")
        if o.layout != "engine":
            argv += ["--profile", o.layout]
        return argv

    def _argv(self, name: str) -> list[str]:
        o = self.options
        argv = [sys.executable, "-m", "mqemu.ha.cli", "serve", "--engine", self.engine, "--host", o.host,
                "--timing", o.timing, "--log-format", "json"]
        for proto in KINDS if self.tls_files is not None or o.websocket else PROTOCOLS:
            argv += [f"--{proto}-port", "0" if proto in o.protocols else "off"]
        argv += ["--http-port", "0"] + self.tls_argv()
        if self.data_dir and self.mode == "cluster":
            argv += ["--data-dir", os.path.join(self.data_dir, name)]  # each member its own store
        elif self.data_dir:
            argv += ["--data-dir", self.data_dir]
            if self.mode == "active-standby":
                argv.append("--standby")
        if o.config_file:
            argv += ["--config", o.config_file]
        if o.activemq_xml:
            argv += ["--activemq-xml", os.path.abspath(o.activemq_xml)]
        if o.rabbitmq_conf:
            argv += ["--rabbitmq-conf", os.path.abspath(o.rabbitmq_conf)]
        return argv

    # -- running ------------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start the proxies and the nodes; report once every node has its role; run until
        cancelled, then stop every node (SIGTERM, then SIGKILL after ``STOP_GRACE``)."""
        async with open_proxies() as proxies:
            self.proxies = proxies
            for name, targets in self.external.items():
                for proto, upstream in targets.items():
                    await proxies.add(f"{name}/{proto}", upstream, (self.options.host, 0),
                                      enabled=True, tags={"node": name, "protocol": proto})
            for node in self.nodes:
                for proto in self.options.protocols if not self.external else ():
                    name = f"{node.name}/{proto}"
                    listen = (self.options.host, self.options.listen_ports.get(name, 0))
                    await proxies.add(name, (self.options.host, 1), listen,
                                      enabled=False, tags={"node": node.name, "protocol": proto})
            for node in self.nodes:  # their web page shows the topology (``open_topology_of`` set the URL)
                node.control_url = self.control_url
            try:
                async with trio.open_nursery() as nursery:
                    if self.cluster is not None:
                        await self.cluster.start(proxies, nursery)
                    nursery.start_soon(self._watch)
                    if self.mode == "cluster":  # members share nothing: start them together
                        for node in self.nodes:
                            node.start()
                    # The first node takes the lock before the second starts, so node-1 is active.
                    for node in self.nodes if not self.external else ():
                        if node.proc is None:
                            node.start()
                        await self._wait_for(lambda n=node: self.roles.get(n.name) in ("standby",) + SERVING, 30,
                                             f"{node.name} did not start (see {node.log_path})")
                    if self.cluster is not None:  # engine timing: 5 checks 30 s apart, as an NLB
                        h = self.cluster.balancer.timing
                        await self._wait_for(self.cluster.ready, 30 + h.interval * h.healthy_threshold,
                                             "the balancer did not find every node "
                                             f"healthy: {self.cluster.balancer.status()['targets']}")
                    task_status.started(self)  # the ready file is written once the control endpoint is up
            finally:
                with trio.CancelScope(shield=True):
                    await self._stop_all()
                if self._own_workdir:
                    shutil.rmtree(self.workdir, ignore_errors=True)

    async def _stop_all(self) -> None:
        for node in self.nodes:
            if node.paused:
                node.signal(signal.SIGCONT)
            node.signal(signal.SIGTERM)
        for node in self.nodes:
            if not await node.wait_exit(STOP_GRACE):
                node.signal(signal.SIGKILL)
                await node.wait_exit(STOP_GRACE)

    async def _wait_for(self, condition: Any, timeout: float, failure: str) -> None:
        with trio.move_on_after(timeout):
            while not condition():
                await trio.sleep(WATCH_INTERVAL)
            return
        raise TopologyError(failure)

    async def _watch(self) -> None:
        """Follow each node's role; a node's proxies listen only while it is active."""
        while True:
            self.refresh()
            await trio.sleep(WATCH_INTERVAL)

    def refresh(self) -> None:
        assert self.proxies is not None
        for node in self.nodes:
            if node.proc is None:
                continue  # not started yet
            status = node.last_status = node.status()
            role, ports = status.get("role", "starting"), status.get("ports", {})
            if "events" in status:  # what the process itself recorded (lock, recovery, listeners)
                node.events = status["events"]
            if self.roles.get(node.name) != role:
                self.roles[node.name] = role
                self._event("role", node=node.name, role=role, pid=node.pid)
                log.info("%s is %s", node.name, role, extra={"node": node.name, "role": role})
            if self.cluster is not None:
                self.cluster.refresh(node, role, status)
            for proxy in self.proxies.select(node=node.name):
                port = ports.get(proxy.tags["protocol"])
                if role in SERVING and port:
                    if proxy.upstream != (self.options.host, port):
                        proxy.upstream = (self.options.host, port)
                    if not proxy.enabled:
                        self._enable(proxy)
                elif proxy.enabled:
                    proxy.disable()

    def _enable(self, proxy: Any) -> None:
        """Listen again on the proxy's port. Another socket may hold that port meanwhile (an
        outgoing connection's local port, from the same ephemeral range): then the endpoint
        refuses, as a node's would, and the next refresh tries again."""
        try:
            proxy.enable()
        except OSError as e:
            if proxy.name not in self._port_taken:
                self._port_taken.add(proxy.name)
                log.warning("%s: port %d is taken (%s); its clients are refused until it is free",
                            proxy.name, proxy.listen_port, e.strerror or e)
        else:
            self._port_taken.discard(proxy.name)

    def _event(self, kind: str, **fields: Any) -> None:
        self.events.append({"time": time.time(), "mono": time.monotonic(), "event": kind, **fields})

    # -- faults ---------------------------------------------------------------------------
    def resolve(self, target: str) -> list[NodeProcess]:
        """Nodes by name or role (``active``, ``standby``, ``all``)."""
        if target == "all":
            return list(self.nodes)
        prefix = target.partition(":")[0] + ":"
        if target in self.role_resolvers:
            found = self.role_resolvers[target](target)
        elif ":" in target and prefix in self.role_resolvers:
            found = self.role_resolvers[prefix](target)
        elif target in ROLES:
            found = [n for n in self.nodes if self.roles.get(n.name) == target]
        else:
            found = [n for n in self.nodes if n.name == target]
        if not found:
            known = ", ".join([n.name for n in self.nodes] + list(ROLES) + list(self.role_resolvers))
            if self.external:
                known = ", ".join([n.name for n in self.nodes] + ["all"])
                raise TopologyError(f"no node is {target!r}: an external topology does not know its brokers' "
                                    f"roles; targets: {known}")
            raise TopologyError(f"no node is {target!r} now (roles: {self.roles}); targets: {known}")
        return found

    async def fault(self, action: str, target: str, *, protocol: str | None = None, **params: Any) -> dict[str, Any]:
        """Apply a fault; returns what it did (nodes, toxic names). Raises TopologyError."""
        if self.cluster is not None and (target == "balancer" or action == "partition"
                                         or (action == "heal" and target == "all")):
            return await self._cluster_fault(action, target, protocol, params)
        nodes = self.resolve(target)
        if action in PROCESS_FAULTS and self.external:
            raise TopologyError(f"{action}: the nodes of an external topology are brokers mqemu does not run; "
                                f"only network faults apply ({', '.join(NETWORK_FAULTS)}; heal)")
        names = [n.name for n in nodes]
        self._event("fault", action=action, target=target, nodes=names,
                    **({"protocol": protocol} if protocol else {}), **params)
        log.info("fault %s %s", action, target, extra={"nodes": names})
        if action in ("heal", "remove"):
            removed = self._heal(nodes, protocol, params.get("name"))
            self._faults_healed(removed)
            return {"action": action, "removed": removed}
        if action not in PROCESS_FAULTS and action not in NETWORK_FAULTS:
            raise TopologyError(f"unknown fault {action!r}; process: {', '.join(PROCESS_FAULTS)}; "
                                f"network: {', '.join(NETWORK_FAULTS)}; heal")
        entry: dict[str, Any] = {"id": len(self.faults) + 1, "action": action, "target": target, "nodes": names,
                                 "time": time.monotonic(), "wall": time.time(), "end": None,
                                 **({"protocol": protocol} if protocol else {}), **params}
        self.faults.append(entry)
        try:
            if action in PROCESS_FAULTS:
                for node in nodes:
                    await self._process_fault(action, node)
                self.refresh()
                return {"action": action, "nodes": names}
            toxics = self._network_fault(action, nodes, protocol, params)
            entry["toxics"] = toxics
            for name in toxics:
                self._open_toxics[name] = entry
            return {"action": action, "nodes": names, "toxics": toxics}
        except BaseException as e:
            entry["error"] = str(e) or type(e).__name__
            raise
        finally:
            if action in PROCESS_FAULTS or "toxics" not in entry:
                entry["end"] = time.monotonic()  # a network fault ends when heal removes its toxics
        raise TopologyError(f"unknown fault {action!r}; process: {', '.join(PROCESS_FAULTS)}; "
                            f"network: {', '.join(NETWORK_FAULTS)}; heal")

    async def _process_fault(self, action: str, node: NodeProcess) -> None:
        if action == "kill":
            node.signal(signal.SIGKILL)
            await node.wait_exit(STOP_GRACE)
        elif action == "stop":
            node.signal(signal.SIGCONT)
            node.signal(signal.SIGTERM)
            if not await node.wait_exit(STOP_GRACE):
                node.signal(signal.SIGKILL)
                await node.wait_exit(STOP_GRACE)
        elif action in ("start", "restart"):
            if action == "restart" and node.alive:
                await self._process_fault("stop", node)
            if not node.alive:
                node.start()
                await self._wait_for(lambda: node.status().get("role") in ("standby",) + SERVING, 30,
                                     f"{node.name} did not come back (see {node.log_path})")
        elif action == "pause":
            node.signal(signal.SIGSTOP)
            node.paused = True
        elif action == "resume":
            node.signal(signal.SIGCONT)
            node.paused = False

    def _network_fault(self, action: str, nodes: list[NodeProcess], protocol: str | None,
                       params: dict[str, Any]) -> list[str]:
        return self._toxics_on([p for node in nodes for p in self._proxies_of(node, protocol)], action, params)

    def _toxics_on(self, proxies: list[Any], action: str, params: dict[str, Any]) -> list[str]:
        names = []
        stream = params.pop("stream", "downstream")
        toxicity = float(params.pop("toxicity", 1.0))
        name = params.pop("name", None)
        for proxy in proxies:
            toxic = proxy.add_toxic(action, name=name, stream=stream, toxicity=toxicity,
                                    **{k: int(v) for k, v in params.items()})
            names.append(f"{proxy.name}:{toxic.name}")
        return names

    async def _cluster_fault(self, action: str, target: str, protocol: str | None,
                             params: dict[str, Any]) -> dict[str, Any]:
        """A cluster's own faults: partitions between nodes, heal, and the balancer role."""
        cluster = self.cluster
        if action == "partition":
            found = self.resolve(target)
            if len(found) != 1:
                raise TopologyError(f"a partition cuts off one node; {target!r} is {[n.name for n in found]}")
            node = found[0]
            others = params.pop("from_", None) or params.pop("from", None)
            if isinstance(others, str):
                others = [o for o in others.split(",") if o]
            peers = [n for o in (others or ["all"]) for n in self.resolve(o) if n is not node]
            self._event("fault", action=action, target=target, nodes=[node.name], **{"from": [p.name for p in peers]},
                        **params)
            links = cluster.partition(node, peers, one_way=bool(params.get("one_way")),
                                      silent=bool(params.get("silent")))
            # a fault like any other (a window of the checker's verdict), over at the heal of all
            self.faults.append({"id": len(self.faults) + 1, "action": action, "target": target, "nodes": [node.name],
                                "from": [p.name for p in peers], "time": time.monotonic(), "wall": time.time(),
                                "end": None, "links": links, **params})
            return {"action": action, "nodes": [node.name], "links": links}
        self._event("fault", action=action, target=target, **({"protocol": protocol} if protocol else {}), **params)
        if target == "balancer":
            done = cluster.balancer_fault(action, {**params, **({"protocol": protocol} if protocol else {})})
            # a fault of the facts too: kill, stop, pause or a toxic until start, resume or heal
            now = time.monotonic()
            if action in ("start", "resume", "heal", "remove"):
                for entry in self.faults:
                    if entry["target"] == "balancer" and entry["end"] is None:
                        entry["end"] = now
            else:
                self.faults.append({"id": len(self.faults) + 1, "action": action, "target": target, "nodes": [],
                                    "time": now, "wall": time.time(), "end": now if action == "restart" else None,
                                    **({"protocol": protocol} if protocol else {})})
            return {"action": action, "nodes": [], **done}
        # heal all: the partitions and every node's network faults
        name = params.get("name")
        removed = self._heal(self.nodes, protocol, name)
        healed = cluster.heal() if name is None else []
        if name is None:
            now = time.monotonic()
            for entry in self.faults:
                if entry["action"] == "partition" and entry["end"] is None:
                    entry["end"] = now
        self._faults_healed(removed)
        return {"action": action, "removed": removed, "healed": healed}

    def _faults_healed(self, removed: list[str]) -> None:
        """A network fault is over once every toxic it added is removed."""
        now = time.monotonic()
        for name in removed:
            entry = self._open_toxics.pop(name, None)
            if entry is not None and entry["end"] is None and not any(
                    e is entry for e in self._open_toxics.values()):
                entry["end"] = now

    def _heal(self, nodes: list[NodeProcess], protocol: str | None, name: str | None) -> list[str]:
        removed = []
        for node in nodes:
            for proxy in self._proxies_of(node, protocol):
                for toxic in proxy.toxics:
                    if name is None or toxic.name == name:
                        proxy.remove_toxic(toxic.name)
                        removed.append(f"{proxy.name}:{toxic.name}")
        return removed

    def _proxies_of(self, node: NodeProcess, protocol: str | None) -> list[Any]:
        assert self.proxies is not None
        tags = {"node": node.name, **({"protocol": protocol} if protocol else {})}
        found = self.proxies.select(**tags)
        if not found:
            raise TopologyError(f"{node.name} has no {protocol} endpoint")
        return found

    # -- what clients and tools read --------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The topology as it is now: nodes with their roles and client ports, the endpoint
        lists and failover strings per protocol, and the events so far."""
        assert self.proxies is not None
        nodes: list[dict[str, Any]] = []
        protocols = [p for p in PROTOCOLS if any(p in t for t in self.external.values())] if self.external \
            else self.options.protocols
        endpoints: dict[str, list[str]] = {proto: [] for proto in protocols}
        host = self.options.host
        for node in self.nodes:
            ports = {p.tags["protocol"]: p.listen_port for p in self.proxies.select(node=node.name)}
            entry: dict[str, Any] = {"name": node.name, "pid": node.pid,
                                     "role": self.roles.get(node.name, "starting"), "paused": node.paused,
                                     "ports": ports, "events": list(node.events)}
            if self.cluster is not None:
                entry["links"] = node.last_status.get("links", {}) if node.alive else {}
                entry["metadata"] = node.last_status.get("metadata") if node.alive else None
                entry["quorum"] = node.last_status.get("quorum") if node.alive else None
                entry["management"] = node.last_status.get("ports", {}).get("http") if node.alive else None
                entry.update(self.cluster.balancer.status()["targets"].get(node.name, {}))
            if self.external:
                entry["upstream"] = {p: f"{h}:{port}" for p, (h, port) in self.external[node.name].items()}
            nodes.append(entry)
            for proto, port in ports.items():
                endpoints[proto].append(f"{host}:{port}")
        return {"mode": self.mode, "engine": self.engine, "control": self.control_url, "data_dir": self.data_dir,
                "workdir": self.workdir, "nodes": nodes, "endpoints": endpoints,
                "failover": {proto: "failover:(" + ",".join(f"{_scheme(proto)}://{e}" for e in eps) + ")"
                             for proto, eps in endpoints.items()},
                **({"ca": self.tls_files["ca"]} if self.tls_files and self.tls_files["ca"] else {}),
                **(self.cluster.status() if self.cluster is not None else {}),
                **({"metadata": metadata_group(nodes)} if self.cluster is not None else {}),
                "events": list(self.events)}

    def facts(self) -> dict[str, Any]:
        """What happened, for a workload's history (``history.facts_records``): every fault with
        its start and end, the supervisor's events and every node process's own events (those
        of earlier processes too), each with ``mono`` (CLOCK_MONOTONIC) times, and this
        process's clock now."""
        return {"clock": {"time": time.monotonic(), "wall": time.time()}, "faults": [dict(f) for f in self.faults],
                "events": list(self.events),
                "nodes": {n.name: n.past_events + n.events for n in self.nodes}}

    def write_ready_file(self) -> None:
        """The topology as JSON in the ready file (if any), written at once (a reader never
        sees half of it); ``open_topology_of`` calls it once the control endpoint is up."""
        path = self.options.ready_file
        if path:
            tmp = f"{path}.tmp{os.getpid()}"
            with open(tmp, "w") as f:
                json.dump({**self.status(), "pid": os.getpid()}, f)
            os.replace(tmp, path)


def metadata_group(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """The metadata group as the live members report it: its members, and its leader (the one
    the members of the highest term name; None while they name none)."""
    reports = [n["metadata"] for n in nodes if n.get("metadata")]
    members = reports[0]["members"] if reports else [n["name"] for n in nodes]
    best = max(reports, key=lambda r: (r["term"], r["leader"] is not None), default=None)
    return {"leader": best["leader"] if best else None, "term": best["term"] if best else 0, "members": members}
