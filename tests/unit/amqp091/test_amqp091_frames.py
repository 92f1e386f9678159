"""FrameDecoder, content encoding, properties, error reply codes."""

from __future__ import annotations

import pytest

from mqemu.protocols.amqp091 import codec, spec
from mqemu.protocols.amqp091.properties import PROPERTY_NAMES
from mqemu.protocols.amqp091.codec import (
    NEED_DATA, PROTOCOL_HEADER, AMQPFrameError, BodyFrame, FrameDecoder, HeaderFrame, Heartbeat, MethodFrame,
    ProtocolHeader, ProtocolHeaderMismatch,
)

PROPS = {"content_type": "text/plain", "delivery_mode": 2, "priority": 5, "headers": {"k": True},
         "timestamp": 1_700_000_000, "message_id": "m1"}
RAW_PROPS = bytes.fromhex(
    "b8c0 0a" + b"text/plain".hex() + "00000004 01 6b 74 01" + "02" + "05" + "02 6d31" + "000000006553f100")
HEADER_FRAME = (bytes.fromhex("02 0001 0000002e 003c 0000 0000000000000005") + RAW_PROPS + b"\xce")


def flat(frames: list) -> list:
    """Frames with each ContentFrames (a publish decoded in one step) as its three records."""
    out = []
    for f in frames:
        out.extend(f.frames() if isinstance(f, codec.ContentFrames) else [f])
    return out


def drain(dec: FrameDecoder) -> list:
    out = []
    while frames := dec.read_frames():
        out += flat(frames)
    return out


def decode_all(data: bytes, frame_max: int = 131072) -> list:
    dec = FrameDecoder(frame_max)
    dec.feed(data)
    return drain(dec)


def test_constants():
    assert PROTOCOL_HEADER == b"AMQP\x00\x00\x09\x01"
    assert codec.encode_heartbeat() == codec.HEARTBEAT_FRAME == b"\x08\x00\x00\x00\x00\x00\x00\xce"
    assert codec.FRAME_MIN_SIZE == 4096
    assert not NEED_DATA


def test_heartbeat_decodes():
    assert decode_all(PROTOCOL_HEADER + codec.HEARTBEAT_FRAME) == [ProtocolHeader(0, 9, 1), Heartbeat(0)]


def test_content_header_golden_both_ways():
    assert codec.encode_properties(PROPS) == RAW_PROPS
    assert codec.decode_properties(RAW_PROPS) == PROPS
    wire = codec.encode_content(1, spec.BasicPublish(exchange="", routing_key="q"), PROPS, b"hello", 131072)
    method = codec.encode_method(1, spec.BasicPublish(exchange="", routing_key="q"))
    assert wire == method + HEADER_FRAME + bytes.fromhex("03 0001 00000005") + b"hello\xce"
    frames = decode_all(PROTOCOL_HEADER + wire)
    assert frames[2] == HeaderFrame(1, 60, 5, PROPS, RAW_PROPS)
    assert frames[3] == BodyFrame(1, b"hello")


def test_all_properties_round_trip():
    props = {k: "v" for k in PROPERTY_NAMES}
    props.update(headers={"a": [1, 2]}, delivery_mode=1, priority=9, timestamp=0)
    assert codec.decode_properties(codec.encode_properties(props)) == props
    assert codec.encode_properties({}) == b"\x00\x00" == codec.encode_properties({"type": None})
    with pytest.raises(ValueError):
        codec.encode_properties({"reply_to": "x" * 256})


