"""MQTT 5.0 properties, plus the wire primitives they share with the packets.

The property table (MQTT 5.0 section 2.2.2.2, Table 2-4) is kept as data:
identifier, snake_case name, data type and the packets it may appear in.
Decoded properties are a ``dict`` keyed by name, in wire order, except:

* ``user_property`` -> ``list[tuple[str, str]]`` (may repeat, order kept);
* ``subscription_identifier`` -> ``list[int]`` in PUBLISH (one per matching
  subscription, section 3.3.2.3.8), a single ``int`` in SUBSCRIBE.

Data types (MQTT 5.0 section 1.5): byte, two/four byte integer, variable
byte integer, UTF-8 encoded string, binary data, UTF-8 string pair.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final

from .reason_codes import MalformedPacket, ProtocolError

__all__ = [
    "BYTE", "TWO_BYTE_INT", "FOUR_BYTE_INT", "VARINT", "UTF8", "BINARY", "UTF8_PAIR",
    "WILL", "PropertyDef", "PROPERTIES", "PROPERTIES_BY_NAME",
    "encode_varint", "decode_varint", "encode_string", "decode_string",
    "decode_binary", "encode_properties", "encode_property_values", "decode_properties",
    "MAX_VARINT",
]

# Data types.
BYTE: Final = "byte"
TWO_BYTE_INT: Final = "two_byte_int"
FOUR_BYTE_INT: Final = "four_byte_int"
VARINT: Final = "varint"
UTF8: Final = "utf8"
BINARY: Final = "binary"
UTF8_PAIR: Final = "utf8_pair"

#: Pseudo packet type for the Will Properties of a CONNECT payload (packet
#: type 0 is reserved, so it cannot clash with a real packet).
WILL: Final = 0
# Packet types (duplicated from packets.PacketType to keep this module a leaf).
_CONNECT, _CONNACK, _PUBLISH, _PUBACK, _PUBREC, _PUBREL, _PUBCOMP = 1, 2, 3, 4, 5, 6, 7
_SUBSCRIBE, _SUBACK, _UNSUBSCRIBE, _UNSUBACK, _DISCONNECT, _AUTH = 8, 9, 10, 11, 14, 15

#: Largest value a Variable Byte Integer can hold (MQTT 5.0 section 1.5.5).
MAX_VARINT: Final = 268_435_455

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class PropertyDef:
    """One row of MQTT 5.0 Table 2-4."""

    identifier: int
    name: str
    type: str
    packets: frozenset[int]
    #: True when the value must be 0 or 1 (a Protocol Error otherwise).
    boolean: bool = False
    #: True when 0 is a Protocol Error (Receive Maximum, Maximum Packet Size,
    #: Subscription Identifier).
    nonzero: bool = False


def _p(ident: int, name: str, typ: str, *packets: int, boolean: bool = False,
       nonzero: bool = False) -> PropertyDef:
    return PropertyDef(ident, name, typ, frozenset(packets), boolean, nonzero)


_ALL_WITH_PROPS = (_CONNECT, _CONNACK, _PUBLISH, WILL, _PUBACK, _PUBREC, _PUBREL, _PUBCOMP,
                   _SUBSCRIBE, _SUBACK, _UNSUBSCRIBE, _UNSUBACK, _DISCONNECT, _AUTH)

#: identifier -> PropertyDef (MQTT 5.0 Table 2-4).
PROPERTIES: dict[int, PropertyDef] = {d.identifier: d for d in (
    # 3.3.2.3.2: 0 = unspecified bytes, 1 = UTF-8 (any other value is treated
    # as a Protocol Error, as Mosquitto does).
    _p(0x01, "payload_format_indicator", BYTE, _PUBLISH, WILL, boolean=True),
    _p(0x02, "message_expiry_interval", FOUR_BYTE_INT, _PUBLISH, WILL),
    _p(0x03, "content_type", UTF8, _PUBLISH, WILL),
    _p(0x08, "response_topic", UTF8, _PUBLISH, WILL),
    _p(0x09, "correlation_data", BINARY, _PUBLISH, WILL),
    # 3.8.2.1.2: "It is a Protocol Error if the Subscription Identifier has a value of 0".
    _p(0x0B, "subscription_identifier", VARINT, _PUBLISH, _SUBSCRIBE, nonzero=True),
    _p(0x11, "session_expiry_interval", FOUR_BYTE_INT, _CONNECT, _CONNACK, _DISCONNECT),
    _p(0x12, "assigned_client_identifier", UTF8, _CONNACK),
    _p(0x13, "server_keep_alive", TWO_BYTE_INT, _CONNACK),
    _p(0x15, "authentication_method", UTF8, _CONNECT, _CONNACK, _AUTH),
    _p(0x16, "authentication_data", BINARY, _CONNECT, _CONNACK, _AUTH),
    # 3.1.2.11.7: value other than 0 or 1 is a Protocol Error.
    _p(0x17, "request_problem_information", BYTE, _CONNECT, boolean=True),
    _p(0x18, "will_delay_interval", FOUR_BYTE_INT, WILL),
    # 3.1.2.11.6: value other than 0 or 1 is a Protocol Error.
    _p(0x19, "request_response_information", BYTE, _CONNECT, boolean=True),
    _p(0x1A, "response_information", UTF8, _CONNACK),
    _p(0x1C, "server_reference", UTF8, _CONNACK, _DISCONNECT),
    _p(0x1F, "reason_string", UTF8, _CONNACK, _PUBACK, _PUBREC, _PUBREL, _PUBCOMP,
       _SUBACK, _UNSUBACK, _DISCONNECT, _AUTH),
    # 3.1.2.11.3 / 3.2.2.3.3: Receive Maximum of 0 is a Protocol Error.
    _p(0x21, "receive_maximum", TWO_BYTE_INT, _CONNECT, _CONNACK, nonzero=True),
    _p(0x22, "topic_alias_maximum", TWO_BYTE_INT, _CONNECT, _CONNACK),
    # Topic Alias 0 is decoded; rejecting it (0x94, [MQTT-3.3.2-8]) is the session's job.
    _p(0x23, "topic_alias", TWO_BYTE_INT, _PUBLISH),
    # 3.2.2.3.4: Maximum QoS other than 0 or 1 is a Protocol Error.
    _p(0x24, "maximum_qos", BYTE, _CONNACK, boolean=True),
    _p(0x25, "retain_available", BYTE, _CONNACK, boolean=True),
    _p(0x26, "user_property", UTF8_PAIR, *_ALL_WITH_PROPS),
    # 3.1.2.11.4 / 3.2.2.3.6: Maximum Packet Size of 0 is a Protocol Error.
    _p(0x27, "maximum_packet_size", FOUR_BYTE_INT, _CONNECT, _CONNACK, nonzero=True),
    _p(0x28, "wildcard_subscription_available", BYTE, _CONNACK, boolean=True),
    _p(0x29, "subscription_identifier_available", BYTE, _CONNACK, boolean=True),
    _p(0x2A, "shared_subscription_available", BYTE, _CONNACK, boolean=True),
)}

#: name -> PropertyDef.
PROPERTIES_BY_NAME: dict[str, PropertyDef] = {d.name: d for d in PROPERTIES.values()}

_INT_LIMITS = {BYTE: 0xFF, TWO_BYTE_INT: 0xFFFF, FOUR_BYTE_INT: 0xFFFF_FFFF, VARINT: MAX_VARINT}


# --------------------------------------------------------------- primitives

def encode_varint(value: int) -> bytes:
    """Encode a Variable Byte Integer (MQTT 5.0 1.5.5 / 3.1.1 2.2.3).

    Raises ValueError outside 0..268435455.
    """
    if value < 128:
        if value < 0:
            raise ValueError(f"variable byte integer out of range: {value}")
        return bytes((value,))
    if value > MAX_VARINT:
        raise ValueError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """Decode a Variable Byte Integer at ``data[pos:end]`` -> (value, new pos).

    Raises MalformedPacket if it runs past ``end`` or uses more than four
    bytes (MQTT 5.0 1.5.5: "a maximum of four bytes").
    """
    value = 0
    shift = 0
    for i in range(4):
        if pos + i >= end:
            raise MalformedPacket("variable byte integer runs past the end of the packet")
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + i + 1
        shift += 7
    raise MalformedPacket("variable byte integer longer than four bytes")


def encode_string(value: str | bytes) -> bytes:
    """Encode a UTF-8 Encoded String (two-byte length + bytes).

    Raises ValueError if longer than 65535 bytes.
    """
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(raw) > 0xFFFF:
        raise ValueError("string longer than 65535 bytes")
    return _U16.pack(len(raw)) + raw


def decode_binary(data: bytes, pos: int, end: int) -> tuple[bytes, int]:
    """Decode Binary Data (two-byte length + bytes) -> (value, new pos).

    Raises MalformedPacket if it runs past ``end``.
    """
    if pos + 2 > end:
        raise MalformedPacket("length prefix runs past the end of the packet")
    n = (data[pos] << 8) | data[pos + 1]
    stop = pos + 2 + n
    if stop > end:
        raise MalformedPacket("string or binary data runs past the end of the packet")
    return data[pos + 2:stop], stop


def decode_string(data: bytes, pos: int, end: int) -> tuple[str, int]:
    """Decode a UTF-8 Encoded String -> (value, new pos).

    Raises MalformedPacket if it runs past ``end``, is ill-formed UTF-8
    (including encoded surrogates) [MQTT-1.5.4-1] (3.1.1: [MQTT-1.5.3-1]), or
    contains U+0000 [MQTT-1.5.4-2] (3.1.1: [MQTT-1.5.3-2]).  A leading BOM is
    kept, not stripped [MQTT-1.5.4-3].
    """
    raw, stop = decode_binary(data, pos, end)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPacket(f"ill-formed UTF-8 string: {exc.reason}") from None
    if "\x00" in text:
        raise MalformedPacket("UTF-8 string contains U+0000")
    return text, stop


# --------------------------------------------------------------- properties

def _encode_one(d: PropertyDef, value: Any, out: list[bytes]) -> None:
    ident = bytes((d.identifier,))
    typ = d.type
    if typ in _INT_LIMITS:
        value = int(value)
        if not 0 <= value <= _INT_LIMITS[typ]:
            raise ValueError(f"property {d.name} out of range: {value}")
        if typ == BYTE:
            out.append(ident + bytes((value,)))
        elif typ == TWO_BYTE_INT:
            out.append(ident + _U16.pack(value))
        elif typ == FOUR_BYTE_INT:
            out.append(ident + _U32.pack(value))
        else:
            out.append(ident + encode_varint(value))
    elif typ == UTF8 or typ == BINARY:
        out.append(ident + encode_string(value))
    else:  # UTF8_PAIR
        name, val = value
        out.append(ident + encode_string(name) + encode_string(val))


def encode_property_values(props: dict[str, Any]) -> bytes:
    """Encode properties WITHOUT the Property Length prefix.

    ``user_property`` is an iterable of (name, value) pairs and
    ``subscription_identifier`` an int or an iterable of ints; each element
    becomes one property.  Raises ValueError for an unknown name or a value
    out of range for its type.
    """
    out: list[bytes] = []
    for name, value in props.items():
        d = PROPERTIES_BY_NAME.get(name)
        if d is None:
            raise ValueError(f"unknown MQTT property {name!r}")
        if name == "user_property" or (name == "subscription_identifier"
                                       and not isinstance(value, int)):
            for item in value:
                _encode_one(d, item, out)
        else:
            _encode_one(d, value, out)
    return b"".join(out)


def encode_properties(props: dict[str, Any] | None) -> bytes:
    """Encode a complete Properties block: Property Length + properties.

    An empty/None dict gives ``b"\\x00"`` [MQTT-2.2.2-1].  Raises ValueError
    as :func:`encode_property_values`.
    """
    if not props:
        return b"\x00"
    body = encode_property_values(props)
    return encode_varint(len(body)) + body


def decode_properties(data: bytes, pos: int, end: int, packet: int) -> tuple[dict[str, Any], int]:
    """Decode a Properties block at ``data[pos:end]`` for packet type ``packet``.

    ``packet`` is a fixed-header packet type, or :data:`WILL` for the Will
    Properties.  Returns (properties, new pos).

    Raises MalformedPacket if the block runs past ``end``, a value is not of
    its data type, or an identifier is not valid for the packet type (MQTT 5.0
    2.2.2.2: "is a Malformed Packet").  Raises ProtocolError for a property
    repeated when it may appear once (stated per property in 3.x.2.x, e.g.
    "It is a Protocol Error to include the Session Expiry Interval more than
    once"), or for a value the property forbids (0/1 flags, zero Receive
    Maximum / Maximum Packet Size / Subscription Identifier).
    """
    length, pos = decode_varint(data, pos, end)
    stop = pos + length
    if stop > end:
        raise MalformedPacket("property length runs past the end of the packet")
    props: dict[str, Any] = {}
    while pos < stop:
        ident, pos = decode_varint(data, pos, stop)
        d = PROPERTIES.get(ident)
        if d is None or packet not in d.packets:
            raise MalformedPacket(f"property 0x{ident:02X} is not valid in this packet")
        typ = d.type
        if typ == BYTE:
            if pos >= stop:
                raise MalformedPacket(f"property {d.name} truncated")
            value: Any = data[pos]
            pos += 1
        elif typ == TWO_BYTE_INT:
            if pos + 2 > stop:
                raise MalformedPacket(f"property {d.name} truncated")
            value = (data[pos] << 8) | data[pos + 1]
            pos += 2
        elif typ == FOUR_BYTE_INT:
            if pos + 4 > stop:
                raise MalformedPacket(f"property {d.name} truncated")
            value = _U32.unpack_from(data, pos)[0]
            pos += 4
        elif typ == VARINT:
            value, pos = decode_varint(data, pos, stop)
        elif typ == UTF8:
            value, pos = decode_string(data, pos, stop)
        elif typ == BINARY:
            value, pos = decode_binary(data, pos, stop)
        else:  # UTF8_PAIR
            key, pos = decode_string(data, pos, stop)
            val, pos = decode_string(data, pos, stop)
            value = (key, val)
        if d.boolean and value > 1:
            raise ProtocolError(f"property {d.name} must be 0 or 1, got {value}")
        if d.nonzero and value == 0:
            raise ProtocolError(f"property {d.name} must not be 0")
        name = d.name
        if name == "user_property":
            props.setdefault(name, []).append(value)
        elif name == "subscription_identifier" and packet == _PUBLISH:
            # A PUBLISH to a client carries one per matching subscription [MQTT-3.3.4-4].
            props.setdefault(name, []).append(value)
        elif name in props:
            raise ProtocolError(f"property {name} included more than once")
        else:
            props[name] = value
    return props, pos
