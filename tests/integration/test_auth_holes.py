"""Smaller authorisation holes (issue 9, item 8), as attacks on the wire with real clients.

- STOMP ``reply-to:/temp-queue/...`` declares a queue, so it needs ``configure`` as the same
  user's AMQP declare does.
- ``[mqtt] deny_subscribe`` / ``deny_publish`` are topic rules on amq.topic in the core: a
  filter that could match a denied topic (``#``, ``+/pw``) is refused on every protocol (so it
  never receives one, live or retained), and STOMP and AMQP publishers to denied topics are
  refused as MQTT ones are.
- A persistent MQTT session cannot be taken over (or cleaned) by a user without access to
  its queue, as on RabbitMQ.
"""

from __future__ import annotations

import pika
import pika.exceptions
import pytest
from auth_helpers import STALL, MqttClient, connect_frame, stomp_client, stomp_exchange
from mqemu.broker.config import load_config

pytestmark = pytest.mark.timeout(30)

CONFIG = """
[[users]]
name = "guest"
password = "guest"

[[users]]
name = "limited"
password = "l"

[[users]]
name = "alice"
password = "a"

[[users]]
name = "mallory"
password = "m"

[[permissions]]
user = "guest"

[[permissions]]
user = "alice"

[[permissions]]
user = "limited"
configure = "^$"
write = ".*"
read = ".*"

[[permissions]]
user = "mallory"
configure = "^mqtt-subscription-m-"
write = "^(amq\\\\.topic|mqtt-subscription-m-.*)$"
read = "^(amq\\\\.topic|mqtt-subscription-m-.*)$"

[mqtt]
deny_subscribe = ["secret/#"]
deny_publish = ["ro/+"]
"""


@pytest.fixture
def node(mqemu_start, tmp_path):
    path = tmp_path / "mqemu.toml"
    path.write_text(CONFIG)
    return mqemu_start(config=load_config(str(path)))


def amqp(node, user: str, password: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", node.ports["amqp"], credentials=pika.PlainCredentials(user, password)))


def test_stomp_temp_queue_reply_to_needs_configure_as_amqp_does(node) -> None:
    port = node.ports["stomp"]
    watcher, watcher_l = stomp_client(port, "guest", "guest")
    try:
        watcher.subscribe("/topic/requests", id="w", receipt="w1")
        assert watcher_l.receipts.get(timeout=5) == "w1"
        out = stomp_exchange(port, connect_frame("limited", "l")
                             + b"SEND\ndestination:/topic/requests\nreply-to:/temp-queue/r\n\nq\x00")
        # RabbitMQ: a core refusal is the channel's death: ERROR access_refused, then close.
        assert b"message:access_refused" in out
        assert b"access to queue 'amq.gen-" in out and b"refused for user 'limited'" in out
        queues = node.broker.vhosts["/"].queues
        assert not [q for q in queues if q.startswith("amq.gen-")]
        # The same user is refused the same queue over AMQP.
        conn = amqp(node, "limited", "l")
        try:
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
                conn.channel().queue_declare("", exclusive=True)
            assert e.value.reply_code == 403
        finally:
            conn.close()
        # The request was not published; the watcher's connection never stalled.
        watcher.send("/topic/requests", "after", receipt="w2")
        assert watcher_l.receipts.get(timeout=STALL) == "w2"
        assert watcher_l.messages.get(timeout=STALL).body == "after"
        assert watcher_l.messages.empty()
    finally:
        watcher.disconnect()


@pytest.mark.parametrize("topic_filter", ["secret/#", "secret/+", "secret/pw"])
def test_mqtt_filters_inside_a_denied_area_are_refused(node, topic_filter) -> None:
    spy = MqttClient(node.ports["mqtt"], "guest", "guest", "spy")
    try:
        assert spy.subscribe(topic_filter) == [0x80]
    finally:
        spy.stop()


@pytest.mark.parametrize("topic_filter", ["#", "+/pw", "+/+"])
def test_mqtt_wider_filters_never_receive_denied_topics(node, topic_filter) -> None:
    """``#`` and ``+/pw`` are granted (as RabbitMQ grants them: its topic permissions check
    the filter), but a denied topic reaches no one, live or retained (unlike RabbitMQ, whose
    ``#`` subscriber receives it)."""
    port = node.ports["mqtt"]
    publisher = MqttClient(port, "guest", "guest", "pub")
    spy = MqttClient(port, "guest", "guest", "spy")
    try:
        publisher.c.publish("secret/pw", b"hunter2", qos=1, retain=True)
        assert publisher.pubacks.get(timeout=5) == 0
        publisher.c.publish("news/pw", b"retained news", qos=1, retain=True)
        assert publisher.pubacks.get(timeout=5) == 0
        assert spy.subscribe(topic_filter) == [1]
        assert spy.inbox.get(timeout=5) == ("news/pw", b"retained news")  # retained: only this one
        publisher.c.publish("secret/pw", b"hunter3", qos=1)
        assert publisher.pubacks.get(timeout=5) == 0
        publisher.c.publish("news/pw", b"public", qos=1)
        assert spy.inbox.get(timeout=STALL) == ("news/pw", b"public")
        assert spy.inbox.empty()
    finally:
        publisher.stop()
        spy.stop()


def test_stomp_and_amqp_subscribers_obey_deny_subscribe(node) -> None:
    # A binding inside the denied area is refused, on STOMP and AMQP as on MQTT.
    out = stomp_exchange(node.ports["stomp"], connect_frame("guest", "guest")
                         + b"SUBSCRIBE\ndestination:/topic/secret.pw\nid:1\n\n\x00")
    assert b"message:access_refused" in out
    assert b"access to topic 'secret.pw' in exchange 'amq.topic' in vhost '/' refused for user 'guest'" in out
    conn = amqp(node, "guest", "guest")
    stomp_sub, stomp_l = stomp_client(node.ports["stomp"], "guest", "guest")
    try:
        for key in ("secret.#", "secret.*", "secret.pw"):
            ch = conn.channel()
            q = ch.queue_declare("", exclusive=True).method.queue
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
                ch.queue_bind(q, "amq.topic", key)
            assert e.value.reply_code == 403
            assert f"ACCESS_REFUSED - access to topic '{key}' in exchange 'amq.topic'" in e.value.reply_text
        # Wider bindings are granted and get everything but the denied topics.
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, "amq.topic", "#")
        stomp_sub.subscribe("/topic/*.pw", id="w", receipt="s1")
        assert stomp_l.receipts.get(timeout=5) == "s1"
        ch.basic_publish("amq.topic", "secret.pw", b"hunter2")
        ch.basic_publish("amq.topic", "news.pw", b"public")
        for _ in range(50):
            method, _props, body = ch.basic_get(q, auto_ack=True)
            if method is not None:
                break
        assert body == b"public" and method.routing_key == "news.pw"
        assert ch.basic_get(q, auto_ack=True)[0] is None
        assert stomp_l.messages.get(timeout=STALL).body == "public"
        assert stomp_l.messages.empty()
    finally:
        conn.close()
        stomp_sub.disconnect()


