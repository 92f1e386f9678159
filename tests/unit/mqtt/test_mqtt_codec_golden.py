"""Golden byte vectors, both directions, for every packet type and version."""

from __future__ import annotations

import pytest

from mqemu.protocols.mqtt.codec import NEED_DATA, MqttDecoder, PacketTooLarge, encode
from mqemu.protocols.mqtt.packets import (
    Connack, Connect, Disconnect, Puback, Publish, Suback, Subscribe, Subscription, Unsuback,
    encode_publish, encode_publish_qos0, topic_field,
)
from mqemu.protocols.mqtt.properties import (
    MAX_VARINT, decode_varint, encode_properties, encode_varint,
)
from mqtt_vectors import AFTER_CONNECT, ALL, CONNECTS


def decoder_for(level: int) -> MqttDecoder:
    d = MqttDecoder()
    d.feed(CONNECTS[level][2])
    assert isinstance(d.next_packet(), Connect)
    assert d.protocol_level == level
    return d


@pytest.mark.parametrize("name,level,wire,packet", ALL, ids=[v[0] for v in ALL])
def test_encode_matches_golden(name, level, wire, packet):
    assert encode(packet, level) == wire


@pytest.mark.parametrize("name,level,wire,packet", list(CONNECTS.values()),
                         ids=[v[0] for v in CONNECTS.values()])
def test_decode_connect_golden(name, level, wire, packet):
    d = MqttDecoder()
    assert d.protocol_level is None
    d.feed(wire)
    assert d.next_packet() == packet
    assert d.protocol_level == level
    assert d.next_packet() is NEED_DATA
    assert d.buffered == 0


@pytest.mark.parametrize("name,level,wire,packet", AFTER_CONNECT,
                         ids=[v[0] for v in AFTER_CONNECT])
def test_decode_golden(name, level, wire, packet):
    d = decoder_for(level)
    d.feed(wire)
    assert d.read_packets() == [packet]
    assert d.read_packets() == []


def test_client_side_decoder_needs_no_connect():
    d = MqttDecoder(protocol_level=5)
    d.feed(bytes.fromhex("200300 0000"))
    assert d.next_packet() == Connack()


# Variable Byte Integer boundaries (MQTT 5.0 Table 1-1 / 3.1.1 Table 2.4).
VARINTS = [
    (0, "00"), (127, "7f"), (128, "8001"), (16383, "ff7f"), (16384, "808001"),
    (2097151, "ffff7f"), (2097152, "80808001"), (268435455, "ffffff7f"),
]


@pytest.mark.parametrize("value,wire", VARINTS)
def test_varint_boundaries(value, wire):
    raw = bytes.fromhex(wire)
    assert encode_varint(value) == raw
    assert decode_varint(raw, 0, len(raw)) == (value, len(raw))


@pytest.mark.parametrize("value", [-1, MAX_VARINT + 1])
def test_varint_out_of_range(value):
    with pytest.raises(ValueError):
        encode_varint(value)


@pytest.mark.parametrize("remaining", [127, 128, 16383, 16384, 2097151, 2097152])
def test_publish_remaining_length_boundaries(remaining):
    payload = b"x" * (remaining - 3)          # topic "t" = 3 bytes
    wire = encode(Publish("t", payload), 4)
    header = bytes((0x30,)) + encode_varint(remaining)
    assert wire[:len(header)] == header and len(wire) == len(header) + remaining
    d = decoder_for(4)
    d.feed(wire)
    assert d.next_packet() == Publish("t", payload)


def test_max_remaining_length_header_only():
    header = bytes.fromhex("30 ffffff7f")     # remaining length 268435455
    d = decoder_for(4)
    d.max_packet_size = 1 << 30
    d.feed(header)
    assert d.next_packet() is NEED_DATA       # header parsed, body awaited
    d = decoder_for(4)                        # the default limit counts the header too
    d.feed(header)
    with pytest.raises(PacketTooLarge):
        d.next_packet()


