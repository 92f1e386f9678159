"""AMQP 0-9-1 field tables and field arrays (spec §4.2.5.5), RabbitMQ dialect.

RabbitMQ deviation: the type letters are the ones RabbitMQ (and every common
client) uses, from RabbitMQ's "AMQP 0-9-1 errata" page, not the table in the
0-9-1 PDF, which clashes with them (e.g. the spec's ``s`` short-string and
``U``/``L`` are not used on the wire):

    t bool      b int8      B uint8     s int16     u uint16
    I int32     i uint32    l int64     f float32   d float64
    D decimal   S longstr   x bytes     A array     T timestamp
    F table     V void

RabbitMQ also decodes ``L`` as a signed 64-bit integer; we accept it too.

Decoding is bounds-checked against the enclosing table/array length; every
malformed value raises :class:`AMQPFrameError` 502 SYNTAX_ERROR.

Nesting is bounded: a table or array inside tables and arrays more than
``MAX_NESTING`` levels deep is a 502 SYNTAX_ERROR. RabbitMQ deviation: RabbitMQ
takes any depth that fits in a frame (its parser does not recurse on the
native stack); mqemu's decoder and encoder do, and a value nested thousands
deep would otherwise fail later, on delivery or when a session maps it. No
client nests anywhere near 100 levels.
"""

from __future__ import annotations

import datetime
import decimal
import struct
from typing import Any, Callable

from .errors import AMQPFrameError, syntax_error

__all__ = ["MAX_NESTING", "decode_table", "encode_table", "decode_array", "encode_array"]

MAX_NESTING = 100  # tables/arrays inside the outermost one

_UTC = datetime.timezone.utc
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=_UTC)

_b = struct.Struct(">b")
_B = struct.Struct(">B")
_s = struct.Struct(">h")
_u = struct.Struct(">H")
_I = struct.Struct(">i")
_i = struct.Struct(">I")
_l = struct.Struct(">q")
_Q = struct.Struct(">Q")
_f = struct.Struct(">f")
_d = struct.Struct(">d")
_D = struct.Struct(">Bi")

# ---------------------------------------------------------------------------
# decoding: each value decoder takes (buf, off, end) and returns (value, off)


def _truncated(what: str) -> AMQPFrameError:
    return syntax_error(f"field {what} runs past the end of its table")


def _fixed(st: struct.Struct, what: str) -> Callable[[Any, int, int], tuple[Any, int]]:
    size = st.size
    unpack_from = st.unpack_from

    def dec(buf: Any, off: int, end: int) -> tuple[Any, int]:
        if off + size > end:
            raise _truncated(what)
        return unpack_from(buf, off)[0], off + size

    return dec


def _dec_bool(buf: Any, off: int, end: int) -> tuple[Any, int]:
    if off >= end:
        raise _truncated("bool")
    return buf[off] != 0, off + 1


def _dec_decimal(buf: Any, off: int, end: int) -> tuple[Any, int]:
    if off + 5 > end:
        raise _truncated("decimal")
    scale, value = _D.unpack_from(buf, off)
    return decimal.Decimal(value).scaleb(-scale), off + 5


def _dec_timestamp(buf: Any, off: int, end: int) -> tuple[Any, int]:
    if off + 8 > end:
        raise _truncated("timestamp")
    secs = _Q.unpack_from(buf, off)[0]
    try:
        value = _EPOCH + datetime.timedelta(seconds=secs)
    except OverflowError:
        raise syntax_error(f"timestamp {secs} out of range") from None
    return value, off + 8


def _sized(buf: Any, off: int, end: int, what: str) -> tuple[int, int]:
    """Read a 32-bit length and return (start, stop) of the data it covers."""
    if off + 4 > end:
        raise _truncated(what)
    n = _i.unpack_from(buf, off)[0]
    off += 4
    stop = off + n
    if stop > end:
        raise _truncated(what)
    return off, stop


def _dec_longstr(buf: Any, off: int, end: int) -> tuple[Any, int]:
    start, stop = _sized(buf, off, end, "longstr")
    raw = bytes(buf[start:stop])
    try:
        return raw.decode("utf-8"), stop
    except UnicodeDecodeError:
        return raw, stop


def _dec_bytes(buf: Any, off: int, end: int) -> tuple[Any, int]:
    start, stop = _sized(buf, off, end, "byte array")
    return bytes(buf[start:stop]), stop


