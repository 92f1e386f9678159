"""The EXTERNAL login (RabbitMQ's rabbitmq_auth_mechanism_ssl, and the STOMP and MQTT plugins'
``ssl_cert_login``): with ``--auth-mechanisms ...,EXTERNAL`` and ``--tls-verify-clients``, a
client with a certificate signed by the node's CA is the user its common name names: pika
with ``ExternalCredentials``, stomp.py without a login, paho without a user name. An unknown
name is refused with each protocol's own error; off by default, as on RabbitMQ."""

from __future__ import annotations

import queue
import ssl
import threading

import httpx
import paho.mqtt.client as mqtt
import pika
import pika.credentials
import pika.exceptions
import pytest
import stomp
import trustme
from paho.mqtt.enums import CallbackAPIVersion

from mqemu.broker.auth import Permission, User
from mqemu.ha.tls import TLSOptions


def context(pki, cert, key):
    ctx = ssl.create_default_context(cafile=pki["ca"])
    ctx.load_cert_chain(cert, key)
    return ctx

pytestmark = pytest.mark.timeout(40)

EXTERNAL = ("PLAIN", "AMQPLAIN", "EXTERNAL")


@pytest.fixture
def pki(tmp_path):
    """A CA, the node's certificate and two clients' (alice, a user of the node; mallory, not)."""
    ca = trustme.CA(organization_name="test")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "node.pem", "key": tmp_path / "node.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server = ca.issue_cert("localhost", "127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(files["cert"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    for name in ("alice", "mallory"):
        leaf = ca.issue_cert(f"{name}.example", common_name=name)
        files[name], files[name + "_key"] = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
        leaf.cert_chain_pems[0].write_to_path(str(files[name]))
        leaf.private_key_pem.write_to_path(str(files[name + "_key"]))
    return {k: str(v) for k, v in files.items()}


def _start(mqemu_start, pki, mechanisms, login_from="common_name", alice="alice"):
    node = mqemu_start(tls=TLSOptions(cert_file=pki["cert"], key_file=pki["key"], ca_file=pki["ca"],
                                      verify_clients=True), auth_mechanisms=mechanisms, ports={"http": 0},
                       cert_login_from=login_from)

    def add_alice():
        node.broker.auth.users[alice] = User(alice, "", ())
        node.broker.auth.permissions[(alice, "/")] = Permission()
    node._thread.call(add_alice)
    return node


@pytest.fixture
def node(mqemu_start, pki):
    return _start(mqemu_start, pki, EXTERNAL)


def _users(node):
    return node._thread.call(lambda: sorted((i["user"], i.get("auth_mechanism")) for i in
                                            (s.connection_info() for s in node.node.sessions) if i))


def _pika(port, pki, who):
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, ssl_options=pika.SSLOptions(context(pki, pki[who], pki[who + "_key"]), "localhost"),
        credentials=pika.credentials.ExternalCredentials(), connection_attempts=1, socket_timeout=5))


def test_pika_external_is_the_certificate_user(node, pki):
    conn = _pika(node.ports["amqps"], pki, "alice")
    try:
        ch = conn.channel()
        ch.queue_declare("ext-q")
        ch.confirm_delivery()
        ch.basic_publish("", "ext-q", b"as alice")
        assert ch.basic_get("ext-q", auto_ack=True)[2] == b"as alice"
        assert _users(node) == [("alice", "EXTERNAL")]
        (api,) = httpx.get(f"http://127.0.0.1:{node.ports['http']}/api/connections", auth=("guest", "guest")).json()
        assert (api["user"], api["auth_mechanism"]) == ("alice", "EXTERNAL")
        (shown,) = httpx.get(f"http://127.0.0.1:{node.ports['http']}/api/nodes", auth=("guest", "guest")).json()
        assert {m["name"]: m["enabled"] for m in shown["auth_mechanisms"]} == {
            "PLAIN": True, "AMQPLAIN": True, "EXTERNAL": True}
    finally:
        conn.close()


