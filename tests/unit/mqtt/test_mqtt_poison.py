"""Messages from other protocols delivered to MQTT clients, in exact bytes: what MQTT cannot
carry is converted or left out, and no delivery fails; MQTT's own message fields."""

from __future__ import annotations

from mqemu.broker.core import Broker
from mqemu.broker.message import Message
from mqemu.protocols.mqtt.codec import MqttDecoder
from mqemu.protocols.mqtt.mapping import (
    PUBLISHER,
    RETAINED_FOR,
    mqtt_string,
    outgoing_properties,
    to_message,
)
from mqemu.protocols.mqtt.packets import (
    Connect,
    Publish,
    Subscribe,
    Subscription,
    Unsubscribe,
    encode,
)
from mqemu.protocols.mqtt.session import MqttConnection


class Clock:
    t = 1000.0

    def __call__(self) -> float:
        return self.t


class Client:
    def __init__(self, broker: Broker, level: int = 5) -> None:
        self.conn = MqttConnection(broker, "127.0.0.1", 1)
        self.level = level
        self.dec = MqttDecoder(protocol_level=level)

    def send(self, *packets) -> None:
        self.conn.data_received(b"".join(encode(p, self.level) for p in packets), 0.0)

    def raw_out(self) -> bytes:
        data = b"".join(self.conn.outbound)
        self.conn.outbound.clear()
        self.conn.outbound_bytes = 0
        return data

    def recv(self) -> list:
        self.dec.feed(self.raw_out())
        return self.dec.read_packets()

    def start(self, client_id: str, *subs: Subscription) -> None:
        self.send(Connect("MQTT", self.level, True, 0, client_id))
        if subs:
            self.send(Subscribe(1, subs, {}))
        self.recv()
        assert not self.conn.closing


def test_mqtt_string():
    assert mqtt_string("ok") == "ok"
    assert mqtt_string("a\x00b") == "a\ufffdb"  # [MQTT-1.5.4-2]
    assert mqtt_string("k\udcff") == "k\ufffd"  # a byte that was not UTF-8 [MQTT-1.5.4-1]
    assert mqtt_string("\ud800") == "?"
    assert mqtt_string("é" * 32767) == "é" * 32767  # 65534 bytes
    assert mqtt_string("x" * 65536) is None and mqtt_string("é" * 32768) is None


def test_outgoing_properties_from_an_amqp_message():
    msg = Message("amq.topic", "t", b"", {
        "content_type": "text/\x00plain",
        "reply_to": "r" * 70000,  # no MQTT string can hold it: left out
        "correlation_id": "c\udcff",  # back to its bytes
        "headers": {"k\udcff": "v", "big": "v" * 70000, "n": 1, "t": {"nested": 1}, "l": ["a", "b"]},
    })
    assert outgoing_properties(msg) == {
        "content_type": "text/\ufffdplain",
        "correlation_data": b"c\xff",
        "user_property": [("k\ufffd", "v"), ("n", "1"), ("l", "a"), ("l", "b")],
    }


def test_amqp_routing_key_with_nul_and_bad_bytes_is_delivered_as_u_fffd():
    broker = Broker(clock=Clock())
    c = Client(broker)
    c.start("sub", Subscription("poison/#"))
    key = "poison.a\x00\udcff"
    broker.vhosts["/"].publish("amq.topic", key, Message("amq.topic", key, b"x"))
    topic = "poison/a\ufffd\ufffd".encode()
    # PUBLISH QoS 0, 5.0: topic, no properties (one 0 byte), payload
    body = len(topic).to_bytes(2, "big") + topic + b"\x00" + b"x"
    assert c.raw_out() == b"\x30" + bytes([len(body)]) + body
    assert not c.conn.closing


def test_empty_topic_has_no_mqtt_form_and_is_settled_unsent():
    broker = Broker(clock=Clock())
    c = Client(broker)
    c.start("sub", Subscription("#", 1))
    vh = broker.vhosts["/"]
    vh.publish("amq.topic", "", Message("amq.topic", "", b"nothing", {"delivery_mode": 2}))
    vh.publish("amq.topic", "ok", Message("amq.topic", "ok", b"fine", {"delivery_mode": 2}))
    (pub,) = c.recv()
    assert (pub.topic, pub.payload) == ("ok", b"fine")
    assert len(vh.queues["mqtt-subscription-subqos1"].ready) == 0  # the first was settled


def test_no_local_reads_the_publisher_field_of_a_stored_message():
    """A message read back from the store has a new fields dict, equal to the published one."""
    broker = Broker(clock=Clock())
    c = Client(broker)
    c.start("me", Subscription("t", 0, no_local=True))
    vh = broker.vhosts["/"]
    mine = to_message("t", b"mine", 0, False, None)
    mine.fields = {"mqtt.publisher": "me"}
    theirs = to_message("t", b"theirs", 0, False, None)
    theirs.fields = PUBLISHER.add(None, "other")
    vh.publish("amq.topic", "t", mine)
    vh.publish("amq.topic", "t", theirs)
    assert [p.payload for p in c.recv()] == [b"theirs"]


def test_publish_sets_the_publisher_field():
    broker = Broker(clock=Clock())
    c = Client(broker)
    c.start("pub")
    broker.vhosts["/"].declare_queue("q")
    broker.vhosts["/"].bind("amq.topic", "q", "#")
    c.send(Publish("a/b", b"x"))
    (entry,) = broker.vhosts["/"].queues["q"].ready
    assert entry.message.fields == {"mqtt.publisher": "pub"} and PUBLISHER.get(entry.message) == "pub"


def test_retained_copy_names_its_subscription_and_goes_to_it_only():
    broker = Broker(clock=Clock())
    p = Client(broker)
    p.start("pub")
    p.send(Publish("news/a", b"old", retain=True))
    s = Client(broker)
    s.send(Connect("MQTT", 5, True, 0, "sub"))
    s.recv()
    q_name = "mqtt-subscription-subqos1"
    s.send(Subscribe(1, (Subscription("news/+", 1),), {}))
    (_suback, pub) = s.recv()
    assert pub.retain and pub.payload == b"old"
    # a retained copy whose subscription is gone by delivery time is settled unsent
    vh = broker.vhosts["/"]
    s.send(Unsubscribe(2, ("news/+",), {}))
    s.recv()
    copy = Message("amq.topic", "news.a", b"stale", {"delivery_mode": 2},
                   fields=RETAINED_FOR.add(None, "news/+"))
    vh.queues[q_name].publish(copy, 0.0)
    vh.queues[q_name].dispatch()
    assert s.recv() == [] and len(vh.queues[q_name].ready) == 0


def test_an_expiry_longer_than_mqtt_holds_is_capped():
    broker = Broker(clock=Clock())
    c = Client(broker)
    c.start("sub", Subscription("t", 0))
    # an AMQP expiration of 10^14 ms: 10^11 s, more than a Four Byte Integer
    broker.vhosts["/"].publish("amq.topic", "t", Message("amq.topic", "t", b"x", {"expiration": "1" + "0" * 14}))
    (pub,) = c.recv()
    assert pub.properties == {"message_expiry_interval": 0xFFFF_FFFF}
    assert not c.conn.closing
