"""The MQTT session, packets in and packets out, against a real core (no sockets)."""

from __future__ import annotations

import pytest
from mqemu.broker.config import BrokerConfig
from mqemu.broker.core import Broker
from mqemu.protocols.mqtt.codec import MqttDecoder
from mqemu.protocols.mqtt.packets import (
    Connack,
    Connect,
    Disconnect,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
    encode,
)
from mqemu.protocols.mqtt.session import MqttConnection, State
from mqemu.protocols.mqtt.topics import (
    Filter,
    filter_to_binding,
    topic_to_key,
    valid_filter,
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Client:
    """One client: encodes packets into a session and decodes what it sends back."""

    def __init__(self, broker: Broker, level: int = 4) -> None:
        self.conn = MqttConnection(broker, "127.0.0.1", 1)
        self.level = level
        self.dec = MqttDecoder(protocol_level=level)
        self.now = 0.0
        self.extra: list = []

    def send(self, *packets) -> None:
        self.conn.data_received(b"".join(encode(p, self.level) for p in packets), self.now)

    def raw(self, data: bytes) -> None:
        self.conn.data_received(data, self.now)

    def recv(self) -> list:
        data = b"".join(self.conn.outbound)
        self.conn.outbound.clear()
        self.conn.outbound_bytes = 0
        self.dec.feed(data)
        out, self.extra = self.extra + self.dec.read_packets(), []
        return out

    def connect(self, client_id: str = "c1", clean: bool = True, **kw) -> Connack:
        name = "MQIsdp" if self.level == 3 else "MQTT"
        self.send(Connect(name, self.level, clean, kw.pop("keep_alive", 0), client_id, **kw))
        ack, *self.extra = self.recv()
        return ack

    def subscribe(self, *subs: Subscription, pid: int = 1, **props) -> Suback:
        self.send(Subscribe(pid, subs, props))
        out = self.recv()
        assert isinstance(out[0], Suback), out
        self.extra = out[1:]
        return out[0]


@pytest.fixture
def broker() -> Broker:
    return Broker(clock=Clock())


def test_topic_mapping_and_matcher() -> None:
    assert topic_to_key("a/b.c") == "a.b/c"
    assert filter_to_binding("a/+/#") == "a.*.#"
    assert Filter("a/+").matches("a/b") and not Filter("a/+").matches("a/b/c")
    assert Filter("a/#").matches("a") and Filter("#").matches("x/y")
    assert not Filter("#").matches("$SYS/x") and not Filter("+/x").matches("$SYS/x")  # [MQTT-4.7.2-1]
    assert Filter("$SYS/#").matches("$SYS/x")
    assert not valid_filter("a/#/b") and not valid_filter("a+") and valid_filter("+/+")


def test_connect_subscribe_publish_qos0(broker: Broker) -> None:
    c = Client(broker)
    ack = c.connect()
    assert ack == Connack(False, 0)
    assert c.subscribe(Subscription("a/+", 0)).reason_codes == (0,)
    c.send(Publish("a/b", b"hello"))
    assert c.recv() == [Publish("a/b", b"hello")]
    q = broker.vhosts["/"].queues["mqtt-subscription-c1qos1"]
    assert q.statistics().messages_ready == 0 and q.unacked == 0


def test_qos1_acked_in_core_at_puback(broker: Broker) -> None:
    c = Client(broker)
    c.connect()
    c.subscribe(Subscription("t", 1))
    c.send(Publish("t", b"x", qos=1, packet_id=7))
    out = c.recv()
    assert Puback(7) in out
    (pub,) = [p for p in out if isinstance(p, Publish)]
    assert pub.qos == 1
    q = broker.vhosts["/"].queues["mqtt-subscription-c1qos1"]
    assert q.unacked == 1
    c.send(Puback(pub.packet_id))
    assert q.unacked == 0


def test_qos2_both_ways_and_duplicate_publish(broker: Broker) -> None:
    c = Client(broker)
    c.connect()
    c.subscribe(Subscription("t", 2))
    c.send(Publish("t", b"x", qos=2, packet_id=3))
    out = c.recv()
    assert Pubrec(3) in out
    (pub,) = [p for p in out if isinstance(p, Publish)]
    # A resent PUBLISH before PUBREL is not delivered again [MQTT-4.3.3-2].
    c.send(Publish("t", b"x", qos=2, packet_id=3, dup=True))
    assert c.recv() == [Pubrec(3)]
    c.send(Pubrel(3))
    assert c.recv() == [Pubcomp(3)]
    c.send(Pubrec(pub.packet_id))
    assert c.recv() == [Pubrel(pub.packet_id)]
    # Settled in the queue at PUBREC (the client has it), but the delivery keeps its place
    # in the receive maximum until PUBCOMP.
    q = broker.vhosts["/"].queues["mqtt-subscription-c1qos1"]
    assert q.unacked == 0 and c.conn.deliveries.session_consumer.unacked == 1
    c.send(Pubcomp(pub.packet_id))
    assert c.conn.deliveries.session_consumer.unacked == 0


def test_overlapping_subscriptions_one_publish_with_all_ids(broker: Broker) -> None:
    c = Client(broker, 5)
    c.connect()
    c.subscribe(Subscription("a/#", 1), pid=1, subscription_identifier=3)
    c.subscribe(Subscription("a/b", 0), pid=2, subscription_identifier=9)
    c.send(Publish("a/b", b"x", qos=2, packet_id=1))
    pubs = [p for p in c.recv() if isinstance(p, Publish)]
    assert len(pubs) == 1
    assert pubs[0].qos == 1 and pubs[0].properties["subscription_identifier"] == [3, 9]


def test_no_local_and_retain_as_published(broker: Broker) -> None:
    c = Client(broker, 5)
    c.connect()
    c.subscribe(Subscription("t", 0, no_local=True))
    c.send(Publish("t", b"mine"))
    assert c.recv() == []
    c.subscribe(Subscription("r", 0, retain_as_published=True), pid=2)
    c.send(Publish("r", b"kept", retain=True))
    (pub,) = c.recv()
    assert pub.retain


def test_retained_on_subscribe_and_clear(broker: Broker) -> None:
    p = Client(broker)
    p.connect("pub")
    p.send(Publish("news/a", b"old", retain=True, qos=1, packet_id=1))
    p.recv()
    s = Client(broker, 5)
    s.connect("sub")
    s.subscribe(Subscription("news/+", 1))
    (pub,) = s.recv()
    assert pub.retain and pub.payload == b"old" and pub.qos == 1  # [MQTT-3.3.1-8]
    s.send(Puback(pub.packet_id))
    s.subscribe(Subscription("news/+", 1, retain_handling=1), pid=2)  # existing: none
    assert s.recv() == []
    p.send(Publish("news/a", b"", retain=True))  # an empty retained payload clears it
    s.recv()
    s.subscribe(Subscription("news/#", 1), pid=3)
    assert s.recv() == []


def test_wildcards_do_not_match_dollar_topics(broker: Broker) -> None:
    c = Client(broker)
    c.connect()
    c.subscribe(Subscription("#", 0))
    c.send(Publish("$SYS/x", b"1"), Publish("x", b"2"))
    assert [p.topic for p in c.recv()] == ["x"]


def test_persistent_session_resends_unacked_with_dup(broker: Broker) -> None:
    c = Client(broker)
    c.connect("p", clean=False)
    c.subscribe(Subscription("t", 1))
    other = Client(broker)
    other.connect("o")
    other.send(Publish("t", b"x", qos=1, packet_id=1))
    (pub,) = c.recv()
    c.conn.connection_lost()  # no PUBACK
    c2 = Client(broker)
    assert c2.connect("p", clean=False).session_present
    (again,) = c2.recv()
    assert again.dup and again.packet_id == pub.packet_id  # [MQTT-4.4.0-1]
    other.send(Publish("t", b"y", qos=1, packet_id=2))
    assert [p.payload for p in c2.recv()] == [b"y"]


def test_takeover_and_clean_session_deletes_queue(broker: Broker) -> None:
    a = Client(broker, 5)
    a.connect("same")
    a.subscribe(Subscription("t", 0))
    b = Client(broker, 5)
    assert not b.connect("same").session_present
    assert a.recv() == [Disconnect(0x8E)]
    assert a.conn.state is State.CLOSED
    assert "mqtt-subscription-sameqos1" not in broker.vhosts["/"].queues


def test_will_sent_on_abnormal_close_only(broker: Broker) -> None:
    s = Client(broker)
    s.connect("s")
    s.subscribe(Subscription("will/#", 0))
    w = Client(broker)
    w.connect("w", will=Will("will/w", b"gone"))
    w.conn.connection_lost()
    assert [p.payload for p in s.recv()] == [b"gone"]
    w2 = Client(broker)
    w2.connect("w2", will=Will("will/w2", b"gone"))
    w2.send(Disconnect())
    assert s.recv() == []


def test_keep_alive_at_one_and_a_half(broker: Broker) -> None:
    c = Client(broker, 5)
    c.connect(keep_alive=10)
    assert c.conn.next_deadline() == 15.0
    c.conn.on_timer(15.0)
    assert c.recv() == [Disconnect(0x8D)]


def test_server_keep_alive_and_connack_properties(broker: Broker) -> None:
    c = Client(broker, 5)
    ack = c.connect("", keep_alive=120, properties={"request_response_information": 1})
    assert ack.properties["server_keep_alive"] == 60
    assert ack.properties["assigned_client_identifier"].startswith("mqemu-")
    assert ack.properties["topic_alias_maximum"] == 10
    assert "response_information" in ack.properties


def test_empty_client_id_311_needs_clean_session(broker: Broker) -> None:
    c = Client(broker)
    assert c.connect("", clean=False).reason_code == 0x02  # [MQTT-3.1.3-8]


def test_topic_alias_both_ways(broker: Broker) -> None:
    c = Client(broker, 5)
    c.connect(properties={"topic_alias_maximum": 5})
    c.subscribe(Subscription("t", 0))
    c.send(Publish("t", b"1", properties={"topic_alias": 1}), Publish("", b"2", properties={"topic_alias": 1}))
    first, second = c.recv()
    assert first.topic == "t" and first.properties["topic_alias"] == 1
    assert second.topic == "" and second.properties["topic_alias"] == 1
    c.send(Publish("t", b"3", properties={"topic_alias": 0}))
    assert c.recv()[-1] == Disconnect(0x94, {"reason_string": "topic alias 0"})


def test_receive_maximum_exceeded(broker: Broker) -> None:
    broker.config.extra["mqtt"] = {"receive_maximum": 2}
    c = Client(broker, 5)
    assert c.connect().properties["receive_maximum"] == 2
    for pid in (1, 2, 3):
        c.send(Publish("t", b"x", qos=2, packet_id=pid))
    assert c.recv()[-1].reason_code == 0x93


def test_client_receive_maximum_is_the_prefetch(broker: Broker) -> None:
    c = Client(broker, 5)
    c.connect(properties={"receive_maximum": 1})
    c.subscribe(Subscription("t", 1))
    o = Client(broker)
    o.connect("o")
    o.send(Publish("t", b"1", qos=1, packet_id=1), Publish("t", b"2", qos=1, packet_id=2))
    (first,) = c.recv()
    c.send(Puback(first.packet_id))
    assert [p.payload for p in c.recv()] == [b"2"]


def test_client_maximum_packet_size(broker: Broker) -> None:
    c = Client(broker, 5)
    c.connect(properties={"maximum_packet_size": 40})
    c.subscribe(Subscription("t", 1))
    c.send(Publish("t", b"x" * 100, qos=1, packet_id=1), Publish("t", b"small", qos=1, packet_id=2))
    pubs = [p for p in c.recv() if isinstance(p, Publish)]
    assert [p.payload for p in pubs] == [b"small"]  # [MQTT-3.1.2-25]


def test_message_expiry_decremented(broker: Broker) -> None:
    clock = broker.clock
    c = Client(broker, 5)
    c.connect("e", clean=False, properties={"session_expiry_interval": 100})
    c.subscribe(Subscription("t", 1))
    c.conn.connection_lost()
    p = Client(broker, 5)
    p.connect("p")
    p.send(Publish("t", b"x", qos=1, packet_id=1, properties={"message_expiry_interval": 10}))
    clock.t += 4
    c2 = Client(broker, 5)
    c2.connect("e", clean=False, properties={"session_expiry_interval": 100})
    (pub,) = c2.recv()
    assert pub.properties["message_expiry_interval"] == 6  # [MQTT-3.3.2-6]


def test_deny_subscribe_and_publish(broker: Broker) -> None:
    # [mqtt] deny_subscribe = ["secret/#"], deny_publish = ["ro/+"], as routing-key rules
    broker.auth.deny_subscribe, broker.auth.deny_publish = ("secret.#",), ("ro.*",)
    c = Client(broker)
    c.connect()
    assert c.subscribe(Subscription("secret/a", 1), Subscription("ok", 1)).reason_codes == (0x80, 1)
    c5 = Client(broker, 5)
    c5.connect("five")
    assert c5.subscribe(Subscription("secret/+", 1)).reason_codes == (0x87,)
    c5.send(Publish("ro/x", b"", qos=1, packet_id=4))
    assert c5.recv() == [Puback(4, 0x87)]


def test_unsubscribe_codes(broker: Broker) -> None:
    c = Client(broker, 5)
    c.connect()
    c.subscribe(Subscription("a", 0))
    c.send(Unsubscribe(2, ("a", "b")))
    assert c.recv() == [Unsuback(2, (0, 0x11))]


def test_shared_subscription_round_robin(broker: Broker) -> None:
    members = []
    for i in range(2):
        m = Client(broker, 5)
        m.connect(f"m{i}")
        m.subscribe(Subscription("$share/g/jobs/+", 0))
        members.append(m)
    p = Client(broker)
    p.connect("p")
    p.send(*[Publish("jobs/x", b"%d" % i) for i in range(4)])
    got = [len(m.recv()) for m in members]
    assert got == [2, 2]


def test_protocol_errors(broker: Broker) -> None:
    c = Client(broker)
    c.raw(encode(Publish("t", b""), 4))  # PUBLISH before CONNECT [MQTT-3.1.0-1]
    assert c.conn.state is State.CLOSED and c.recv() == []
    c = Client(broker)
    c.connect()
    c.send(Connect(client_id="again"))  # [MQTT-3.1.0-2]
    assert c.conn.state is State.CLOSED and c.recv() == []
    c = Client(broker, 5)
    c.connect()
    c.raw(b"\x30\xff\xff\xff\xff\x01")  # remaining length of five bytes
    assert c.recv() == [Disconnect(0x81, {"reason_string": "remaining length longer than four bytes"})]
    c = Client(broker, 5)
    c.raw(b"\x10\x10\x00\x04MQTT\x05\x02\x00\x00\x03\x01\x01\x01\x00\x00")  # payload format indicator in CONNECT
    ack = c.recv()[0]
    assert isinstance(ack, Connack) and ack.reason_code == 0x81  # a property CONNECT may not carry
    c = Client(broker, 5)
    c.connect()
    c.send(Pingreq())
    assert c.recv() == [Pingresp()]


def test_unsupported_protocol_version(broker: Broker) -> None:
    c = Client(broker)
    c.raw(b"\x10\x0c\x00\x04MQTT\x07\x02\x00\x00\x00\x00")
    assert c.recv() == [Connack(False, 0x01)]


def test_anonymous_and_bad_password(broker: Broker) -> None:
    c = Client(broker)
    assert c.connect(username="guest", password=b"wrong").reason_code == 0x04
    broker.config.extra["mqtt"] = {"allow_anonymous": False}
    c = Client(broker, 5)
    assert c.connect().reason_code == 0x87


def test_activemq_accepts_everyone() -> None:
    b = Broker(BrokerConfig(engine="activemq"), clock=Clock())
    c = Client(b)
    assert c.connect(username="nobody", password=b"x").reason_code == 0


def test_mqtt_to_amqp_properties(broker: Broker) -> None:
    vh = broker.vhosts["/"]
    vh.declare_queue("q")
    vh.bind("amq.topic", "q", "a.*")
    c = Client(broker, 5)
    c.connect()
    c.send(Publish("a/b", b"x", qos=1, packet_id=1, properties={
        "content_type": "text/plain", "correlation_data": b"\xff\x00", "response_topic": "r/1",
        "user_property": [("k", "1"), ("k", "2")], "message_expiry_interval": 5}))
    msg = vh.queues["q"].ready[0].message
    assert msg.routing_key == "a.b" and msg.persistent
    props = msg.properties
    assert props["content_type"] == "text/plain" and props["reply_to"] == "r.1"
    assert props["expiration"] == "5000" and props["headers"]["k"] == ["1", "2"]
    assert props["headers"]["x-correlation-id"] == b"\xff\x00"
    assert props["headers"]["x-mqtt-publish-qos"] == 1
