"""One broker node: the core, its store and a listener per protocol.

``Node.run`` is a trio task that reports the bound ports (``task_status``); ``open_node`` is
the async context manager around it, and ``NodeThread`` runs a node in a thread of its own
for synchronous code (plain pytest tests, scripts).

A node has a name that its log lines carry and a role: ``standby`` while it waits for its
data directory's lock (an active/standby pair on one directory: no listener is open, clients
are refused), ``active`` once it holds the lock, has recovered the store and listens. The
active checks every keep-alive period that the lock is still its own and stops at once when
it is not. Role changes, the lock, recovery and listener starts are kept as ``events`` and,
with a status file, written there for the topology that runs the node.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections import deque
from contextlib import asynccontextmanager
from functools import partial
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import trio

from mqemu.broker import definitions as defs
from mqemu.broker.config import BrokerConfig, load_config
from mqemu.broker.core import Broker
from mqemu.broker.store.base import Store, StoreError, StoreLocked
from mqemu.broker.store.memory import MemoryStore
from mqemu.protocols.amqp091.server import serve_amqp
from mqemu.protocols.http.server import preload as preload_http
from mqemu.protocols.http.server import make_app, serve_http
from mqemu.protocols.mqtt.server import serve_mqtt
from mqemu.protocols.stomp.server import serve_stomp

from .clustering.meta import ClusterMeta
from .clustering.mgmt import ClusterAsk
from .clustering.quorum import ClusterQuorum
from .clustering.remote import RemoteQueues
from .links import LINK_TIMINGS, LinkTiming, NodeLinks
from .raft.hub import RaftHub
from .listeners import URL_SCHEMES, PlanError, plan, serve_listener, session_factories
from .logs import node_name
from .tls import NodeTLS, TLSError, TLSOptions, load_tls

log = logging.getLogger("mqemu.ha.node")

META_WAIT = 5.0  # seconds a cluster member waits for a metadata leader before it opens its listeners

# protocol -> (serve function, default port per engine)
PROTOCOLS: dict[str, tuple[Any, dict[str, int]]] = {
    "amqp": (serve_amqp, {"rabbitmq": 5672, "activemq": 5672}),
    "stomp": (serve_stomp, {"rabbitmq": 61613, "activemq": 61613}),
    "mqtt": (serve_mqtt, {"rabbitmq": 1883, "activemq": 1883}),
}


def recover_protocols(broker: Broker) -> None:
    """Each protocol rebuilds its node state from the store's records (``recover(broker)`` in
    its server module, where it has one: MQTT's sessions and retained messages), after the
    store's recovery and before any listener opens."""
    for serve, _ports in PROTOCOLS.values():
        recover = getattr(sys.modules[serve.__module__], "recover", None)
        if recover is not None:
            recover(broker)


MAX_EVENTS = 500  # events a node keeps (the oldest go first)


@dataclass(frozen=True, slots=True)
class Timing:
    """How often a standby retries the lock and the active checks it, in seconds."""

    lock_acquire_interval: float
    lock_keepalive: float


# ``engine``: ActiveMQ's lockAcquireSleepInterval (10 s); ActiveMQ checks its lock only when
# lockKeepAlivePeriod is set, and mqemu always checks, every 10 s. ``fast``: for tests.
TIMINGS = {"fast": Timing(0.1, 0.5), "engine": Timing(10.0, 10.0)}


@dataclass(slots=True)
class NodeOptions:
    engine: str = "rabbitmq"
    engine_version: str | None = None  # None: the newest the engine offers (``broker.profile``)
    host: str = "127.0.0.1"
    # port per protocol ("http" too): an int (0 = any free port), None = the engine's default,
    # "off" = none
    ports: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    config_file: str | None = None
    ready_file: str | None = None
    config: BrokerConfig | None = None
    name: str = "node-1"
    # Wait for a locked data directory (a standby) instead of failing to start.
    standby: bool = False
    timing: Timing = TIMINGS["fast"]
    status_file: str | None = None  # rewritten on every role change (JSON, see Node.status)
    # TLS: generated (``TLSOptions(generate=True)``) or the user's files; None: no TLS
    tls: TLSOptions | None = None
    websocket: bool = False  # open the engine's WebSocket listeners (``ha/listeners.py``)
    layout: str = "engine"  # or "amazon-mq": Amazon MQ's TLS-only endpoints
    # listeners not named in ``ports`` take a free port instead of the engine's (tests)
    free_ports: bool = False
    definitions: str | None = None  # a RabbitMQ definitions file loaded at start (``--definitions``)
    cluster: "ClusterOptions | None" = None  # a cluster member: its links to the other nodes
    control_url: str | None = None  # the topology's control endpoint, shown by the web page (``--control-url``)
    stats_interval: float = 5.0  # seconds between samples of the message rates (``protocols/http/rates.py``)
    # RabbitMQ's auth_mechanisms (``--auth-mechanisms``); None: PLAIN and AMQPLAIN
    auth_mechanisms: tuple[str, ...] | None = None
    cert_login_from: str = "common_name"  # or "distinguished_name" (``--ssl-cert-login-from``)


