"""Amazon MQ's endpoints, over TLS: a broker made with boto3 lists ``amqp+ssl://``,
``stomp+ssl://``, ``mqtt+ssl://`` and ``wss://`` (ActiveMQ) or ``amqps://`` (RabbitMQ) on
127.0.0.1, each verified with the control plane's CA (``ca_file``: ``<data-dir>/tls/ca.pem``,
the ready file's ``ca``), and a ``ConsoleURL`` that answers over HTTPS. Passwords are kept
as salted hashes only: neither the state nor anything else the control plane or its nodes
write holds one in plain text."""

from __future__ import annotations

import os
import ssl
import threading
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.timeout(180)

PASSWORD = "mqemu-secret-1"


def _activemq(c, name, mode="SINGLE_INSTANCE", users=None):
    users = users or [{"Username": "app", "Password": PASSWORD, "Groups": ["admins"]}]
    return c.create_broker(BrokerName=name, DeploymentMode=mode, EngineType="ActiveMQ",
                           HostInstanceType="mq.m5.large", PubliclyAccessible=False, Users=users)["BrokerId"]


def _get(url, context):
    with urllib.request.urlopen(url, context=context, timeout=10) as r:
        return r.status, r.read()


def _stomp_roundtrip(aws, host, port, ca_file):
    import stomp

    got = threading.Event()

    class Listener(stomp.ConnectionListener):
        def on_message(self, frame):
            if frame.body == "over tls":
                got.set()

    conn = stomp.Connection12([(host, port)])
    conn.set_ssl(for_hosts=[(host, port)], ca_certs=ca_file)
    conn.set_listener("", Listener())
    conn.connect("app", PASSWORD, wait=True)
    conn.subscribe("/queue/tls", id="1", ack="auto", headers={"receipt": "sub"})
    conn.send("/queue/tls", "over tls", headers={"receipt": "sent"})
    try:
        return got.wait(20)
    finally:
        conn.disconnect()


def _mqtt_roundtrip(host, port, ca_file, transport="tcp"):
    import paho.mqtt.client as mqtt

    subscribed, got = threading.Event(), threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"tls-{transport}", transport=transport)
    client.username_pw_set("app", PASSWORD)
    client.tls_set(ca_certs=ca_file)
    client.on_connect = lambda c, u, flags, reason, props: c.subscribe("tls/mqtt", qos=1)
    client.on_subscribe = lambda c, u, mid, reasons, props: subscribed.set()
    client.on_message = lambda c, u, msg: got.set() if msg.payload == b"over " + transport.encode() else None
    client.connect(host, port, keepalive=10)
    client.loop_start()
    try:
        assert subscribed.wait(20), "no SUBACK"
        client.publish("tls/mqtt", b"over " + transport.encode(), qos=1).wait_for_publish(20)
        return got.wait(20)
    finally:
        client.disconnect()
        client.loop_stop()


def test_activemq_endpoints_are_tls_verified_with_the_ca_and_the_console_answers(mqemu_aws):
    import pika

    aws, c = mqemu_aws, mqemu_aws.client
    assert aws.ca_file == os.path.join(aws.data_dir, "tls", "ca.pem") and os.path.isfile(aws.ca_file)
    bid = _activemq(c, "tls-pair", "ACTIVE_STANDBY_MULTI_AZ")
    d = aws.wait_state(bid, "RUNNING")
    active, standby = d["BrokerInstances"]
    assert [u.split("://")[0] for u in active["Endpoints"]] == ["amqp+ssl", "stomp+ssl", "mqtt+ssl", "wss"]
    assert aws.mqemu_broker(bid)["ca"] == aws.ca_file

    ((host, port), _) = aws.endpoints(d, "stomp+ssl")
    assert _stomp_roundtrip(aws, host, port, aws.ca_file)
    ((host, port), _) = aws.endpoints(d, "mqtt+ssl")
    assert _mqtt_roundtrip(host, port, aws.ca_file)
    ((host, port), _) = aws.endpoints(d, "wss")  # MQTT over WebSocket over TLS (subprotocol mqtt)
    assert _mqtt_roundtrip(host, port, aws.ca_file, transport="websockets")
    ((host, port), _) = aws.endpoints(d, "amqp+ssl")
    params = pika.ConnectionParameters(host, port, credentials=pika.PlainCredentials("app", PASSWORD),
                                       connection_attempts=1, ssl_options=pika.SSLOptions(aws.ssl_context(), host))
    with pika.BlockingConnection(params) as conn:
        assert conn.channel().queue_declare("tls-amqp").method.message_count == 0
    # a client that does not trust the CA is refused by its own verification
    with pytest.raises(ssl.SSLCertVerificationError):
        pika.BlockingConnection(pika.ConnectionParameters(
            host, port, credentials=pika.PlainCredentials("app", PASSWORD), connection_attempts=1,
            ssl_options=pika.SSLOptions(ssl.create_default_context(), host)))

    # the active's console answers over HTTPS; the standby's refuses, as its endpoints do
    status, body = _get(active["ConsoleURL"], aws.ssl_context())
    assert status == 200 and body
    with pytest.raises(urllib.error.URLError):
        _get(standby["ConsoleURL"], aws.ssl_context())
    c.delete_broker(BrokerId=bid)
    aws.wait_gone(bid)