def test_deny_publish_covers_stomp_and_amqp_publishers(node) -> None:
    port = node.ports["mqtt"]
    sub = MqttClient(port, "guest", "guest", "ro-reader")
    try:
        assert sub.subscribe("ro/#") == [1]
        out = stomp_exchange(node.ports["stomp"], connect_frame("guest", "guest")
                             + b"SEND\ndestination:/topic/ro.x\n\nstomp\x00")
        assert b"message:access_refused" in out
        assert b"ACCESS_REFUSED - access to topic 'ro.x' in exchange 'amq.topic'" in out
        conn = amqp(node, "guest", "guest")
        try:
            ch = conn.channel()
            ch.basic_publish("amq.topic", "ro.x", b"amqp")
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
                ch.queue_declare("", exclusive=True)  # a round trip: the close arrives first
            assert e.value.reply_code == 403
            ch = conn.channel()
            ch.basic_publish("amq.topic", "ro.x.y", b"allowed")  # ro/+ does not cover ro/x/y
        finally:
            conn.close()
        mqtt_pub = MqttClient(port, "guest", "guest", "ro-writer")
        try:
            mqtt_pub.c.publish("ro/x", b"mqtt", qos=1)
            assert mqtt_pub.pubacks.get(timeout=5) == 0  # acknowledged and dropped
        finally:
            mqtt_pub.stop()
        assert sub.inbox.get(timeout=5) == ("ro/x/y", b"allowed")
        assert sub.inbox.empty()
    finally:
        sub.stop()


def test_persistent_session_cannot_be_taken_by_a_user_without_its_queue(node) -> None:
    """RabbitMQ's MQTT plugin declares (or, clean, deletes) the session queue as the
    connecting user: without configure/read on ``mqtt-subscription-dev1qos1`` mallory is
    refused, whether she asks to resume or to clean the session; alice loses nothing."""
    port = node.ports["mqtt"]
    alice = MqttClient(port, "alice", "a", "dev1", clean=False)
    assert alice.subscribe("orders/#") == [1]
    alice.stop()
    publisher = MqttClient(port, "guest", "guest", "p")
    try:
        publisher.c.publish("orders/1", b"for alice", qos=1)
        assert publisher.pubacks.get(timeout=5) == 0
        for clean in (False, True):
            thief = MqttClient(port, "mallory", "m", "dev1", clean=clean)
            thief.stop()
            assert thief.code == 0x88  # 3.1.1 return code 3, server unavailable (RabbitMQ 3.10)
            assert thief.inbox.empty()
        own = MqttClient(port, "mallory", "m", "m-1", clean=False)
        try:
            assert own.code == 0 and own.subscribe("orders/#") == [1]  # her own session is fine
        finally:
            own.stop()
        alice = MqttClient(port, "alice", "a", "dev1", clean=False)
        try:
            assert alice.code == 0
            assert alice.inbox.get(timeout=5) == ("orders/1", b"for alice")
        finally:
            alice.stop()
    finally:
        publisher.stop()


def test_a_connected_owner_is_not_closed_by_a_refused_takeover(node) -> None:
    """RabbitMQ 3.10 closes the connected owner before refusing the intruder; mqemu refuses
    first, so the owner stays connected and keeps receiving (a DELIBERATE difference)."""
    port = node.ports["mqtt"]
    alice = MqttClient(port, "alice", "a", "dev3", clean=False)
    try:
        assert alice.subscribe("orders/#") == [1]
        thief = MqttClient(port, "mallory", "m", "dev3", clean=False)
        thief.stop()
        assert thief.code == 0x88
        alice.c.publish("orders/3", b"still mine", qos=1)
        assert alice.inbox.get(timeout=STALL) == ("orders/3", b"still mine")
    finally:
        alice.stop()


def test_a_user_with_the_queue_may_take_the_session_over(node) -> None:
    """Any user with access to the session's queue takes it over, as on RabbitMQ."""
    port = node.ports["mqtt"]
    alice = MqttClient(port, "alice", "a", "dev2", clean=False)
    assert alice.subscribe("orders/#") == [1]
    guest = MqttClient(port, "guest", "guest", "dev2", clean=False)
    try:
        assert guest.code == 0
        guest.c.publish("orders/2", b"x", qos=1)
        assert guest.inbox.get(timeout=5) == ("orders/2", b"x")
    finally:
        guest.stop()
        alice.c.loop_stop()