def _dec_nested(buf: Any, off: int, end: int, tag: int, depth: int) -> tuple[Any, int]:
    """A table (``F``) or array (``A``) value one level below ``depth``."""
    if depth >= MAX_NESTING:
        raise syntax_error(f"field table nested more than {MAX_NESTING} levels deep")
    if tag == _TAG_TABLE:
        start, stop = _sized(buf, off, end, "table")
        return _decode_table(buf, start, stop, depth + 1), stop
    start, stop = _sized(buf, off, end, "array")
    return _decode_array(buf, start, stop, depth + 1), stop


def _dec_void(buf: Any, off: int, end: int) -> tuple[Any, int]:
    return None, off


# Indexed by the type octet; None means "not a valid type letter".
_Decoder = Callable[..., tuple[Any, int]]
_VALUE_DECODERS: list[_Decoder | None] = [None] * 256
_BY_LETTER: dict[str, _Decoder] = {
    "t": _dec_bool,
    "b": _fixed(_b, "int8"),
    "B": _fixed(_B, "uint8"),
    "s": _fixed(_s, "int16"),
    "u": _fixed(_u, "uint16"),
    "I": _fixed(_I, "int32"),
    "i": _fixed(_i, "uint32"),
    "l": _fixed(_l, "int64"),
    "L": _fixed(_l, "int64"),  # RabbitMQ deviation: 'L' read as signed 64-bit too
    "f": _fixed(_f, "float"),
    "d": _fixed(_d, "double"),
    "D": _dec_decimal,
    "S": _dec_longstr,
    "x": _dec_bytes,
    "A": _dec_nested,  # tables and arrays: the loops below pass _dec_nested the depth
    "T": _dec_timestamp,
    "F": _dec_nested,
    "V": _dec_void,
}
for _letter, _fn in _BY_LETTER.items():
    _VALUE_DECODERS[ord(_letter)] = _fn
del _letter, _fn
_TAG_TABLE = ord("F")


def _decode_table(buf: Any, off: int, end: int, depth: int = 0) -> dict[str, Any]:
    decoders = _VALUE_DECODERS
    nested = _dec_nested
    result: dict[str, Any] = {}
    while off < end:
        klen = buf[off]
        off += 1
        kend = off + klen
        if kend >= end:  # need the key and at least the type octet
            raise syntax_error("table entry runs past the end of its table")
        key = bytes(buf[off:kend]).decode("utf-8", "surrogateescape")
        tag = buf[kend]
        dec = decoders[tag]
        if dec is None:
            raise syntax_error(f"unknown field table type {chr(tag)!r} for key {key!r}")
        if dec is nested:
            result[key], off = nested(buf, kend + 1, end, tag, depth)
        else:
            result[key], off = dec(buf, kend + 1, end)
    return result


def _decode_array(buf: Any, off: int, end: int, depth: int = 0) -> list[Any]:
    decoders = _VALUE_DECODERS
    nested = _dec_nested
    result: list[Any] = []
    append = result.append
    while off < end:
        tag = buf[off]
        dec = decoders[tag]
        if dec is None:
            raise syntax_error(f"unknown field array type {chr(tag)!r}")
        if dec is nested:
            value, off = nested(buf, off + 1, end, tag, depth)
        else:
            value, off = dec(buf, off + 1, end)
        append(value)
    return result


def decode_table(data: bytes | bytearray | memoryview, offset: int = 0, end: int | None = None) -> dict[str, Any]:
    """Decode the *body* of a field table (without its 32-bit length prefix).

    Keys are str (undecodable bytes kept via ``surrogateescape``).
    Raises AMQPFrameError 502 SYNTAX_ERROR on a bad type letter, an entry
    running past ``end`` or nesting deeper than ``MAX_NESTING``.
    """
    if end is None:
        end = len(data)
    return _decode_table(data, offset, end)


def decode_array(data: bytes | bytearray | memoryview, offset: int = 0, end: int | None = None) -> list[Any]:
    """Decode the body of a field array (without its length prefix).

    Raises AMQPFrameError 502 SYNTAX_ERROR like :func:`decode_table`.
    """
    if end is None:
        end = len(data)
    return _decode_array(data, offset, end)


# ---------------------------------------------------------------------------
# encoding: each value encoder appends type letter + value to a list of parts


def _enc_int(v: int, out: list[bytes]) -> None:
    if -0x80000000 <= v <= 0x7FFFFFFF:
        out.append(b"I" + _I.pack(v))
    elif -0x8000000000000000 <= v <= 0x7FFFFFFFFFFFFFFF:
        out.append(b"l" + _l.pack(v))
    else:
        raise ValueError(f"integer {v} does not fit a field table int64")


