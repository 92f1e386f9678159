"""MQTT control packets as immutable dataclasses, and their encoders.

One dataclass per packet type (MQTT 3.1.1 chapter 3 / MQTT 5.0 chapter 3).
Reason codes and properties are 5.0-only: they are ignored when encoding for
3.1 (protocol level 3, ``MQIsdp``) or 3.1.1 (level 4) and are left at their
defaults when decoding those versions.

:func:`encode` writes any packet for a given protocol level (both directions,
so clients and tests can use it); :func:`encode_publish` is the broker's fast
path for outgoing PUBLISH packets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Callable, Union

from .properties import encode_properties, encode_string, encode_varint
from .reason_codes import connack_code_311

__all__ = [
    "PacketType", "MQTT_3_1", "MQTT_3_1_1", "MQTT_5",
    "Connect", "Will", "Connack", "Publish", "Puback", "Pubrec", "Pubrel", "Pubcomp",
    "Subscription", "Subscribe", "Suback", "Unsubscribe", "Unsuback", "Pingreq",
    "Pingresp", "Disconnect", "Auth", "Packet", "encode", "encode_publish",
]

MQTT_3_1 = 3    #: protocol level of MQTT 3.1 (protocol name "MQIsdp")
MQTT_3_1_1 = 4  #: protocol level of MQTT 3.1.1 (protocol name "MQTT")
MQTT_5 = 5      #: protocol level of MQTT 5.0 (protocol name "MQTT")


class PacketType(IntEnum):
    """Fixed-header packet types (3.1.1 Table 2.1, 5.0 Table 2-1)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15  # 5.0 only; reserved in 3.x


def _props() -> dict[str, Any]:
    return field(default_factory=dict)  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Will:
    """The Will Message carried in a CONNECT payload."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: dict[str, Any] = _props()


@dataclass(frozen=True, slots=True)
class Connect:
    """CONNECT.  ``clean_start`` is 3.x's Clean Session flag."""

    protocol_name: str = "MQTT"
    protocol_level: int = 4
    clean_start: bool = True
    keep_alive: int = 60
    client_id: str = ""
    will: Will | None = None
    username: str | None = None
    password: bytes | None = None
    properties: dict[str, Any] = _props()


@dataclass(frozen=True, slots=True)
class Connack:
    """CONNACK.  ``reason_code`` is the 3.x return code (0..5) for 3.x."""

    session_present: bool = False
    reason_code: int = 0
    properties: dict[str, Any] = _props()


@dataclass(frozen=True, slots=True)
class Publish:
    """PUBLISH.  ``packet_id`` is None for QoS 0."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    properties: dict[str, Any] = _props()


@dataclass(frozen=True, slots=True)
class Puback:
    packet_id: int
    reason_code: int = 0
    properties: dict[str, Any] = _props()


@dataclass(frozen=True, slots=True)
class Pubrec:
    packet_id: int
    reason_code: int = 0
    properties: dict[str, Any] = _props()


@dataclass(frozen=True, slots=True)
class Pubrel:
    packet_id: int
    reason_code: int = 0
    properties: dict[str, Any] = _props()


@dataclass(frozen=True, slots=True)
class Pubcomp:
    packet_id: int
    reason_code: int = 0
    properties: dict[str, Any] = _props()


@dataclass(frozen=True, slots=True)
class Subscription:
    """One SUBSCRIBE entry; the option bits past ``qos`` are 5.0-only."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(frozen=True, slots=True)
class Subscribe:
    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: dict[str, Any] = _props()


@dataclass(frozen=True, slots=True)
class Suback:
    packet_id: int
    reason_codes: tuple[int, ...]
    properties: dict[str, Any] = _props()


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_id: int
    topic_filters: tuple[str, ...]
    properties: dict[str, Any] = _props()


@dataclass(frozen=True, slots=True)
class Unsuback:
    """UNSUBACK.  3.x has no reason codes: ``reason_codes`` is then ()."""

    packet_id: int
    reason_codes: tuple[int, ...] = ()
    properties: dict[str, Any] = _props()


@dataclass(frozen=True, slots=True)
class Pingreq:
    pass


@dataclass(frozen=True, slots=True)
class Pingresp:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason_code: int = 0
    properties: dict[str, Any] = _props()


@dataclass(frozen=True, slots=True)
class Auth:
    """AUTH (5.0 only)."""

    reason_code: int = 0
    properties: dict[str, Any] = _props()


Packet = Union[Connect, Connack, Publish, Puback, Pubrec, Pubrel, Pubcomp, Subscribe,
               Suback, Unsubscribe, Unsuback, Pingreq, Pingresp, Disconnect, Auth]

