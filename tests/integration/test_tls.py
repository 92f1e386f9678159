"""TLS listeners with real clients that verify the node's certificate against the CA the node
made (pika, stomp.py, paho-mqtt), a client that trusts another CA, and hostile sockets on a
TLS port (plain bytes, a handshake that stalls) beside a good client."""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import threading
import time

import paho.mqtt.client as mqtt
import pika
import pytest
import stomp
import trustme
from paho.mqtt.enums import CallbackAPIVersion
from stomp_inbox import Inbox

from mqemu.broker.config import BrokerConfig
from mqemu.ha.tls import TLSOptions

pytestmark = pytest.mark.timeout(40)


@pytest.fixture
def tls_node(mqemu_start):
    return mqemu_start(tls=TLSOptions(generate=True))


def client_context(cafile: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)  # verifies the chain and the host name


def pika_params(port: int, cafile: str, server_hostname: str) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        "127.0.0.1", port, ssl_options=pika.SSLOptions(client_context(cafile), server_hostname),
        connection_attempts=1, socket_timeout=5)


def amqps_round_trip(port: int, cafile: str, server_hostname: str, queue_name: str) -> bytes:
    conn = pika.BlockingConnection(pika_params(port, cafile, server_hostname))
    try:
        ch = conn.channel()
        ch.queue_declare(queue_name)
        ch.confirm_delivery()
        ch.basic_publish("", queue_name, b"over tls " + b"x" * 100_000)
        _method, _props, body = ch.basic_get(queue_name, auto_ack=True)
        return body
    finally:
        conn.close()


def test_node_names_its_tls_listeners_and_ca(tls_node):
    ports = tls_node.ports
    assert {"amqp", "stomp", "mqtt", "amqps", "stomps", "mqtts"} <= set(ports)
    assert tls_node.node.tls is not None and tls_node.node.tls.ca_file
    assert tls_node.url("amqps") == f"amqps://127.0.0.1:{ports['amqps']}"


@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1"])
def test_pika_verifies_the_node_certificate(tls_node, server_hostname):
    """The certificate names localhost (DNS SAN) and 127.0.0.1 (IP SAN)."""
    body = amqps_round_trip(tls_node.ports["amqps"], tls_node.node.tls.ca_file, server_hostname, "tls-q")
    assert body == b"over tls " + b"x" * 100_000


def test_amqps_and_plain_amqp_share_the_broker(tls_node):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", tls_node.ports["amqp"]))
    ch = conn.channel()
    ch.queue_declare("shared-q")
    ch.basic_publish("", "shared-q", b"plain")
    conn.close()
    tls = pika.BlockingConnection(pika_params(tls_node.ports["amqps"], tls_node.node.tls.ca_file, "localhost"))
    _m, _p, body = tls.channel().basic_get("shared-q", auto_ack=True)
    tls.close()
    assert body == b"plain"


def test_pika_with_another_ca_fails_verification_and_the_node_goes_on(tls_node, caplog):
    other = trustme.CA()
    with other.cert_pem.tempfile() as wrong_ca:
        with pytest.raises(ssl.SSLCertVerificationError):
            pika.BlockingConnection(pika_params(tls_node.ports["amqps"], wrong_ca, "localhost"))
    assert amqps_round_trip(tls_node.ports["amqps"], tls_node.node.tls.ca_file, "localhost", "after-bad") \
        .startswith(b"over tls")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("mqemu")]


def test_stomp_py_over_tls(tls_node):
    port = tls_node.ports["stomps"]
    conn = stomp.Connection12([("localhost", port)], timeout=5, vhost="/")
    conn.set_ssl(for_hosts=[("localhost", port)], ca_certs=tls_node.node.tls.ca_file)
    listener = Inbox()
    conn.set_listener("t", listener)
    conn.connect("guest", "guest", wait=True)
    conn.subscribe("/queue/tls-stomp", id="1", ack="auto", receipt="sub-1")
    assert listener.receipts.get(timeout=5) == "sub-1"
    conn.send("/queue/tls-stomp", "hello over stomp+ssl")
    assert listener.messages.get(timeout=5).body == "hello over stomp+ssl"
    conn.disconnect()


def test_stomp_py_with_another_ca_cannot_connect(tls_node):
    port = tls_node.ports["stomps"]
    other = trustme.CA()
    with other.cert_pem.tempfile() as wrong_ca:
        conn = stomp.Connection12([("localhost", port)], timeout=5, reconnect_attempts_max=1)
        conn.set_ssl(for_hosts=[("localhost", port)], ca_certs=wrong_ca)
        with pytest.raises(stomp.exception.ConnectFailedException):
            conn.connect("guest", "guest", wait=True)


