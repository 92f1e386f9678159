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


_unpack_i64 = _I64.unpack_from
_unpack_f64 = _F64.unpack_from
_unpack_u16 = _U16.unpack_from
_unpack_u32 = _U32.unpack_from


def _short(pos: int, n: int, end: int) -> WireError:
    return WireError(f"{n} bytes wanted at byte {pos}, {end - pos} left")


def _text(data: bytes, pos: int, n: int, end: int) -> str:
    if n > end - pos:
        raise _short(pos, n, end)
    try:
        return data[pos:pos + n].decode()
    except UnicodeDecodeError:
        raise WireError(f"text that is not UTF-8 at byte {pos}") from None


def _get(data: bytes, pos: int, end: int, depth: int) -> tuple[Any, int]:
    """The value at ``pos`` and the position after it."""
    if pos >= end:
        raise _short(pos, 1, end)
    tag = data[pos]
    pos += 1
    if tag == 0x73:  # s
        if end - pos < 4:
            raise _short(pos, 4, end)
        n = _unpack_u32(data, pos)[0]
        return _text(data, pos + 4, n, end), pos + 4 + n
    if tag == 0x69:  # i
        if end - pos < 8:
            raise _short(pos, 8, end)
        return _unpack_i64(data, pos)[0], pos + 8
    if tag == 0x4E:  # N
        return None, pos
    if tag == 0x54:  # T
        return True, pos
    if tag == 0x46:  # F
        return False, pos
    if tag == 0x6D or tag == 0x6C:  # m, l
        if depth >= MAX_DEPTH:
            raise WireError(f"values nest deeper than {MAX_DEPTH}")
        if end - pos < 4:
            raise _short(pos, 4, end)
        n = _unpack_u32(data, pos)[0]
        pos += 4
        if n > end - pos:  # each item takes a byte at least
            raise WireError(f"a container of {n} items in {end - pos} bytes")
        depth += 1
        if tag == 0x6C:
            items = []
            for _ in range(n):
                v, pos = _get(data, pos, end, depth)
                items.append(v)
            return items, pos
        d: dict[str, Any] = {}
        for _ in range(n):
            if end - pos < 2:
                raise _short(pos, 2, end)
            k = _unpack_u16(data, pos)[0]
            key = _text(data, pos + 2, k, end)
            d[key], pos = _get(data, pos + 2 + k, end, depth)
        return d, pos
    if tag == 0x62:  # b
        if end - pos < 4:
            raise _short(pos, 4, end)
        n = _unpack_u32(data, pos)[0]
        pos += 4
        if n > end - pos:
            raise _short(pos, n, end)
        return data[pos:pos + n], pos + n
    if tag == 0x66:  # f
        if end - pos < 8:
            raise _short(pos, 8, end)
        return _unpack_f64(data, pos)[0], pos + 8
    if tag == 0x49 or tag == 0x44 or tag == 0x74:  # I, D, t
        if end - pos < 2:
            raise _short(pos, 2, end)
        n = _unpack_u16(data, pos)[0]
        text = _text(data, pos + 2, n, end)
        pos += 2 + n
        try:
            if tag == 0x49:
                return int(text), pos
            if tag == 0x44:
                return decimal.Decimal(text), pos
            return datetime.datetime.fromisoformat(text), pos
        except (ValueError, decimal.InvalidOperation):
            kind = {0x49: "an int", 0x44: "a decimal"}.get(tag, "a time")
            raise WireError(f"{text!r} is not {kind}") from None
    raise WireError(f"unknown tag {bytes((tag,))!r} at byte {pos - 1}")


def load_value(data: bytes) -> Any:
    """The value ``data`` holds, all of it; raises WireError."""
    data = bytes(data)
    v, pos = _get(data, 0, len(data), 0)
    if pos != len(data):
        raise WireError(f"{len(data) - pos} bytes after the value")
    return v


# The meta of messages whose properties came as these AMQP bytes (``encoded_properties``),
# without routing keys or fields: (the properties, the meta's bytes). A hit is checked equal
# to the message's properties, so a cache that maps two property sets to one AMQP encoding
# costs a dump, never a wrong meta. A publisher's messages mostly share their properties.
_META_BYTES: dict[bytes, tuple[dict, bytes]] = {}
_META_BYTES_MAX = 4096


def dump_message(message: Message) -> bytes:
    ex = message.exchange.encode()
    rk = message.routing_key.encode()
    fields = message.fields
    key = message.encoded_properties
    if key is not None and message.routing_keys is None and not fields:
        props = message.properties
        got = _META_BYTES.get(key)
        if got is not None and (got[0] is props or got[0] == props):
            meta = got[1]
        else:
            meta = dump_value([props, None, None])
            if len(_META_BYTES) >= _META_BYTES_MAX:
                _META_BYTES.clear()
            _META_BYTES[key] = (props, meta)
    else:
        meta = dump_value([message.properties, message.routing_keys, dict(fields) if fields else None])
    return b"".join((_MSG.pack(VERSION, len(ex)), ex, _U16.pack(len(rk)), rk, _U32.pack(len(meta)), meta,
                     message.body))


def load_message(data: bytes) -> Message:
    """A new ``Message`` from ``dump_message``'s bytes; raises WireError."""
    data = bytes(data)
    end = len(data)
    if end < 3:
        raise _short(0, 3, end)
    version, n = _MSG.unpack_from(data, 0)
    if version != VERSION:
        raise WireError(f"message version {version}, this node reads {VERSION}")
    exchange = _text(data, 3, n, end)
    pos = 3 + n
    if end - pos < 2:
        raise _short(pos, 2, end)
    n = _unpack_u16(data, pos)[0]
    routing_key = _text(data, pos + 2, n, end)
    pos += 2 + n
    if end - pos < 4:
        raise _short(pos, 4, end)
    meta_len = _unpack_u32(data, pos)[0]
    pos += 4
    meta_end = pos + meta_len
    if meta_end > end:
        raise WireError(f"a meta of {meta_len} bytes in {end - pos}")
    value, pos = _get(data, pos, meta_end, 0)
    if pos != meta_end:
        raise WireError(f"{meta_end - pos} bytes after the meta")
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
