"""TLS and WebSocket endpoints of topologies (``TopologyOptions.tls``/``websocket``): every
node gets one certificate from one CA, its TLS and WebSocket listeners sit behind proxies
(the balancer in a cluster) that pass the TLS handshake through, and clients that verify the
CA reconnect over TLS to the same endpoints after a kill -9."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time

import paho.mqtt.client as mqtt
import pika
import pytest
import stomp
from ha_processes import HaUp
from paho.mqtt.enums import CallbackAPIVersion
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from mqemu.ha.listeners import endpoint_names
from mqemu.ha.topology import Topology, TopologyError, TopologyOptions

pytestmark = pytest.mark.timeout(120)


def _pika_tls(endpoints, ca: str, timeout: float = 30) -> pika.BlockingConnection:
    """Connect over TLS (verifying the CA and the name localhost) to the first endpoint that
    answers, trying the list again until timeout, as a client with a failover list does."""
    deadline = time.monotonic() + timeout
    while True:
        for host, port in endpoints:
            context = ssl.create_default_context(cafile=ca)
            try:
                return pika.BlockingConnection(pika.ConnectionParameters(
                    host, port, ssl_options=pika.SSLOptions(context, "localhost"), connection_attempts=1,
                    socket_timeout=2))
            except pika.exceptions.AMQPConnectionError:
                continue
        assert time.monotonic() < deadline, f"no TLS endpoint of {endpoints} answered"
        time.sleep(0.05)


def _publish_confirmed(conn: pika.BlockingConnection, queue: str, bodies: list[bytes]) -> None:
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    ch.confirm_delivery()
    for body in bodies:
        ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))


def _drain(conn: pika.BlockingConnection, queue: str) -> list[bytes]:
    ch = conn.channel()
    out = []
    while True:
        method, _, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append(body)


def _wss_stomp_connect(port: int, ca: str) -> bytes:
    """A STOMP CONNECT over wss through the proxy; returns the first frame's command line."""
    sock = ssl.create_default_context(cafile=ca).wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")
    ws = WSConnection(ConnectionType.CLIENT)
    try:
        sock.sendall(ws.send(Request(host="localhost", target="/", subprotocols=["v12.stomp"])))
        payload = b""
        accepted = False
        while b"\n" not in payload:
            data = sock.recv(65536)
            assert data, "the wss endpoint closed"
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    accepted = True
                    sock.sendall(ws.send(TextMessage(data="CONNECT\naccept-version:1.2\nhost:/\n"
                                                          "login:guest\npasscode:guest\n\n\x00")))
                elif isinstance(event, TextMessage):
                    payload += event.data.encode()
        assert accepted
        return payload.split(b"\n", 1)[0]
    finally:
        sock.close()


class _Receipts(stomp.ConnectionListener):
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.receipts: set[str] = set()
        self.messages: list[str] = []

    def on_receipt(self, frame) -> None:
        with self.cond:
            self.receipts.add(frame.headers["receipt-id"])
            self.cond.notify_all()

    def on_message(self, frame) -> None:
        with self.cond:
            self.messages.append(frame.body)
            self.cond.notify_all()

    def wait(self, test) -> None:
        with self.cond:
            assert self.cond.wait_for(test, timeout=10)


def test_endpoint_names_per_engine_and_layout():
    everything = ("amqp", "stomp", "mqtt")
    assert endpoint_names("activemq", everything, tls=True, websocket=True) == (
        "amqp", "stomp", "mqtt", "amqps", "stomps", "mqtts", "ws", "wss")
    assert endpoint_names("rabbitmq", everything, tls=True) == ("amqp", "stomp", "mqtt", "amqps", "stomps", "mqtts")
    assert endpoint_names("rabbitmq", ("stomp",), websocket=True) == ("stomp", "stomp-ws")
    assert endpoint_names("activemq", everything, tls=True, layout="amazon-mq") == ("amqps", "stomps", "mqtts", "wss")
    assert endpoint_names("rabbitmq", everything, tls=True, layout="amazon-mq") == ("amqps",)


def test_a_tls_topology_gives_its_nodes_one_ca_and_port_zero_everywhere(tmp_path):
    t = Topology(TopologyOptions(mode="active-standby", tls=True, websocket=True, workdir=str(tmp_path)))
    assert t.options.protocols == ("amqp", "stomp", "mqtt", "amqps", "stomps", "mqtts", "ws", "wss")
    files = t.tls_files
    assert files is not None and files["ca"] == str(tmp_path / "data" / "tls" / "ca.pem")
    for node in t.nodes:
        argv = node.argv
        for name in t.options.protocols:
            assert argv[argv.index(f"--{name}-port") + 1] == "0"
        assert argv[argv.index("--https-port") + 1] == "0"  # no fixed HTTPS port shared by two nodes
        assert argv[argv.index("--tls-ca") + 1] == files["ca"] and "--ws" in argv
    plain = Topology(TopologyOptions(mode="single", workdir=str(tmp_path / "plain")))
    assert plain.tls_files is None and "--tls-cert" not in plain.nodes[0].argv
    with pytest.raises(TopologyError, match="TLS"):
        Topology(TopologyOptions(mode="single", tls_verify_clients=True, workdir=str(tmp_path / "bad")))