def test_the_distinguished_name_as_the_user_name(mqemu_start, pki):
    """``--ssl-cert-login-from distinguished_name``: the subject as RFC 4514 writes it
    (cryptography's rfc4514_string of the same certificate)."""
    from cryptography import x509

    with open(pki["alice"], "rb") as f:
        dn = x509.load_pem_x509_certificate(f.read()).subject.rfc4514_string()
    assert dn.startswith("CN=alice,")
    node = _start(mqemu_start, pki, EXTERNAL, "distinguished_name", alice=dn)
    conn = _pika(node.ports["amqps"], pki, "alice")
    try:
        assert _users(node) == [(dn, "EXTERNAL")]
    finally:
        conn.close()


def test_pika_external_with_an_unknown_name_is_refused(node, pki):
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as refused:
        _pika(node.ports["amqps"], pki, "mallory")
    assert "ACCESS_REFUSED" in str(refused.value) and "EXTERNAL" in str(refused.value)


def test_external_is_off_by_default(mqemu_start, pki):
    node = _start(mqemu_start, pki, None)
    with pytest.raises(pika.exceptions.AMQPConnectionError):  # EXTERNAL is not offered: pika gives up
        _pika(node.ports["amqps"], pki, "alice")
    # stomp.py without a login is the plugin's default user, not the certificate's
    conn = _stomp(node.ports["stomps"], pki, "alice")
    try:
        assert _users(node) == [("guest", "PLAIN")]
    finally:
        conn.disconnect()


class Inbox(stomp.ConnectionListener):
    def __init__(self) -> None:
        self.errors: queue.Queue = queue.Queue()

    def on_error(self, frame) -> None:
        self.errors.put(frame.headers.get("message"))


def _stomp(port, pki, who, inbox=None, wait=True):
    conn = stomp.Connection12([("localhost", port)], timeout=5, vhost="/")
    conn.set_ssl(for_hosts=[("localhost", port)], ca_certs=pki["ca"], cert_file=pki[who],
                 key_file=pki[who + "_key"])
    if inbox is not None:
        conn.set_listener("t", inbox)
    conn.connect(wait=wait)  # no login, no passcode
    return conn


def test_stomp_without_a_login_is_the_certificate_user(node, pki):
    conn = _stomp(node.ports["stomps"], pki, "alice")
    try:
        assert _users(node) == [("alice", "PLAIN")]
    finally:
        conn.disconnect()
    inbox = Inbox()
    refused = _stomp(node.ports["stomps"], pki, "mallory", inbox, wait=False)
    try:
        assert inbox.errors.get(timeout=5)  # the plugin's ERROR frame for a refused login
        assert not any(u == "mallory" for u, _ in _users(node))
    finally:
        try:
            refused.disconnect()
        except Exception:
            pass


def _paho(port, pki, who):
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"ext-{who}")
    c.tls_set(ca_certs=pki["ca"], certfile=pki[who], keyfile=pki[who + "_key"])
    codes: queue.Queue = queue.Queue()
    c.on_connect = lambda cl, u, flags, rc, props=None: codes.put(rc)
    done = threading.Event()
    c.on_disconnect = lambda *a: done.set()
    c.connect("localhost", port)  # no user name
    c.loop_start()
    return c, codes.get(timeout=5)


def test_paho_without_a_username_is_the_certificate_user(node, pki):
    c, rc = _paho(node.ports["mqtts"], pki, "alice")
    try:
        assert not rc.is_failure
        assert _users(node) == [("alice", "PLAIN")]
    finally:
        c.disconnect()
        c.loop_stop()
    c, rc = _paho(node.ports["mqtts"], pki, "mallory")
    c.loop_stop()
    # 3.1.1's 4 (RabbitMQ's CONNACK_CREDENTIALS for a refused login), which paho names so
    assert rc.is_failure and str(rc) == "Bad user name or password"


def test_an_unknown_mechanism_stops_the_start(capfd):
    from mqemu.ha.cli import main

    assert main(["serve", "--auth-mechanisms", "PLAIN,KERBEROS", "--amqp-port", "0", "--stomp-port", "off",
                 "--mqtt-port", "off", "--http-port", "off"]) == 2
    assert "unknown mechanism(s) KERBEROS" in capfd.readouterr().err
