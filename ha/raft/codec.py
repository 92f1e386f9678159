"""Raft messages as bytes (struct, no pickle), and length-prefixed framing for stream links.

A message is a 56-byte header, little-endian::

    kind u8 | flags u8 | src u16 | term u64 | index u64 | log_term u64 | commit u64 | hint u64 |
    round u64 | count u32

then, for APPEND, ``count`` entry terms (u64 each), ``count`` entry lengths (u32 each) and the
entries' data one after the other (so a batch is packed and split with a few C calls, not a
loop per entry); for SNAPSHOT, ``count`` bytes of snapshot; nothing for the other kinds.
``decode`` takes ``bytes`` (the entries are slices of it). On a stream each message is
preceded by its length (u32): ``frame`` and ``Deframer``.
"""

from __future__ import annotations

import struct
from itertools import accumulate

from mqemu.ha.raft.messages import APPEND, SNAPSHOT, Message

HEADER = struct.Struct("<BBHQQQQQQI")
LENGTH = struct.Struct("<I")
MAX_MESSAGE = 256 * 1024 * 1024


class CodecError(ValueError):
    """Malformed bytes: the link that carried them should be dropped."""


def encode(m: Message) -> bytes:
    if m.kind == APPEND and m.terms:
        n = len(m.terms)
        return b"".join((HEADER.pack(m.kind, m.flags, m.src, m.term, m.index, m.log_term, m.commit, m.hint,
                                     m.round, n),
                         struct.pack(f"<{n}Q", *m.terms), struct.pack(f"<{n}I", *map(len, m.datas)), *m.datas))
    if m.kind == SNAPSHOT:
        return HEADER.pack(m.kind, m.flags, m.src, m.term, m.index, m.log_term, m.commit, m.hint, m.round,
                           len(m.snapshot)) + m.snapshot
    return HEADER.pack(m.kind, m.flags, m.src, m.term, m.index, m.log_term, m.commit, m.hint, m.round, 0)


def decode(b: bytes) -> Message:
    size = len(b)
    if size < HEADER.size:
        raise CodecError(f"message of {size} bytes, shorter than the header")
    kind, flags, src, term, index, log_term, commit, hint, rnd, count = HEADER.unpack_from(b, 0)
    m = Message(kind, src, term, index, log_term, commit, hint, rnd, flags)
    pos = HEADER.size
    if kind == APPEND:
        if count:
            if pos + 12 * count > size:
                raise CodecError("entry terms and lengths past the end")
            m.terms = list(struct.unpack_from(f"<{count}Q", b, pos))
            pos += 8 * count
            lengths = struct.unpack_from(f"<{count}I", b, pos)
            pos += 4 * count
            ends = list(accumulate(lengths, initial=pos))
            if ends[-1] > size:
                raise CodecError("entry data past the end")
            m.datas = [b[i:j] for i, j in zip(ends, ends[1:])]
            pos = ends[-1]
    elif kind == SNAPSHOT:
        if pos + count > size:
            raise CodecError("snapshot past the end")
        m.snapshot = b[pos:pos + count]
        pos += count
    elif count or not 1 <= kind <= 8:
        raise CodecError(f"kind {kind} with count {count}")
    if pos != size:
        raise CodecError(f"{size - pos} bytes after the message")
    return m


def frame(payload: bytes) -> bytes:
    return LENGTH.pack(len(payload)) + payload


class Deframer:
    """Splits a byte stream into the payloads ``frame`` made; keeps a partial one."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out = []
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (n,) = LENGTH.unpack_from(buf, pos)
            if n > MAX_MESSAGE:
                raise CodecError(f"frame of {n} bytes")
            if end - pos - 4 < n:
                break
            out.append(bytes(buf[pos + 4:pos + 4 + n]))
            pos += 4 + n
        if pos:
            del buf[:pos]
        return out
