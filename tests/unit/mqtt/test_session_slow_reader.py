"""An MQTT client that does not read: QoS 0 messages past the outbound high-water mark are
queued up to ``max_queued_messages`` more, then dropped and counted (Mosquitto's
``max_queued_messages``); QoS 1 subscribers are blocked instead and their queue holds the
rest."""

from __future__ import annotations

from mqemu.broker.config import BrokerConfig
from mqemu.broker.core import Broker
from mqemu.protocols.mqtt.packets import Publish, Subscription
from mqemu.protocols.session_base import OUTBOUND_HIGH_WATER
from test_session import Client, Clock

BODY = b"x" * 1018
PACKET = 1 + 2 + 3 + 6 + len(BODY)  # fixed header, remaining length, topic "t", payload


def payload(i: int) -> bytes:
    return b"%06d" % i + BODY


def flood(pub: Client, n: int, qos: int = 0) -> None:
    for i in range(n):
        pub.send(Publish("t", payload(i), qos=qos, packet_id=i % 60000 + 1 if qos else None))
        pub.recv()


def before_mark() -> int:
    """PUBLISH packets written before the buffer passes OUTBOUND_HIGH_WATER."""
    return OUTBOUND_HIGH_WATER // PACKET + 1


def test_qos0_past_the_mark_queues_max_queued_then_drops() -> None:
    broker = Broker(BrokerConfig(extra={"mqtt": {"max_queued_messages": 100}}), clock=Clock())
    sub, pub = Client(broker), Client(broker)
    sub.connect("stuck")
    sub.subscribe(Subscription("t", 0))
    pub.connect("flooder")
    flood(pub, 3000)
    kept = before_mark() + 100
    assert sub.conn.over_budget and not sub.conn.blocked
    assert sub.conn.dropped == broker.messages_dropped == 3000 - kept
    assert sub.conn in broker.held_outbound
    got = sub.recv()
    assert [p.payload for p in got] == [payload(i) for i in range(kept)]
    # The writer drained the buffer: the client reads again and gets what comes next.
    sub.conn.on_drained()
    assert sub.conn not in broker.held_outbound and sub.conn.deliveries.queued_over == 0
    pub.send(Publish("t", b"after"))
    assert sub.recv() == [Publish("t", b"after")]
    assert broker.messages_dropped == 3000 - kept


def test_qos1_subscriber_is_blocked_and_its_queue_keeps_the_rest() -> None:
    broker = Broker(clock=Clock())
    sub, pub = Client(broker), Client(broker)
    sub.connect("stuck")
    sub.subscribe(Subscription("t", 1))
    pub.connect("flooder")
    flood(pub, 3000)
    assert sub.conn.blocked and sub.conn.dropped == 0 and broker.messages_dropped == 0
    q = broker.vhosts["/"].queues["mqtt-subscription-stuckqos1"]
    assert q.statistics().messages_ready + len(sub.recv()) == 3000


def test_max_queued_messages_0_never_drops() -> None:
    broker = Broker(BrokerConfig(extra={"mqtt": {"max_queued_messages": 0}}), clock=Clock())
    sub, pub = Client(broker), Client(broker)
    sub.connect("stuck")
    sub.subscribe(Subscription("t", 0))
    pub.connect("flooder")
    flood(pub, 3000)
    assert sub.conn.blocked and sub.conn.dropped == 0
    q = broker.vhosts["/"].queues["mqtt-subscription-stuckqos1"]
    assert q.statistics().messages_ready == 3000 - before_mark()


def test_a_large_partial_packet_counts_for_the_memory_alarm() -> None:
    from mqemu.protocols.mqtt.packets import encode
    broker = Broker(BrokerConfig(memory_high_watermark=150_000), clock=Clock())
    pub = Client(broker)
    pub.connect("big")
    data = encode(Publish("t", b"x" * 200_000), 4)
    pub.raw(data[:160_000])
    assert pub.conn in broker.held_input and pub.conn.input_held() == 160_000
    broker.check_memory()
    assert broker.memory_alarm and broker.memory_in_use == 160_000
    pub.raw(data[160_000:])
    assert pub.conn not in broker.held_input
    broker.check_memory()
    assert not broker.memory_alarm  # routed nowhere: nothing is held any more
