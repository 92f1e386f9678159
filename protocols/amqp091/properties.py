"""Basic-class content properties (AMQP 0-9-1 §4.2.6.1 content header, §1.8 basic).

The property list is a 16-bit flags word (bit 15 = first property) followed by
the values of the properties whose flag is set, in table order. Bit 0 is the
"continuation" flag announcing another flags word; basic has only 14
properties so it is never needed.

RabbitMQ deviation noted: RabbitMQ's generated parser ignores the two low flag
bits, and then fails on the leftover bytes if a continuation word really
follows. We reject a set continuation bit up front with 501 FRAME_ERROR, and
any property list that does not exactly fill the header (truncated or with
trailing bytes) with 501 too. A malformed ``headers`` table is 502.
Shortstr properties are not UTF-8-checked by RabbitMQ; we decode them with
``surrogateescape`` so odd bytes survive a decode/encode round trip.
"""

from __future__ import annotations

import datetime
import struct
from typing import Any

from .errors import frame_error, syntax_error
from .fieldtable import _decode_table, encode_table

__all__ = ["decode_properties", "encode_properties", "PROPERTY_NAMES", "fit_properties", "encode_fitted",
           "fit_shortstr"]

_H = struct.Struct(">H")
_B = struct.Struct(">B")
_I = struct.Struct(">I")
_Q = struct.Struct(">Q")

# (flag bit, key, kind): s shortstr, o octet, T timestamp (int seconds), F table
_PROPS: tuple[tuple[int, str, str], ...] = (
    (0x8000, "content_type", "s"),
    (0x4000, "content_encoding", "s"),
    (0x2000, "headers", "F"),
    (0x1000, "delivery_mode", "o"),
    (0x0800, "priority", "o"),
    (0x0400, "correlation_id", "s"),
    (0x0200, "reply_to", "s"),
    (0x0100, "expiration", "s"),
    (0x0080, "message_id", "s"),
    (0x0040, "timestamp", "T"),
    (0x0020, "type", "s"),
    (0x0010, "user_id", "s"),
    (0x0008, "app_id", "s"),
    (0x0004, "cluster_id", "s"),  # deprecated in 0-9-1, still on the wire
)
PROPERTY_NAMES: tuple[str, ...] = tuple(key for _bit, key, _kind in _PROPS)
_BITS: dict[str, int] = {key: bit for bit, key, _kind in _PROPS}

_EMPTY = b"\x00\x00"

# flags word -> ((key, kind), ...) of the properties present, in wire order
_PLANS: dict[int, tuple[tuple[str, str], ...]] = {}


def _plan(flags: int) -> tuple[tuple[str, str], ...]:
    plan = tuple((key, kind) for bit, key, kind in _PROPS if flags & bit)
    if len(_PLANS) < 4096:  # 2**14 combinations at most; cap anyway
        _PLANS[flags] = plan
    return plan


def decode_properties(data: bytes | bytearray, offset: int = 0, end: int | None = None) -> dict[str, Any]:
    """Decode a basic property list (flags word + values) into a dict.

    Only present properties appear in the result. ``timestamp`` is int seconds,
    ``headers`` a dict. Raises AMQPFrameError 501 FRAME_ERROR for a set
    continuation bit or a list that does not exactly fill ``data[offset:end]``,
    502 SYNTAX_ERROR for a malformed headers table.
    """
    if end is None:
        end = len(data)
    if end - offset < 2:
        raise frame_error("content header shorter than its property flags", 60, 0)
    flags = (data[offset] << 8) | data[offset + 1]
    off = offset + 2
    props: dict[str, Any] = {}
    if not flags:
        if off != end:
            raise frame_error(f"{end - off} stray octets after empty property list")
        return props
    if flags & 0x0003:
        raise frame_error(f"property flags 0x{flags:04x}: continuation/unused bits set")
    plan = _PLANS.get(flags) or _plan(flags)
    try:
        for key, kind in plan:
            if kind == "s":
                n = data[off]
                off += 1
                props[key] = bytes(data[off:off + n]).decode("utf-8", "surrogateescape")
                off += n
            elif kind == "o":
                props[key] = data[off]
                off += 1
            elif kind == "F":
                n = _I.unpack_from(data, off)[0]
                off += 4
                if off + n > end:
                    raise frame_error(f"headers table length {n} overruns the content header")
                props[key] = _decode_table(data, off, off + n)
                off += n
            else:
                props[key] = _Q.unpack_from(data, off)[0]
                off += 8
    except (IndexError, struct.error):
        raise frame_error("cannot decode content header property list") from None
    except RecursionError:
        raise syntax_error("headers table nested too deeply") from None
    if off != end:
        raise frame_error(f"cannot decode content header property list ({end - offset} octets)")
    return props


