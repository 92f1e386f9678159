"""External topologies from Python: proxies in front of a broker the topology does not run
(here an mqemu node of the test's own, standing for a real RabbitMQ or ActiveMQ)."""

from __future__ import annotations

import socket

import pytest

from mqemu.ha.cli import main
from mqemu.ha.topology import Topology, TopologyError, TopologyOptions, parse_targets

pytestmark = pytest.mark.timeout(60)


def _greeting(port: int) -> bytes:
    """What an AMQP 0-9-1 server answers to the protocol header (connection.start)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"AMQP\x00\x00\x09\x01")
        return s.recv(7)


def test_the_proxies_forward_to_the_targets_and_take_network_faults(mqemu_server, mqemu_topology):
    t = mqemu_topology(mode="external", targets={"amqp": f"127.0.0.1:{mqemu_server.ports['amqp']}",
                                                 "node-2/amqp": f"127.0.0.1:{mqemu_server.ports['amqp']}"})
    st = t.status()
    assert st["mode"] == "external" and [n["name"] for n in st["nodes"]] == ["node-1", "node-2"]
    assert all(n["role"] == "external" and n["pid"] is None for n in st["nodes"])
    (port1, _), (port2, _) = [(n["ports"]["amqp"], n) for n in st["nodes"]]
    assert st["failover"] == {"amqp": f"failover:(tcp://127.0.0.1:{port1},tcp://127.0.0.1:{port2})"}
    assert _greeting(port1)[:1] == b"\x01"  # a method frame: connection.start, through the proxy
    with t.down("node-1"):
        with pytest.raises(ConnectionRefusedError):
            _greeting(port1)
        assert _greeting(port2)[:1] == b"\x01"  # only node-1's link is down
    assert _greeting(port1)[:1] == b"\x01"
    for action in ("kill", "stop", "restart", "pause"):
        with pytest.raises(TopologyError, match="only network faults apply"):
            t.fault(action, "node-1")
    with pytest.raises(TopologyError, match="does not know its brokers' roles"):
        t.kill("active")
    (fault,) = t.call(t.topology.facts)["faults"]  # the down, with its end; refused faults are not kept
    assert (fault["action"], fault["target"], fault["end"] is not None) == ("down", "node-1", True)


@pytest.mark.parametrize("targets, error", [
    ({}, "at least one target"), ({"amqp": "localhost"}, "give HOST:PORT"), ({"amqp": "h:99999"}, "HOST:PORT"),
    ({"openwire": "h:61616"}, "the protocol is one of amqp, stomp, mqtt")])
def test_bad_targets_are_refused_with_the_reason(targets, error):
    with pytest.raises(TopologyError, match=error):
        parse_targets(targets) if targets else Topology(TopologyOptions(mode="external", targets=targets))


def test_targets_belong_to_external_mode(capsys):
    with pytest.raises(TopologyError, match="--mode external"):
        Topology(TopologyOptions(mode="single", targets={"amqp": "h:1"}))
    assert main(["ha", "up", "--mode", "external", "--target", "amqp"]) == 2
    assert "--target takes [NODE/]PROTOCOL=HOST:PORT" in capsys.readouterr().err
