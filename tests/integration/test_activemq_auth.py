"""The ActiveMQ engine authenticates and authorises (issue 9, item 4), as attacks on the wire.

With users in the config file every STOMP and MQTT login is checked as ActiveMQ's
simpleAuthenticationPlugin checks it (the texts and codes are ActiveMQ 5.17's, see
``broker/auth.py``), and destinations are authorised by ``[[authorization]]`` entries
(ActiveMQ's authorizationEntries: read / write / admin groups per queue or topic pattern).
Each hostile client runs next to a well-behaved one that must see no stall and lose nothing.
"""

from __future__ import annotations

import logging
import socket
import time

import paho.mqtt.client as mqtt
import pytest
from auth_helpers import STALL, MqttClient, connect_frame, stomp_client, stomp_exchange
from mqemu.broker.config import load_config

pytestmark = pytest.mark.timeout(30)

CONFIG = """
engine = "activemq"

[[users]]
name = "admin"
password = "adminpw"
groups = ["admins", "users"]

[[users]]
name = "app"
password = "apppw"
groups = ["users"]

[[users]]
name = "reader"
password = "readerpw"
groups = "readers"

[[authorization]]
queue = ">"
read = "admins"
write = "admins"
admin = "admins"

[[authorization]]
queue = "orders.>"
read = ["users"]
write = ["users"]
admin = ["users"]

[[authorization]]
queue = "reports"
read = "readers"

[[authorization]]
queue = "inbox.>"
read = "users"
write = "users"

[[authorization]]
topic = ">"
read = "admins"
write = "admins"
admin = "admins"

[[authorization]]
topic = "news.>"
read = "users,readers"
write = "users"
admin = "users,readers"

[[authorization]]
topic = "ActiveMQ.Advisory.>"
read = "*"
write = "*"
admin = "*"
"""

@pytest.fixture
def node(mqemu_start, tmp_path):
    path = tmp_path / "mqemu.toml"
    path.write_text(CONFIG)
    return mqemu_start(config=load_config(str(path)))


# -- STOMP ----------------------------------------------------------------------------------
@pytest.mark.parametrize("login, passcode, shown", [
    ("admin", "wrong", "admin"),        # a wrong password
    ("guest", "guest", "guest"),        # the stock default user is not a configured user
    ("nobody", "x", "nobody"),          # an unknown user
    (None, None, "null"),               # no login at all (anonymous access is off)
])
def test_stomp_bad_credentials_get_activemqs_error_and_close(node, login, passcode, shown) -> None:
    port = node.ports["stomp"]
    good, good_listener = stomp_client(port, "app", "apppw")
    try:
        out = stomp_exchange(port, connect_frame(login, passcode))
        assert out.startswith(b"ERROR\n")
        # ActiveMQ: SimpleAuthenticationBroker's SecurityException, and the socket closes.
        assert f"message:User name [{shown}] or password is invalid.".encode() in out
        assert out.endswith(f"\n\nUser name [{shown}] or password is invalid.\x00\n".encode())  # the body, NUL, LF
        assert b"CONNECTED" not in out
        # The well-behaved client was not held up and loses nothing.
        start = time.monotonic()
        good.send("/queue/orders.1", "ok", receipt="r1")
        assert good_listener.receipts.get(timeout=STALL) == "r1"
        good.subscribe("/queue/orders.1", id="s1")
        assert good_listener.messages.get(timeout=STALL).body == "ok"
        assert time.monotonic() - start < STALL
    finally:
        good.disconnect()