@pytest.mark.parametrize("level", [3, 4, 5])
@pytest.mark.parametrize("qos,pid", [(0, None), (1, 1), (2, 65535)])
def test_encode_publish_fast_path(level, qos, pid):
    props = {"message_expiry_interval": 5, "user_property": [("k", "v")]}
    slow = encode(Publish("a/b", b"data", qos, True, qos > 0, pid,
                          props if level == 5 else {}), level)
    fast = encode_publish(b"a/b", b"data", qos, True, qos > 0, pid,
                          encode_properties(props) if level == 5 else None, level)
    assert fast == slow
    assert encode_publish("a/b", b"data", qos, True, qos > 0, pid, None, level) == encode(
        Publish("a/b", b"data", qos, True, qos > 0, pid), level)


@pytest.mark.parametrize("level", [3, 4])
@pytest.mark.parametrize("retain", [False, True])
@pytest.mark.parametrize("size", [0, 1, 122, 123, 200, 16378, 16379, 70000, 3 << 20])
def test_encode_publish_qos0_is_encode_publish(level, retain, size):
    """The delivery path's QoS 0 encoder makes the codec's bytes at every length of the
    Remaining Length field (1, 2 and 3 bytes and the edges between them: the topic field
    of "a/b" is 5 bytes, so 122 and 123 make 127 and 128, 16378 and 16379 make 16383 and
    16384)."""
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    topic = "a/b"
    want = encode(Publish(topic, body, 0, retain, False, None), level)
    assert encode_publish_qos0(topic_field(topic.encode()), body, retain) == want
    assert encode_publish(topic.encode(), body, 0, retain, False, None, None, level) == want


def test_encode_publish_rejects_bad_arguments():
    with pytest.raises(ValueError):
        encode_publish("t", b"", 1, False, False, None, None, 4)
    with pytest.raises(ValueError):
        encode_publish("t", b"", 3, False, False, 1, None, 4)


def test_version_downgrades_on_encode():
    # 3.x has no reason codes/properties: they are left out.
    assert encode(Puback(7, 0x80, {"reason_string": "x"}), 4) == bytes.fromhex("40020007")
    assert encode(Unsuback(7, (0x11,)), 4) == bytes.fromhex("b0020007")
    assert encode(Disconnect(0x8B), 4) == bytes.fromhex("e000")
    # 5.0 CONNACK codes map to the nearest 3.1.1 return code; 3.1 has no session present.
    assert encode(Connack(True, 0x86), 4) == bytes.fromhex("20020104")
    assert encode(Connack(True, 0), 3) == bytes.fromhex("20020000")
    # 3.1.1 SUBACK has one failure code.
    assert encode(Suback(1, (0x87, 2)), 4) == bytes.fromhex("9004000180 02".replace(" ", ""))
    with pytest.raises(ValueError):
        from mqemu.protocols.mqtt.packets import Auth
        encode(Auth(), 4)


@pytest.mark.parametrize("level", [4, 5])
def test_roundtrip_subscribe_all_options(level):
    subs = tuple(
        Subscription(f"t/{q}/{rh}", q, nl, rap, rh) if level == 5 else Subscription(f"t/{q}", q)
        for q in (0, 1, 2) for nl in (False, True) for rap in (False, True) for rh in (0, 1, 2)
    )
    packet = Subscribe(9, subs)
    d = decoder_for(level)
    d.feed(encode(packet, level))
    assert d.next_packet() == packet


def test_properties_match_paho():
    paho_props = pytest.importorskip("paho.mqtt.properties")
    from paho.mqtt.packettypes import PacketTypes

    p = paho_props.Properties(PacketTypes.PUBLISH)
    p.PayloadFormatIndicator = 1
    p.MessageExpiryInterval = 60
    p.ContentType = "text/plain"
    p.ResponseTopic = "r/t"
    p.CorrelationData = b"\x01\x02"
    p.UserProperty = [("a", "1"), ("b", "2")]
    ours = encode_properties({
        "payload_format_indicator": 1, "message_expiry_interval": 60,
        "content_type": "text/plain", "response_topic": "r/t",
        "correlation_data": b"\x01\x02", "user_property": [("a", "1"), ("b", "2")],
    })
    assert ours == p.pack()