def test_an_active_standby_pair_over_tls_fails_over_to_the_same_endpoints(mqemu_topology):
    pair = mqemu_topology(mode="active-standby", tls=True, websocket=True)
    status = pair.status()
    ca = status["ca"]
    assert {"amqps", "stomps", "mqtts", "ws", "wss"} <= set(status["endpoints"])
    assert status["failover"]["stomps"].startswith("failover:(ssl://")
    assert status["failover"]["wss"].startswith("failover:(wss://")
    endpoints = pair.endpoints("amqps")
    first = pair.node("active")["name"]

    # stomp.py and paho verify the CA through the active's proxies; wss too
    port = pair.node("active")["ports"]["stomps"]
    conn = stomp.Connection12([("localhost", port)], timeout=5)
    conn.set_ssl(for_hosts=[("localhost", port)], ca_certs=ca)
    listener = _Receipts()
    conn.set_listener("", listener)
    conn.connect("admin", "admin", wait=True)
    conn.send("/queue/tls-ha", "over stomp+ssl", receipt="sent", headers={"persistent": "true"})
    listener.wait(lambda: "sent" in listener.receipts)
    conn.disconnect()
    m = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="tls-ha")
    m.tls_set(ca_certs=ca)
    m.connect("localhost", pair.node("active")["ports"]["mqtts"])
    m.disconnect()
    assert _wss_stomp_connect(pair.node("active")["ports"]["wss"], ca) == b"CONNECTED"

    # pika over amqps: confirmed messages, kill -9 the active, reconnect over TLS to the same endpoint list
    before = _pika_tls(endpoints, ca)
    _publish_confirmed(before, "tls-orders", [b"m%d" % i for i in range(50)])
    pair.kill("active")
    with pytest.raises((pika.exceptions.AMQPError, ssl.SSLError, OSError)):
        for _ in range(100):  # the next read meets the cut
            before.process_data_events(0.1)
    after = _pika_tls(endpoints, ca)
    try:
        assert pair.node("active")["name"] != first
        assert sorted(_drain(after, "tls-orders")) == sorted(b"m%d" % i for i in range(50))
    finally:
        after.close()
    # the STOMP message sent before the kill is there too, over stomp+ssl on the new active
    port = pair.node("active")["ports"]["stomps"]
    conn = stomp.Connection12([("localhost", port)], timeout=5)
    conn.set_ssl(for_hosts=[("localhost", port)], ca_certs=ca)
    listener = _Receipts()
    conn.set_listener("", listener)
    conn.connect("admin", "admin", wait=True)
    conn.subscribe("/queue/tls-ha", id="1", ack="auto")
    listener.wait(lambda: listener.messages == ["over stomp+ssl"])
    conn.disconnect()


def test_a_tls_cluster_balances_amqps_and_a_client_reconnects_through_the_same_port(mqemu_topology):
    c = mqemu_topology(mode="cluster", engine="rabbitmq", tls=True, balancer_algorithm="round-robin")
    status = c.status()
    ca = status["ca"]
    assert {"amqps", "stomps", "mqtts"} <= set(status["balancer"])
    endpoint = c.balancer_endpoint("amqps")
    conns = [_pika_tls([endpoint], ca) for _ in range(3)]  # round robin: one on each node
    counts = {n["name"]: n["connections"] for n in c.status()["nodes"]}
    assert counts == {"node-1": 1, "node-2": 1, "node-3": 1}
    c.kill("node-2")
    c.wait_until(lambda s: s["nodes"][1]["health"]["amqps"] == "unhealthy", what="node-2 unhealthy on amqps")
    again = [_pika_tls([endpoint], ca) for _ in range(4)]  # the same port, over TLS, lands on a live node
    for conn in again:
        conn.channel().queue_declare("", exclusive=True)
        conn.close()
    for conn in (conns[0], conns[2]):
        conn.close()


def test_ha_up_from_the_command_line_with_amazon_mq_endpoints(tmp_path):
    """``mqemu ha up --tls --profile amazon-mq``: only Amazon MQ's TLS endpoints, named in the
    ready file with the CA, and a client verifying the CA through the proxy."""
    up = HaUp(tmp_path, "--mode", "single", "--engine", "activemq", "--tls", "--profile", "amazon-mq")
    try:
        info = up.ready()
        assert set(info["endpoints"]) == {"amqps", "stomps", "mqtts", "wss"}
        assert info["ca"].endswith(os.path.join("tls", "ca.pem")) and os.path.isfile(info["ca"])
        assert info["failover"]["amqps"].startswith("failover:(ssl://")
        host, port = info["endpoints"]["amqps"][0].rsplit(":", 1)
        conn = _pika_tls([(host, int(port))], info["ca"])
        conn.channel().queue_declare("", exclusive=True)
        conn.close()
        assert "tls: clients verify the nodes with the CA certificate" in up.output()
    finally:
        up.close()
