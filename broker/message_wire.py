"""Messages and plain values as bytes that another node reads: what crosses a cluster link.

The store writes its own files with pickle (``store.message_codec``); bytes that come from a
peer must never be unpickled (whoever reaches the cluster port could run code), so what
crosses a link uses this codec, which builds nothing but plain values.

A value is a tag byte and its data (numbers big-endian)::

    N                  None
    T / F              True / False
    i  i64             an int in 64 bits
    I  u16 | ascii     any other int, in decimal
    f  f64             a float
    s  u32 | utf-8     a str
    b  u32 | bytes     bytes (bytearray and memoryview are written as bytes)
    l  u32 | values    a list (a tuple is written as a list)
    m  u32 | (u16 | utf-8 key, value)*   a dict with str keys
    D  u16 | ascii     a decimal.Decimal
    t  u16 | ascii     a datetime.datetime (ISO 8601, its zone kept)

A message is::

    version:u8 (1) | u16 | exchange | u16 | routing key | u32 | meta | body

where meta is the value ``[properties, routing_keys, fields]`` and the body runs to the end.
The AMQP property cache (``Message.encoded_properties``) is not sent: the receiver encodes
the properties again when it delivers, as after a restart.

Decoding checks every length and nests at most ``MAX_DEPTH`` deep; anything else raises
``WireError`` (a ``ValueError``).
"""

from __future__ import annotations

import datetime
import decimal
import struct
from typing import Any

from .message import Message

VERSION = 1
MAX_DEPTH = 32


class WireError(ValueError):
    """Bytes that are not a value or a message of this codec."""


_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_MSG = struct.Struct(">BH")
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


def _put(v: Any, out: list[bytes], depth: int) -> None:
    cls = v.__class__
    if v is None:
        out.append(b"N")
    elif cls is bool:
        out.append(b"T" if v else b"F")
    elif cls is str:
        data = v.encode()
        out.append(b"s" + _U32.pack(len(data)))
        out.append(data)
    elif cls is int:
        if _I64_MIN <= v <= _I64_MAX:
            out.append(b"i" + _I64.pack(v))
        else:
            text = str(v).encode()
            out.append(b"I" + _U16.pack(len(text)) + text)
    elif cls is dict:
        if depth >= MAX_DEPTH:
            raise WireError(f"values nest deeper than {MAX_DEPTH}")
        out.append(b"m" + _U32.pack(len(v)))
        for key, x in v.items():
            if key.__class__ is not str:
                raise WireError(f"a dict key must be a str, not {type(key).__name__}")
            k = key.encode()
            out.append(_U16.pack(len(k)) + k)
            _put(x, out, depth + 1)
    elif cls is bytes or cls is bytearray or cls is memoryview:
        data = bytes(v)
        out.append(b"b" + _U32.pack(len(data)))
        out.append(data)
    elif cls is list or cls is tuple:
        if depth >= MAX_DEPTH:
            raise WireError(f"values nest deeper than {MAX_DEPTH}")
        out.append(b"l" + _U32.pack(len(v)))
        for x in v:
            _put(x, out, depth + 1)
    elif cls is float:
        out.append(b"f" + _F64.pack(v))
    elif isinstance(v, decimal.Decimal):
        text = str(v).encode()
        out.append(b"D" + _U16.pack(len(text)) + text)
    elif isinstance(v, datetime.datetime):
        text = v.isoformat().encode()
        out.append(b"t" + _U16.pack(len(text)) + text)
    elif isinstance(v, int):  # an int subclass (an enum's value): written as the int
        _put(int(v), out, depth)
    elif isinstance(v, str):
        _put(str(v), out, depth)
    else:
        raise WireError(f"a {type(v).__name__} cannot cross a link")


def dump_value(v: Any) -> bytes:
    out: list[bytes] = []
    _put(v, out, 0)
    return b"".join(out)