def _enc_bool(v: bool, out: list[bytes]) -> None:
    out.append(b"t\x01" if v else b"t\x00")


def _enc_float(v: float, out: list[bytes]) -> None:
    out.append(b"d" + _d.pack(v))


def _enc_decimal(v: decimal.Decimal, out: list[bytes]) -> None:
    exp = v.as_tuple().exponent
    if not isinstance(exp, int):
        raise ValueError(f"cannot encode decimal {v}")
    scale = -exp if exp < 0 else 0
    unscaled = int(v.scaleb(scale))
    if scale > 255 or not -0x80000000 <= unscaled <= 0x7FFFFFFF:
        raise ValueError(f"decimal {v} does not fit scale octet + int32")
    out.append(b"D" + _D.pack(scale, unscaled))


def _enc_str(v: str, out: list[bytes]) -> None:
    raw = v.encode("utf-8", "surrogateescape")
    out.append(b"S" + _i.pack(len(raw)))
    out.append(raw)


def _enc_bytes(v: bytes, out: list[bytes]) -> None:
    out.append(b"x" + _i.pack(len(v)))
    out.append(bytes(v))


def _enc_list(v: list[Any] | tuple[Any, ...], out: list[bytes]) -> None:
    body = encode_array(v)
    out.append(b"A" + _i.pack(len(body)))
    out.append(body)


def _enc_dict(v: dict[str, Any], out: list[bytes]) -> None:
    body = encode_table(v)
    out.append(b"F" + _i.pack(len(body)))
    out.append(body)


def _enc_datetime(v: datetime.datetime, out: list[bytes]) -> None:
    if v.tzinfo is None:  # naive datetimes are taken as UTC
        v = v.replace(tzinfo=_UTC)
    out.append(b"T" + _Q.pack(int(v.timestamp())))


def _enc_none(v: None, out: list[bytes]) -> None:
    out.append(b"V")


_VALUE_ENCODERS: dict[type, Callable[[Any, list[bytes]], None]] = {
    bool: _enc_bool,
    int: _enc_int,
    float: _enc_float,
    decimal.Decimal: _enc_decimal,
    str: _enc_str,
    bytes: _enc_bytes,
    bytearray: _enc_bytes,
    memoryview: _enc_bytes,
    list: _enc_list,
    tuple: _enc_list,
    dict: _enc_dict,
    datetime.datetime: _enc_datetime,
    type(None): _enc_none,
}
# Subclasses (IntEnum, OrderedDict, ...) are resolved once by MRO and cached.
_FALLBACK_ORDER = (bool, int, float, decimal.Decimal, str, bytes, bytearray, memoryview,
                   list, tuple, dict, datetime.datetime)


def _encoder_for(tp: type) -> Callable[[Any, list[bytes]], None]:
    enc = _VALUE_ENCODERS.get(tp)
    if enc is None:
        for base in _FALLBACK_ORDER:
            if issubclass(tp, base):
                enc = _VALUE_ENCODERS[tp] = _VALUE_ENCODERS[base]
                break
        else:
            raise TypeError(f"cannot encode {tp.__name__} in a field table")
    return enc


def encode_table(table: dict[str, Any] | None) -> bytes:
    """Encode a dict as a field-table *body* (no 32-bit length prefix).

    Raises TypeError for a value of unsupported type and ValueError for a key
    longer than 255 bytes or a number out of range.
    """
    if not table:
        return b""
    out: list[bytes] = []
    append = out.append
    encoders = _VALUE_ENCODERS
    for key, value in table.items():
        k = key.encode("utf-8", "surrogateescape")
        if len(k) > 255:
            raise ValueError(f"field table key too long ({len(k)} bytes)")
        append(_B.pack(len(k)) + k)
        enc = encoders.get(value.__class__) or _encoder_for(value.__class__)
        enc(value, out)
    return b"".join(out)


def encode_array(items: list[Any] | tuple[Any, ...]) -> bytes:
    """Encode a sequence as a field-array body (no length prefix).

    Raises TypeError/ValueError like :func:`encode_table`.
    """
    out: list[bytes] = []
    encoders = _VALUE_ENCODERS
    for value in items:
        enc = encoders.get(value.__class__) or _encoder_for(value.__class__)
        enc(value, out)
    return b"".join(out)
