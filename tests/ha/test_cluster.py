"""A three-node cluster of node processes behind the balancer (``mqemu ha up --mode
cluster``): pika through the balancer's one AMQP port while a node is killed (its clients
are cut and reconnect to a live node), the balancer's health of each node, the node-to-node
links as each node reports them under partitions and heal, and a graceful node stop."""

from __future__ import annotations

import json
import time

import pika
import pytest

pytestmark = pytest.mark.timeout(120)

NODES = ("node-1", "node-2", "node-3")


def _pika(endpoint):
    host, port = endpoint
    return pika.BlockingConnection(pika.ConnectionParameters(host, port, connection_attempts=1, socket_timeout=5,
                                                             blocked_connection_timeout=5))


def _links_all_up(status):
    return all(state["out"] == "up" and state["in"] == "up"
               for node in status["nodes"] for state in node["links"].values()) and \
        all(len(node["links"]) == 2 for node in status["nodes"])


def _link(status, node, peer):
    (entry,) = [n for n in status["nodes"] if n["name"] == node]
    state = entry["links"].get(peer, {})
    return state.get("out"), state.get("in")


def test_status_gives_members_balancer_and_links(mqemu_cluster):
    status = mqemu_cluster.wait_until(_links_all_up, what="every link up")
    assert status["mode"] == "cluster" and status["queues"] == {}
    assert [(n["name"], n["role"]) for n in status["nodes"]] == [(name, "member") for name in NODES]
    assert set(status["balancer"]) == {"amqp", "stomp", "mqtt"}
    assert len({n["pid"] for n in status["nodes"]}) == 3
    for node in status["nodes"]:
        assert node["health"] == {"amqp": "healthy", "stomp": "healthy", "mqtt": "healthy"}
        assert set(node["ports"]) == {"amqp", "stomp", "mqtt"}
    import os
    assert sorted(os.listdir(status["data_dir"])) == list(NODES)  # one store per member


def test_a_killed_nodes_clients_are_cut_and_reconnect_through_the_same_port(mqemu_cluster):
    c = mqemu_cluster
    c.wait_until(lambda s: all(n["health"]["amqp"] == "healthy" for n in s["nodes"]))
    endpoint = c.balancer_endpoint("amqp")
    conns = [_pika(endpoint) for _ in range(3)]  # round robin: node-1, node-2, node-3
    counts = {n["name"]: n["connections"] for n in c.status()["nodes"]}
    assert counts == {"node-1": 1, "node-2": 1, "node-3": 1}
    channels = [conn.channel() for conn in conns]
    for ch in channels:
        ch.queue_declare("", exclusive=True)  # each works
    c.kill("node-2")
    with pytest.raises((pika.exceptions.AMQPConnectionError, pika.exceptions.StreamLostError)):
        for _ in range(50):  # the next read meets the reset
            conns[1].process_data_events(0.1)
            channels[1].queue_declare("", exclusive=True)
    for ch in (channels[0], channels[2]):
        ch.queue_declare("", exclusive=True)  # the other nodes' clients are untouched
    status = c.wait_until(lambda s: s["nodes"][1]["health"]["amqp"] == "unhealthy", what="node-2 unhealthy")
    assert status["nodes"][1]["role"] == "down" and status["nodes"][1]["connections"] == 0
    # reconnecting through the same port lands on a live node, every time
    again = [_pika(endpoint) for _ in range(4)]
    counts = {n["name"]: n["connections"] for n in c.status()["nodes"]}
    assert counts["node-2"] == 0 and counts["node-1"] + counts["node-3"] == 6, counts
    for conn in again:
        conn.channel().queue_declare("", exclusive=True)
        conn.close()
    c.start_node("node-2")
    c.wait_until(lambda s: s["nodes"][1]["health"] == {"amqp": "healthy", "stomp": "healthy", "mqtt": "healthy"},
                 what="node-2 healthy again")
    back = [_pika(endpoint) for _ in range(3)]
    assert c.status()["nodes"][1]["connections"] >= 1  # the balancer sends clients to it again
    for conn in back + [conns[0], conns[2]]:
        conn.close()


def test_partitions_and_heal_seen_by_each_nodes_links(mqemu_cluster):
    c = mqemu_cluster
    c.wait_until(_links_all_up, what="every link up")
    cut = c.partition("node-1", from_=["node-2", "node-3"])
    assert sorted(cut) == sorted(["node-1->node-2", "node-2->node-1", "node-1->node-3", "node-3->node-1"])
    status = c.wait_until(lambda s: _link(s, "node-1", "node-2") == ("down", "down")
                          and _link(s, "node-1", "node-3") == ("down", "down")
                          and _link(s, "node-2", "node-1") == ("down", "down")
                          and _link(s, "node-3", "node-1") == ("down", "down"), what="node-1 cut off")
    assert _link(status, "node-2", "node-3") == ("up", "up")  # the majority still talks
    c.heal()
    c.wait_until(_links_all_up, what="every link up after heal")
    # one way: what node-1 sends node-2 is lost; node-1 still hears node-2
    assert c.partition("node-1", from_=["node-2"], one_way=True) == ["node-1->node-2"]
    status = c.wait_until(lambda s: _link(s, "node-1", "node-2")[0] == "down"
                          and _link(s, "node-2", "node-1")[1] == "down", what="node-1 -> node-2 cut")
    assert _link(status, "node-1", "node-2")[1] == "up" and _link(status, "node-2", "node-1")[0] == "up"
    c.heal()
    c.wait_until(_links_all_up, what="every link up after heal")


