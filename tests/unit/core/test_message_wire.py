"""The codec of what crosses a cluster link (``broker.message_wire``): exact bytes, round
trips of every value an AMQP, STOMP or MQTT message carries, and refusals of bad bytes."""

from __future__ import annotations

import datetime
import decimal
import pickle

import pytest

from mqemu.broker.message import Message
from mqemu.broker.message_wire import MAX_DEPTH, WireError, dump_message, dump_value, load_message, load_value


@pytest.mark.parametrize("value, wire", [
    (None, b"N"),
    (True, b"T"),
    (False, b"F"),
    (5, b"i\x00\x00\x00\x00\x00\x00\x00\x05"),
    (-1, b"i\xff\xff\xff\xff\xff\xff\xff\xff"),
    (1 << 64, b"I\x00\x1418446744073709551616"),
    (1.5, b"f\x3f\xf8\x00\x00\x00\x00\x00\x00"),
    ("hé", b"s\x00\x00\x00\x03h\xc3\xa9"),
    (b"\x00\xff", b"b\x00\x00\x00\x02\x00\xff"),
    ([1, "a"], b"l\x00\x00\x00\x02i\x00\x00\x00\x00\x00\x00\x00\x01s\x00\x00\x00\x01a"),
    ({"k": None}, b"m\x00\x00\x00\x01\x00\x01kN"),
    (decimal.Decimal("1.25"), b"D\x00\x041.25"),
    (datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.timezone.utc),
     b"t\x00\x192026-11-29T12:00:00+00:00"),
])
def test_each_value_has_its_exact_bytes_and_comes_back(value, wire):
    assert dump_value(value) == wire
    back = load_value(wire)
    assert back == value and type(back) is type(value)


def test_tuples_bytearrays_and_int_subclasses_are_written_as_their_plain_kind():
    import enum

    class Level(enum.IntEnum):
        HIGH = 9

    assert load_value(dump_value((1, bytearray(b"x"), Level.HIGH))) == [1, b"x", 9]


def test_a_message_with_every_kind_of_property_crosses_whole():
    headers = {"n": 1, "big": 1 << 70, "f": 0.25, "d": decimal.Decimal("3.14"), "b": b"\x01",
               "t": datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
               "nested": {"list": [True, None, {"x": "y"}]}}
    msg = Message("amq.topic", "a.b", b"\x00body\xff",
                  {"content_type": "text/plain", "delivery_mode": 2, "priority": 5, "headers": headers,
                   "timestamp": 1700000000},
                  fields={"mqtt.qos": 1, "stomp.ack": "client", "mqtt.retain": False})
    msg.routing_keys = ["a.b", "c"]
    back = load_message(dump_message(msg))
    assert (back.exchange, back.routing_key, back.body) == ("amq.topic", "a.b", b"\x00body\xff")
    assert back.properties == msg.properties
    assert back.routing_keys == ["a.b", "c"]
    assert dict(back.fields) == dict(msg.fields)
    assert back.encoded_properties is None


def test_a_plain_message_has_its_exact_bytes():
    msg = Message("", "q", b"hi")
    assert dump_message(msg) == (b"\x01\x00\x00" b"\x00\x01q" b"\x00\x00\x00\x0c"
                                 b"l\x00\x00\x00\x03" b"m\x00\x00\x00\x00" b"N" b"N" b"hi")
    back = load_message(dump_message(msg))
    assert (back.exchange, back.routing_key, back.body, back.properties, back.routing_keys, back.fields) == \
        ("", "q", b"hi", {}, None, None)


@pytest.mark.parametrize("wire, why", [
    (b"", "bytes wanted"),
    (b"X", "unknown tag"),
    (b"s\x00\x00\x00\x05ab", "bytes wanted"),
    (b"s\x00\x00\x00\x01\xff", "not UTF-8"),
    (b"l\xff\xff\xff\xff", "container of"),
    (b"m\x00\x00\x00\x01\x00\x01k", "bytes wanted"),
    (b"NN", "after the value"),
    (b"I\x00\x02zz", "not an int"),
    (b"D\x00\x02zz", "not a decimal"),
    (b"t\x00\x02zz", "not a time"),
    (pickle.dumps({"a": 1}), "tag"),
])
def test_bad_values_are_refused_with_what_was_wrong(wire, why):
    with pytest.raises(WireError, match=why):
        load_value(wire)


def test_nesting_is_bounded_both_ways():
    deep: list = []
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(WireError, match="deeper"):
        dump_value(deep)
    with pytest.raises(WireError, match="deeper"):
        load_value(b"l\x00\x00\x00\x01" * (MAX_DEPTH + 1) + b"N")


def test_values_that_cannot_cross_are_refused():
    with pytest.raises(WireError, match="set cannot cross"):
        dump_value({1, 2})
    with pytest.raises(WireError, match="key must be a str"):
        dump_value({1: 2})


@pytest.mark.parametrize("mutate, why", [
    (lambda b: b"\x02" + b[1:], "version 2"),
    (lambda b: b[:3], "bytes wanted"),
    (lambda b: b[:6] + b"\x00\x00\xff\xff" + b[10:], "meta of"),
])
def test_bad_messages_are_refused(mutate, why):
    good = dump_message(Message("", "q", b"hi"))
    with pytest.raises(WireError, match=why):
        load_message(mutate(good))


def test_a_meta_of_the_wrong_shape_is_refused():
    def wire(meta: bytes) -> bytes:
        return b"\x01\x00\x00\x00\x01q" + len(meta).to_bytes(4, "big") + meta + b"body"

    with pytest.raises(WireError, match="not \\[properties"):
        load_message(wire(dump_value([{}, None])))
    with pytest.raises(WireError, match="wrong types"):
        load_message(wire(dump_value([[], None, None])))
    with pytest.raises(WireError, match="wrong types"):
        load_message(wire(dump_value([{}, [1], None])))
    assert load_message(wire(dump_value([{}, ["k"], None]))).routing_keys == ["k"]