def paho_tls(port: int, cafile: str, host: str) -> tuple[mqtt.Client, queue.Queue]:
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"tls-{host}")
    c.tls_set(ca_certs=cafile)  # verifies the chain and the host name
    inbox: queue.Queue = queue.Queue()
    connected, subscribed = threading.Event(), threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.on_subscribe = lambda *a: subscribed.set()
    c.on_message = lambda cl, u, m: inbox.put(m.payload)
    c.connect(host, port)
    c.loop_start()
    assert connected.wait(5)
    c.subscribe("tls/t", qos=1)
    assert subscribed.wait(5)
    return c, inbox


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_paho_over_tls(tls_node, host):
    c, inbox = paho_tls(tls_node.ports["mqtts"], tls_node.node.tls.ca_file, host)
    try:
        c.publish("tls/t", b"mqtt over tls", qos=1).wait_for_publish(5)
        assert inbox.get(timeout=5) == b"mqtt over tls"
    finally:
        c.loop_stop()
        c.disconnect()


def test_paho_with_another_ca_fails_verification(tls_node):
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="wrong-ca")
    other = trustme.CA()
    with other.cert_pem.tempfile() as wrong_ca:
        c.tls_set(ca_certs=wrong_ca)
        with pytest.raises(ssl.SSLCertVerificationError):
            c.connect("localhost", tls_node.ports["mqtts"])


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """True when the node closes the socket (EOF or reset) within the time given."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


@pytest.mark.parametrize("listener", ["amqps", "stomps", "mqtts"])
def test_plain_bytes_on_a_tls_port_close_quietly_beside_a_good_client(tls_node, listener, caplog):
    caplog.set_level(logging.INFO, logger="mqemu")
    port = tls_node.ports[listener]
    garbage = socket.create_connection(("127.0.0.1", port))
    garbage.sendall(b"AMQP\x00\x00\x09\x01" if listener == "amqps" else b"CONNECT\naccept-version:1.2\n\n\x00")
    assert closed_by_peer(garbage, 5)
    garbage.close()
    assert amqps_round_trip(tls_node.ports["amqps"], tls_node.node.tls.ca_file, "localhost", "beside") \
        .startswith(b"over tls")
    failed = [r for r in caplog.records if "handshake failed" in r.getMessage()]
    assert failed and all(r.levelno == logging.INFO and r.exc_info is None for r in failed)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("mqemu")]


def test_a_probe_that_connects_and_hangs_up_is_logged_at_debug_level_only(tls_node, caplog):
    """A balancer's TCP health check opens and closes a connection without a byte: one debug
    line per probe, not an info line (a real bad handshake stays at info, test above)."""
    caplog.set_level(logging.DEBUG, logger="mqemu")
    probe = socket.create_connection(("127.0.0.1", tls_node.ports["amqps"]))
    probe.close()
    assert amqps_round_trip(tls_node.ports["amqps"], tls_node.node.tls.ca_file, "localhost", "after") \
        .startswith(b"over tls")
    deadline = time.monotonic() + 5  # the probe's line, once the node has read its hang-up
    while not (failed := [r for r in caplog.records if "handshake failed" in r.getMessage()]):
        assert time.monotonic() < deadline, "the probe's hang-up was never logged"
        time.sleep(0.01)
    assert [r.levelno for r in failed] == [logging.DEBUG]
    assert "UNEXPECTED_EOF" in failed[0].getMessage() or "hung up" in failed[0].getMessage()


def test_a_stalled_handshake_is_closed_at_the_timeout_and_stalls_nobody(mqemu_start, caplog):
    caplog.set_level(logging.INFO, logger="mqemu")
    cfg = BrokerConfig()
    cfg.extra = {"amqp": {"handshake_timeout": 1.0}}
    node = mqemu_start(tls=TLSOptions(generate=True), config=cfg)
    port = node.ports["amqps"]
    silent = socket.create_connection(("127.0.0.1", port))
    # half a ClientHello: a TLS record header promising more than is sent
    half = socket.create_connection(("127.0.0.1", port))
    half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    started = time.monotonic()
    assert amqps_round_trip(port, node.node.tls.ca_file, "localhost", "while-stalled").startswith(b"over tls")
    assert time.monotonic() - started < 1.0  # served while both stall
    assert closed_by_peer(silent, 5) and closed_by_peer(half, 5)
    assert time.monotonic() - started < 4.0
    silent.close()
    half.close()
    assert any("no handshake within 1 s" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("mqemu")]
