"""The real brokers behind the control plane: one ``Topology`` (``ha/topology.py``) per
Amazon MQ broker, run in the control plane's trio loop.

SINGLE_INSTANCE is the topology's ``single`` mode, ACTIVE_STANDBY_MULTI_AZ its
``active-standby`` pair on one data directory, CLUSTER_MULTI_AZ (RabbitMQ) its ``cluster``
of three nodes behind the balancer; every node is its own process in its own process group,
stopped with the topology. Clients reach the nodes through the topology's proxies (and a
cluster's balancer), whose ports are kept in the broker's record so that its endpoints stay
the same across reboots and across restarts of ``mqemu aws``.

Endpoints are Amazon MQ's, over TLS (``EndpointStyle``): the nodes run with ``--profile
amazon-mq`` (ActiveMQ amqps, stomps, mqtts, wss; RabbitMQ amqps) and the HTTPS console,
with the control plane's certificate (``BrokerTLS``: one CA for every broker, the file
clients trust); with ``plain`` (``mqemu aws --endpoints plain``) the plain listeners and the
HTTP console instead. The proxies are TCP proxies, so TLS runs from the client to the node.

The nodes read their users (password hashes only) and engine version from a TOML config file
written here (``node_config``) and, on ActiveMQ, the configuration's XML from
``activemq.xml`` beside it (``mqemu serve --activemq-xml``: destinations, authorization
entries, redelivery and dead-letter policies), on RabbitMQ its ``rabbitmq.conf`` (``mqemu
serve --rabbitmq-conf``: consumer_timeout, heartbeat), all written before every start and reboot:
that is how pending user and configuration changes are applied at reboot. A reboot of the
pair restarts the standby first (it serves nothing, so nothing is interrupted) so that it
reads the new config, then stops the active gracefully: the standby takes over and the old
active comes back as the new standby. A cluster restarts one node at a time, the next only
once the balancer finds the last healthy again, so two nodes always serve. A single instance
is stopped gracefully and started again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from typing import Any

import trio

from ..topology import Topology, TopologyError, TopologyOptions

log = logging.getLogger("mqemu.ha.aws")

TOPOLOGY_MODES = {"SINGLE_INSTANCE": "single", "ACTIVE_STANDBY_MULTI_AZ": "active-standby",
                  "CLUSTER_MULTI_AZ": "cluster"}
CLUSTER_HEALTHY_TIMEOUT = 60.0  # seconds a rebooted cluster node has to be healthy in the balancer


@dataclass(frozen=True, slots=True)
class BrokerTLS:
    """The certificate every broker's nodes serve (``--tls-cert``/``--tls-key``) and the CA
    file clients verify them with (``<data-dir>/tls/ca.pem``)."""

    cert_file: str
    key_file: str
    ca_file: str


@dataclass(frozen=True, slots=True)
class EndpointStyle:
    """Which listeners a broker's nodes open and how DescribeBroker names them: per engine,
    (node listener, AWS's URL scheme) in AWS's order, and the console's listener. ``tls``
    None: the plain listeners."""

    tls: BrokerTLS | None

    def listeners(self, engine: str) -> tuple[tuple[str, str], ...]:
        if self.tls is None:
            return (("amqp", "amqp"), ("stomp", "stomp"), ("mqtt", "mqtt"))
        if engine == "activemq":  # AWS also lists ssl:// (OpenWire, 61617), which mqemu does not speak
            return (("amqps", "amqp+ssl"), ("stomps", "stomp+ssl"), ("mqtts", "mqtt+ssl"), ("wss", "wss"))
        return (("amqps", "amqps"),)

    @property
    def console(self) -> str:
        return "http" if self.tls is None else "https"

    def protocols(self, engine: str) -> tuple[str, ...]:
        """The topology's proxied listeners (``TopologyOptions.protocols``)."""
        return tuple(name for name, _ in self.listeners(engine)) + (self.console,)

    def node_args(self, engine: str) -> list[str]:
        """What each node is started with on top of the topology's own arguments."""
        if self.tls is None:
            return []
        args = ["--profile", "amazon-mq", "--tls-cert", self.tls.cert_file, "--tls-key", self.tls.key_file,
                "--tls-ca", self.tls.ca_file, "--http-port", "off", "--https-port", "0"]
        for name, _ in self.listeners(engine):
            args += [f"--{name}-port", "0"]
        return args


PLAIN = EndpointStyle(None)


class _BrokerTopology(Topology):
    """A topology whose nodes take the endpoint style's arguments too."""

    def __init__(self, options: TopologyOptions, node_args: list[str]) -> None:
        self._node_args = node_args
        super().__init__(options)

    def _argv(self, name: str) -> list[str]:
        return super()._argv(name) + self._node_args


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string


def node_config(engine: str, engine_version: str, users: list[dict[str, Any]],
                authorization: list[dict[str, Any]] | None) -> str:
    """The nodes' TOML config: engine version, users (ActiveMQ: with their groups; RabbitMQ:
    the one administrator, on every node of a cluster) by their password hashes, and ActiveMQ
    authorization entries from the configuration."""
    lines = [f"engine = {_toml_value(engine)}", f"engine_version = {_toml_value(engine_version)}", ""]
    for user in users:
        lines += ["[[users]]", f"name = {_toml_value(user['Username'])}",
                  f"password_hash = {_toml_value(user['PasswordHash'])}",
                  f"hashing_algorithm = {_toml_value(user['HashingAlgorithm'])}"]
        if engine == "activemq":
            lines.append(f"groups = {_toml_value(user.get('Groups') or [])}")
        else:
            lines.append('tags = ["administrator"]')
        lines.append("")
    for entry in authorization or ():
        lines.append("[[authorization]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in entry.items()]
        lines.append("")
    return "\n".join(lines)


class BrokerNodes:
    """The running topology of one broker; ``start``, ``reboot`` and ``stop`` from the
    control plane's loop."""

    def __init__(self, home: str, mode: str, engine: str, listen_ports: dict[str, int],
                 style: EndpointStyle = PLAIN) -> None:
        self.home = home
        self.mode = mode
        self.engine = engine
        self.listen_ports = listen_ports
        self.style = style
        self.topology: Topology | None = None
        self._scope: trio.CancelScope | None = None
        self._done: trio.Event | None = None

    @property
    def config_path(self) -> str:
        return os.path.join(self.home, "node.toml")

    @property
    def data_dir(self) -> str:
        return os.path.join(self.home, "data")

    @property
    def xml_path(self) -> str:
        return os.path.join(self.home, "activemq.xml")

    @property
    def conf_path(self) -> str:
        return os.path.join(self.home, "rabbitmq.conf")

    def write_config(self, text: str, activemq_xml: str | None = None, rabbitmq_conf: str | None = None) -> None:
        """The nodes' TOML config and their engine's configuration: on ActiveMQ their
        activemq.xml, on RabbitMQ their rabbitmq.conf."""
        os.makedirs(self.home, exist_ok=True)
        for path, content in ((self.config_path, text), (self.xml_path, activemq_xml),
                              (self.conf_path, rabbitmq_conf)):
            if content is None:
                continue
            tmp = path + ".tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(content)
            os.replace(tmp, path)

    async def start(self, nursery: trio.Nursery) -> None:
        """Start the nodes; returns once each has its role (a cluster's: once the balancer
        finds every node healthy). Raises TopologyError."""
        workdir = os.path.join(self.home, "work")
        os.makedirs(workdir, exist_ok=True)
        os.makedirs(self.data_dir, exist_ok=True)
        try:
            await self._start(nursery, workdir, self.listen_ports)
        except (TopologyError, OSError) as e:
            if not self.listen_ports:
                raise
            log.warning("could not start on the broker's former ports (%s); taking free ones", e)
            await self._start(nursery, workdir, {})
        topology = self.topology
        assert topology is not None and topology.proxies is not None
        self.listen_ports.clear()
        self.listen_ports.update({p.name: p.listen_port for p in topology.proxies.select()})
        if topology.cluster is not None:
            self.listen_ports.update({f"balancer/{proto}": port
                                      for proto, port in topology.cluster.balancer.ports.items()})

    async def _start(self, nursery: trio.Nursery, workdir: str, ports: dict[str, int]) -> None:
        topology = _BrokerTopology(
            TopologyOptions(mode=TOPOLOGY_MODES[self.mode], engine=self.engine, data_dir=self.data_dir,
                            workdir=workdir, config_file=self.config_path, listen_ports=dict(ports),
                            protocols=self.style.protocols(self.engine),
                            activemq_xml=self.xml_path if self.engine == "activemq" else None,
                            rabbitmq_conf=self.conf_path if self.engine == "rabbitmq" else None),
            self.style.node_args(self.engine))
        if topology.cluster is not None:  # the balancer keeps its ports too (the NLB's DNS name)
            for proto, listener in topology.cluster.balancer.listeners.items():
                listener.listen_port = ports.get(f"balancer/{proto}", 0)
        scope = trio.CancelScope()
        done = trio.Event()

        async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await topology.run(task_status=task_status)
            finally:
                done.set()

        await nursery.start(run)
        self.topology, self._scope, self._done = topology, scope, done

    async def reboot(self) -> None:
        """Restart every node so that it reads the config again (see the module's text)."""
        topology = self.topology
        if topology is None:
            return
        if self.mode == "ACTIVE_STANDBY_MULTI_AZ":
            await topology.fault("restart", "standby")
            await topology.fault("restart", "active")
        elif topology.cluster is not None:
            balancer = topology.cluster.balancer
            for node in list(topology.nodes):
                await topology.fault("restart", node.name)
                with trio.move_on_after(CLUSTER_HEALTHY_TIMEOUT) as waited:
                    while not balancer.healthy(node.name):
                        await trio.sleep(0.05)
                if waited.cancelled_caught:
                    raise TopologyError(f"{node.name} is not healthy in the balancer {CLUSTER_HEALTHY_TIMEOUT:.0f} s "
                                    f"after its restart: {balancer.status()['targets'].get(node.name)}")
        else:
            await topology.fault("restart", "node-1")

    async def stop(self) -> None:
        """Stop the nodes (SIGTERM, then SIGKILL after the topology's grace)."""
        if self._scope is not None and self._done is not None:
            self._scope.cancel()
            await self._done.wait()
        self.topology = None

    def remove_data(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)

    def instances(self, host: str = "127.0.0.1") -> list[dict[str, Any]]:
        """``BrokerInstances``: one per ActiveMQ node (with its ``IpAddress``); RabbitMQ one,
        without (the model: it does not apply to RabbitMQ), behind the NLB as on AWS: a
        single node's proxies, a cluster's balancer."""
        topology = self.topology
        if topology is None or topology.proxies is None:
            return []
        if topology.cluster is not None:
            return [self._instance(topology.cluster.balancer.ports, host)]
        return [self._instance(self._node_ports(name), host) for name in (n.name for n in topology.nodes)]

    def nodes(self, host: str = "127.0.0.1") -> list[dict[str, Any]]:
        """mqemu's own view (not AWS's): every node's name, role and own endpoints (a
        cluster node's too, which AWS keeps behind its NLB)."""
        topology = self.topology
        if topology is None or topology.proxies is None:
            return []
        out = []
        for node in topology.nodes:
            instance = self._instance(self._node_ports(node.name), host)
            out.append({"name": node.name, "role": topology.roles.get(node.name, "starting"),
                        "endpoints": instance["Endpoints"], "console": instance["ConsoleURL"]})
        return out

    def _node_ports(self, name: str) -> dict[str, int]:
        assert self.topology is not None and self.topology.proxies is not None
        return {p.tags["protocol"]: p.listen_port for p in self.topology.proxies.select(node=name)}

    def _instance(self, ports: dict[str, int], host: str) -> dict[str, Any]:
        instance: dict[str, Any] = {
            "ConsoleURL": f"{self.style.console}://{host}:{ports[self.style.console]}",
            "Endpoints": [f"{scheme}://{host}:{ports[name]}"
                          for name, scheme in self.style.listeners(self.engine) if name in ports]}
        if self.engine == "activemq":
            instance["IpAddress"] = host
        return instance

    def roles(self) -> dict[str, str]:
        return dict(self.topology.roles) if self.topology is not None else {}