def encode_properties(props: dict[str, Any] | None) -> bytes:
    """Encode a dict of basic properties as flags word + values.

    Absent keys and None values are skipped; unknown keys are ignored.
    ``timestamp`` may be int seconds or a datetime. Raises ValueError for a
    shortstr over 255 bytes, TypeError/ValueError for bad header values.
    """
    if not props:
        return _EMPTY
    flags = 0
    for key, value in props.items():
        if value is not None:
            flags |= _BITS.get(key, 0)
    parts: list[bytes] = [_H.pack(flags)]
    append = parts.append
    for key, kind in _PLANS.get(flags) or _plan(flags):
        value = props[key]
        if kind == "s":
            raw = value.encode("utf-8", "surrogateescape")
            if len(raw) > 255:
                raise ValueError(f"property {key!r} is {len(raw)} bytes (max 255)")
            append(_B.pack(len(raw)))
            append(raw)
        elif kind == "o":
            append(_B.pack(value))
        elif kind == "F":
            body = encode_table(value)
            append(_I.pack(len(body)))
            append(body)
        else:
            if isinstance(value, datetime.datetime):
                if value.tzinfo is None:
                    value = value.replace(tzinfo=datetime.timezone.utc)
                value = int(value.timestamp())
            append(_Q.pack(value))
    return b"".join(parts)


# -- what AMQP 0-9-1 can carry ------------------------------------------------------------
# A message published with STOMP or MQTT keeps its own protocol's values in the neutral
# properties; some of them have no AMQP 0-9-1 form (a header name or a shortstr over 255
# bytes, an integer that does not fit its octet, a header value of no field-table type).
# Deliveries to AMQP clients convert them the way RabbitMQ's protocol bridges convert a
# message into AMQP 0-9-1 (its ``mc_amqpl`` and ``mc_mqtt`` modules), so no delivery fails:
# - a header (STOMP header, MQTT user property) whose name is over 255 bytes is dropped;
# - ``correlation_id`` and ``message_id`` over 255 bytes move to the headers
#   ``x-correlation-id`` and ``x-message-id`` (long strings);
# - every other shortstr property over 255 bytes (``reply_to``, ``content_type``, ...) is
#   dropped, as is ``delivery_mode`` or ``priority`` outside 0..255 and a ``timestamp``
#   outside 0..2**64-1;
# - a header value of a type a field table cannot hold, or out of its range (an integer
#   beyond int64, a decimal beyond scale octet + int32, a time before 1970), is dropped.
# ARCHITECTURE.md ("Messages that cross protocols") lists the rules of every protocol.

_SHORTSTR_MOVED = {"correlation_id": "x-correlation-id", "message_id": "x-message-id"}
_MAX_DEPTH = 32  # nesting kept in header tables and arrays (deeper values are dropped)


def _shortstr_ok(value: Any) -> bool:
    if value.__class__ is not str:
        return False
    return len(value) <= 63 or len(value.encode("utf-8", "surrogateescape")) <= 255


def _fit_value(value: Any, depth: int) -> tuple[bool, Any]:
    """(kept, value) for one field-table value."""
    if isinstance(value, dict):
        if depth >= _MAX_DEPTH:
            return False, None
        return True, _fit_table(value, depth + 1)
    if isinstance(value, (list, tuple)):
        if depth >= _MAX_DEPTH:
            return False, None
        out = []
        for item in value:
            kept, v = _fit_value(item, depth + 1)
            if kept:
                out.append(v)
        return True, out
    try:
        encode_table({"v": value})
    except Exception:  # noqa: BLE001 - any value the field-table encoder refuses
        return False, None
    return True, value


def _fit_table(table: dict[Any, Any], depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if not _shortstr_ok(key):
            continue
        kept, v = _fit_value(value, depth)
        if kept:
            out[key] = v
    return out


def fit_properties(props: dict[str, Any]) -> dict[str, Any]:
    """A copy of the neutral properties that AMQP 0-9-1 can carry (the rules above)."""
    out: dict[str, Any] = {}
    headers = props.get("headers")
    moved: dict[str, Any] = {}
    for _bit, key, kind in _PROPS:
        value = props.get(key)
        if value is None or key == "headers":
            continue
        if kind == "s":
            if value.__class__ is int and not isinstance(value, bool):
                value = str(value)
            if _shortstr_ok(value):
                out[key] = value
            elif key in _SHORTSTR_MOVED and isinstance(value, str):
                moved[_SHORTSTR_MOVED[key]] = value
        elif kind == "o":
            if value.__class__ is int and 0 <= value <= 255:
                out[key] = value
        elif kind == "T":
            if isinstance(value, datetime.datetime):
                if value.tzinfo is None:
                    value = value.replace(tzinfo=datetime.timezone.utc)
                value = int(value.timestamp())
            if value.__class__ is int and 0 <= value < 1 << 64:
                out[key] = value
    if isinstance(headers, dict) or moved:
        table = _fit_table(headers) if isinstance(headers, dict) else {}
        for name, value in moved.items():
            table.setdefault(name, value)
        out["headers"] = table
    return out


def encode_fitted(props: dict[str, Any] | None) -> bytes:
    """``encode_properties(fit_properties(props))``; never raises (the slow path of a
    delivery whose properties ``encode_properties`` refused)."""
    try:
        return encode_properties(fit_properties(props or {}))
    except Exception:  # noqa: BLE001 - cannot happen for fitted values; deliver without them
        return _EMPTY


def fit_shortstr(text: str) -> str:
    """``text`` cut to at most 255 bytes of UTF-8 at a character boundary (a routing key
    from STOMP or MQTT, which have no such limit, in a ``basic.deliver``)."""
    raw = text.encode("utf-8", "surrogateescape")
    if len(raw) <= 255:
        return text
    cut = 255
    while cut and raw[cut] & 0xC0 == 0x80:  # raw[cut] continues a character: cut before it
        cut -= 1
    return raw[:cut].decode("utf-8", "surrogateescape")
