"""The Raft message codec: exact bytes of each shape, round trips, malformed input, framing."""

from __future__ import annotations

import pytest

from mqemu.ha.raft.codec import CodecError, Deframer, decode, encode, frame
from mqemu.ha.raft.messages import APPEND, APPEND_RESP, HEARTBEAT, PRE, REJECT, SNAPSHOT, TIMEOUT_NOW, VOTE, Message

U64 = lambda n: n.to_bytes(8, "little")  # noqa: E731
U32 = lambda n: n.to_bytes(4, "little")  # noqa: E731


def header(kind, flags, src, term, index, log_term, commit, hint, rnd, count) -> bytes:
    return (bytes([kind, flags]) + src.to_bytes(2, "little") + U64(term) + U64(index) + U64(log_term)
            + U64(commit) + U64(hint) + U64(rnd) + U32(count))


def test_append_bytes():
    m = Message(APPEND, 2, 5, 7, 4, 6, round=9, terms=[5, 5], datas=[b"ab", b""])
    want = header(1, 0, 2, 5, 7, 4, 6, 0, 9, 2) + U64(5) + U64(5) + U32(2) + U32(0) + b"ab"
    assert len(header(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)) == 56
    assert encode(m) == want
    assert want.hex() == (
        "0100" "0200" "0500000000000000" "0700000000000000" "0400000000000000" "0600000000000000"
        "0000000000000000" "0900000000000000" "02000000"
        "0500000000000000" "0500000000000000" "02000000" "00000000" "6162")
    assert decode(want) == m


def test_vote_and_snapshot_bytes():
    vote = Message(VOTE, 1, 3, 10, 2, flags=PRE)
    assert encode(vote) == header(3, 1, 1, 3, 10, 2, 0, 0, 0, 0)
    snap = Message(SNAPSHOT, 0, 4, 100, 3, snapshot=b"xyz")
    assert encode(snap) == header(7, 0, 0, 4, 100, 3, 0, 0, 0, 3) + b"xyz"
    for m in (vote, snap, Message(APPEND_RESP, 4, 9, 12, hint=3, round=77, flags=REJECT),
              Message(HEARTBEAT, 1, 2, commit=5, round=6), Message(TIMEOUT_NOW, 0, 8),
              Message(APPEND, 1, 1, 0, 0, 0)):
        assert decode(encode(m)) == m
    assert decode(encode(Message(APPEND_RESP, 4, 9, 12, flags=REJECT))).reject


@pytest.mark.parametrize("bad, why", [
    (b"\x01" * 10, "shorter than the header"),
    (header(1, 0, 0, 1, 0, 0, 0, 0, 0, 1) + U64(1) + U32(5) + b"ab", "entry data past the end"),
    (header(1, 0, 0, 1, 0, 0, 0, 0, 0, 1) + U64(1), "entry terms and lengths past the end"),
    (header(1, 0, 0, 1, 0, 0, 0, 0, 0, 2) + U64(1) + U64(1) + U32(1) + U32(1) + b"abc", "1 bytes after"),
    (header(7, 0, 0, 1, 0, 0, 0, 0, 0, 9) + b"x", "snapshot past the end"),
    (header(3, 0, 0, 1, 0, 0, 0, 0, 0, 0) + b"!", "bytes after the message"),
    (header(3, 0, 0, 1, 0, 0, 0, 0, 0, 2), "kind 3 with count 2"),
    (header(99, 0, 0, 1, 0, 0, 0, 0, 0, 0), "kind 99"),
])
def test_malformed(bad, why):
    with pytest.raises(CodecError, match=why):
        decode(bad)


def test_framing_splits_a_stream_at_any_point():
    payloads = [b"", b"a", b"hello" * 100, encode(Message(VOTE, 1, 3, 10, 2))]
    stream = b"".join(frame(p) for p in payloads)
    assert frame(b"ab") == b"\x02\x00\x00\x00ab"
    for cut in range(len(stream) + 1):
        d = Deframer()
        assert d.feed(stream[:cut]) + d.feed(stream[cut:]) == payloads
    d = Deframer()
    assert [p for b in stream for p in d.feed(bytes([b]))] == payloads


def test_frame_too_large():
    with pytest.raises(CodecError):
        Deframer().feed(b"\xff\xff\xff\xff")