def test_body_splitting_and_empty_body():
    body = bytes(range(256)) * 4  # 1024
    wire = codec.encode_content(2, spec.BasicPublish(), None, body, 4096 // 8 + 8)  # 520 -> 512 per frame
    frames = decode_all(PROTOCOL_HEADER + wire, frame_max=520)
    bodies = [f for f in frames if isinstance(f, BodyFrame)]
    assert [len(b.data) for b in bodies] == [512, 512]
    assert b"".join(b.data for b in bodies) == body
    assert all(len(f) <= 520 for f in _split_frames(wire))
    empty = codec.encode_content(2, spec.BasicPublish(), {}, b"", 4096)
    frames = decode_all(PROTOCOL_HEADER + empty)
    assert [type(f) for f in frames] == [ProtocolHeader, MethodFrame, HeaderFrame]
    assert frames[2].body_size == 0 and frames[2].raw == b"\x00\x00"


def _split_frames(wire: bytes) -> list[bytes]:
    out, off = [], 0
    while off < len(wire):
        size = int.from_bytes(wire[off + 3:off + 7], "big")
        out.append(wire[off:off + size + 8])
        off += size + 8
    return out


@pytest.mark.parametrize("size", [0, 1, 300, 1000])
@pytest.mark.parametrize("frame_max", [0, 256, 4096])
def test_encode_deliver_matches_encode_content(size, frame_max):
    body = b"z" * size
    raw = codec.encode_properties({"delivery_mode": 2, "headers": {"x": 1}})
    method = spec.BasicDeliver("ctag-é", 2**40, True, "amq.topic", "a.b.c")
    expected = codec.encode_content(7, method, None, body, frame_max, raw_properties=raw)
    assert codec.encode_deliver(7, "ctag-é", 2**40, True, "amq.topic", "a.b.c", raw, body, frame_max) == expected
    frames = decode_all(PROTOCOL_HEADER + expected, frame_max=frame_max)
    assert frames[1] == MethodFrame(7, method)
    assert frames[2].raw == raw
    assert b"".join(f.data for f in frames[3:]) == body


def _stream() -> bytes:
    parts = [
        PROTOCOL_HEADER,
        codec.encode_method(0, spec.ConnectionStartOk({"product": "t", "capabilities": {"a": True}}, "PLAIN",
                                                     b"\x00guest\x00guest", "en_US")),
        codec.HEARTBEAT_FRAME,
        codec.encode_method(1, spec.QueueDeclare(queue="q", durable=True, arguments={"x-queue-type": "quorum"})),
        codec.encode_content(1, spec.BasicPublish(exchange="", routing_key="q"), PROPS, b"a" * 700, 300),
        codec.encode_content(1, spec.BasicPublish(exchange="", routing_key="q"), None, b"", 300),
        codec.encode_method(65535, spec.BasicNack(delivery_tag=3, multiple=True)),
    ]
    return b"".join(parts)


def test_every_split_gives_the_same_frames():
    data = _stream()
    expected = decode_all(data)
    assert len(expected) == 12
    # one byte at a time through next_frame
    dec = FrameDecoder()
    got = []
    for i in range(len(data)):
        dec.feed(data[i:i + 1])
        while (f := dec.next_frame()) is not NEED_DATA:
            got += flat([f])
    assert got == expected
    assert dec.buffered == 0
    # every split point, both halves through read_frames (feeding memoryview / bytearray)
    for cut in range(len(data) + 1):
        dec = FrameDecoder()
        dec.feed(memoryview(data)[:cut])
        first = drain(dec)
        dec.feed(bytearray(data[cut:]))
        assert first + drain(dec) == expected, cut
    # and three-way splits at a stride
    for a in range(0, len(data), 7):
        for b in range(a, len(data), 53):
            dec = FrameDecoder()
            out = []
            for chunk in (data[:a], data[a:b], data[b:]):
                dec.feed(chunk)
                out += drain(dec)
            assert out == expected


def test_incomplete_input_never_raises():
    data = _stream()
    for cut in range(len(data)):
        dec = FrameDecoder()
        dec.feed(data[:cut])
        dec.read_frames()
        assert dec.next_frame() is NEED_DATA


def test_frame_max_can_change():
    dec = FrameDecoder(frame_max=4096)
    dec.feed(PROTOCOL_HEADER)
    dec.read_frames()
    dec.frame_max = 131072
    dec.feed(codec.encode_content(1, spec.BasicPublish(), None, b"x" * 10000, 131072))
    assert len(drain(dec)) == 3


# ---------------------------------------------------------------------------
# errors


def _raises(data: bytes, code: int, frame_max: int = 131072) -> AMQPFrameError:
    dec = FrameDecoder(frame_max)
    dec.feed(data)
    with pytest.raises(AMQPFrameError) as info:
        drain(dec)
    assert info.value.reply_code == code, info.value.text
    return info.value


@pytest.mark.parametrize("greeting", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"AMQP\x01\x01\x08\x00",  # AMQP 0-8
    b"AMQP\x00\x00\x09\x00",  # 0-9
    b"AMQP\x03\x01\x00\x00",  # AMQP 1.0 SASL
    b"\x16\x03\x01\x02\x00\x01\x00\x01",  # TLS client hello
])
def test_bad_protocol_header(greeting):
    err = _raises(greeting, 501)
    assert isinstance(err, ProtocolHeaderMismatch)
    assert err.received == greeting[:8]


