"""MQTT with real clients: paho-mqtt 2.x (3.1.1 and 5.0), amqtt, pika across protocols."""

from __future__ import annotations

import asyncio
import queue
import threading

import paho.mqtt.client as mqtt
import pika
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

pytestmark = pytest.mark.timeout(30)


def paho(port: int, client_id: str, protocol=mqtt.MQTTv311, clean=True, login=None, **connect_kw) -> tuple[mqtt.Client, queue.Queue]:
    kw = {} if protocol == mqtt.MQTTv5 else {"clean_session": clean}
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **kw)
    inbox: queue.Queue = queue.Queue()
    connected = threading.Event()
    c.on_message = lambda cl, u, m: inbox.put(m)
    c.on_connect = lambda *a: connected.set()
    if login:
        c.username_pw_set(*login)
    c.connect("127.0.0.1", port, **connect_kw)
    c.loop_start()
    assert connected.wait(5)
    return c, inbox


def subscribe(c: mqtt.Client, topic: str, qos: int) -> None:
    """SUBSCRIBE and wait for its SUBACK, which says the subscription is in place; the broker
    must grant the QoS asked for."""
    acks: queue.Queue = queue.Queue()
    c.on_subscribe = lambda cl, u, mid, codes, props: acks.put((mid, [rc.value for rc in codes]))
    rc, mid = c.subscribe(topic, qos=qos)
    assert rc == mqtt.MQTT_ERR_SUCCESS
    assert acks.get(timeout=5) == (mid, [qos])


def stop(c: mqtt.Client) -> None:
    c.disconnect()
    c.loop_stop()


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_paho_qos_0_1_2(mqemu_server, protocol) -> None:
    port = mqemu_server.ports["mqtt"]
    c, inbox = paho(port, "paho-q", protocol)
    try:
        subscribe(c, "it/+", 2)
        for q in (0, 1, 2):
            c.publish("it/x", b"m%d" % q, qos=q).wait_for_publish(5)
        got = sorted(inbox.get(timeout=5).payload for _ in range(3))
        assert got == [b"m0", b"m1", b"m2"]
    finally:
        stop(c)


def test_paho_v5_properties_round_trip(mqemu_server) -> None:
    port = mqemu_server.ports["mqtt"]
    c, inbox = paho(port, "paho-v5", mqtt.MQTTv5)
    try:
        subscribe(c, "req/1", 1)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "resp/1"
        props.CorrelationData = b"42"
        props.ContentType = "text/plain"
        props.UserProperty = [("a", "1")]
        c.publish("req/1", b"q", qos=1, properties=props).wait_for_publish(5)
        m = inbox.get(timeout=5)
        assert m.properties.ResponseTopic == "resp/1"
        assert m.properties.CorrelationData == b"42"
        assert m.properties.ContentType == "text/plain"
        assert m.properties.UserProperty == [("a", "1")]
    finally:
        stop(c)


def test_persistent_session_gets_offline_messages(mqemu_server) -> None:
    port = mqemu_server.ports["mqtt"]
    c, _ = paho(port, "offline", clean=False)
    subscribe(c, "off/t", 1)
    stop(c)
    p, _ = paho(port, "pub")
    p.publish("off/t", b"while away", qos=1).wait_for_publish(5)
    stop(p)
    c, inbox = paho(port, "offline", clean=False)
    try:
        assert inbox.get(timeout=5).payload == b"while away"
    finally:
        stop(c)


def test_mqtt_to_amqp_and_back(mqemu_server) -> None:
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", mqemu_server.ports["amqp"]))
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", "sensors.*")
    c, inbox = paho(mqemu_server.ports["mqtt"], "xproto", mqtt.MQTTv5)
    try:
        subscribe(c, "cmd/#", 1)
        c.publish("sensors/t1", b"21.5", qos=1).wait_for_publish(5)
        method, props, body = next(ch.consume(q, auto_ack=True, inactivity_timeout=5))
        ch.cancel()
        assert method is not None, "nothing reached the AMQP queue"
        assert method.routing_key == "sensors.t1" and body == b"21.5"
        assert props.headers["x-mqtt-publish-qos"] == 1 and props.delivery_mode == 2
        ch.basic_publish("amq.topic", "cmd.t1", b"on", pika.BasicProperties(content_type="text/plain"))
        m = inbox.get(timeout=5)
        assert (m.topic, m.payload, m.qos, m.properties.ContentType) == ("cmd/t1", b"on", 0, "text/plain")
    finally:
        stop(c)
        conn.close()


def test_amqtt_client(mqemu_server) -> None:
    from amqtt.client import MQTTClient
    from amqtt.mqtt.constants import QOS_1

    async def main() -> bytes:
        c = MQTTClient(client_id="amqtt-1")
        await c.connect(f"mqtt://127.0.0.1:{mqemu_server.ports['mqtt']}/")
        await c.subscribe([("am/t", QOS_1)])
        await c.publish("am/t", b"via amqtt", qos=QOS_1)
        msg = await asyncio.wait_for(c.deliver_message(), 5)
        await c.disconnect()
        return msg.publish_packet.payload.data

    assert asyncio.run(main()) == b"via amqtt"


def test_activemq_flavour(mqemu_start) -> None:
    node = mqemu_start(engine="activemq")
    c, inbox = paho(node.ports["mqtt"], "amq", login=("anyone", "anything"))
    try:
        subscribe(c, "a/#", 1)
        c.publish("a/b", b"x", qos=1).wait_for_publish(5)
        assert inbox.get(timeout=5).payload == b"x"
    finally:
        stop(c)