@dataclass(slots=True)
class ClusterOptions:
    """A cluster member's links (``links.NodeLinks``): its cluster port, the cluster's name
    and where each peer's cluster port is (a topology points these at its link proxies)."""

    name: str = "mqemu"
    port: int = 0
    peers: dict[str, tuple[str, int]] = field(default_factory=dict)
    timing: LinkTiming = LINK_TIMINGS["fast"]


class NodeStartError(Exception):
    """A listener or the store could not start; the text names it and the reason."""


class NodeLockLost(Exception):
    """The active's data directory lock is no longer its own: it stopped at once."""


def make_store(data_dir: str | None) -> Store:
    """The SQLite store in data_dir, or the memory store without one."""
    if not data_dir:
        return MemoryStore()
    from mqemu.broker.store.sqlite import SQLiteStore
    return SQLiteStore(data_dir)


class Node:
    def __init__(self, options: NodeOptions | None = None) -> None:
        self.options = options or NodeOptions()
        cfg = self.options.config or load_config(self.options.config_file, self.options.engine,
                                                 self.options.engine_version)
        self.broker = Broker(cfg, store=make_store(self.options.data_dir))
        if self.options.auth_mechanisms is not None:
            unknown = set(self.options.auth_mechanisms) - {"PLAIN", "AMQPLAIN", "EXTERNAL"}
            if unknown or not self.options.auth_mechanisms:
                raise NodeStartError(f"--auth-mechanisms: unknown mechanism(s) {', '.join(sorted(unknown))}; "
                                     "pick from PLAIN, AMQPLAIN, EXTERNAL")
            self.broker.auth.mechanisms = self.options.auth_mechanisms
        self.broker.auth.cert_login_from = self.options.cert_login_from
        self.ports: dict[str, int] = {}
        self.host = self.options.host
        self.name = self.options.name
        self.sessions: set = set()  # live connections of every protocol
        self.accepting: list[trio.CancelScope] = []  # every listener's accept loop
        self.role = "starting"
        # what happened when, for a topology's timeline: the latest MAX_EVENTS (a cluster
        # member records every link change, and the status file carries them all)
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self._lock_lost = False
        tls = self.options.tls
        if self.options.layout == "amazon-mq" and (tls is None or not tls.enabled):
            tls = TLSOptions(generate=True)  # Amazon MQ's endpoints are TLS only
        # The node's TLS material, shared by every TLS listener: ``self.tls.context`` (an
        # ssl.SSLContext), ``cert_file``/``key_file``/``ca_file`` for servers that take paths.
        self.tls: NodeTLS | None = None
        if tls is not None and tls.enabled:
            try:
                self.tls = load_tls(tls, self.options.data_dir, self.host)
            except TLSError as e:
                raise NodeStartError(str(e)) from e
        try:
            # the HTTP listeners are the node's own (``_open_http``), not the plan's
            stream_ports = {k: v for k, v in self.options.ports.items() if k not in ("http", "https")}
            self.listeners = plan(self.broker.profile.name, self.broker.profile.listener_ports, stream_ports,
                                  layout=self.options.layout, tls=self.tls is not None,
                                  websocket=self.options.websocket, free_ports=self.options.free_ports)
        except PlanError as e:
            raise NodeStartError(str(e)) from e
        if self.tls is None and self.options.ports.get("https") not in (None, "off"):
            raise NodeStartError("the https listener needs TLS: add --tls, or --tls-cert and --tls-key")
        cluster = self.options.cluster
        # A cluster member's links to its peers; other parts register their channels on it.
        self.links: NodeLinks | None = None if cluster is None else NodeLinks(
            self.name, cluster.name, cluster.peers, host=self.host, port=cluster.port, timing=cluster.timing,
            on_change=self._link_changed)
        # Its member of the metadata group (``clustering.meta``): the definitions every node holds.
        self.meta: ClusterMeta | None = None
        # The stand-ins of classic queues homed on other nodes, and the home side of its own.
        self.remote: RemoteQueues | None = None
        # Its Raft hub (every group over the links) and its quorum queue members
        # (``clustering.quorum``: the broker's replicator factory, so quorum queues are replicated).
        self.hub: RaftHub | None = None
        self.quorum: ClusterQuorum | None = None
        if self.links is not None:
            self.hub = RaftHub(self.links, [self.name, *self.links.peers])
            self.quorum = ClusterQuorum(self.broker, self.links, self.hub, self.options.data_dir,
                                        is_local_declare=lambda: self.meta is None or not self.meta.applying,
                                        on_change=self._write_status)
            self.broker.replicators = self.quorum
            for vh in self.broker.vhosts.values():
                vh.replicators = self.quorum
        # The management API's view of the other nodes (``clustering.mgmt``); None alone.
        self.cluster_ask: ClusterAsk | None = None

    def url(self, protocol: str) -> str:
        """``amqp://127.0.0.1:5672``, ``amqps://...``, ``ws://127.0.0.1:15674/ws`` ..."""
        port = self.ports[protocol]
        path = "/ws" if protocol in ("stomp-ws", "mqtt-ws", "stomp-wss", "mqtt-wss") else ""
        return f"{URL_SCHEMES.get(protocol, protocol)}://{self.host}:{port}{path}"

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Take the store (as a standby, waiting for its lock), recover it, start the core's
        task and every listener; runs until cancelled."""
        node_name.set(self.name)  # every log line of this node's tasks carries its name
        broker = self.broker
        if self.http_plan():  # the HTTP stack imports while the store opens
            threading.Thread(target=preload_http, name="mqemu-http-import", daemon=True).start()
        snapshot = await self._take_store()
        try:
            # the file's vhosts exist before recovery, so their stored queues come back
            defs_path = self.options.definitions
            definitions = self._read_definitions(defs_path) if defs_path else None
            saved = defs.restore_vhosts(broker, snapshot.records)  # users, vhosts, policies made before
            report = broker.recover(snapshot)
            del snapshot
            recover_protocols(broker)
            if self.quorum is not None:
                self.quorum.rebuild()  # recovery made its quorum queues classic: on their Raft logs now
            if saved is not None:
                defs.restore_access(broker, saved)
            if defs_path and definitions is not None:
                self._load_definitions(defs_path, definitions)
            self._event("recovered", seconds=round(report.seconds, 3), messages=report.messages)
            if self.options.data_dir:
                log.info("store: SQLite in %s; recovered %d exchanges, %d queues, %d bindings, %d messages "
                         "in %.2f s", os.path.abspath(self.options.data_dir), report.exchanges, report.queues,
                         report.bindings, report.messages, report.seconds)
            else:
                log.info("store: memory only (no --data-dir): nothing survives a restart")
            log.info("emulating %s %s", broker.profile.product, broker.profile.release)
            if broker.auth.open:
                log.warning("auth: no users in the config: every login is accepted and nothing is "
                            "authorised (stock ActiveMQ without an authentication plugin)")
            async with trio.open_nursery() as nursery:
                await nursery.start(broker.store.run)
                await nursery.start(broker.run)
                if self.options.data_dir:
                    nursery.start_soon(self._keep_lock)
                if self.links is not None:
                    try:
                        port = await nursery.start(self.links.run)
                    except OSError as e:
                        raise NodeStartError(f"cannot listen for the cluster links on {self.host}:"
                                             f"{self.links.port}: {e.strerror or e}") from e
                    self._event("listening", protocol="cluster", port=port)
                    await self._start_meta(nursery)
                if self.tls is not None:
                    log.info("tls: clients verify this node with the CA certificate %s",
                             self.tls.ca_file or "(none given: --tls-ca names it)",
                             extra={"ca": self.tls.ca_file, "cert": self.tls.cert_file})
                makers, tasks = session_factories(broker, {p for kind, _ in self.listeners for p in kind.protocols})
                for task in tasks:
                    nursery.start_soon(task)
                for kind, port in self.listeners:
                    try:
                        bound = await nursery.start(partial(
                            serve_listener, broker, kind, self.host, port, makers,
                            context=self.tls.context if self.tls else None,
                            sessions=self.sessions, accepting=self.accepting))
                    except OSError as e:
                        raise NodeStartError(f"cannot listen for {kind.name.upper()} on {self.host}:{port}: "
                                             f"{e.strerror or e}; pick another port with --{kind.name}-port") from e
                    self.ports[kind.name] = bound
                    log.info("listening", extra={"protocol": kind.name, "host": self.host, "port": bound})
                    self._event("listening", protocol=kind.name, port=bound)
                await self._open_http(nursery)
                self._write_ready_file()
                self._set_role("active" if self.links is None else "member")
                task_status.started(self.ports)
        finally:
            self.role = "stopped"
            with trio.CancelScope(shield=True):
                await broker.store.close(flush=not self._lock_lost)
            if self.options.ready_file:
                try:
                    os.unlink(self.options.ready_file)
                except OSError:
                    pass
            if self.tls is not None:
                self.tls.discard()

    async def _start_meta(self, nursery: trio.Nursery) -> None:
        """The node's Raft hub and its member of the metadata group; the listeners open once
        the group has a leader, or after ``META_WAIT`` seconds without one (this node then
        refuses definition changes until it reaches a majority)."""
        assert self.links is not None and self.hub is not None and self.quorum is not None
        hub = self.hub
        await nursery.start(hub.run)
        self.remote = RemoteQueues(self.broker, self.links)
        await nursery.start(self.remote.run)
        await nursery.start(self.quorum.run)
        self.meta = ClusterMeta(self.broker, self.links, hub, self.options.data_dir, on_change=self._meta_changed)
        self.meta.remote = self.remote
        await nursery.start(self.meta.run)
        # the management API's questions to the other nodes (``protocols/http/cluster.py``)
        self.cluster_ask = ClusterAsk(self.links, hub.names, self._mgmt_answer, self._queue_home)
        await nursery.start(self.cluster_ask.run)
        if not await self.meta.wait_for_leader(META_WAIT):
            log.warning("metadata group: no leader after %.0f s; definition changes are refused until "
                        "a majority of the nodes is reachable", META_WAIT)

    def _mgmt_answer(self, op: str, args: dict[str, Any]) -> Any:
        from mqemu.protocols.http.cluster import answer  # starlette: imported when a peer first asks

        return answer(self, op, args)

    def _queue_home(self, vhost: str, queue: str) -> str | None:
        """The node whose figures the management API shows for a queue: a classic queue's home
        (where it was declared); a quorum queue's leader, as RabbitMQ shows it (while this
        node knows none, the declaring node, which every node names alike)."""
        item = self.meta.state.queues.get((vhost, queue)) if self.meta is not None else None
        if item is None:
            return None
        if item.get("type") == "quorum":
            vh = self.broker.vhosts.get(vhost)
            placement = getattr(vh.queues.get(queue), "placement", None) if vh is not None else None
            found = placement() if placement is not None else None
            return (found or {}).get("leader") or item.get("node")
        return item.get("node")

    def _meta_changed(self, status: dict[str, Any]) -> None:
        self._event("metadata", leader=status["leader"], term=status["term"])

    def _read_definitions(self, path: str) -> Any:
        """The definitions file's JSON; its vhosts are made now, before recovery (a file
        rejected later stops the node, so they never outlive a bad file)."""
        from mqemu.broker.definitions import DefinitionsError, read_file

        try:
            data = read_file(path)
        except DefinitionsError as e:
            raise NodeStartError(str(e)) from e
        vhosts = data.get("vhosts") if isinstance(data, dict) else None
        for item in vhosts if isinstance(vhosts, list) else ():
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                self.broker.add_vhost(item["name"])
        return data

    def _load_definitions(self, path: str, data: Any) -> None:
        """RabbitMQ's load_definitions: the whole file or nothing, before any listener opens."""
        from mqemu.broker.definitions import DefinitionsError, import_definitions

        try:
            import_definitions(self.broker, data)
        except DefinitionsError as e:
            raise NodeStartError(f"definitions file {path} rejected, nothing applied: {e}") from e
        defs.save_access(self.broker)
        log.info("definitions loaded from %s", path)
        self._event("definitions", file=path)

    def http_plan(self) -> list[tuple[str, Any]]:
        """The HTTP listeners to open, (name, port): ``http`` (``--http-port``; default the
        engine's management port) and, with TLS, ``https`` (``--https-port``; default
        RabbitMQ 15671, ActiveMQ 8162). The amazon-mq layout opens only HTTPS, on Amazon MQ's
        console port (RabbitMQ 443, ActiveMQ 8162), unless a port is given."""
        amazon = self.options.layout == "amazon-mq"
        wanted: list[tuple[str, Any]] = []
        port = self.options.ports.get("http")
        if port != "off" and not (amazon and port is None):
            wanted.append(("http", self.broker.profile.http_port if port is None else port))
        port = self.options.ports.get("https")
        if self.tls is not None and port != "off":
            if port is None:
                port = 0 if self.options.free_ports else (
                    self.broker.profile.amazon_mq_https_port if amazon else self.broker.profile.https_port)
            wanted.append(("https", port))
        return wanted

    async def _open_http(self, nursery: trio.Nursery) -> None:
        """The HTTP and HTTPS listeners (``http_plan``), serving one app. They never take
        the node down: a port that cannot be bound is logged and the node runs on without
        it."""
        wanted = self.http_plan()
        if not wanted:
            return
        app = make_app(self)
        for name, port in wanted:
            try:
                bound = await nursery.start(partial(serve_http, self, self.host, int(port), accepting=self.accepting,
                                                    tls=self.tls if name == "https" else None, app=app))
            except Exception as e:
                why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                log.error("cannot listen for %s on %s:%s: %s; the node runs without it (pick another port "
                          "with --%s-port)", name.upper(), self.host, port, why, name)
                self._event("listener-failed", protocol=name, port=int(port), error=why)
                continue
            self.ports[name] = bound
            log.info("listening", extra={"protocol": name, "host": self.host, "port": bound})
            self._event("listening", protocol=name, port=bound)

    async def _take_store(self) -> Any:
        """Open the store; a standby retries a locked data directory until it gets it."""
        waited_since = None
        while True:
            attempt = (time.time(), time.monotonic())  # the store takes the lock first, then loads
            try:
                snapshot = await self.broker.store.open()
            except StoreLocked as e:
                if not self.options.standby:
                    raise NodeStartError(str(e)) from e
                if waited_since is None:
                    waited_since = time.monotonic()
                    log.info("standby: waiting for the lock on %s (every %.1f s)", self.options.data_dir,
                             self.options.timing.lock_acquire_interval)
                    self._set_role("standby")
                await trio.sleep(self.options.timing.lock_acquire_interval)
                continue
            except StoreError as e:
                raise NodeStartError(str(e)) from e
            if waited_since is not None:
                waited = attempt[1] - waited_since
                log.info("took the lock on %s after %.2f s as standby", self.options.data_dir, waited)
                self._event("lock-acquired", at=attempt, waited=round(waited, 3))
            elif self.options.data_dir:
                self._event("lock-acquired", at=attempt, waited=0.0)
            if self.options.data_dir:  # what the store's open took after the lock: reading it
                self._event("store-loaded", seconds=round(time.monotonic() - attempt[1], 3))
            return snapshot

    async def _keep_lock(self) -> None:
        """The active's keep-alive: stop at once when the lock is no longer ours."""
        while True:
            await trio.sleep(self.options.timing.lock_keepalive)
            if not self.broker.store.lock_held():
                self._lock_lost = True
                self._event("lock-lost")
                log.error("lost the lock on %s (its lock file was removed or replaced): stopping at once, "
                          "writing nothing more", self.options.data_dir)
                raise NodeLockLost(f"lost the lock on {self.options.data_dir}")

    # -- what a topology reads --------------------------------------------------------
    def status(self) -> dict[str, Any]:
        status = {"name": self.name, "pid": os.getpid(), "role": self.role, "ports": dict(self.ports),
                  "events": list(self.events)}
        if self.links is not None:
            status["cluster_port"] = self.links.port
            status["links"] = self.links.state()
        if self.meta is not None:
            status["metadata"] = self.meta.status()
        if self.quorum is not None:
            status["quorum"] = self.quorum.status()
        return status

    def quorum_critical(self) -> list[dict[str, str]]:
        """The quorum queues stopping this node would leave without a majority of online
        members, as RabbitMQ's ``node-is-quorum-critical`` health check lists them."""
        if self.quorum is None:
            return []
        return [{"readable_name": f"queue '{name}' in vhost '{vhost}'", "name": name, "virtual_host": vhost,
                 "type": "quorum"} for vhost, name in self.quorum.critical()]

    def _link_changed(self, peer: str, direction: str, up: bool) -> None:
        if self.remote is not None:
            self.remote.link_changed(peer)
        if self.meta is not None:
            self.meta.refresh_homes()
        if self.quorum is not None:
            self.quorum.links_changed(peer, up)
        self._event("link", peer=peer, direction=direction, state="up" if up else "down")

    def _event(self, kind: str, at: tuple[float, float] | None = None, **fields: Any) -> None:
        """Record an event now (or ``at`` = (wall, monotonic) times). ``time``: wall clock, for
        people; ``mono``: CLOCK_MONOTONIC, comparable with the histories of any process on
        this machine (``history.facts_records``)."""
        wall, mono = at or (time.time(), time.monotonic())
        self.events.append({"time": wall, "mono": mono, "event": kind, **fields})
        self._write_status()

    def _set_role(self, role: str) -> None:
        self.role = role
        log.info("role: %s", role, extra={"role": role})
        self._event("role", role=role)

    def _write_status(self) -> None:
        if self.options.status_file:
            _write_json(self.options.status_file, self.status())

    async def shutdown(self, grace: float = 1.0) -> None:
        """Close every connection the way its protocol says a server closes one (AMQP:
        connection.close 320; MQTT 5: DISCONNECT 0x8B; STOMP: ERROR), then wait up to ``grace``
        seconds for them to go. The caller then cancels ``run``. The listeners close first, so
        no client connects (to be closed again) while the node stops: a standby that takes
        over is where reconnecting clients land, as on ActiveMQ."""
        for scope in self.accepting:
            scope.cancel()
        for session in list(self.sessions):
            close = getattr(session, "server_close", None)
            if close is not None:
                close()
        with trio.move_on_after(grace):
            while self.sessions:
                await trio.sleep(0.02)

    def _write_ready_file(self) -> None:
        if self.options.ready_file:
            extra: dict[str, Any] = {"ca": self.tls.ca_file} if self.tls is not None and self.tls.ca_file else {}
            if self.links is not None:
                extra["cluster"] = self.links.port
            _write_json(self.options.ready_file, {**self.ports, **extra, "pid": os.getpid()})


