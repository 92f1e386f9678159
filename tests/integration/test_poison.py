"""No poison messages: what one protocol can say and another cannot carry never fails a
delivery, never disconnects a consumer and never turns a queued publish into an error.

Each test is an attack: a hostile publisher on one connection sends messages whose header
names, property values, topics or header types have no form in some other protocol
(ARCHITECTURE.md, "Messages that cross protocols"), interleaved with a well-behaved
publisher's messages on another connection. A well-behaved consumer on every protocol
(AMQP 0-9-1 with pika, STOMP with stomp.py, MQTT 5.0 with paho) must receive every message,
hostile ones included (converted), stay connected, and see each well-behaved message within
a generous bound (1 s, so CI noise cannot fail it).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import pika
import pytest
import stomp
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

pytestmark = pytest.mark.timeout(60)

STALL = 1.0  # the bound on a well-behaved message's delivery
LONG = "k" * 300  # over 255 bytes: not an AMQP 0-9-1 shortstr
GOOD = 10  # well-behaved messages, sent between the hostile ones


class Arrivals:
    """Bodies a consumer received, with the time each arrived."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.got: dict[bytes, float] = {}
        self.extra: dict[bytes, Any] = {}
        self.lock = threading.Lock()
        self.closed: list[Any] = []

    def add(self, body: bytes, extra: Any = None) -> None:
        with self.lock:
            self.got.setdefault(body, time.monotonic())
            self.extra[body] = extra


class StompListener(stomp.ConnectionListener):
    def __init__(self, arrivals: Arrivals) -> None:
        self.arrivals = arrivals
        self.receipts: queue.Queue = queue.Queue()
        self.errors: queue.Queue = queue.Queue()

    def on_message(self, frame) -> None:
        body = frame.body if isinstance(frame.body, bytes) else frame.body.encode()
        self.arrivals.add(body, frame.headers)

    def on_receipt(self, frame) -> None:
        self.receipts.put(frame.headers["receipt-id"])

    def on_error(self, frame) -> None:
        self.errors.put(frame)

    def on_disconnected(self) -> None:
        self.arrivals.closed.append("disconnected")


def stomp_connect(port: int, arrivals: Arrivals) -> tuple[stomp.Connection12, StompListener]:
    conn = stomp.Connection12([("127.0.0.1", port)], vhost="/", heartbeats=(0, 0), auto_decode=False)
    listener = StompListener(arrivals)
    conn.set_listener("l", listener)
    conn.connect("guest", "guest", wait=True)
    return conn, listener


def mqtt5_connect(port: int, client_id: str, arrivals: Arrivals) -> mqtt.Client:
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv5)
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.on_message = lambda cl, u, m: arrivals.add(m.payload, (m.topic, m.properties))
    c.on_disconnect = lambda *a: arrivals.closed.append(a[3] if len(a) > 3 else a)
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert connected.wait(5)
    return c


def mqtt_subscribe(c: mqtt.Client, topic: str) -> None:
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    c.subscribe(topic, qos=1)
    assert done.wait(5)


