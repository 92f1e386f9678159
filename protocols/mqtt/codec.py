"""Sans-IO MQTT 3.1 / 3.1.1 / 5.0 codec: an incremental decoder plus encoders.

Feed bytes with :meth:`MqttDecoder.feed`, take packets with
:meth:`MqttDecoder.next_packet` (or all at once with
:meth:`MqttDecoder.read_packets`).  Incomplete input never raises; any split
of the input yields the same packets.  A packet the specification forbids
raises an :class:`MqttError` whose ``reason_code`` is what a 5.0 peer should
be told; after that the decoder must not be used again (close the
connection, [MQTT-4.8.0-1] in 3.1.1, section 4.13 in 5.0).

The decoder accepts every packet type in both directions (so clients and
tests can decode CONNACK, SUBACK...); rejecting a packet the peer may not
send (a CONNACK from a client, a second CONNECT [MQTT-3.1.0-2], a
Subscription Identifier in a client PUBLISH [MQTT-3.3.4-6]) and the Topic
Alias checks are the session's job.
"""

from __future__ import annotations

from typing import Any, Final

from .packets import (
    Auth, Connack, Connect, Disconnect, Packet, PacketType, Pingreq, Pingresp, Puback,
    Pubcomp, Publish, Pubrec, Pubrel, Suback, Subscribe, Subscription, Unsuback,
    Unsubscribe, Will, encode, encode_publish,
)
from .properties import (
    WILL, decode_binary, decode_properties, decode_string, encode_properties,
)
from .reason_codes import (
    REASON_CODES_BY_PACKET, SUBACK_CODES_311, MalformedPacket, MqttError, PacketTooLarge,
    ProtocolError, UnsupportedProtocolVersion,
)

__all__ = [
    "NEED_DATA", "MqttDecoder", "MqttError", "MalformedPacket", "ProtocolError",
    "PacketTooLarge", "UnsupportedProtocolVersion", "encode", "encode_publish",
    "encode_properties", "SUPPORTED_PROTOCOLS",
]


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by :meth:`MqttDecoder.next_packet` when no whole packet is buffered.
NEED_DATA: Final = _NeedData()

#: (protocol name, protocol level) pairs a CONNECT may carry.
SUPPORTED_PROTOCOLS: Final = frozenset({("MQIsdp", 3), ("MQTT", 4), ("MQTT", 5)})

_COMPACT_AT = 65536
# Required low nibble of the fixed header for packets other than PUBLISH:
# 3.1.1 [MQTT-2.2.2-1] (Table 2.2), 5.0 [MQTT-2.1.3-1] (Table 2-2).
_FLAGS = {1: 0, 2: 0, 4: 0, 5: 0, 6: 2, 7: 0, 8: 2, 9: 0, 10: 2, 11: 0, 12: 0, 13: 0, 14: 0, 15: 0}


