"""Hypothesis: garbage after a valid protocol header only ever raises AMQPFrameError."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqemu.protocols.amqp091 import spec
from mqemu.protocols.amqp091.codec import PROTOCOL_HEADER, AMQPFrameError, FrameDecoder

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _drain(data: bytes, frame_max: int = 131072) -> None:
    dec = FrameDecoder(frame_max)
    dec.feed(PROTOCOL_HEADER)
    dec.read_frames()
    dec.feed(data)
    try:
        while dec.read_frames():
            pass
    except AMQPFrameError as exc:
        assert 500 <= exc.reply_code < 600 and exc.text


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes(data):
    _drain(data)


_INDEXES = sorted(spec.METHODS)


@FUZZ
@given(st.sampled_from(_INDEXES), st.binary(max_size=300), st.integers(0, 65535))
def test_arbitrary_method_arguments(index, args, channel):
    payload = index.to_bytes(4, "big") + args
    _drain(b"\x01" + channel.to_bytes(2, "big") + len(payload).to_bytes(4, "big") + payload + b"\xce")


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([60, 10, 0]))
def test_arbitrary_content_header(props, class_id):
    payload = class_id.to_bytes(2, "big") + b"\x00\x00" + b"\x00" * 8 + props
    _drain(b"\x02\x00\x01" + len(payload).to_bytes(4, "big") + payload + b"\xce")


_TABLE_TAGS = st.sampled_from(list(b"tbBsuIilLfdDSxATFV") + [0x5A])


@FUZZ
@given(st.lists(st.tuples(st.binary(max_size=4), _TABLE_TAGS, st.binary(max_size=12)), max_size=8))
def test_table_like_garbage(entries):
    body = b"".join(bytes([len(k)]) + k + bytes([tag]) + v for k, tag, v in entries)
    payload = b"\x00\x32\x00\x0a\x00\x00\x01q\x00" + len(body).to_bytes(4, "big") + body
    _drain(b"\x01\x00\x01" + len(payload).to_bytes(4, "big") + payload + b"\xce")


def test_deeply_nested_tables_are_a_syntax_error():
    """5000 tables nested in queue.declare's arguments: the decoder's own 502, never a
    RecursionError (nor a silently accepted frame)."""
    body = b""
    for _ in range(5000):
        body = b"\x01kF" + len(body).to_bytes(4, "big") + body
    payload = b"\x00\x32\x00\x0a\x00\x00\x01q\x00" + len(body).to_bytes(4, "big") + body
    dec = FrameDecoder(131072)
    dec.feed(PROTOCOL_HEADER)
    dec.read_frames()
    dec.feed(b"\x01\x00\x01" + len(payload).to_bytes(4, "big") + payload + b"\xce")
    with pytest.raises(AMQPFrameError) as info:
        dec.read_frames()
    err = info.value
    assert (err.reply_code, err.class_id, err.method_id) == (502, 50, 10)  # queue.declare
    assert err.text == "SYNTAX_ERROR - field table nested more than 100 levels deep"
