"""What AMQP 0-9-1 cannot carry, converted for a delivery (``properties.fit_properties``,
``fit_shortstr``, ``encode_deliver``), in exact bytes: a delivery never fails."""

from __future__ import annotations

import datetime
import decimal
import logging

import pytest
from mqemu.broker.message import Message
from mqemu.protocols.amqp091 import spec
from mqemu.protocols.amqp091.basic import wire_properties
from mqemu.protocols.amqp091.codec import encode_content, encode_deliver
from mqemu.protocols.amqp091.properties import (
    decode_properties,
    encode_fitted,
    encode_properties,
    fit_properties,
    fit_shortstr,
)

L300 = "x" * 300


def test_properties_that_fit_are_left_alone():
    props = {"content_type": "t" * 255, "headers": {"k" * 255: "v"}, "priority": 255, "timestamp": 0}
    assert fit_properties(props) == props
    assert encode_fitted(props) == encode_properties(props)


@pytest.mark.parametrize("props, fitted", [
    # a header name over 255 bytes is dropped (RabbitMQ's mc_amqpl and mc_mqtt)
    ({"headers": {L300: "v", "ok": "kept"}}, {"headers": {"ok": "kept"}}),
    ({"headers": {"é" * 128: "v"}}, {"headers": {}}),  # 256 bytes of UTF-8
    # correlation_id and message_id move to x- headers; other shortstrs are dropped
    ({"correlation_id": L300}, {"headers": {"x-correlation-id": L300}}),
    ({"message_id": L300, "headers": {"h": 1}}, {"headers": {"h": 1, "x-message-id": L300}}),
    ({"reply_to": L300, "content_type": L300, "content_encoding": L300, "type": L300, "app_id": L300,
      "user_id": L300, "expiration": L300, "cluster_id": L300, "delivery_mode": 2}, {"delivery_mode": 2}),
    # octets and the timestamp out of range are dropped
    ({"priority": 300, "delivery_mode": -1, "timestamp": -1}, {}),
    ({"timestamp": 1 << 64}, {}),
    ({"timestamp": datetime.datetime(1960, 1, 1)}, {}),
    # header values of no field-table type, or out of range, are dropped; tables and arrays kept
    ({"headers": {"big": 1 << 64, "obj": object(), "dec": decimal.Decimal("1e-300"),
                  "old": datetime.datetime(1960, 1, 1), "t": {L300: 1, "a": [1, object(), "s"]}}},
     {"headers": {"t": {"a": [1, "s"]}}}),
    # a number in a shortstr becomes its text
    ({"expiration": 60000}, {"expiration": "60000"}),
])
def test_fit_properties(props, fitted):
    assert fit_properties(props) == fitted


def test_encode_fitted_bytes():
    props = {"headers": {L300: "v", "ok": "kept"}, "correlation_id": "c" * 256, "priority": 300,
             "delivery_mode": 2}
    # flags: headers (0x2000) + delivery_mode (0x1000); the table: ok=S"kept", x-correlation-id=S"c"*256
    table = (b"\x02okS\x00\x00\x00\x04kept"
             + b"\x10x-correlation-idS\x00\x00\x01\x00" + b"c" * 256)
    assert encode_fitted(props) == b"\x30\x00" + len(table).to_bytes(4, "big") + table + b"\x02"
    with pytest.raises(ValueError):
        encode_properties(props)


def test_encode_fitted_never_raises_on_garbage():
    assert encode_fitted({"headers": "not a table", "content_type": b"bytes", "priority": "1"}) == b"\x00\x00"
    assert decode_properties(encode_fitted({"headers": {1: "int key", "k": "v"}})) == {"headers": {"k": "v"}}


@pytest.mark.parametrize("text, cut", [
    ("a" * 255, "a" * 255),
    ("a" * 256, "a" * 255),
    ("a" * 254 + "é", "a" * 254),  # é is two bytes: cut before it
    ("é" * 200, "é" * 127),
    ("a" * 253 + "€x", "a" * 253),  # € is three bytes
    ("a" * 300 + "\udcff", "a" * 255),
])
def test_fit_shortstr_cuts_at_a_character(text, cut):
    assert fit_shortstr(text) == cut
    assert len(cut.encode("utf-8", "surrogateescape")) <= 255


def test_deliver_with_a_routing_key_over_255_bytes():
    key = "poison." + "t" * 300
    data = encode_deliver(1, "ctag", 7, False, "amq.topic", key, b"\x00\x00", b"body", 131072)
    expected = encode_content(1, spec.BasicDeliver(consumer_tag="ctag", delivery_tag=7, redelivered=False,
                                                   exchange="amq.topic", routing_key=key[:255]),
                              None, b"body", 131072, b"\x00\x00")
    assert data == expected
    # method frame: type 1, channel 1, size 4 + (1+4) + 8 + 1 + (1+9) + (1+255) = 284
    assert data[:7] == b"\x01\x00\x01\x00\x00\x01\x1c"
    assert data[7 + 4 + 5 + 8 + 1 + 10] == 255  # the routing key's length octet


class Conn:
    conn_id = 9
    converted = 0


def test_wire_properties_logs_the_first_conversion_then_one_per_1000(caplog):
    conn = Conn()
    msg = Message("amq.topic", "k", b"", {"headers": {L300: "v"}, "content_type": "text/plain"})
    with caplog.at_level(logging.INFO, logger="mqemu.protocols.amqp091"):
        data = wire_properties(msg, conn)
        for _ in range(1500):
            wire_properties(msg, conn)
    assert decode_properties(data) == {"content_type": "text/plain", "headers": {}}
    assert [(r.getMessage(), r.conversions) for r in caplog.records] == [
        ("message properties converted for AMQP 0-9-1", 1), ("message properties converted for AMQP 0-9-1", 1001)]
    caplog.clear()
    ok = Message("", "q", b"", {"content_type": "text/plain"})
    assert wire_properties(ok, conn) == encode_properties(ok.properties) and not caplog.records
    assert conn.converted == 1501