def test_bad_protocol_header_detected_early():
    dec = FrameDecoder()
    dec.feed(b"GET")
    with pytest.raises(ProtocolHeaderMismatch):
        dec.next_frame()
    dec = FrameDecoder()
    dec.feed(b"AMQP\x00")
    assert dec.next_frame() is NEED_DATA


def test_bad_frame_end():
    wire = bytearray(codec.encode_method(1, spec.BasicAck(delivery_tag=1)))
    wire[-1] = 0x00
    err = _raises(PROTOCOL_HEADER + bytes(wire), 501)
    assert "frame_end" in err.text


def test_frame_over_frame_max_is_rejected_before_buffering():
    dec = FrameDecoder(frame_max=131072)
    dec.feed(PROTOCOL_HEADER)
    dec.read_frames()
    dec.feed(b"\x03\x00\x01\x7f\xff\xff\xff")  # 2 GiB body frame: only its 7-byte head arrived
    with pytest.raises(AMQPFrameError) as info:
        dec.next_frame()
    assert info.value.reply_code == 501 and "frame_too_large" in info.value.text
    assert dec.buffered == 7
    # 200000 > 131072 with the payload present
    _raises(PROTOCOL_HEADER + b"\x03\x00\x01" + (200000).to_bytes(4, "big") + b"x" * 200000 + b"\xce", 501)
    # RabbitMQ's 8-octet fudge: a payload of exactly frame_max is accepted
    ok = PROTOCOL_HEADER + b"\x03\x00\x01" + (4096).to_bytes(4, "big") + b"x" * 4096 + b"\xce"
    assert len(decode_all(ok, frame_max=4096)) == 2
    _raises(PROTOCOL_HEADER + b"\x03\x00\x01" + (4097).to_bytes(4, "big"), 501, frame_max=4096)


@pytest.mark.parametrize("ftype", [0, 4, 5, 7, 9, 255])
def test_unknown_frame_type(ftype):
    err = _raises(PROTOCOL_HEADER + bytes([ftype]) + b"\x00\x00\x00\x00\x00\x00\xce", 501)
    assert "unknown_frame" in err.text


def test_heartbeat_with_payload():
    _raises(PROTOCOL_HEADER + b"\x08\x00\x00\x00\x00\x00\x01\x00\xce", 501)


@pytest.mark.parametrize("class_id,method_id", [(60, 999), (10, 12), (99, 10), (30, 12), (40, 41)])
def test_unknown_class_or_method(class_id, method_id):
    payload = class_id.to_bytes(2, "big") + method_id.to_bytes(2, "big")
    err = _raises(PROTOCOL_HEADER + b"\x01\x00\x01\x00\x00\x00\x04" + payload + b"\xce", codec.NOT_IMPLEMENTED)
    assert (err.class_id, err.method_id) == (class_id, method_id)


def _method_frame(payload: bytes, ch: int = 1) -> bytes:
    return PROTOCOL_HEADER + b"\x01" + ch.to_bytes(2, "big") + len(payload).to_bytes(4, "big") + payload + b"\xce"


def test_method_payload_truncated_or_too_long():
    good = codec.encode_method(1, spec.QueueDeclare(queue="queue", arguments={"a": 1}))[7:-1]
    for cut in range(len(good)):
        err = _raises(_method_frame(good[:cut]), 501)
        if cut >= 4:
            assert (err.class_id, err.method_id) == (50, 10)
    err = _raises(_method_frame(good + b"\x00"), 501)
    assert "cannot decode queue.declare" in err.text
    _raises(_method_frame(b"\x00\x3c\x00\x50"), 501)  # basic.ack without arguments
    _raises(_method_frame(b"\x00\x5a\x00\x0a\x00"), 501)  # tx.select with a stray octet


def test_bad_table_type_letter_in_method():
    payload = bytes.fromhex("0032 000a 0000 01 71 00 00000004 01 6b 5a 00".replace(" ", ""))
    err = _raises(_method_frame(payload), 502)
    assert (err.class_id, err.method_id) == (50, 10)


