"""The node-to-node link's frames (sans-IO: no sockets, no trio, no broker).

Every frame is ``length:u32 | kind:u8 | body``, big-endian, where ``length`` counts the kind
byte and the body (so the smallest frame, a heartbeat, is ``00 00 00 01 02``):

- ``HELLO`` (1): ``version:u8 | cluster_len:u8 | cluster | node_len:u8 | node`` (UTF-8). The
  first frame each side sends on a connection: who is speaking, in which cluster.
- ``HEARTBEAT`` (2): no body. Each side sends one every heartbeat interval; a side that hears
  nothing for the link timeout closes the connection.
- ``DATA`` (3): ``channel_len:u8 | channel | payload``: ``payload`` for the receive callback of
  ``channel`` (``raft``, ``meta``, ...), opaque here.

``LinkDecoder.feed`` takes any slice of the stream and returns every whole frame in it,
keeping the rest; malformed input raises ``LinkProtocolError`` (the connection is then closed).
"""

from __future__ import annotations

import struct

VERSION = 1
HELLO, HEARTBEAT, DATA = 1, 2, 3
KINDS = (HELLO, HEARTBEAT, DATA)
MAX_FRAME = 16 * 1024 * 1024  # bytes after the length field
MAX_NAME = 255

_HEADER = struct.Struct(">IB")
_HEARTBEAT = _HEADER.pack(1, HEARTBEAT)


class LinkProtocolError(Exception):
    """Bytes that are not a link frame (too long, unknown kind, bad hello)."""


def _name(value: str, what: str) -> bytes:
    data = value.encode()
    if not data or len(data) > MAX_NAME:
        raise ValueError(f"a {what} name is 1 to {MAX_NAME} UTF-8 bytes, not {value!r}")
    return data


def encode_hello(cluster: str, node: str) -> bytes:
    c, n = _name(cluster, "cluster"), _name(node, "node")
    body = bytes((VERSION, len(c))) + c + bytes((len(n),)) + n
    return _HEADER.pack(1 + len(body), HELLO) + body


def encode_heartbeat() -> bytes:
    return _HEARTBEAT


def encode_data(channel: str, payload: bytes) -> bytes:
    c = _name(channel, "channel")
    length = 2 + len(c) + len(payload)
    if length > MAX_FRAME:
        raise ValueError(f"a link frame carries at most {MAX_FRAME} bytes, not {length}")
    return _HEADER.pack(length, DATA) + bytes((len(c),)) + c + payload


def decode_hello(body: bytes) -> tuple[str, str]:
    """(cluster, node) from a HELLO body."""
    try:
        version, clen = body[0], body[1]
        cluster = body[2:2 + clen]
        nlen = body[2 + clen]
        node = body[3 + clen:3 + clen + nlen]
    except IndexError:
        raise LinkProtocolError("hello: truncated") from None
    if version != VERSION:
        raise LinkProtocolError(f"hello: version {version}, expected {VERSION}")
    if len(cluster) != clen or len(node) != nlen or not clen or not nlen or 3 + clen + nlen != len(body):
        raise LinkProtocolError("hello: name lengths do not match the frame")
    try:
        return cluster.decode(), node.decode()
    except UnicodeDecodeError:
        raise LinkProtocolError("hello: names are not UTF-8") from None


def decode_data(body: bytes) -> tuple[str, bytes]:
    """(channel, payload) from a DATA body."""
    if not body or len(body) < 1 + body[0] or not body[0]:
        raise LinkProtocolError("data: truncated channel name")
    end = 1 + body[0]
    try:
        channel = body[1:end].decode()
    except UnicodeDecodeError:
        raise LinkProtocolError("data: channel name is not UTF-8") from None
    return channel, body[end:]


class LinkDecoder:
    """Incremental: ``feed(data)`` returns ``[(kind, body), ...]`` for every whole frame."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        frames = []
        pos, end = 0, len(buf)
        while end - pos >= 5:
            length, kind = _HEADER.unpack_from(buf, pos)
            if length > MAX_FRAME or length < 1:
                raise LinkProtocolError(f"frame length {length} (1 to {MAX_FRAME})")
            if kind not in KINDS:
                raise LinkProtocolError(f"unknown frame kind {kind}")
            if end - pos - 4 < length:
                break
            frames.append((kind, bytes(buf[pos + 5:pos + 4 + length])))
            pos += 4 + length
        if pos:
            del buf[:pos]
        return frames

    @property
    def pending(self) -> int:
        """Bytes held back: the start of a frame not yet whole."""
        return len(self._buf)
