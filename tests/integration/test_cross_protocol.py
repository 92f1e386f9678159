"""A message sent with one protocol is consumed with another, on both engines.

RabbitMQ flavour: MQTT topics, STOMP /topic/ and AMQP publishers to amq.topic all meet on
amq.topic (MQTT `/` is the routing key's `.`). ActiveMQ flavour: STOMP /topic/a.b and MQTT a/b
are the same topic.
"""

from __future__ import annotations

import queue
import threading

import paho.mqtt.client as mqtt
import pika
import pytest
import stomp
from paho.mqtt.enums import CallbackAPIVersion

pytestmark = pytest.mark.timeout(30)


class StompInbox(stomp.ConnectionListener):
    def __init__(self) -> None:
        self.frames: queue.Queue = queue.Queue()
        self.receipts: queue.Queue = queue.Queue()

    def on_message(self, frame) -> None:
        self.frames.put(frame)

    def on_receipt(self, frame) -> None:
        self.receipts.put(frame.headers["receipt-id"])

    def receipt(self, receipt_id: str) -> None:
        """Wait for the RECEIPT of the frame sent with ``receipt: receipt_id``."""
        assert self.receipts.get(timeout=5) == receipt_id


def stomp_client(port: int, login: tuple[str, str] = ("guest", "guest")):
    conn = stomp.Connection12([("127.0.0.1", port)], vhost="/", heartbeats=(0, 0))
    inbox = StompInbox()
    conn.set_listener("inbox", inbox)
    conn.connect(*login, wait=True)
    return conn, inbox


def mqtt_client(port: int, client_id: str, protocol=mqtt.MQTTv311):
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    inbox: queue.Queue = queue.Queue()
    connected = threading.Event()
    c.on_message = lambda cl, u, m: inbox.put(m)
    c.on_connect = lambda *a: connected.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert connected.wait(5)
    return c, inbox


def subscribed(c: mqtt.Client, topic: str, qos: int = 1) -> None:
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    c.subscribe(topic, qos=qos)
    assert done.wait(5)


def close_mqtt(c: mqtt.Client) -> None:
    c.disconnect()
    c.loop_stop()


@pytest.mark.parametrize("engine, stomp_dest", [("rabbitmq", "/topic/sensors.kitchen"),
                                                 ("activemq", "/topic/sensors.kitchen")])
def test_mqtt_publish_reaches_stomp_topic_subscriber(mqemu_start, engine, stomp_dest):
    node = mqemu_start(engine=engine)
    sconn, sinbox = stomp_client(node.ports["stomp"])
    c, _ = mqtt_client(node.ports["mqtt"], f"pub-{engine}")
    try:
        sconn.subscribe(stomp_dest, id="s1", ack="auto", headers={"receipt": "sub"})
        sinbox.receipt("sub")
        c.publish("sensors/kitchen", b"21.5C", qos=1).wait_for_publish(5)
        frame = sinbox.frames.get(timeout=5)
        assert frame.body == "21.5C"
        assert frame.headers["destination"] == stomp_dest
    finally:
        close_mqtt(c)
        sconn.disconnect()


@pytest.mark.parametrize("engine, wildcard", [("rabbitmq", "sensors/#"), ("activemq", "sensors/+")])
def test_stomp_topic_send_reaches_mqtt_subscriber(mqemu_start, engine, wildcard):
    node = mqemu_start(engine=engine)
    sconn, _ = stomp_client(node.ports["stomp"])
    c, inbox = mqtt_client(node.ports["mqtt"], f"sub-{engine}")
    try:
        subscribed(c, wildcard)
        sconn.send("/topic/sensors.garage", "open", headers={"content-type": "text/plain"})
        msg = inbox.get(timeout=5)
        assert (msg.topic, msg.payload) == ("sensors/garage", b"open")
    finally:
        close_mqtt(c)
        sconn.disconnect()


def test_mqtt_to_amqp_and_back_rabbitmq(mqemu_server):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", mqemu_server.ports["amqp"]))
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", "orders.*")
    c, inbox = mqtt_client(mqemu_server.ports["mqtt"], "cross-amqp")
    try:
        c.publish("orders/42", b"from mqtt", qos=1).wait_for_publish(5)
        method, _props, body = next(ch.consume(q, auto_ack=True, inactivity_timeout=5))
        ch.cancel()
        assert method is not None, "nothing reached the AMQP queue"
        assert (method.routing_key, body) == ("orders.42", b"from mqtt")
        subscribed(c, "replies/#")
        ch.basic_publish("amq.topic", "replies.42", b"from amqp")
        msg = inbox.get(timeout=5)
        assert (msg.topic, msg.payload) == ("replies/42", b"from amqp")
    finally:
        close_mqtt(c)
        conn.close()


def test_stomp_to_amqp_headers_and_content_type_intact(mqemu_server):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", mqemu_server.ports["amqp"]))
    ch = conn.channel()
    sconn, sinbox = stomp_client(mqemu_server.ports["stomp"])
    try:
        sconn.send("/queue/bridge", '{"n": 1}', headers={"content-type": "application/json", "x-trace": "abc",
                                                          "receipt": "sent"})
        sinbox.receipt("sent")
        method, props, body = ch.basic_get("bridge", auto_ack=True)
        assert body == b'{"n": 1}'
        assert props.content_type == "application/json"
        assert props.headers["x-trace"] == "abc"
        ch.basic_publish("", "bridge", b"back", pika.BasicProperties(content_type="text/plain",
                                                                    headers={"x-from": "amqp"}))
        sconn.subscribe("/queue/bridge", id="b", ack="auto")
        frame = sinbox.frames.get(timeout=5)
        assert frame.body == "back"
        assert frame.headers["content-type"] == "text/plain" and frame.headers["x-from"] == "amqp"
    finally:
        sconn.disconnect()
        conn.close()
