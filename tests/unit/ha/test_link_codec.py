"""The node-to-node link's frames, byte for byte (``ha/link_codec.py``)."""

from __future__ import annotations

import pytest

from mqemu.ha.link_codec import (DATA, HEARTBEAT, HELLO, MAX_FRAME, LinkDecoder, LinkProtocolError, decode_data,
                                 decode_hello, encode_data, encode_heartbeat, encode_hello)

HELLO_BYTES = (b"\x00\x00\x00\x0d"  # length: kind + body (13)
               b"\x01"  # HELLO
               b"\x01"  # version 1
               b"\x03abc"  # cluster
               b"\x06node-1")  # node
DATA_BYTES = (b"\x00\x00\x00\x09"
              b"\x03"  # DATA
              b"\x04raft"  # channel
              b"\x00\xff\x07")  # payload


def test_exact_bytes():
    assert encode_hello("abc", "node-1") == HELLO_BYTES
    assert encode_heartbeat() == b"\x00\x00\x00\x01\x02"
    assert encode_data("raft", b"\x00\xff\x07") == DATA_BYTES
    assert encode_data("m", b"") == b"\x00\x00\x00\x03\x03\x01m"


def test_decoder_takes_any_split_and_keeps_the_rest():
    stream = HELLO_BYTES + encode_heartbeat() + DATA_BYTES
    for cut in range(len(stream) + 1):
        decoder = LinkDecoder()
        frames = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert frames == [(HELLO, HELLO_BYTES[5:]), (HEARTBEAT, b""), (DATA, DATA_BYTES[5:])], cut
        assert decoder.pending == 0
    decoder = LinkDecoder()
    assert [f for b in stream for f in decoder.feed(bytes([b]))] == LinkDecoder().feed(stream)
    assert decoder.feed(DATA_BYTES[:7]) == [] and decoder.pending == 7


def test_bodies_decode():
    assert decode_hello(HELLO_BYTES[5:]) == ("abc", "node-1")
    assert decode_data(DATA_BYTES[5:]) == ("raft", b"\x00\xff\x07")


@pytest.mark.parametrize("data, message", [
    (b"\x00\x00\x00\x00\x02", "length 0"),
    ((MAX_FRAME + 1).to_bytes(4, "big") + b"\x03", "length"),
    (b"\x00\x00\x00\x01\x09", "unknown frame kind 9"),
])
def test_malformed_frames(data, message):
    with pytest.raises(LinkProtocolError, match=message):
        LinkDecoder().feed(data)


@pytest.mark.parametrize("body, message", [
    (b"\x02\x03abc\x06node-1", "version 2"),
    (b"\x01\x03abc\x07node-1", "lengths"),
    (b"\x01\x03abc\x06node-1x", "lengths"),
    (b"\x01\x00\x06node-1", "lengths"),
    (b"\x01\x09abc", "truncated"),
    (b"\x01\x02\xff\xfe\x01n", "UTF-8"),
])
def test_malformed_hellos(body, message):
    with pytest.raises(LinkProtocolError, match=message):
        decode_hello(body)


@pytest.mark.parametrize("body", [b"", b"\x00abc", b"\x05raf"])
def test_malformed_data(body):
    with pytest.raises(LinkProtocolError):
        decode_data(body)


def test_names_are_checked_when_encoding():
    with pytest.raises(ValueError):
        encode_hello("", "node-1")
    with pytest.raises(ValueError):
        encode_data("x" * 256, b"")
