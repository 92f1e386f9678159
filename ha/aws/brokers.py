"""The real brokers behind the control plane: one ``Topology`` (``ha/topology.py``) per
Amazon MQ broker, run in the control plane's trio loop.

SINGLE_INSTANCE is the topology's ``single`` mode, ACTIVE_STANDBY_MULTI_AZ its
``active-standby`` pair on one data directory; every node is its own process in its own
process group, stopped with the topology. Clients reach the nodes through the topology's
proxies, whose ports are kept in the broker's record so that its endpoints stay the same
across reboots and across restarts of ``mqemu aws``.

The nodes read their users and engine version from a TOML config file written here
(``node_config``) and, on ActiveMQ, the configuration's XML from ``activemq.xml`` beside it
(``mqemu serve --activemq-xml``: destinations, authorization entries, redelivery and
dead-letter policies), both written before every start and reboot: that is how pending user
and configuration changes are applied at reboot. A reboot of the pair restarts the standby
first (it serves nothing, so nothing is interrupted) so that it reads the new config, then
stops the active gracefully: the standby takes over and the old active comes back as the
new standby. A single instance is stopped gracefully and started again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any

import trio

from ..topology import Topology, TopologyError, TopologyOptions

log = logging.getLogger("mqemu.ha.aws")

TOPOLOGY_MODES = {"SINGLE_INSTANCE": "single", "ACTIVE_STANDBY_MULTI_AZ": "active-standby"}
# Schemes AWS gives each engine's endpoints, in AWS's order. mqemu's listeners are plain TCP
# for now, so the endpoints carry the plain schemes (amqp, stomp, mqtt), not +ssl.
ENDPOINT_SCHEMES = {"activemq": ("amqp", "stomp", "mqtt"), "rabbitmq": ("amqp", "stomp", "mqtt")}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string


def node_config(engine: str, engine_version: str, users: list[dict[str, Any]],
                authorization: list[dict[str, Any]] | None) -> str:
    """The nodes' TOML config: engine version, users (ActiveMQ: with their groups; RabbitMQ:
    the one administrator) and ActiveMQ authorization entries from the configuration."""
    lines = [f"engine = {_toml_value(engine)}", f"engine_version = {_toml_value(engine_version)}", ""]
    for user in users:
        lines += ["[[users]]", f"name = {_toml_value(user['Username'])}",
                  f"password = {_toml_value(user['Password'])}"]
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

    def __init__(self, home: str, mode: str, engine: str, listen_ports: dict[str, int]) -> None:
        self.home = home
        self.mode = mode
        self.engine = engine
        self.listen_ports = listen_ports
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

    def write_config(self, text: str, activemq_xml: str | None = None) -> None:
        """The nodes' TOML config and, on ActiveMQ, their activemq.xml."""
        os.makedirs(self.home, exist_ok=True)
        for path, content in ((self.config_path, text), (self.xml_path, activemq_xml)):
            if content is None:
                continue
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write(content)
            os.replace(tmp, path)

    async def start(self, nursery: trio.Nursery) -> None:
        """Start the nodes; returns once each has its role. Raises TopologyError."""
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
        assert self.topology is not None and self.topology.proxies is not None
        self.listen_ports.clear()
        self.listen_ports.update({p.name: p.listen_port for p in self.topology.proxies.select()})

    async def _start(self, nursery: trio.Nursery, workdir: str, ports: dict[str, int]) -> None:
        topology = Topology(TopologyOptions(mode=TOPOLOGY_MODES[self.mode], engine=self.engine,
                                            data_dir=self.data_dir, workdir=workdir,
                                            config_file=self.config_path, listen_ports=dict(ports),
                                            activemq_xml=self.xml_path if self.engine == "activemq" else None))
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
        """``BrokerInstances``: one per node, its endpoints through its proxies."""
        topology = self.topology
        if topology is None or topology.proxies is None:
            return []
        out = []
        for node in topology.nodes:
            ports = {p.tags["protocol"]: p.listen_port for p in topology.proxies.select(node=node.name)}
            out.append({"Endpoints": [f"{scheme}://{host}:{ports[scheme]}"
                                      for scheme in ENDPOINT_SCHEMES[self.engine] if scheme in ports],
                        "IpAddress": host})
        return out

    def roles(self) -> dict[str, str]:
        return dict(self.topology.roles) if self.topology is not None else {}
