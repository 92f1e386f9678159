"""RabbitMQ-flavour permissions for MQTT, as RabbitMQ's MQTT plugin applies them: a publish
needs write on ``amq.topic``; a subscription needs read on ``amq.topic`` and configure,
write and read on the session's queue. A refused SUBSCRIBE gets 0x80 (3.1.1) / 0x87 (5.0)
in its SUBACK; a refused PUBLISH is dropped (3.1.1: still acknowledged) or gets PUBACK 0x87
(5.0)."""

from __future__ import annotations

import queue
import threading

import paho.mqtt.client as mqtt
import pytest
from mqemu.broker.config import load_config
from paho.mqtt.enums import CallbackAPIVersion

pytestmark = pytest.mark.timeout(30)

CONFIG = """
[[users]]
name = "guest"
password = "guest"

[[users]]
name = "reader"
password = "r"

[[users]]
name = "writer"
password = "w"

[[permissions]]
user = "guest"

[[permissions]]
user = "reader"
configure = "^mqtt-subscription-"
write = "^mqtt-subscription-"
read = ".*"

[[permissions]]
user = "writer"
configure = ""
write = ".*"
read = "^$"
"""


class Client:
    def __init__(self, port: int, user: str, password: str, protocol=mqtt.MQTTv311) -> None:
        self.c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"perm-{user}-{protocol}",
                             protocol=protocol)
        self.c.username_pw_set(user, password)
        self.inbox: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.pubacks: queue.Queue = queue.Queue()
        connected = threading.Event()
        self.c.on_connect = lambda *a: connected.set()
        self.c.on_message = lambda cl, u, m: self.inbox.put(m.payload)
        self.c.on_subscribe = lambda cl, u, mid, codes, props: self.subacks.put([rc.value for rc in codes])
        self.c.on_publish = lambda cl, u, mid, rc, props: self.pubacks.put(rc.value)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert connected.wait(5)

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def port(mqemu_start, tmp_path):
    path = tmp_path / "mqemu.toml"
    path.write_text(CONFIG)
    node = mqemu_start(config=load_config(str(path)))
    return node.ports["mqtt"]


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_subscribe_and_publish_permissions(port, protocol) -> None:
    refused = 0x87 if protocol == mqtt.MQTTv5 else 0x80
    reader = Client(port, "reader", "r", protocol)
    writer = Client(port, "writer", "w", protocol)
    guest = Client(port, "guest", "guest", protocol)
    try:
        reader.c.subscribe("p/#", 1)
        assert reader.subacks.get(timeout=5) == [1]
        writer.c.subscribe("p/#", 1)  # no configure/read on its queue
        assert writer.subacks.get(timeout=5) == [refused]
        writer.c.publish("p/w", b"from writer", qos=1)
        assert writer.pubacks.get(timeout=5) == 0
        assert reader.inbox.get(timeout=5) == b"from writer"
        reader.c.publish("p/r", b"from reader", qos=1)  # no write on amq.topic
        assert reader.pubacks.get(timeout=5) == (0x87 if protocol == mqtt.MQTTv5 else 0)
        guest.c.publish("p/g", b"from guest", qos=1)
        assert reader.inbox.get(timeout=5) == b"from guest"  # the reader's own was dropped
        assert reader.inbox.empty()
    finally:
        for c in (reader, writer, guest):
            c.stop()