class _Reader:
    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data = data
        self.pos = pos
        self.end = end

    def take(self, n: int) -> bytes:
        pos = self.pos
        if n > self.end - pos:
            raise WireError(f"{n} bytes wanted at byte {pos}, {self.end - pos} left")
        self.pos = pos + n
        return self.data[pos:pos + n]

    def u16(self) -> int:
        return _U16.unpack(self.take(2))[0]

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def text(self, n: int) -> str:
        try:
            return self.take(n).decode()
        except UnicodeDecodeError:
            raise WireError(f"text that is not UTF-8 before byte {self.pos}") from None

    def value(self, depth: int) -> Any:
        tag = self.take(1)
        if tag == b"s":
            return self.text(self.u32())
        if tag == b"i":
            return _I64.unpack(self.take(8))[0]
        if tag == b"N":
            return None
        if tag == b"T":
            return True
        if tag == b"F":
            return False
        if tag == b"m" or tag == b"l":
            if depth >= MAX_DEPTH:
                raise WireError(f"values nest deeper than {MAX_DEPTH}")
            n = self.u32()
            if n > self.end - self.pos:  # each item takes a byte at least
                raise WireError(f"a container of {n} items in {self.end - self.pos} bytes")
            if tag == b"l":
                return [self.value(depth + 1) for _ in range(n)]
            d: dict[str, Any] = {}
            for _ in range(n):
                key = self.text(self.u16())
                d[key] = self.value(depth + 1)
            return d
        if tag == b"b":
            return self.take(self.u32())
        if tag == b"f":
            return _F64.unpack(self.take(8))[0]
        if tag == b"I":
            text = self.text(self.u16())
            try:
                return int(text)
            except ValueError:
                raise WireError(f"{text!r} is not an int") from None
        if tag == b"D":
            text = self.text(self.u16())
            try:
                return decimal.Decimal(text)
            except decimal.InvalidOperation:
                raise WireError(f"{text!r} is not a decimal") from None
        if tag == b"t":
            text = self.text(self.u16())
            try:
                return datetime.datetime.fromisoformat(text)
            except ValueError:
                raise WireError(f"{text!r} is not a time") from None
        raise WireError(f"unknown tag {tag!r} at byte {self.pos - 1}")


def load_value(data: bytes) -> Any:
    """The value ``data`` holds, all of it; raises WireError."""
    r = _Reader(bytes(data), 0, len(data))
    v = r.value(0)
    if r.pos != r.end:
        raise WireError(f"{r.end - r.pos} bytes after the value")
    return v


def dump_message(message: Message) -> bytes:
    ex = message.exchange.encode()
    rk = message.routing_key.encode()
    fields = message.fields
    meta = dump_value([message.properties, message.routing_keys, dict(fields) if fields else None])
    return b"".join((_MSG.pack(VERSION, len(ex)), ex, _U16.pack(len(rk)), rk, _U32.pack(len(meta)), meta,
                     message.body))


def load_message(data: bytes) -> Message:
    """A new ``Message`` from ``dump_message``'s bytes; raises WireError."""
    data = bytes(data)
    r = _Reader(data, 0, len(data))
    version, n = _MSG.unpack(r.take(_MSG.size))
    if version != VERSION:
        raise WireError(f"message version {version}, this node reads {VERSION}")
    exchange = r.text(n)
    routing_key = r.text(r.u16())
    meta_len = r.u32()
    meta_end = r.pos + meta_len
    if meta_end > r.end:
        raise WireError(f"a meta of {meta_len} bytes in {r.end - r.pos}")
    meta = _Reader(data, r.pos, meta_end)
    value = meta.value(0)
    if meta.pos != meta_end:
        raise WireError(f"{meta_end - meta.pos} bytes after the meta")
    if value.__class__ is not list or len(value) != 3:
        raise WireError("the meta is not [properties, routing_keys, fields]")
    properties, routing_keys, fields = value
    if properties.__class__ is not dict or not (routing_keys is None or routing_keys.__class__ is list) \
            or not (fields is None or fields.__class__ is dict) \
            or (routing_keys is not None and any(k.__class__ is not str for k in routing_keys)):
        raise WireError("the meta's parts have the wrong types")
    msg = Message(exchange, routing_key, data[meta_end:], properties, fields=fields)
    msg.routing_keys = routing_keys
    return msg