def test_table_length_overrunning():
    # arguments table claims 100 octets, the payload ends after 3
    payload = bytes.fromhex("0032 000a 0000 01 71 00 00000064 01 6b 56".replace(" ", ""))
    err = _raises(_method_frame(payload), 501)
    assert (err.class_id, err.method_id) == (50, 10)
    # nested table overruns its parent table
    payload = bytes.fromhex("0032 000a 0000 01 71 00 0000000a 01 6b 46 00000020 01 6b 56".replace(" ", ""))
    _raises(_method_frame(payload), 502)


def test_bad_utf8_in_shortstr():
    payload = bytes.fromhex("0032 000a 0000 02 ff fe 00 00000000".replace(" ", ""))
    _raises(_method_frame(payload), 501)
    # content-carrying methods are lenient (as RabbitMQ): bytes survive a round trip
    publish = bytes.fromhex("003c 0028 0000 00 02 fffe 00".replace(" ", ""))
    frames = decode_all(_method_frame(publish))
    assert codec.encode_method(1, frames[1].method)[7:-1] == publish


def test_bad_content_headers():
    head = bytes.fromhex("003c 0000 0000000000000001")
    _raises(PROTOCOL_HEADER + b"\x02\x00\x01\x00\x00\x00\x03" + head[:3] + b"\xce", 501)  # too short
    for flags in (b"\x80\x01", b"\x00\x01", b"\x00\x02"):  # continuation / unused bits
        _raises(PROTOCOL_HEADER + b"\x02\x00\x01\x00\x00\x00\x0e" + head + flags + b"\xce", 501)
    truncated = head + b"\x80\x00\x05ab"  # content-type claims 5 octets
    _raises(PROTOCOL_HEADER + b"\x02\x00\x01" + len(truncated).to_bytes(4, "big") + truncated + b"\xce", 501)
    trailing = head + b"\x00\x00\x00"
    _raises(PROTOCOL_HEADER + b"\x02\x00\x01" + len(trailing).to_bytes(4, "big") + trailing + b"\xce", 501)
    bad_headers = head + b"\x20\x00" + b"\x00\x00\x00\x03\x01kZ"
    _raises(PROTOCOL_HEADER + b"\x02\x00\x01" + len(bad_headers).to_bytes(4, "big") + bad_headers + b"\xce", 502)


def test_decoded_records_are_real_frozen_instances():
    import dataclasses

    frames = decode_all(PROTOCOL_HEADER + codec.encode_content(
        1, spec.BasicPublish(exchange="e"), PROPS, b"body", 4096))
    for f in frames[1:] + [frames[1].method]:
        assert type(f).__name__ in {"MethodFrame", "HeaderFrame", "BodyFrame", "BasicPublish"}
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(f, dataclasses.fields(f)[0].name, 9)
    assert frames[1] == MethodFrame(1, spec.BasicPublish(exchange="e"))
    assert hash(frames[3]) == hash(BodyFrame(1, b"body"))


def test_publish_with_its_content_buffered_decodes_in_one_step():
    wire = codec.encode_content(3, spec.BasicPublish(exchange="x", routing_key="k"), PROPS, b"body", 131072)
    dec = FrameDecoder()
    dec.feed(PROTOCOL_HEADER + wire)
    header, content = dec.read_frames()
    assert isinstance(content, codec.ContentFrames)
    assert (content.channel, content.method, content.body) == (3, spec.BasicPublish(exchange="x", routing_key="k"), b"body")
    assert content.header == HeaderFrame(3, 60, 4, PROPS, RAW_PROPS)
    # the body not yet buffered: the publish comes alone, the rest frame by frame
    dec = FrameDecoder()
    dec.feed(PROTOCOL_HEADER + wire[:-3])
    assert [type(f) for f in dec.read_frames()] == [ProtocolHeader, MethodFrame, HeaderFrame]
    dec.feed(wire[-3:])
    assert dec.read_frames() == [BodyFrame(3, b"body")]


def test_good_frames_before_a_bad_one_are_returned_first():
    bad = bytearray(codec.encode_method(1, spec.BasicAck(delivery_tag=2)))
    bad[-1] = 0
    dec = FrameDecoder()
    dec.feed(PROTOCOL_HEADER + codec.encode_method(1, spec.BasicAck(delivery_tag=1)) + bytes(bad))
    assert dec.read_frames() == [ProtocolHeader(0, 9, 1), MethodFrame(1, spec.BasicAck(delivery_tag=1))]
    with pytest.raises(AMQPFrameError) as info:
        dec.read_frames()
    assert info.value.reply_code == 501
