"""MQTT state across a kill -9: ``mqemu serve --data-dir`` as a subprocess, killed, restarted.

Rules checked: every QoS 1/2 message the broker acknowledged (PUBACK, PUBREC) to the
publisher while a persistent session was offline comes back to that session exactly once;
unacknowledged ones at most once; the session's subscriptions still route after the restart;
retained messages (and their clearing) survive; clean sessions are gone; QoS 2 exchanges
half done (PUBREC received but not PUBREL, PUBREL sent but not PUBCOMP) resume with the
same packet ids.
"""

from __future__ import annotations

import json
import queue
import threading

import paho.mqtt.client as mqtt
import pytest
from durability_helpers import Nodes, RawMqtt
from mqemu.protocols.mqtt.packets import (
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
)
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def nodes(tmp_path):
    n = Nodes(tmp_path)
    try:
        yield n
    finally:
        n.close()


def start(nodes: Nodes, data) -> int:
    node = nodes.start(data, "--mqtt-port", "0").wait_ready()
    start.node = node  # type: ignore[attr-defined]
    return json.loads(node.ready.read_text())["mqtt"]


class Paho:
    """A paho-mqtt client whose callbacks only fill queues; the test asserts."""

    def __init__(self, port: int, client_id: str, protocol=mqtt.MQTTv311, clean: bool = True,
                 expiry: int | None = None) -> None:
        kw = {} if protocol == mqtt.MQTTv5 else {"clean_session": clean}
        self.c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=protocol, **kw)
        self.inbox: queue.Queue = queue.Queue()
        self.present: list[bool] = []
        connected = threading.Event()
        self.c.on_message = lambda cl, u, m: self.inbox.put(m)

        def on_connect(cl, u, flags, rc, props=None):
            self.present.append(bool(flags.session_present))
            connected.set()

        self.c.on_connect = on_connect
        props = None
        if protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = expiry or 0
        self.c.connect("127.0.0.1", port, clean_start=clean if protocol == mqtt.MQTTv5 else 3,
                       properties=props)
        self.c.loop_start()
        assert connected.wait(5)

    def subscribe(self, topic: str, qos: int) -> None:
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe(topic, qos)
        assert done.wait(5)

    def drain(self, quiet: float = 0.5) -> list:
        out = []
        while True:
            try:
                out.append(self.inbox.get(timeout=quiet))
            except queue.Empty:
                return out

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_offline_persistent_sessions_and_retained_survive_kill9(nodes, tmp_path):
    data = tmp_path / "data"
    port = start(nodes, data)
    s311 = Paho(port, "keep311", clean=False)
    s311.subscribe("d/#", 2)
    s5 = Paho(port, "keep5", mqtt.MQTTv5, clean=False, expiry=3600)
    s5.subscribe("d/#", 1)
    s311.stop()
    s5.stop()
    clean = Paho(port, "gone", clean=True)
    clean.subscribe("d/#", 1)
    pub = Paho(port, "pub")
    acked = []
    for i in range(60):
        qos = 1 if i % 2 else 2
        pub.c.publish("d/x", b"m%03d" % i, qos=qos).wait_for_publish(5)
        acked.append(b"m%03d" % i)
    pub.c.publish("r/a", b"keep me", qos=1, retain=True).wait_for_publish(5)
    pub.c.publish("r/b", b"cleared", qos=1, retain=True).wait_for_publish(5)
    pub.c.publish("r/b", b"", qos=1, retain=True).wait_for_publish(5)
    unacked = [b"u%03d" % i for i in range(20)]
    for body in unacked:  # not waited for: the kill may come before or after their ack
        pub.c.publish("d/x", body, qos=1)
    start.node.kill9()  # type: ignore[attr-defined]
    for c in (pub, clean):
        c.c.loop_stop()

    port = start(nodes, data)
    s311 = Paho(port, "keep311", clean=False)
    s5 = Paho(port, "keep5", mqtt.MQTTv5, clean=False, expiry=3600)
    gone = Paho(port, "gone", clean=False)
    try:
        assert s311.present == [True] and s5.present == [True] and gone.present == [False]
        for s in (s311, s5):
            got = [m.payload for m in s.drain()]
            for body in acked:
                assert got.count(body) == 1, (body, got.count(body))
            assert all(got.count(b) <= 1 for b in unacked)
            for odd in (0, 1):  # in publish order per QoS (paho hands QoS 2 over at PUBREL)
                mine = [b for b in acked if int(b[1:]) % 2 == odd]
                assert [b for b in got if b in mine] == mine
        assert gone.drain(0.3) == []
        # The subscriptions still route after the restart; the clean one is gone.
        pub = Paho(port, "pub2")
        pub.c.publish("d/after", b"after", qos=1).wait_for_publish(5)
        for s in (s311, s5):
            (m,) = s.drain()
            assert m.payload == b"after" and m.qos == 1
        assert gone.drain(0.2) == []
        # Retained messages came back, the cleared one stayed cleared.
        r = Paho(port, "reader")
        r.subscribe("r/#", 1)
        (m,) = r.drain()
        assert (m.topic, m.payload, m.retain) == ("r/a", b"keep me", True)
        for c in (r, pub):
            c.stop()
    finally:
        for c in (s311, s5, gone):
            c.stop()




def test_half_done_qos2_exchanges_resume_after_kill9(nodes, tmp_path):
    data = tmp_path / "data"
    port = start(nodes, data)
    sub = RawMqtt(port, "q2sub")
    sub.send(Subscribe(1, (Subscription("q2/#", 2),)))
    assert isinstance(sub.recv(), Suback)
    pub = RawMqtt(port, "q2pub")
    pub.send(Publish("q2/a", b"once", qos=2, packet_id=7))
    assert pub.recv() == Pubrec(7)  # routed and on disk; PUBREL not sent yet
    out = sub.recv()
    assert isinstance(out, Publish) and out.payload == b"once"
    sub.send(Pubrec(out.packet_id))  # the subscriber has it: only PUBREL/PUBCOMP remain
    assert sub.recv() == Pubrel(out.packet_id)
    # A PUBREC from the broker covers every store write before it, the PUBREC just sent.
    pub.send(Publish("q2/b", b"second", qos=2, packet_id=8))
    assert pub.recv() == Pubrec(8)
    start.node.kill9()  # type: ignore[attr-defined]
    sub.close()
    pub.close()

    port = start(nodes, data)
    pub = RawMqtt(port, "q2pub")
    sub = RawMqtt(port, "q2sub")
    try:
        assert pub.connack.session_present and sub.connack.session_present
        # [MQTT-4.4.0-1]: the broker resends its PUBREL with the same packet id, and not the
        # message the subscriber already received.
        assert sub.recv() == Pubrel(out.packet_id)
        sub.send(Pubcomp(out.packet_id))
        second = sub.recv()
        assert isinstance(second, Publish) and second.payload == b"second"
        sub.send(Pubrec(second.packet_id))
        assert sub.recv() == Pubrel(second.packet_id)
        sub.send(Pubcomp(second.packet_id))
        # The publisher resends its PUBLISH (DUP): acknowledged again, not routed again.
        pub.send(Publish("q2/a", b"once", qos=2, packet_id=7, dup=True))
        assert pub.recv() == Pubrec(7)
        pub.send(Pubrel(7))
        assert pub.recv() == Pubcomp(7)
        assert sub.nothing()
    finally:
        sub.close()
        pub.close()