def _write_json(path: str, obj: Any) -> None:
    """Replace path's content at once: a reader never sees half a file."""
    tmp = f"{path}.tmp{os.getpid()}.{threading.get_ident()}"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


@asynccontextmanager
async def open_node(**kwargs: Any) -> AsyncIterator[Node]:
    """Run a node for the body of the block, e.g. ``async with open_node(ports={"amqp": 0})``.

    Unnamed listeners listen on port 0 (a free port) here, unlike ``mqemu serve``; HTTP and
    HTTPS are off unless ``ports={"http": 0}`` (``"https"``) asks for it.
    """
    kwargs.setdefault("free_ports", True)
    kwargs["ports"] = {"http": "off", "https": "off", **kwargs.get("ports", {})}
    node = Node(NodeOptions(**kwargs))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        try:
            yield node
        finally:
            nursery.cancel_scope.cancel()


class LoopThread:
    """A trio task run by a background thread with its own trio loop, for synchronous callers.

    Subclasses give ``serve(task_status)``, which reports started once the thing is ready;
    ``start()`` returns then (or raises what stopped it), ``stop()`` cancels it and joins
    the thread. ``call(fn, *args)`` runs a sync function in that loop and returns its result.
    """

    thread_name = "mqemu"
    start_error: type[Exception] = TimeoutError

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        raise NotImplementedError

    def start(self, timeout: float = 10) -> Any:
        self._thread = threading.Thread(target=self._main, name=self.thread_name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise self.start_error(f"{self.thread_name} did not start within {timeout} s")
        if self._error is not None:
            raise self._error
        return self

    def _main(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            with trio.CancelScope() as scope:
                self._cancel = scope
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.serve)
                    self._ready.set()
        try:
            trio.run(main)
        except BaseException as e:  # reported to start() or kept for stop()
            self._error = e
        finally:
            self._ready.set()

    def stop(self, timeout: float = 10) -> None:
        if self._token is not None and self._cancel is not None:
            try:
                self._token.run_sync_soon(self._cancel.cancel)
            except trio.RunFinishedError:
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    def call(self, fn: Any, *args: Any) -> Any:
        assert self._token is not None
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class NodeThread(LoopThread):
    """A node in a background thread with its own trio loop, for synchronous callers.

    ``start()`` returns once every listener is bound (or raises what stopped it);
    ``stop()`` cancels the node and joins the thread.
    """

    thread_name = "mqemu-node"
    start_error = NodeStartError

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        kwargs.setdefault("free_ports", True)
        kwargs["ports"] = {"http": "off", "https": "off", **kwargs.get("ports", {})}
        self.node = Node(NodeOptions(**kwargs))

    @property
    def ports(self) -> dict[str, int]:
        return self.node.ports

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await self.node.run(task_status=task_status)