def test_stomp_destination_authorization(node) -> None:
    port = node.ports["stomp"]
    admin, admin_l = stomp_client(port, "admin", "adminpw")
    app, app_l = stomp_client(port, "app", "apppw")
    reader, reader_l = stomp_client(port, "reader", "readerpw")
    try:
        # A queue app may not write to; then one it may write to but not create (no admin).
        app.send("/queue/secret", "x", receipt="a1")
        err = app_l.errors.get(timeout=5)
        assert err.headers["message"] == "User app is not authorized to write to: queue://secret"
        assert err.headers.get("receipt-id") == "a1"  # ActiveMQ echoes the refused frame's receipt
        app.send("/queue/inbox.1", "x", receipt="a0")
        assert app_l.errors.get(timeout=5).headers["message"] == \
            "User app is not authorized to create: queue://inbox.1"
        queues = node.broker.vhosts["/"].queues
        assert "secret" not in queues and "inbox.1" not in queues
        admin.send("/queue/inbox.1", "welcome", receipt="m0")  # admins may create it
        assert admin_l.receipts.get(timeout=5) == "m0"
        app.send("/queue/inbox.1", "reply", receipt="a00")  # now it exists: write is enough
        assert app_l.receipts.get(timeout=5) == "a00"
        # An existing queue: write is refused without write (reports: read for readers only).
        admin.send("/queue/reports", "monthly", receipt="m1")
        assert admin_l.receipts.get(timeout=5) == "m1"
        app.send("/queue/reports", "forged", receipt="a2")
        assert app_l.errors.get(timeout=5).headers["message"] == \
            "User app is not authorized to write to: queue://reports"
        app.subscribe("/queue/reports", id="peek", receipt="a3")
        assert app_l.errors.get(timeout=5).headers["message"] == \
            "User app is not authorized to read from: queue://reports"
        # The connection stays open after an authorisation refusal (ActiveMQ goes on).
        app.send("/queue/orders.1", "order", receipt="a4")
        assert app_l.receipts.get(timeout=5) == "a4"
        # readers may read reports (the entries' groups are a union): only the admin's message.
        reader.subscribe("/queue/reports", id="r", receipt="r1")
        assert reader_l.receipts.get(timeout=5) == "r1"
        assert reader_l.messages.get(timeout=5).body == "monthly"
        assert reader_l.messages.empty() and app_l.messages.empty()
        # Topics: app writes news.> but not other topics; reads need read.
        app.subscribe("/topic/news.today", id="n", receipt="a5")
        assert app_l.receipts.get(timeout=5) == "a5"
        app.subscribe("/topic/payroll", id="p", receipt="a6")
        assert app_l.errors.get(timeout=5).headers["message"] == \
            "User app is not authorized to read from: topic://payroll"
        # A wildcard subscription: "*" stands for any word, ">" only for itself (ActiveMQ's
        # lookup), so "*.today" is allowed through news.> and ">" needs the ">" entry.
        app.subscribe("/topic/>", id="all", receipt="a61")
        assert app_l.errors.get(timeout=5).headers["message"] == \
            "User app is not authorized to read from: topic://>"
        app.subscribe("/topic/*.today", id="today", receipt="a62")
        assert app_l.receipts.get(timeout=5) == "a62"
        app.send("/topic/payroll", "forged", receipt="a7")
        assert app_l.errors.get(timeout=5).headers["message"] == \
            "User app is not authorized to write to: topic://payroll"
        app.send("/topic/news.today", "headline", receipt="a8")
        assert app_l.receipts.get(timeout=5) == "a8"
        assert app_l.messages.get(timeout=5).body == "headline"
    finally:
        for c in (admin, app, reader):
            c.disconnect()


def test_without_users_activemq_accepts_anyone_and_says_so(mqemu_start, caplog) -> None:
    caplog.set_level(logging.WARNING)
    from mqemu.broker.config import BrokerConfig

    n = mqemu_start(config=BrokerConfig(engine="activemq"))
    assert any("no users in the config" in r.getMessage() for r in caplog.records)
    out = stomp_exchange(n.ports["stomp"], connect_frame("whoever", "wrong") + b"DISCONNECT\nreceipt:d\n\n\x00")
    assert out.startswith(b"CONNECTED\n") and b"receipt-id:d" in out


# -- MQTT -----------------------------------------------------------------------------------
def _utf8(text: str) -> bytes:
    return len(text.encode()).to_bytes(2, "big") + text.encode()


@pytest.mark.parametrize("user, password", [("admin", "wrong"), ("guest", "guest"), ("nobody", "x")])
def test_mqtt311_bad_credentials_connack_bytes(node, user, password) -> None:
    """The exact CONNACK: return code 5, not authorized (ActiveMQ 5.17's MQTT converter maps
    the authentication plugin's SecurityException to it), then the socket closes."""
    body = _utf8("MQTT") + bytes([4, 0xC2, 0, 60]) + _utf8("raw") + _utf8(user) + _utf8(password)
    with socket.create_connection(("127.0.0.1", node.ports["mqtt"]), timeout=5) as s:
        s.sendall(bytes([0x10, len(body)]) + body)
        out = b""
        while chunk := s.recv(100):
            out += chunk
    assert out == bytes([0x20, 2, 0, 5])


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
@pytest.mark.parametrize("user, password", [("admin", "wrong"), ("guest", "guest"), (None, None)])
def test_mqtt_bad_credentials_refused_as_not_authorized(node, protocol, user, password) -> None:
    refused = 0x87  # paho shows 3.1.1's return code 5 as 0x87 too
    port = node.ports["mqtt"]
    good = MqttClient(port, "app", "apppw", "good")
    try:
        assert good.code == 0 and good.subscribe("news/#") == [1]
        bad = MqttClient(port, user, password, "bad", protocol)
        try:
            # ActiveMQ 5.17: MQTTProtocolConverter answers the SecurityException with
            # CONNECTION_REFUSED_NOT_AUTHORIZED (5; 0x87 for MQTT 5 clients).
            assert bad.code == refused
        finally:
            bad.stop()
        good.c.publish("news/a", b"still here", qos=1)
        assert good.inbox.get(timeout=STALL) == ("news/a", b"still here")
    finally:
        good.stop()