class Consumers:
    """An AMQP, a STOMP and an MQTT 5 consumer of everything published under ``poison``
    on amq.topic (routing keys ``poison.#``, MQTT ``poison/#``)."""

    def __init__(self, node: Any) -> None:
        self.amqp = Arrivals("amqp")
        self.stomp = Arrivals("stomp")
        self.mqtt = Arrivals("mqtt")
        self.conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.ports["amqp"]))
        ch = self.conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, "amq.topic", "poison.#")
        ch.basic_consume(q, lambda _ch, method, props, body: self.amqp.add(body, (method, props)),
                         auto_ack=True)
        self.stomp_conn, listener = stomp_connect(node.ports["stomp"], self.stomp)
        self.stomp_conn.subscribe("/topic/poison.#", id="s", ack="auto", headers={"receipt": "sub"})
        assert listener.receipts.get(timeout=5) == "sub"
        self.mqtt_client = mqtt5_connect(node.ports["mqtt"], "poison-consumer", self.mqtt)
        mqtt_subscribe(self.mqtt_client, "poison/#")

    def wait_for(self, bodies: set[bytes], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        everyone = (self.amqp, self.stomp, self.mqtt)
        while time.monotonic() < deadline:
            self.conn.process_data_events(time_limit=0.02)
            if all(bodies <= set(a.got) for a in everyone):
                return
        missing = {a.name: sorted(bodies - set(a.got))[:5] for a in everyone}
        raise AssertionError(f"lost: {missing}")

    def check(self, good_sent: dict[bytes, float]) -> None:
        for a in (self.amqp, self.stomp, self.mqtt):
            assert a.closed == [], f"{a.name} consumer was disconnected: {a.closed}"
            late = {b: a.got[b] - t for b, t in good_sent.items() if a.got[b] - t > STALL}
            assert not late, f"{a.name} consumer stalled: {late}"
        assert self.conn.is_open

    def close(self) -> None:
        self.mqtt_client.disconnect()
        self.mqtt_client.loop_stop()
        self.stomp_conn.disconnect()
        self.conn.close()


def test_stomp_headers_amqp_cannot_carry(mqemu_server):
    node = mqemu_server
    consumers = Consumers(node)
    hostile_in = Arrivals("-")
    hostile, listener = stomp_connect(node.ports["stomp"], hostile_in)
    good, _ = stomp_connect(node.ports["stomp"], Arrivals("-"))
    attacks = [
        ("/topic/poison.a", {LONG: "long name"}),
        ("/topic/poison.b", {"content-type": "c" * 300, "type": "t" * 300, "app-id": "a" * 300}),
        ("/topic/poison.c", {"correlation-id": "c" * 300, "amqp-message-id": "m" * 300}),
        ("/topic/poison.d", {"reply-to": "/queue/" + "r" * 300}),
        ("/topic/poison.e", {"priority": "300", "timestamp": "-1"}),
        ("/topic/poison." + "t" * 300, {"x": "long topic"}),
        # 150 KB of headers: a content header frame over pika's frame_max (128 KiB)
        ("/topic/poison.f", {**{f"h{i}": "v" * 1000 for i in range(150)}, "content-type": "text/plain"}),
    ]
    good_sent: dict[bytes, float] = {}
    try:
        for i, (dest, headers) in enumerate(attacks):
            hostile.send(dest, f"hostile-{i}", headers={**headers, "receipt": f"r{i}"})
            good_sent[b"good-%d" % i] = time.monotonic()
            good.send("/topic/poison.good", f"good-{i}")
        # every hostile SEND is receipted, none refused
        assert sorted(listener.receipts.get(timeout=5) for _ in attacks) == sorted(f"r{i}" for i in range(len(attacks)))
        assert listener.errors.empty()
        consumers.wait_for({b"hostile-%d" % i for i in range(len(attacks))} | set(good_sent))
        consumers.check(good_sent)
        amqp = {body: props for body, (_m, props) in consumers.amqp.extra.items()}
        assert LONG not in amqp[b"hostile-0"].headers and amqp[b"hostile-0"].headers == {"receipt": "r0"}
        assert amqp[b"hostile-1"].content_type is None and amqp[b"hostile-1"].type is None
        assert amqp[b"hostile-2"].correlation_id is None
        assert amqp[b"hostile-2"].headers["x-correlation-id"] == "c" * 300
        assert amqp[b"hostile-2"].headers["x-message-id"] == "m" * 300
        assert amqp[b"hostile-3"].reply_to is None
        assert (amqp[b"hostile-4"].priority, amqp[b"hostile-4"].timestamp) == (None, None)
        assert amqp[b"hostile-6"].headers is None and amqp[b"hostile-6"].content_type == "text/plain"
        assert consumers.stomp.extra[b"hostile-6"]["h149"] == "v" * 1000
        method = consumers.amqp.extra[b"hostile-5"][0]
        assert method.routing_key == "poison." + "t" * 248  # cut to 255 bytes
        # STOMP and MQTT consumers see what the publisher sent
        stomp_headers = consumers.stomp.extra[b"hostile-0"]
        assert stomp_headers[LONG] == "long name"
        assert consumers.stomp.extra[b"hostile-2"]["correlation-id"] == "c" * 300
        topic, props = consumers.mqtt.extra[b"hostile-5"]
        assert topic == "poison/" + "t" * 300
        assert (LONG, "long name") in consumers.mqtt.extra[b"hostile-0"][1].UserProperty
    finally:
        hostile.disconnect()
        good.disconnect()
        consumers.close()


def test_mqtt5_properties_amqp_cannot_carry(mqemu_server):
    node = mqemu_server
    consumers = Consumers(node)
    hostile_closed = Arrivals("-")
    hostile = mqtt5_connect(node.ports["mqtt"], "hostile", hostile_closed)
    good = mqtt5_connect(node.ports["mqtt"], "good", Arrivals("-"))
    acks: queue.Queue = queue.Queue()
    hostile.on_publish = lambda cl, u, mid, rc, p: acks.put(rc)

    def props(**values: Any) -> Properties:
        p = Properties(PacketTypes.PUBLISH)
        for k, v in values.items():
            setattr(p, k, v)
        return p

    attacks = [
        ("poison/a", props(UserProperty=[(LONG, "long key"), ("ok", "kept")])),
        ("poison/b", props(ContentType="c" * 300)),
        ("poison/c", props(ResponseTopic="reply/" + "r" * 300, CorrelationData=b"\xff" * 300)),
        ("poison/" + "t" * 300, props(UserProperty=[("x", "long topic")])),
    ]
    good_sent: dict[bytes, float] = {}
    try:
        for i, (topic, p) in enumerate(attacks):
            hostile.publish(topic, b"hostile-%d" % i, qos=1, properties=p)
            good_sent[b"good-%d" % i] = time.monotonic()
            good.publish("poison/good", b"good-%d" % i, qos=1)
        codes = [acks.get(timeout=5) for _ in attacks]
        assert all(not rc.is_failure for rc in codes), codes  # PUBACK 0x00: accepted
        consumers.wait_for({b"hostile-%d" % i for i in range(len(attacks))} | set(good_sent))
        consumers.check(good_sent)
        assert hostile_closed.closed == [], "the hostile publisher was disconnected"
        amqp = {body: props for body, (_m, props) in consumers.amqp.extra.items()}
        assert amqp[b"hostile-0"].headers["ok"] == "kept" and LONG not in amqp[b"hostile-0"].headers
        assert amqp[b"hostile-1"].content_type is None
        assert amqp[b"hostile-2"].reply_to is None
        assert consumers.amqp.extra[b"hostile-3"][0].routing_key == "poison." + "t" * 248
        _topic, p = consumers.mqtt.extra[b"hostile-0"]
        assert (LONG, "long key") in p.UserProperty  # MQTT to MQTT: nothing lost
        _topic, p = consumers.mqtt.extra[b"hostile-2"]
        assert p.ResponseTopic == "reply/" + "r" * 300 and p.CorrelationData == b"\xff" * 300
        assert consumers.stomp.extra[b"hostile-1"]["content-type"] == "c" * 300
    finally:
        for c in (hostile, good):
            c.disconnect()
            c.loop_stop()
        consumers.close()


def test_amqp_values_stomp_and_mqtt_cannot_carry(mqemu_server):
    node = mqemu_server
    consumers = Consumers(node)
    hostile = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.ports["amqp"]))
    hch = hostile.channel()
    hch.confirm_delivery()
    good = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.ports["amqp"]))
    gch = good.channel()
    attacks = [
        # a header name and a routing key that are not UTF-8
        (b"poison.\xff\xfe", pika.BasicProperties(headers={b"k\xff": "not utf-8 name", "ok": "kept"})),
        # a header value longer than an MQTT string, one with a NUL (STOMP shows it as U+FFFD)
        ("poison.long", pika.BasicProperties(headers={"big": "v" * 70000, "nul": "a\x00b", "ok": "kept"})),
        # values STOMP and MQTT have no form for
        ("poison.types", pika.BasicProperties(headers={"t": {"nested": [1, 2]}, "ok": "kept"},
                                              content_type="text/\x00plain")),
    ]
    good_sent: dict[bytes, float] = {}
    try:
        for i, (key, props) in enumerate(attacks):
            hch.basic_publish("amq.topic", key, b"hostile-%d" % i, props)  # confirmed: raises if nacked
            good_sent[b"good-%d" % i] = time.monotonic()
            gch.basic_publish("amq.topic", "poison.good", b"good-%d" % i)
        consumers.wait_for({b"hostile-%d" % i for i in range(len(attacks))} | set(good_sent))
        consumers.check(good_sent)
        assert hostile.is_open
        # MQTT: bytes that were not UTF-8 and NULs become U+FFFD; a string over 65535 bytes
        # and a value of no MQTT form (a table) are left out
        topic, p = consumers.mqtt.extra[b"hostile-0"]
        assert topic == "poison/\ufffd\ufffd"
        assert p.UserProperty == [("k\ufffd", "not utf-8 name"), ("ok", "kept")]
        _topic, p = consumers.mqtt.extra[b"hostile-1"]
        assert p.UserProperty == [("nul", "a\ufffdb"), ("ok", "kept")]
        _topic, p = consumers.mqtt.extra[b"hostile-2"]
        assert p.UserProperty == [("ok", "kept")] and p.ContentType == "text/\ufffdplain"
        # STOMP: the same for names and values; RabbitMQ percent-encodes the destination's bytes
        assert consumers.stomp.extra[b"hostile-0"]["k\ufffd"] == "not utf-8 name"
        stomp_headers = consumers.stomp.extra[b"hostile-1"]
        assert len(stomp_headers["big"]) == 70000 and stomp_headers["ok"] == "kept"
        assert consumers.stomp.extra[b"hostile-0"]["destination"] == "/topic/poison.%FF%FE"
    finally:
        hostile.close()
        good.close()
        consumers.close()


