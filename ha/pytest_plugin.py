"""pytest fixtures that hand a test a running mqemu node (installed as a pytest plugin).

- ``mqemu_server``: a node in a background thread for plain synchronous tests; it has
  ``.ports`` (``{"amqp": 40123, "stomp": ..., "mqtt": ...}``) and ``.url("amqp")``.
- ``mqemu_node``: the same inside the test's own trio loop (pytest-trio tests).
- ``mqemu_start``: a factory for other settings, e.g. ``mqemu_start(engine="activemq")`` or
  ``mqemu_start(engine_version="3.13")``;
  every node it starts is stopped after the test.
- ``mqemu_active_standby``: an ActiveMQ-engine active/standby pair, each node its own process,
  behind fault proxies (``harness.TopologyThread``): ``.endpoints("stomp")``,
  ``.failover("stomp")``, ``.kill("active")``, ``.pause("standby")``, ``with
  pair.down("active"):`` ...; ``mqemu_topology`` is the factory for other settings
  (``mode="single"``, ``engine="rabbitmq"``, ``timing="engine"``, or ``mode="external",
  targets={"amqp": "HOST:PORT"}`` for proxies in front of a broker the test does not run).
- ``mqemu_cluster``: a three-node RabbitMQ-engine cluster, each node its own process and
  store, behind a round-robin balancer: ``.balancer_endpoint("amqp")``, ``.kill("node-2")``,
  ``.partition("node-1", from_=["node-2"])``, ``.heal()``, ``.links("node-1")``.
- ``mqemu_aws``: the Amazon MQ control plane (``mqemu aws``) and a boto3 ``mq`` client bound to it;
  brokers have Amazon MQ's TLS endpoints (``.ca_file``, ``.ssl_context()`` verify them);
  ``mqemu_aws_plain`` the same with plain endpoints (``--endpoints plain``), for clients
  without TLS such as the harness's workload.
- ``mqemu_harness``: workloads through that pair's endpoints, faults recorded in their
  histories, and the checker's verdict (``harness.Harness``): ``h.workload("stomp",
  count=500)``, ``h.fault("kill", "active")``, ``h.check().counts.lost == 0``.

Every listener is on a free port of 127.0.0.1, so tests can run side by side.
"""

from __future__ import annotations

import os
from typing import Any, AsyncIterator, Callable, Iterator

import pytest

from .harness import Harness, TopologyThread
from .node import NodeThread, open_node


class RunningNode:
    """What the synchronous fixtures yield: the node's ports and URLs."""

    def __init__(self, thread: NodeThread) -> None:
        self._thread = thread
        self.node = thread.node
        self.broker = thread.node.broker
        self.host = thread.node.host

    @property
    def ports(self) -> dict[str, int]:
        return self.node.ports

    def url(self, protocol: str) -> str:
        return self.node.url(protocol)


@pytest.fixture
def mqemu_start() -> Iterator[Callable[..., RunningNode]]:
    started: list[NodeThread] = []

    def start(**kwargs: Any) -> RunningNode:
        thread = NodeThread(**kwargs).start()
        started.append(thread)
        return RunningNode(thread)

    yield start
    for thread in started:
        thread.stop()


@pytest.fixture
def mqemu_server(mqemu_start: Callable[..., RunningNode]) -> RunningNode:
    return mqemu_start()


@pytest.fixture
async def mqemu_node() -> AsyncIterator[Any]:
    async with open_node() as node:
        yield node


@pytest.fixture
def mqemu_topology(tmp_path: Any) -> Iterator[Callable[..., TopologyThread]]:
    """A factory: ``mqemu_topology(mode="single", engine="rabbitmq")``; every topology it
    starts is stopped (its node processes with it) after the test."""
    started: list[TopologyThread] = []

    def start(**kwargs: Any) -> TopologyThread:
        kwargs.setdefault("workdir", str(tmp_path / f"topology-{len(started) + 1}"))
        os.makedirs(kwargs["workdir"], exist_ok=True)
        topology = TopologyThread(**kwargs).start()
        started.append(topology)
        return topology

    yield start
    for topology in started:
        topology.stop()


@pytest.fixture
def mqemu_active_standby(mqemu_topology: Callable[..., TopologyThread]) -> TopologyThread:
    return mqemu_topology(mode="active-standby")


@pytest.fixture
def mqemu_cluster(mqemu_topology: Callable[..., TopologyThread]) -> TopologyThread:
    return mqemu_topology(mode="cluster", balancer_algorithm="round-robin")


@pytest.fixture
def mqemu_harness(mqemu_active_standby: TopologyThread, tmp_path: Any) -> Harness:
    return Harness(mqemu_active_standby, str(tmp_path))


@pytest.fixture
def mqemu_aws(tmp_path: Any) -> Iterator[Any]:
    """``mqemu aws`` in a subprocess with a data dir under ``tmp_path``: ``.client`` is a
    boto3 ``mq`` client bound to it (dummy credentials, us-east-1), ``.endpoint`` its URL;
    ``.wait_state(broker_id, "RUNNING")``, ``.endpoints(described, "stomp")`` and
    ``.restart()`` help (``aws.testing.AwsControlPlane``). Every broker's nodes stop with it.
    Endpoints are TLS, as on Amazon MQ: ``.ca_file`` is the CA that verifies them."""
    from .aws.testing import AwsControlPlane

    plane = AwsControlPlane(str(tmp_path)).start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def mqemu_aws_plain(tmp_path: Any) -> Iterator[Any]:
    """``mqemu_aws`` whose brokers listen on plain TCP (``amqp://``, ``stomp://``, ``mqtt://``)
    and serve their console over HTTP."""
    from .aws.testing import AwsControlPlane

    plane = AwsControlPlane(str(tmp_path), endpoints="plain").start()
    try:
        yield plane
    finally:
        plane.stop()