def test_a_rabbitmq_broker_has_one_amqps_endpoint_and_its_console(mqemu_aws):
    import pika

    aws, c = mqemu_aws, mqemu_aws.client
    bid = c.create_broker(BrokerName="tls-rabbit", DeploymentMode="SINGLE_INSTANCE", EngineType="RabbitMQ",
                          HostInstanceType="mq.m5.large", PubliclyAccessible=False,
                          Users=[{"Username": "admin", "Password": PASSWORD}])["BrokerId"]
    d = aws.wait_state(bid, "RUNNING")
    (instance,) = d["BrokerInstances"]
    ((host, port),) = aws.endpoints(d, "amqps")
    params = pika.ConnectionParameters(host, port, credentials=pika.PlainCredentials("admin", PASSWORD),
                                       connection_attempts=1, ssl_options=pika.SSLOptions(aws.ssl_context(), host))
    with pika.BlockingConnection(params) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("tls-rabbit", durable=True)
        ch.basic_publish("", "tls-rabbit", b"over amqps", pika.BasicProperties(delivery_mode=2))
        assert ch.basic_get("tls-rabbit", auto_ack=True)[2] == b"over amqps"
    # the management API behind the console URL, with the broker's one administrator
    request = urllib.request.Request(instance["ConsoleURL"] + "/api/overview")
    import base64

    request.add_header("Authorization", "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode())
    with urllib.request.urlopen(request, context=aws.ssl_context(), timeout=10) as r:
        assert r.status == 200 and b"rabbitmq_version" in r.read()
    c.delete_broker(BrokerId=bid)
    aws.wait_gone(bid)


def test_no_password_is_kept_in_plain_text(mqemu_aws, tmp_path):
    """CreateBroker's, CreateUser's and UpdateUser's passwords: the state holds salted
    hashes, and so does every file the control plane and the nodes write (the nodes log in
    users by those hashes); the passwords still work after the reboot that applies them."""
    import stomp

    aws, c = mqemu_aws, mqemu_aws.client
    first, second, third = "first-secret-1", "second-secret-2", "third-secret-3"
    bid = _activemq(c, "hashed", users=[{"Username": "app", "Password": first, "Groups": ["admins"]}])
    aws.wait_state(bid, "RUNNING")
    c.create_user(BrokerId=bid, Username="late", Password=second, Groups=["admins"])
    c.update_user(BrokerId=bid, Username="app", Password=third)
    c.reboot_broker(BrokerId=bid)
    d = aws.wait_state(bid, "RUNNING", timeout=90)
    (host, port), = aws.endpoints(d, "stomp+ssl")

    def logs_in(user, password):
        conn = stomp.Connection12([(host, port)])
        conn.set_ssl(for_hosts=[(host, port)], ca_certs=aws.ca_file)
        try:
            conn.connect(user, password, wait=True)
        except stomp.exception.ConnectFailedException:
            return False
        conn.disconnect()
        return True

    assert logs_in("app", third) and logs_in("late", second) and not logs_in("app", first)
    with open(os.path.join(aws.data_dir, "state.json")) as f:
        state = f.read()
    assert "PasswordHash" in state
    found = []
    for root, _dirs, files in os.walk(tmp_path):  # the data dir, the nodes' logs, the control plane's log
        for name in files:
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            found += [(path, p) for p in (first, second, third) if p.encode() in data]
    assert found == []
    c.delete_broker(BrokerId=bid)
    aws.wait_gone(bid)