def test_a_silent_partition_from_the_command_line(mqemu_cluster, capsys):
    from mqemu.ha.cli import main

    c = mqemu_cluster
    c.wait_until(_links_all_up, what="every link up")
    url = c.status()["control"]
    assert main(["fault", "partition", "node-3", "--from", "node-1", "--silent", "--control", url]) == 0
    assert json.loads(capsys.readouterr().out)["links"] == ["node-3->node-1", "node-1->node-3"]
    started = time.monotonic()
    c.wait_until(lambda s: _link(s, "node-3", "node-1") == ("down", "down")
                 and _link(s, "node-1", "node-3") == ("down", "down"), what="node-3 and node-1 apart")
    assert time.monotonic() - started >= 0.5  # found by the 1 s heartbeat timeout, not by a refusal
    assert main(["fault", "heal", "--control", url]) == 0
    assert sorted(json.loads(capsys.readouterr().out)["healed"]) == ["node-1->node-3", "node-3->node-1"]
    c.wait_until(_links_all_up, what="every link up after heal")
    assert main(["ha", "status", "--control", url]) == 0
    assert json.loads(capsys.readouterr().out)["partitions"] == []


def _read_to_eof(sock) -> bytes:
    got = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return got
        got += chunk


def test_a_graceful_stop_closes_clients_as_rabbitmq(mqemu_cluster):
    """AMQP: connection.close 320 CONNECTION_FORCED with rabbit_reader's text; STOMP: the
    plugin's reader dies with its supervisor and closes the socket without an ERROR frame;
    MQTT 3.1.1 has no server DISCONNECT: the socket closes."""
    import socket

    c = mqemu_cluster
    c.wait_until(lambda s: all(n["health"] == {"amqp": "healthy", "stomp": "healthy", "mqtt": "healthy"}
                               for n in s["nodes"]))
    conns = [_pika(c.balancer_endpoint("amqp")) for _ in range(3)]  # round robin: the third is node-3's
    stomps, mqtts = [], []
    for _ in range(3):
        s = socket.create_connection(c.balancer_endpoint("stomp"), timeout=10)
        s.sendall(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\0")
        assert s.recv(65536).startswith(b"CONNECTED")
        stomps.append(s)
        m = socket.create_connection(c.balancer_endpoint("mqtt"), timeout=10)
        m.sendall(b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02id")
        assert m.recv(4) == b"\x20\x02\x00\x00"
        mqtts.append(m)
    assert all(n["connections"] == 3 for n in c.status()["nodes"])
    c.stop_node("node-3")
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        for _ in range(50):
            conns[2].process_data_events(0.1)
    assert (closed.value.reply_code, closed.value.reply_text) == (
        320, "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'")
    assert _read_to_eof(stomps[2]) == b""
    assert _read_to_eof(mqtts[2]) == b""
    conns[0].channel().queue_declare("", exclusive=True)  # node-1's and node-2's clients stay
    for s in stomps[:2]:
        s.sendall(b"DISCONNECT\nreceipt:bye\n\n\0")
        assert b"receipt-id:bye" in s.recv(65536)
    for sock in stomps + mqtts:
        sock.close()
    conns[0].close()
    conns[1].close()


def test_the_balancer_role_stops_and_starts_the_endpoint(mqemu_cluster):
    import socket

    c = mqemu_cluster
    c.wait_until(lambda s: all(n["health"]["amqp"] == "healthy" for n in s["nodes"]))
    conn = _pika(c.balancer_endpoint("amqp"))
    c.kill("balancer")
    with pytest.raises((pika.exceptions.AMQPConnectionError, pika.exceptions.StreamLostError)):
        for _ in range(50):
            conn.process_data_events(0.1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(c.balancer_endpoint("amqp"), timeout=2).close()
    c.start_node("balancer")
    conn = _pika(c.balancer_endpoint("amqp"))
    conn.channel().queue_declare("", exclusive=True)
    conn.close()
    c.pause("balancer")  # connections are accepted, their bytes held back
    s = socket.create_connection(c.balancer_endpoint("amqp"), timeout=1)
    s.sendall(b"AMQP\x00\x00\x09\x01")
    with pytest.raises(socket.timeout):
        s.recv(1)
    c.resume("balancer")
    s.settimeout(5)
    assert s.recv(7)[:3] == b"\x01\x00\x00"  # connection.start, held until now
    s.close()
    assert c.toxic("latency", "balancer", latency=1) == ["balancer/amqp:latency_downstream",
                                                         "balancer/stomp:latency_downstream",
                                                         "balancer/mqtt:latency_downstream"]
    assert len(c.heal("balancer")) == 3