# ------------------------------------------------------------------ encoders

_U16 = struct.Struct("!H")
_HDR1 = struct.Struct("!BB")      # fixed header with a 1-byte remaining length
_HDR2 = struct.Struct("!BBB")     # ... 2-byte remaining length
_ID_RC = struct.Struct("!HB")     # packet id + reason code


def _fixed(first: int, remaining: int) -> bytes:
    if remaining < 128:
        return _HDR1.pack(first, remaining)
    if remaining < 16384:
        return _HDR2.pack(first, (remaining & 0x7F) | 0x80, remaining >> 7)
    return bytes((first,)) + encode_varint(remaining)


def _frame(first: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return _fixed(first, len(body)) + body


def encode_publish(topic: str | bytes, payload: bytes, qos: int, retain: bool, dup: bool,
                   packet_id: int | None, properties_bytes: bytes | None,
                   protocol_level: int) -> bytes:
    """Encode a PUBLISH packet in one join (the broker's hot path).

    ``topic`` may be pre-encoded UTF-8 bytes.  ``properties_bytes`` is a
    complete Properties block as returned by ``encode_properties`` (length
    prefix included); None means no properties.  It is ignored below 5.0.
    Raises ValueError for QoS outside 0..2 or a missing/zero packet id with
    QoS > 0 [MQTT-2.2.1-2]/[MQTT-2.2.1-3] (3.1.1: [MQTT-2.3.1-1]).
    """
    if topic.__class__ is str:
        topic = topic.encode("utf-8")  # type: ignore[union-attr]
    tlen = len(topic)
    if tlen > 0xFFFF:
        raise ValueError("topic longer than 65535 bytes")
    if qos:
        if qos > 2 or qos < 0:
            raise ValueError(f"invalid QoS {qos}")
        if not packet_id:
            raise ValueError("PUBLISH with QoS > 0 needs a non-zero packet id")
        pid = _U16.pack(packet_id)
    else:
        pid = b""
    if protocol_level >= 5:
        props = properties_bytes or b"\x00"
    else:
        props = b""
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    remaining = 2 + tlen + len(pid) + len(props) + len(payload)
    return b"".join((_fixed(first, remaining), _U16.pack(tlen), topic, pid, props, payload))  # type: ignore[arg-type]


def topic_field(topic: bytes) -> bytes:
    """A Topic Name field: its length (two bytes) and its UTF-8."""
    return _U16.pack(len(topic)) + topic


def encode_publish_qos0(topic_field: bytes, payload: bytes, retain: bool) -> bytes:
    """A QoS 0 PUBLISH without properties (3.1, 3.1.1) from its topic field (``topic_field``,
    kept per route): the same bytes ``encode_publish`` makes, with less work per delivery."""
    remaining = len(topic_field) + len(payload)
    first = 0x31 if retain else 0x30
    if remaining < 128:
        return b"".join((_HDR1.pack(first, remaining), topic_field, payload))
    if remaining < 16384:
        return b"".join((_HDR2.pack(first, (remaining & 0x7F) | 0x80, remaining >> 7), topic_field, payload))
    return b"".join((_fixed(first, remaining), topic_field, payload))


def _enc_connect(p: Connect, level: int) -> bytes:
    will = p.will
    flags = (0x02 if p.clean_start else 0)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if p.password is not None:
        flags |= 0x40
    if p.username is not None:
        flags |= 0x80
    parts = [encode_string(p.protocol_name), bytes((p.protocol_level, flags)),
             _U16.pack(p.keep_alive)]
    if level >= 5:
        parts.append(encode_properties(p.properties))
    parts.append(encode_string(p.client_id))
    if will is not None:
        if level >= 5:
            parts.append(encode_properties(will.properties))
        parts.append(encode_string(will.topic))
        parts.append(encode_string(will.payload))
    if p.username is not None:
        parts.append(encode_string(p.username))
    if p.password is not None:
        parts.append(encode_string(p.password))
    return _frame(0x10, *parts)


def _enc_connack(p: Connack, level: int) -> bytes:
    if level >= 5:
        return _frame(0x20, bytes((1 if p.session_present else 0, p.reason_code)),
                      encode_properties(p.properties))
    code = p.reason_code if p.reason_code <= 5 else connack_code_311(p.reason_code)
    # 3.1 has no Session Present flag: the byte is reserved.
    sp = 1 if (p.session_present and level >= 4) else 0
    return bytes((0x20, 2, sp, code))


def _enc_publish(p: Publish, level: int) -> bytes:
    props = encode_properties(p.properties) if level >= 5 else None
    return encode_publish(p.topic, p.payload, p.qos, p.retain, p.dup, p.packet_id, props, level)


def _ack_encoder(first: int) -> Callable[[Any, int], bytes]:
    def enc(p: Any, level: int) -> bytes:
        if level < 5 or (p.reason_code == 0 and not p.properties):
            # 5.0 3.4.2.1: Reason Code and Property Length may be omitted
            # when the code is 0x00 and there are no properties.
            return bytes((first, 2)) + _U16.pack(p.packet_id)
        if not p.properties:
            return bytes((first, 3)) + _ID_RC.pack(p.packet_id, p.reason_code)
        return _frame(first, _ID_RC.pack(p.packet_id, p.reason_code),
                      encode_properties(p.properties))
    return enc


def _sub_options(s: Subscription, level: int) -> int:
    if level < 5:
        return s.qos
    return (s.qos | (0x04 if s.no_local else 0) | (0x08 if s.retain_as_published else 0)
            | (s.retain_handling << 4))


def _enc_subscribe(p: Subscribe, level: int) -> bytes:
    parts = [_U16.pack(p.packet_id)]
    if level >= 5:
        parts.append(encode_properties(p.properties))
    for s in p.subscriptions:
        parts.append(encode_string(s.topic_filter))
        parts.append(bytes((_sub_options(s, level),)))
    return _frame(0x82, *parts)


def _enc_suback(p: Suback, level: int) -> bytes:
    if level >= 5:
        return _frame(0x90, _U16.pack(p.packet_id), encode_properties(p.properties),
                      bytes(p.reason_codes))
    # 3.x has one failure code, 0x80 [MQTT-3.9.3-2].
    codes = bytes(c if c < 0x80 else 0x80 for c in p.reason_codes)
    return _frame(0x90, _U16.pack(p.packet_id), codes)


def _enc_unsubscribe(p: Unsubscribe, level: int) -> bytes:
    parts = [_U16.pack(p.packet_id)]
    if level >= 5:
        parts.append(encode_properties(p.properties))
    parts.extend(encode_string(t) for t in p.topic_filters)
    return _frame(0xA2, *parts)


def _enc_unsuback(p: Unsuback, level: int) -> bytes:
    if level < 5:
        return bytes((0xB0, 2)) + _U16.pack(p.packet_id)
    return _frame(0xB0, _U16.pack(p.packet_id), encode_properties(p.properties),
                  bytes(p.reason_codes))


def _rc_props_encoder(first: int) -> Callable[[Any, int], bytes]:
    def enc(p: Any, level: int) -> bytes:
        if level < 5:
            if first == 0xF0:
                raise ValueError("AUTH exists only in MQTT 5.0")
            return bytes((first, 0))
        # 5.0 3.14.2.1 / 3.15.2.1: code and properties may be omitted when 0 / empty.
        if not p.properties:
            return bytes((first, 0)) if p.reason_code == 0 else bytes((first, 1, p.reason_code))
        return _frame(first, bytes((p.reason_code,)), encode_properties(p.properties))
    return enc


_ENCODERS: dict[type, Callable[[Any, int], bytes]] = {
    Connect: _enc_connect,
    Connack: _enc_connack,
    Publish: _enc_publish,
    Puback: _ack_encoder(0x40),
    Pubrec: _ack_encoder(0x50),
    Pubrel: _ack_encoder(0x62),   # reserved flags 0b0010 [MQTT-3.6.1-1]
    Pubcomp: _ack_encoder(0x70),
    Subscribe: _enc_subscribe,
    Suback: _enc_suback,
    Unsubscribe: _enc_unsubscribe,
    Unsuback: _enc_unsuback,
    Pingreq: lambda p, level: b"\xc0\x00",
    Pingresp: lambda p, level: b"\xd0\x00",
    Disconnect: _rc_props_encoder(0xE0),
    Auth: _rc_props_encoder(0xF0),
}


def encode(packet: Packet, protocol_level: int) -> bytes:
    """Encode ``packet`` for ``protocol_level`` (3, 4 or 5).

    For CONNECT the protocol name/level bytes written are the packet's own
    fields; ``protocol_level`` only selects the layout (properties or not).
    3.x CONNACK codes above 5 are mapped with ``connack_code_311``; 3.x SUBACK
    failure codes become 0x80.  Raises ValueError (or struct.error) for
    values that cannot be encoded, e.g. AUTH below 5.0, out-of-range ints,
    unknown property names, strings over 65535 bytes.
    """
    try:
        encoder = _ENCODERS[type(packet)]
    except KeyError:
        raise TypeError(f"not an MQTT packet: {packet!r}") from None
    return encoder(packet, protocol_level)
