"""MQTT state is the node's: two nodes in one process keep separate sessions and retained
messages (``Broker.protocol_state``), and a node restores MQTT's records before it listens."""

from __future__ import annotations


import pytest
from durability_helpers import RawMqtt
from mqemu.ha.node import PROTOCOLS, Node, NodeOptions, recover_protocols
from mqemu.protocols.mqtt.node_state import node_state
from mqemu.protocols.mqtt.packets import (
    Puback,
    Publish,
    Suback,
    Subscribe,
    Subscription,
)

pytestmark = pytest.mark.timeout(30)




def test_two_nodes_keep_separate_sessions_and_retained_messages(mqemu_start):
    a, b = mqemu_start(), mqemu_start()
    ports = {n: n.ports["mqtt"] for n in (a, b)}
    for node, text in ((a, b"on a"), (b, b"on b")):
        pub = RawMqtt(ports[node], "pub", clean=True)
        pub.send(Publish("same/topic", text, qos=1, retain=True, packet_id=1))
        assert pub.recv() == Puback(1)  # routed and retained on this node
        pub.close()
    # The same client id gets a persistent session on node a only.
    first = RawMqtt(ports[a], "same")
    assert not first.connack.session_present
    first.send(Subscribe(1, (Subscription("same/#", 1),)))
    assert isinstance(first.recv(), Suback)
    got = first.recv()
    assert (got.topic, got.payload, got.retain) == ("same/topic", b"on a", True)
    first.send(Puback(got.packet_id))
    first.close()
    on_b = RawMqtt(ports[b], "same")
    try:
        assert not on_b.connack.session_present  # node b never saw this client
        on_b.send(Subscribe(1, (Subscription("same/#", 1),)))
        assert isinstance(on_b.recv(), Suback)
        got = on_b.recv()
        assert (got.topic, got.payload, got.retain) == ("same/topic", b"on b", True)
        on_b.send(Puback(got.packet_id))
    finally:
        on_b.close()
    again = RawMqtt(ports[a], "same")
    try:
        assert again.connack.session_present  # node a kept it
    finally:
        again.close()
    assert node_state(a.broker) is not node_state(b.broker)
    assert set(node_state(a.broker).retained["/"].by_topic) == {"same/topic"}


def test_the_node_restores_mqtt_state_before_listening(tmp_path):
    """``recover_protocols`` runs every protocol's ``recover``: MQTT's reads the records
    into the node's state once, so the listener finds it in place."""
    assert "mqtt" in PROTOCOLS
    node = Node(NodeOptions(ports={p: 0 for p in PROTOCOLS}))
    broker = node.broker
    broker.records = {"mqtt.sessions": {"/\x00kept": b'{"client_id": "kept", "expiry": 4294967295, '
                                                    b'"subs": [["t/#", 1, false, false, null]]}'}}
    recover_protocols(broker)
    state = node_state(broker)
    assert state.restored and set(state.sessions) == {("/", "kept")}
    assert "mqtt-subscription-keptqos1" in broker.vhosts["/"].queues
    broker.records = {}
    recover_protocols(broker)  # once per node: a second call changes nothing
    assert set(state.sessions) == {("/", "kept")}


def test_each_node_has_its_own_qos0_encode_cache():
    """The cache of the last encoded QoS 0 PUBLISH is the node's: two nodes running in
    threads of one process never hand each other's bytes to a client."""
    from mqemu.broker.core import Broker
    from mqemu.protocols.mqtt.node_state import node_state

    a, b = Broker(), Broker()
    assert node_state(a).last_publish is node_state(a).last_publish
    assert node_state(a).last_publish is not node_state(b).last_publish