def test_stomp_expiration_is_checked_before_queueing(mqemu_server):
    """RabbitMQ refuses an expiration that is not an integer from 0 to ten years (ms) with
    precondition_failed, before the message is queued."""
    node = mqemu_server
    consumers = Consumers(node)
    try:
        for value, reason in [("abc", "no_integer"), ("-5", "{value_negative,-5}"),
                              ("9" * 5000, "{value_too_large,"), ("315360000001", "{value_too_large,315360000001}")]:
            conn, listener = stomp_connect(node.ports["stomp"], Arrivals("-"))
            conn.send("/topic/poison.exp", "refused", headers={"expiration": value})
            error = listener.errors.get(timeout=5)
            assert error.headers["message"] == "precondition_failed"
            assert f"invalid expiration '{value}': {reason}" in error.body.decode()
            try:
                conn.disconnect()
            except (OSError, stomp.exception.NotConnectedException):
                pass  # the broker closed the connection after its ERROR (RabbitMQ does) first
        ok, _ = stomp_connect(node.ports["stomp"], Arrivals("-"))
        ok.send("/topic/poison.exp", "accepted", headers={"expiration": "315360000000"})
        consumers.wait_for({b"accepted"})
        assert all(b"refused" not in a.got for a in (consumers.amqp, consumers.stomp, consumers.mqtt))
        ok.disconnect()
    finally:
        consumers.close()