def _u16(data: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos + 2 > end:
        raise MalformedPacket("packet ends inside a two-byte integer")
    return (data[pos] << 8) | data[pos + 1], pos + 2


def _packet_id(data: bytes, pos: int, end: int) -> tuple[int, int]:
    pid, pos = _u16(data, pos, end)
    if pid == 0:
        # 3.1.1 [MQTT-2.3.1-1], 5.0 [MQTT-2.2.1-3]: packet identifiers are non-zero.
        raise ProtocolError("packet identifier 0")
    return pid, pos


def _no_trailing(pos: int, end: int) -> None:
    if pos != end:
        raise MalformedPacket(f"{end - pos} unexpected bytes at the end of the packet")


def _check_reason(code: int, ptype: int) -> int:
    if code not in REASON_CODES_BY_PACKET[ptype]:
        # 5.0 Table 2-6; e.g. [MQTT-3.4.2-1] "MUST use one of the PUBACK Reason Codes".
        raise ProtocolError(f"reason code 0x{code:02X} not valid in {PacketType(ptype).name}")
    return code


def _check_topic_name(topic: str) -> None:
    if "+" in topic or "#" in topic:
        # [MQTT-3.3.2-2] (3.1.1 and 5.0), [MQTT-4.7.1-1]: no wildcards in a Topic Name.
        raise ProtocolError(f"wildcard in topic name {topic!r}")


class MqttDecoder:
    """Incremental MQTT decoder for one connection (server or client side).

    ``max_packet_size`` (writable) bounds the total size of an incoming
    packet (fixed header included, as 5.0's Maximum Packet Size does); it is
    checked from the fixed header alone, before the body is waited for.
    ``protocol_level`` is None until a CONNECT has been decoded, or can be
    given up front for the client side (then CONNECT is not required first).
    """

    __slots__ = ("max_packet_size", "protocol_level", "_buf", "_pos")

    def __init__(self, max_packet_size: int = 268435455, *,
                 protocol_level: int | None = None) -> None:
        self.max_packet_size = max_packet_size
        self.protocol_level: int | None = protocol_level
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes.  Never raises."""
        self._buf += data

    @property
    def buffered(self) -> int:
        """Number of received bytes not yet returned as packets."""
        return len(self._buf) - self._pos

    def read_packets(self) -> list[Packet]:
        """Return every whole packet buffered (possibly none).

        Raises MqttError as :meth:`next_packet`; packets decoded before the
        bad one are lost with it, since the connection is closed anyway.
        """
        out: list[Packet] = []
        append = out.append
        while True:
            packet = self._next()
            if packet is NEED_DATA:
                break
            append(packet)  # type: ignore[arg-type]
        self._compact()
        return out

    def next_packet(self) -> Packet | _NeedData:
        """Return the next whole packet, or NEED_DATA.

        Raises MalformedPacket (0x81), ProtocolError (0x82), PacketTooLarge
        (0x95) or UnsupportedProtocolVersion (0x84) for a bad packet.
        """
        packet = self._next()
        if self._pos >= _COMPACT_AT or (self._pos and self._pos == len(self._buf)):
            self._compact()
        return packet

    def _compact(self) -> None:
        if self._pos:
            if self._pos == len(self._buf):
                self._buf.clear()
            else:
                del self._buf[:self._pos]
            self._pos = 0

    def _next(self) -> Packet | _NeedData:
        buf = self._buf
        start = self._pos
        avail = len(buf) - start
        if avail < 1:
            return NEED_DATA
        first = buf[start]
        ptype = first >> 4
        # Everything the first byte decides is checked before waiting for more.
        level = self.protocol_level
        if level is None and ptype != 1:
            # [MQTT-3.1.0-1]: the first packet from the client MUST be CONNECT.
            raise ProtocolError("first packet is not CONNECT")
        if ptype == 0 or (ptype == 15 and level is not None and level < 5):
            raise MalformedPacket(f"reserved packet type {ptype}")
        if ptype != 3:
            flags = first & 0x0F
            if flags != _FLAGS[ptype] and not (level == 3 and ptype in (6, 8, 10)):
                # 3.1.1 [MQTT-2.2.2-2], 5.0 2.1.3: invalid flags -> Malformed Packet.
                # (3.1 set DUP/QoS on PUBREL/SUBSCRIBE/UNSUBSCRIBE freely.)
                raise MalformedPacket(f"invalid fixed header flags 0x{flags:X} "
                                      f"for {PacketType(ptype).name}")
        # Remaining Length: at most four bytes (3.1.1 2.2.3, 5.0 1.5.5).
        remaining = 0
        shift = 0
        i = 1
        while True:
            if i >= avail:
                return NEED_DATA
            byte = buf[start + i]
            remaining |= (byte & 0x7F) << shift
            i += 1
            if not byte & 0x80:
                break
            if i == 5:
                raise MalformedPacket("remaining length longer than four bytes")
            shift += 7
        if i + remaining > self.max_packet_size:
            # Checked from the fixed header alone: the body is never buffered.
            raise PacketTooLarge(f"packet of {i + remaining} bytes exceeds "
                                 f"the maximum of {self.max_packet_size}")
        end = i + remaining
        if avail < end:
            return NEED_DATA
        body = bytes(buf[start + i:start + end])
        self._pos = start + end
        if ptype == 3:
            return self._publish(first, body, level)  # type: ignore[arg-type]
        return _DECODERS[ptype](self, first, body, level)

    # ------------------------------------------------------------ PUBLISH
    def _publish(self, first: int, data: bytes, level: int) -> Publish:
        qos = (first >> 1) & 3
        dup = bool(first & 0x08)
        if qos == 3:
            raise MalformedPacket("PUBLISH with QoS 3")  # [MQTT-3.3.1-4]
        if dup and not qos and level >= 4:
            raise MalformedPacket("PUBLISH with QoS 0 and DUP set")  # [MQTT-3.3.1-2]
        end = len(data)
        topic, pos = decode_string(data, 0, end)
        _check_topic_name(topic)
        packet_id = None
        if qos:
            packet_id, pos = _packet_id(data, pos, end)
        props: dict[str, Any] = {}
        if level >= 5:
            props, pos = decode_properties(data, pos, end, 3)
            if not topic and "topic_alias" not in props:
                # 5.0 3.3.2.1: zero-length Topic Name without a Topic Alias.
                raise ProtocolError("empty topic name without a topic alias")
        elif not topic:
            raise ProtocolError("empty topic name")  # 3.1.1 [MQTT-4.7.3-1]
        return Publish(topic, data[pos:], qos, bool(first & 1), dup, packet_id, props)

    # ------------------------------------------------------------ CONNECT
    def _connect(self, first: int, data: bytes, level: int | None) -> Connect:
        end = len(data)
        name, pos = decode_string(data, 0, end)
        if pos >= end:
            raise MalformedPacket("CONNECT ends after the protocol name")
        proto = data[pos]
        if (name, proto) not in SUPPORTED_PROTOCOLS:
            # 3.1.1 [MQTT-3.1.2-1]/[MQTT-3.1.2-2], 5.0 [MQTT-3.1.2-1]/[MQTT-3.1.2-2].
            raise UnsupportedProtocolVersion(
                f"unsupported protocol {name!r} level {proto}", name, proto)
        pos += 1
        if pos + 3 > end:
            raise MalformedPacket("CONNECT variable header truncated")
        flags = data[pos]
        keep_alive = (data[pos + 1] << 8) | data[pos + 2]
        pos += 3
        if flags & 0x01 and proto >= 4:
            raise MalformedPacket("CONNECT reserved flag set")  # [MQTT-3.1.2-3]
        will_flag = flags & 0x04
        will_qos = (flags >> 3) & 3
        will_retain = bool(flags & 0x20)
        if will_qos == 3:
            # 3.1.1 [MQTT-3.1.2-14], 5.0 3.1.2.6 (Malformed Packet).
            raise MalformedPacket("will QoS 3")
        if not will_flag and (will_qos or will_retain):
            # 3.1.1 [MQTT-3.1.2-13]/[MQTT-3.1.2-15], 5.0 [MQTT-3.1.2-11]/[MQTT-3.1.2-13].
            raise MalformedPacket("will QoS/retain set without the will flag")
        has_user = flags & 0x80
        has_pass = flags & 0x40
        if has_pass and not has_user and proto < 5:
            raise ProtocolError("password without user name")  # 3.1.1 [MQTT-3.1.2-22]
        props: dict[str, Any] = {}
        if proto == 5:
            props, pos = decode_properties(data, pos, end, 1)
        client_id, pos = decode_string(data, pos, end)  # [MQTT-3.1.3-4]
        will = None
        if will_flag:
            will_props: dict[str, Any] = {}
            if proto == 5:
                will_props, pos = decode_properties(data, pos, end, WILL)
            will_topic, pos = decode_string(data, pos, end)
            if not will_topic:
                raise ProtocolError("empty will topic")  # [MQTT-4.7.3-1]
            _check_topic_name(will_topic)
            will_payload, pos = decode_binary(data, pos, end)
            will = Will(will_topic, will_payload, will_qos, will_retain, will_props)
        username = password = None
        if has_user:
            username, pos = decode_string(data, pos, end)
        if has_pass and not (proto == 3 and pos == end):
            # (Some 3.1 clients set the password flag and send no password.)
            password, pos = decode_binary(data, pos, end)
        _no_trailing(pos, end)
        if self.protocol_level is None:
            self.protocol_level = proto
        return Connect(name, proto, bool(flags & 0x02), keep_alive, client_id, will,
                       username, password, props)

    # ------------------------------------------------------------ CONNACK
    def _connack(self, first: int, data: bytes, level: int) -> Connack:
        end = len(data)
        if end < 2:
            raise MalformedPacket("CONNACK too short")
        ack_flags, code = data[0], data[1]
        if level < 5:
            _no_trailing(2, end)
            if level == 3:
                ack_flags = 0  # reserved in 3.1
            if code > 5:
                raise ProtocolError(f"reserved CONNACK return code {code}")
            props: dict[str, Any] = {}
            pos = 2
        else:
            _check_reason(code, 2)
            props, pos = decode_properties(data, 2, end, 2)
            _no_trailing(pos, end)
        if ack_flags & 0xFE:
            raise MalformedPacket("CONNACK reserved flags set")  # 5.0 [MQTT-3.2.2-1], 3.1.1 3.2.2.1
        return Connack(bool(ack_flags & 1), code, props)

    # ---------------------------------------------- PUBACK/PUBREC/PUBREL/PUBCOMP
    def _ack(self, first: int, data: bytes, level: int) -> Any:
        ptype = first >> 4
        end = len(data)
        packet_id, pos = _packet_id(data, 0, end)
        code = 0
        props: dict[str, Any] = {}
        if level >= 5 and pos < end:
            # 5.0 3.4.2.1: code absent -> 0x00; Remaining Length < 4 -> no properties.
            code = _check_reason(data[pos], ptype)
            pos += 1
            if pos < end:
                props, pos = decode_properties(data, pos, end, ptype)
        _no_trailing(pos, end)
        return _ACK_TYPES[ptype](packet_id, code, props)

    # ------------------------------------------------------------ SUBSCRIBE
    def _subscribe(self, first: int, data: bytes, level: int) -> Subscribe:
        end = len(data)
        packet_id, pos = _packet_id(data, 0, end)
        props: dict[str, Any] = {}
        if level >= 5:
            props, pos = decode_properties(data, pos, end, 8)
        subs = []
        while pos < end:
            topic_filter, pos = decode_string(data, pos, end)
            if pos >= end:
                raise MalformedPacket("SUBSCRIBE ends before the subscription options")
            opts = data[pos]
            pos += 1
            if not topic_filter:
                raise ProtocolError("empty topic filter")  # [MQTT-4.7.3-1]
            qos = opts & 3
            if level < 5:
                if opts & 0xFC or qos == 3:
                    raise MalformedPacket("SUBSCRIBE reserved bits or QoS 3")  # [MQTT-3-8.3-4]
                subs.append(Subscription(topic_filter, qos))
                continue
            if opts & 0xC0:
                raise MalformedPacket("subscription options reserved bits set")  # [MQTT-3.8.3-5]
            if qos == 3:
                raise ProtocolError("subscription Maximum QoS 3")  # 5.0 3.8.3.1
            retain_handling = (opts >> 4) & 3
            if retain_handling == 3:
                raise ProtocolError("retain handling 3")  # 5.0 3.8.3.1
            no_local = bool(opts & 0x04)
            if no_local and topic_filter.startswith("$share/"):
                raise ProtocolError("no local on a shared subscription")  # [MQTT-3.8.3-4]
            subs.append(Subscription(topic_filter, qos, no_local, bool(opts & 0x08),
                                     retain_handling))
        if not subs:
            # 3.1.1 [MQTT-3.8.3-3], 5.0 [MQTT-3.8.3-2]: at least one subscription.
            raise ProtocolError("SUBSCRIBE without topic filters")
        return Subscribe(packet_id, tuple(subs), props)

    def _suback(self, first: int, data: bytes, level: int) -> Suback:
        end = len(data)
        packet_id, pos = _packet_id(data, 0, end)
        props: dict[str, Any] = {}
        if level >= 5:
            props, pos = decode_properties(data, pos, end, 9)
            allowed = REASON_CODES_BY_PACKET[9]
        else:
            allowed = SUBACK_CODES_311
        codes = tuple(data[pos:])
        for code in codes:
            if code not in allowed:
                raise ProtocolError(f"return code 0x{code:02X} not valid in SUBACK")
        return Suback(packet_id, codes, props)

    # ------------------------------------------------------------ UNSUBSCRIBE
    def _unsubscribe(self, first: int, data: bytes, level: int) -> Unsubscribe:
        end = len(data)
        packet_id, pos = _packet_id(data, 0, end)
        props: dict[str, Any] = {}
        if level >= 5:
            props, pos = decode_properties(data, pos, end, 10)
        filters = []
        while pos < end:
            topic_filter, pos = decode_string(data, pos, end)
            if not topic_filter:
                raise ProtocolError("empty topic filter")  # [MQTT-4.7.3-1]
            filters.append(topic_filter)
        if not filters:
            # 3.1.1 [MQTT-3.10.3-2], 5.0 [MQTT-3.10.3-2]: at least one topic filter.
            raise ProtocolError("UNSUBSCRIBE without topic filters")
        return Unsubscribe(packet_id, tuple(filters), props)

    def _unsuback(self, first: int, data: bytes, level: int) -> Unsuback:
        end = len(data)
        packet_id, pos = _packet_id(data, 0, end)
        if level < 5:
            _no_trailing(pos, end)
            return Unsuback(packet_id)
        props, pos = decode_properties(data, pos, end, 11)
        codes = tuple(_check_reason(c, 11) for c in data[pos:])
        return Unsuback(packet_id, codes, props)

    # ------------------------------------------------------------ the rest
    def _ping(self, first: int, data: bytes, level: int) -> Pingreq | Pingresp:
        _no_trailing(0, len(data))
        return Pingreq() if first >> 4 == 12 else Pingresp()

    def _rc_props(self, first: int, data: bytes, level: int) -> Disconnect | Auth:
        ptype = first >> 4
        cls = Disconnect if ptype == 14 else Auth
        end = len(data)
        if level < 5:
            _no_trailing(0, end)
            return cls()
        code = 0
        props: dict[str, Any] = {}
        pos = 0
        if end:
            # 5.0 3.14.2.1 / 3.15.2.1: absent Reason Code means 0x00.
            code = _check_reason(data[0], ptype)
            pos = 1
            if pos < end:
                props, pos = decode_properties(data, pos, end, ptype)
        _no_trailing(pos, end)
        return cls(code, props)


_ACK_TYPES: dict[int, type] = {4: Puback, 5: Pubrec, 6: Pubrel, 7: Pubcomp}
_DECODERS: dict[int, Any] = {
    1: MqttDecoder._connect, 2: MqttDecoder._connack, 4: MqttDecoder._ack,
    5: MqttDecoder._ack, 6: MqttDecoder._ack, 7: MqttDecoder._ack,
    8: MqttDecoder._subscribe, 9: MqttDecoder._suback, 10: MqttDecoder._unsubscribe,
    11: MqttDecoder._unsuback, 12: MqttDecoder._ping, 13: MqttDecoder._ping,
    14: MqttDecoder._rc_props, 15: MqttDecoder._rc_props,
}
