"""Messages from other protocols in MESSAGE frames, and SEND headers RabbitMQ refuses, in
exact bytes: no delivery fails, a refused SEND queues nothing."""

from __future__ import annotations

import pytest
from mqemu.broker.errors import PreconditionFailed
from mqemu.broker.message import Message
from mqemu.protocols.stomp.mapping import (
    ESCAPERS,
    TEXT,
    TEXT_FIELDS,
    check_expiration,
    encode_header_block,
    rabbit_destination,
    rabbit_header_block,
    to_utf8,
)
from stomp_peer import Peer, make_broker


def test_bytes_that_were_not_utf8_become_u_fffd():
    # an AMQP header name b"k\xff" arrives decoded with surrogateescape
    assert to_utf8("k\udcff") == b"k\xef\xbf\xbd"
    assert to_utf8("\ud800x") == b"?x"  # a surrogate that stands for no byte
    assert to_utf8("plain é") == "plain é".encode()
    block = rabbit_header_block({"headers": {"k\udcff": "v\udcfe", "ok": "kept"}}, ESCAPERS["1.2"])
    assert block == b"k\xef\xbf\xbd:v\xef\xbf\xbd\nok:kept\n"
    assert encode_header_block([("k\udcff", "v")], "1.0") == b"k\xef\xbf\xbd:v\n"


def test_rabbitmq_destination_percent_encodes_the_raw_bytes():
    assert rabbit_destination("amq.topic", "poison.\udcff\udcfe") == "/topic/poison.%FF%FE"
    assert rabbit_destination("", "é") == "/queue/%C3%A9"


@pytest.mark.parametrize("value, text", [
    ("abc", "invalid expiration 'abc': no_integer"),
    ("", "invalid expiration '': no_integer"),
    (" 5", "invalid expiration ' 5': no_integer"),
    ("12abc", "invalid expiration '12abc': {leftover_string,\"abc\"}"),
    ("-5", "invalid expiration '-5': {value_negative,-5}"),
    ("315360000001", "invalid expiration '315360000001': {value_too_large,315360000001}"),
    ("9" * 20, "invalid expiration '" + "9" * 20 + "': {value_too_large," + "9" * 20 + "}"),
])
def test_expiration_refused_with_rabbitmq_texts(value, text):
    with pytest.raises(PreconditionFailed) as e:
        check_expiration(value)
    assert e.value.text == text


@pytest.mark.parametrize("value", ["0", "+5", "-0", "315360000000", "000000000000060000"])
def test_expiration_accepted(value):
    check_expiration(value)


def test_refused_expiration_queues_nothing():
    broker = make_broker()
    vh = broker.vhosts["/"]
    vh.declare_queue("q")
    p = Peer(broker)
    p.connect()
    p.send("SEND", {"destination": "/queue/q", "expiration": "9" * 4000})
    frame = p.one("ERROR")
    assert frame.headers["message"] == "precondition_failed"
    assert len(vh.queues["q"].ready) == 0


def test_amqp_message_with_bytes_that_were_not_utf8_reaches_a_stomp_subscriber():
    broker = make_broker()
    vh = broker.vhosts["/"]
    p = Peer(broker)
    p.connect()
    p.send("SUBSCRIBE", {"destination": "/topic/poison.#", "id": "s"})
    vh.publish("amq.topic", "poison.\udcff", Message("amq.topic", "poison.\udcff", b"x",
                                                     {"headers": {"k\udcff": "v"}}))
    data = b"".join(p.session.outbound)
    assert b"destination:/topic/poison.%FF\n" in data
    assert b"k\xef\xbf\xbd:v\n" in data
    assert not p.closed


def test_activemq_text_message_has_no_content_length():
    broker = make_broker("activemq")
    vh = broker.vhosts["/"]
    p = Peer(broker)
    p.connect()
    p.raw(b"SEND\ndestination:/queue/t\n\nhello\x00")  # no content-length: a TextMessage
    (entry,) = vh.queues["t"].ready
    assert entry.message.fields == TEXT_FIELDS == {"stomp.text": True}
    assert TEXT.get(entry.message) is True
    p.send("SUBSCRIBE", {"destination": "/queue/t", "id": "s"})
    data = b"".join(p.session.outbound)
    assert data.endswith(b"\n\nhello\x00\n") and b"content-length" not in data


def test_activemq_headers_from_another_protocol_never_fail_a_delivery():
    """An AMQP publisher's timestamp header that is no number, on the ActiveMQ engine."""
    broker = make_broker("activemq")
    vh = broker.vhosts["/"]
    vh.declare_queue("q", durable=True)
    p = Peer(broker)
    p.connect()
    p.send("SUBSCRIBE", {"destination": "/queue/q", "id": "s"})
    for ts in ("abc", {"t": 1}, "1" * 5000):
        vh.publish("", "q", Message("", "q", b"x", {"expiration": "1000", "headers": {"timestamp": ts}}))
    frames = p.frames()
    assert [(f.command, f.headers["expires"]) for f in frames] == [("MESSAGE", "0")] * 3
    assert not p.closed