def test_mqtt_topic_authorization(node) -> None:
    port = node.ports["mqtt"]
    admin = MqttClient(port, "admin", "adminpw", "admin")
    app = MqttClient(port, "app", "apppw", "app")
    try:
        assert admin.subscribe("#") == [1]
        assert app.subscribe("news/#") == [1]
        assert app.subscribe("payroll/+") == [0x80]  # ActiveMQ's SUBSCRIBE_ERROR
        # A publish app may not make is acknowledged and dropped (ActiveMQ's MQTT converter).
        app.c.publish("payroll/march", b"forged", qos=1)
        assert app.pubacks.get(timeout=5) == 0
        app.c.publish("news/today", b"headline", qos=1)
        assert app.pubacks.get(timeout=5) == 0
        # One connection's publishes arrive in order: the forged one was never routed.
        assert admin.inbox.get(timeout=5) == ("news/today", b"headline")
        assert app.inbox.get(timeout=5) == ("news/today", b"headline")
        admin.c.publish("payroll/march", b"real", qos=1)
        assert admin.inbox.get(timeout=5) == ("payroll/march", b"real")
        assert app.inbox.empty()
    finally:
        admin.stop()
        app.stop()


def test_mqtt_session_taken_by_another_user_keeps_only_what_it_may_read(node) -> None:
    """ActiveMQ steals the link whoever connects with the client id, then restores the
    durable subscriptions as the new user, each authorised again: payroll/# is dropped."""
    port = node.ports["mqtt"]
    owner = MqttClient(port, "admin", "adminpw", "dev1", clean=False)
    assert owner.subscribe("news/#") == [1] and owner.subscribe("payroll/#") == [1]
    owner.stop()
    publisher = MqttClient(port, "admin", "adminpw", "pub")
    publisher.c.publish("payroll/feb", b"queued salaries", qos=1)  # queued for the session
    assert publisher.pubacks.get(timeout=5) == 0
    publisher.c.publish("news/yesterday", b"queued headline", qos=1)
    assert publisher.pubacks.get(timeout=5) == 0
    thief = MqttClient(port, "reader", "readerpw", "dev1", clean=False)
    try:
        assert thief.code == 0
        assert thief.inbox.get(timeout=5) == ("news/yesterday", b"queued headline")
        publisher.c.publish("payroll/march", b"salaries", qos=1)
        assert publisher.pubacks.get(timeout=5) == 0
        publisher.c.publish("news/today", b"headline", qos=1)
        assert publisher.pubacks.get(timeout=5) == 0
        assert thief.inbox.get(timeout=5) == ("news/today", b"headline")
        assert thief.inbox.empty()
    finally:
        thief.stop()
        publisher.stop()


def test_stomp_and_mqtt_meet_under_the_same_rules(node) -> None:
    """A topic app may not write is refused on both protocols; what it may write crosses."""
    app_mqtt = MqttClient(node.ports["mqtt"], "app", "apppw", "x")
    app_stomp, app_l = stomp_client(node.ports["stomp"], "app", "apppw")
    try:
        assert app_mqtt.subscribe("news/#") == [1]
        app_stomp.send("/topic/payroll.march", "forged", receipt="f")
        assert app_l.errors.get(timeout=5).headers["message"] == \
            "User app is not authorized to write to: topic://payroll.march"
        app_stomp.send("/topic/news.x", "cross", receipt="c")
        assert app_l.receipts.get(timeout=5) == "c"
        assert app_mqtt.inbox.get(timeout=5) == ("news/x", b"cross")
    finally:
        app_mqtt.stop()
        app_stomp.disconnect()

