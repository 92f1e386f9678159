"""Nesting in field tables and arrays is bounded (``fieldtable.MAX_NESTING``), with exact bytes."""

from __future__ import annotations

import pytest

from mqemu.protocols.amqp091 import spec
from mqemu.protocols.amqp091.codec import PROTOCOL_HEADER, AMQPFrameError, encode_method
from mqemu.protocols.amqp091.fieldtable import MAX_NESTING, decode_array, decode_table, encode_table
from mqemu.protocols.amqp091.properties import decode_properties
from mqemu.protocols.session_base import ClosedReason

from test_amqp091_session import Client


def nested_tables(depth: int) -> bytes:
    """A table body: key "k" holding a table, ``depth`` times, the innermost empty."""
    body = b""
    for _ in range(depth):
        body = b"\x01kF" + len(body).to_bytes(4, "big") + body
    return body


def nested_arrays(depth: int) -> bytes:
    """An array body: an array holding an array, ``depth`` times."""
    body = b""
    for _ in range(depth):
        body = b"A" + len(body).to_bytes(4, "big") + body
    return body


def test_exact_bytes_of_two_levels():
    assert nested_tables(2) == b"\x01kF\x00\x00\x00\x07\x01kF\x00\x00\x00\x00"
    assert decode_table(nested_tables(2)) == {"k": {"k": {}}}
    assert decode_array(nested_arrays(2)) == [[[]]]


def test_tables_up_to_the_limit_decode():
    table = decode_table(nested_tables(MAX_NESTING))
    depth = 0
    while table:
        table = table["k"]
        depth += 1
    assert depth == MAX_NESTING
    assert encode_table(decode_table(nested_tables(MAX_NESTING))) == nested_tables(MAX_NESTING)


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 1000, 20000])
def test_tables_past_the_limit_are_502(depth):
    with pytest.raises(AMQPFrameError) as info:
        decode_table(nested_tables(depth))
    assert info.value.reply_code == 502
    assert info.value.text == f"SYNTAX_ERROR - field table nested more than {MAX_NESTING} levels deep"


def test_arrays_count_as_levels_too():
    assert decode_array(nested_arrays(MAX_NESTING)) is not None  # the outer array is level 0
    with pytest.raises(AMQPFrameError) as info:
        decode_array(nested_arrays(MAX_NESTING + 1))
    assert info.value.reply_code == 502
    mixed = b""
    for i in range(MAX_NESTING + 1):  # tables inside arrays inside tables ...
        mixed = (b"A" if i % 2 else b"\x01kF") + len(mixed).to_bytes(4, "big") + mixed
    with pytest.raises(AMQPFrameError):
        decode_table(mixed)


def test_headers_property_nested_too_deeply_is_502():
    headers = nested_tables(1000)
    raw = b"\x20\x00" + len(headers).to_bytes(4, "big") + headers  # flags: headers only
    with pytest.raises(AMQPFrameError) as info:
        decode_properties(raw)
    assert info.value.reply_code == 502


@pytest.mark.parametrize("depth, code", [(500, 502), (1000, 501)])
def test_amqplain_nested_deep_is_answered(depth, code):
    """The hostile login of issue 9 item 6: a connection.close, not a dropped socket. 1000
    levels (6 KB) no longer fit in a frame before tune-ok: 501; 500 levels do: 502."""
    c = Client()
    c.send(PROTOCOL_HEADER)
    frames = c.method(0, spec.ConnectionStartOk(client_properties={}, mechanism="AMQPLAIN",
                                                 response=nested_tables(depth), locale="en_US"))
    close = frames[0].method
    assert isinstance(close, spec.ConnectionClose)
    if code == 502:
        assert (close.reply_code, close.class_id, close.method_id) == (502, 10, 11)
        assert close.reply_text == ("SYNTAX_ERROR - field table nested more than 100 levels deep "
                                    "(the AMQPLAIN response of connection.start-ok)")
    else:
        assert close.reply_code == 501 and "frame_too_large" in close.reply_text
    assert c.conn.close_reason is ClosedReason.PROTOCOL_ERROR


def test_start_ok_over_4096_octets_before_tune_is_501():
    """Before tune-ok a frame may be 4096 octets at most (RabbitMQ's frame_max before tuning)."""
    c = Client()
    c.send(PROTOCOL_HEADER)
    frames = c.send(encode_method(0, spec.ConnectionStartOk(
        client_properties={"pad": "x" * 5000}, mechanism="PLAIN", response=b"\0guest\0guest", locale="en_US")))
    close = frames[0].method
    assert isinstance(close, spec.ConnectionClose) and close.reply_code == 501
    assert "frame_too_large" in close.reply_text
    assert c.conn.decoder.buffered < 65536
