"""Client certificates (``--tls-verify-clients``): pika, stomp.py and paho present a
certificate made by trustme and get in; a client without one, or with one from another CA,
is refused in the TLS handshake, and the node goes on serving the others."""

from __future__ import annotations

import queue
import socket
import ssl
import threading

import paho.mqtt.client as mqtt
import pika
import pytest
import stomp
import trustme
from paho.mqtt.enums import CallbackAPIVersion
from stomp_inbox import Inbox

from mqemu.ha.cli import main
from mqemu.ha.tls import TLSError, TLSOptions, client_certificate, load_tls

pytestmark = pytest.mark.timeout(40)


@pytest.fixture
def pki(tmp_path):
    """A CA, the node's certificate and a client's (alice), as files."""
    ca = trustme.CA(organization_name="test")
    server = ca.issue_cert("localhost", "127.0.0.1")
    alice = ca.issue_cert("alice", common_name="alice")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "node.pem", "key": tmp_path / "node.key",
             "alice": tmp_path / "alice.pem", "alice_key": tmp_path / "alice.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.cert_chain_pems[0].write_to_path(str(files["cert"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    alice.cert_chain_pems[0].write_to_path(str(files["alice"]))
    alice.private_key_pem.write_to_path(str(files["alice_key"]))
    return {k: str(v) for k, v in files.items()}


@pytest.fixture
def node(mqemu_start, pki):
    return mqemu_start(tls=TLSOptions(cert_file=pki["cert"], key_file=pki["key"], ca_file=pki["ca"],
                                      verify_clients=True))


def context(pki, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki["ca"])
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def pika_round_trip(port: int, ctx: ssl.SSLContext, name: str) -> bytes:
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, ssl_options=pika.SSLOptions(ctx, "localhost"), connection_attempts=1, socket_timeout=5))
    try:
        ch = conn.channel()
        ch.queue_declare(name)
        ch.confirm_delivery()
        ch.basic_publish("", name, b"with a client certificate")
        return ch.basic_get(name, auto_ack=True)[2]
    finally:
        conn.close()


def refused_in_handshake(port: int, ctx: ssl.SSLContext) -> str:
    """What a raw TLS client without an acceptable certificate meets: the node's alert (in
    TLS 1.3 the client's side of the handshake ends first, and the alert comes on its
    first read). Returns the error's text; fails if the node let the client in."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"AMQP\x00\x00\x09\x01")
                data = tls.recv(1024)
        except (ssl.SSLError, ConnectionResetError) as e:
            return str(e)
    assert data == b"", f"the node answered a client without a certificate: {data!r}"
    return "closed"


def test_pika_with_a_client_certificate_gets_in(node, pki):
    ctx = context(pki, pki["alice"], pki["alice_key"])
    assert pika_round_trip(node.ports["amqps"], ctx, "cert-q") == b"with a client certificate"


def test_a_client_without_a_certificate_is_refused_in_the_handshake(node, pki):
    for proto in ("amqps", "stomps", "mqtts"):
        reason = refused_in_handshake(node.ports[proto], context(pki))
        assert "CERTIFICATE_REQUIRED" in reason.upper() or reason == "closed" or "reset" in reason.lower(), reason
    with pytest.raises((pika.exceptions.AMQPConnectionError, ssl.SSLError)):
        pika_round_trip(node.ports["amqps"], context(pki), "no-cert-q")
    assert not [s for s in node.node.sessions if s.connection_info() is not None]
    # and the node goes on serving a client that has one
    ctx = context(pki, pki["alice"], pki["alice_key"])
    assert pika_round_trip(node.ports["amqps"], ctx, "after-refusal") == b"with a client certificate"


def test_a_certificate_from_another_ca_is_refused(node, pki, tmp_path):
    other = trustme.CA()
    mallory = other.issue_cert("mallory", common_name="mallory")
    cert, key = tmp_path / "mallory.pem", tmp_path / "mallory.key"
    mallory.cert_chain_pems[0].write_to_path(str(cert))
    mallory.private_key_pem.write_to_path(str(key))
    reason = refused_in_handshake(node.ports["amqps"], context(pki, str(cert), str(key)))
    assert "UNKNOWN_CA" in reason.upper() or reason == "closed" or "reset" in reason.lower(), reason


def test_stomp_py_with_a_client_certificate(node, pki):
    port = node.ports["stomps"]
    conn = stomp.Connection12([("localhost", port)], timeout=5, vhost="/")
    conn.set_ssl(for_hosts=[("localhost", port)], ca_certs=pki["ca"], cert_file=pki["alice"],
                 key_file=pki["alice_key"])
    inbox = Inbox()
    conn.set_listener("t", inbox)
    conn.connect("guest", "guest", wait=True)
    try:
        conn.subscribe("/queue/cert-stomp", id="1", ack="auto", receipt="sub-1")
        assert inbox.receipts.get(timeout=5) == "sub-1"
        conn.send("/queue/cert-stomp", "stomp+ssl with a certificate")
        assert inbox.messages.get(timeout=5).body == "stomp+ssl with a certificate"
    finally:
        conn.disconnect()


def paho_connect(port: int, ca: str, cert: str, key: str) -> mqtt.Client:
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="cert-client")
    c.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
    inbox: queue.Queue = queue.Queue()
    connected, subscribed = threading.Event(), threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.on_subscribe = lambda *a: subscribed.set()
    c.on_message = lambda cl, u, m: inbox.put(m.payload)
    c.connect("localhost", port)
    c.loop_start()
    assert connected.wait(5)
    c.subscribe("cert/t", qos=1)
    assert subscribed.wait(5)
    c.publish("cert/t", b"mqtts with a certificate", qos=1).wait_for_publish(5)
    assert inbox.get(timeout=5) == b"mqtts with a certificate"
    return c


def test_paho_with_a_client_certificate(node, pki):
    c = paho_connect(node.ports["mqtts"], pki["ca"], pki["alice"], pki["alice_key"])
    c.loop_stop()
    c.disconnect()


def test_the_generated_ca_signs_client_certificates(mqemu_start, tmp_path):
    """With --tls the node's own CA (ca.key beside ca.pem in DATA/tls) signs the clients'."""
    node = mqemu_start(tls=TLSOptions(generate=True, verify_clients=True), data_dir=str(tmp_path / "data"))
    tls = node.node.tls
    assert tls.verify_clients and tls.ca_key_file
    cert, key = client_certificate(tls.ca_file, tls.ca_key_file, "bob", str(tmp_path))
    c = paho_connect(node.ports["mqtts"], tls.ca_file, cert, key)
    c.loop_stop()
    c.disconnect()
    reason = refused_in_handshake(node.ports["mqtts"], ssl.create_default_context(cafile=tls.ca_file))
    assert reason


def test_verifying_clients_needs_a_ca(pki, tmp_path):
    with pytest.raises(TLSError, match="--tls-ca"):
        load_tls(TLSOptions(cert_file=pki["cert"], key_file=pki["key"], verify_clients=True), None, "127.0.0.1")
    assert main(["serve", "--tls-verify-clients", "--amqp-port", "0", "--http-port", "off"]) == 2
