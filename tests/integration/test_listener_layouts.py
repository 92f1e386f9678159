"""Which listeners a node opens (``ha/listeners.plan``): the engines' layouts, TLS and
WebSocket switches, ``--profile amazon-mq``, the user's own certificate, and ``mqemu serve``
with ``--tls`` as a user runs it (its log line and ready file name the CA)."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import time

import pika
import pytest
import trustme
from cryptography import x509

from mqemu.broker.profile import LISTENER_PORTS
from mqemu.ha.listeners import PlanError, plan
from mqemu.ha.node import Node, NodeOptions, NodeStartError
from mqemu.ha.tls import TLSOptions

pytestmark = pytest.mark.timeout(40)


def names(engine: str, ports=None, **kw) -> dict[str, int]:
    return {k.name: p for k, p in plan(engine, LISTENER_PORTS[engine], ports or {}, **kw)}


def test_engine_layouts_and_default_ports():
    assert names("rabbitmq") == {"amqp": 5672, "stomp": 61613, "mqtt": 1883}
    assert names("rabbitmq", tls=True) == {"amqp": 5672, "stomp": 61613, "mqtt": 1883, "amqps": 5671,
                                           "stomps": 61614, "mqtts": 8883}
    assert names("rabbitmq", websocket=True) == {"amqp": 5672, "stomp": 61613, "mqtt": 1883,
                                                 "stomp-ws": 15674, "mqtt-ws": 15675}
    assert set(names("rabbitmq", tls=True, websocket=True)) >= {"stomp-wss", "mqtt-wss"}
    assert names("rabbitmq", tls=True, websocket=True)["stomp-wss"] == 15673
    assert names("activemq", websocket=True)["ws"] == 61614


def test_amazon_mq_layout_is_tls_only():
    assert names("activemq", layout="amazon-mq", tls=True) == {"amqps": 5671, "stomps": 61614, "mqtts": 8883,
                                                               "wss": 61619}
    assert names("rabbitmq", layout="amazon-mq", tls=True) == {"amqps": 5671}
    # a port given still opens that listener beside the layout's
    assert "amqp" in names("rabbitmq", {"amqp": 0}, layout="amazon-mq", tls=True)


def test_ports_off_free_and_given():
    assert "stomp" not in names("rabbitmq", {"stomp": "off"})
    assert names("rabbitmq", {"amqps": 0}, tls=True, free_ports=True) == dict.fromkeys(
        ("amqp", "stomp", "mqtt", "amqps", "stomps", "mqtts"), 0)
    assert names("rabbitmq", {"stomp-ws": 0})["stomp-ws"] == 0  # a port given opens it


@pytest.mark.parametrize("engine, ports, kw, text", [
    ("rabbitmq", {"amqps": 0}, {}, "the amqps listener needs TLS"),
    ("rabbitmq", {"ws": 0}, {}, "the rabbitmq engine has no ws listener"),
    ("activemq", {"stomp-ws": 0}, {}, "the activemq engine has no stomp-ws listener"),
    ("activemq", {}, {"tls": True, "websocket": True}, "the stomps and ws listeners both ask for port 61614"),
])
def test_plans_that_cannot_work_say_why(engine, ports, kw, text):
    with pytest.raises(PlanError, match=text):
        plan(engine, LISTENER_PORTS[engine], ports, **kw)


def test_node_refuses_a_tls_listener_without_tls():
    with pytest.raises(NodeStartError, match="needs TLS"):
        Node(NodeOptions(ports={"amqps": 0}))


def test_amazon_mq_node_generates_its_certificate(mqemu_start):
    node = mqemu_start(engine="activemq", layout="amazon-mq")
    assert set(node.ports) == {"amqps", "stomps", "mqtts", "wss"}
    assert node.node.tls is not None
    context = ssl.create_default_context(cafile=node.node.tls.ca_file)
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", node.ports["amqps"], ssl_options=pika.SSLOptions(context, "localhost"),
        connection_attempts=1, socket_timeout=5))
    conn.close()


def test_users_own_certificate(mqemu_start, tmp_path):
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    cert, key, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    node = mqemu_start(tls=TLSOptions(cert_file=str(cert), key_file=str(key), ca_file=str(ca_file)))
    assert node.node.tls.ca_file == str(ca_file)
    context = ssl.create_default_context(cafile=str(ca_file))
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", node.ports["amqps"], ssl_options=pika.SSLOptions(context, "localhost"),
        connection_attempts=1, socket_timeout=5))
    conn.close()


def test_a_bad_certificate_is_named(tmp_path):
    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    with pytest.raises(NodeStartError, match="cannot use the certificate"):
        Node(NodeOptions(tls=TLSOptions(cert_file=str(tmp_path / "cert.pem"), key_file=str(tmp_path / "key.pem"))))


def test_a_data_dir_keeps_its_ca_across_restarts(tmp_path):
    first = Node(NodeOptions(data_dir=str(tmp_path), tls=TLSOptions(generate=True), free_ports=True))
    ca = first.tls.ca_file
    assert ca == str(tmp_path / "tls" / "ca.pem")
    pem = open(ca).read()
    second = Node(NodeOptions(data_dir=str(tmp_path), tls=TLSOptions(generate=True), free_ports=True))
    assert open(second.tls.ca_file).read() == pem
    # the new node certificate is signed by the kept CA
    leaf = x509.load_pem_x509_certificates(open(second.tls.cert_file, "rb").read())[0]
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(pem.encode()))


def test_mqemu_serve_tls_names_the_ca(tmp_path):
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen([sys.executable, "-m", "mqemu.ha.cli", "serve", "--tls", "--ready-file", str(ready),
                             "--amqp-port", "0", "--stomp-port", "off", "--mqtt-port", "off", "--amqps-port", "0",
                             "--stomps-port", "off", "--mqtts-port", "0", "--http-port", "off"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        assert {"amqp", "amqps", "mqtts", "ca"} <= set(info) and "stomps" not in info
        context = ssl.create_default_context(cafile=info["ca"])
        conn = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", info["amqps"], ssl_options=pika.SSLOptions(context, "localhost"),
            connection_attempts=1, socket_timeout=5))
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        err = proc.stderr.read()
        assert f"CA certificate {info['ca']}" in err
        assert f"listening protocol=amqps host=127.0.0.1 port={info['amqps']}" in err
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_mqemu_serve_refuses_half_a_certificate(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mqemu.ha.cli", "serve", "--tls-cert", str(tmp_path / "c.pem")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "--tls-cert and --tls-key go together" in out.stderr
