"""MQTT reason codes, the 3.1.1 CONNACK return codes, and the codec's errors.

MQTT 5.0 uses a one-byte Reason Code in CONNACK, PUBACK, PUBREC, PUBREL,
PUBCOMP, SUBACK, UNSUBACK, DISCONNECT and AUTH (MQTT 5.0 section 2.4,
Table 2-6).  MQTT 3.1 and 3.1.1 only have the CONNACK return code
(3.1.1 section 3.2.2.3, Table 3.1) and the SUBACK return codes
0x00/0x01/0x02/0x80 (3.1.1 section 3.9.3).

The exceptions live here (rather than in ``codec``) so that the property
decoder can raise them without an import cycle; ``codec`` re-exports them.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "ReasonCode",
    "ConnackCode311",
    "connack_code_311",
    "REASON_CODES_BY_PACKET",
    "SUBACK_CODES_311",
    "MqttError",
    "MalformedPacket",
    "ProtocolError",
    "PacketTooLarge",
    "UnsupportedProtocolVersion",
]


class ReasonCode(IntEnum):
    """MQTT 5.0 Reason Codes (MQTT 5.0 section 2.4, Table 2-6)."""

    SUCCESS = 0x00
    # Aliases of 0x00 used by particular packets (same value, other name).
    NORMAL_DISCONNECTION = 0x00
    GRANTED_QOS_0 = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    REAUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


class ConnackCode311(IntEnum):
    """MQTT 3.1 / 3.1.1 CONNACK return codes (3.1.1 section 3.2.2.3, Table 3.1)."""

    ACCEPTED = 0x00
    UNACCEPTABLE_PROTOCOL_VERSION = 0x01
    IDENTIFIER_REJECTED = 0x02
    SERVER_UNAVAILABLE = 0x03
    BAD_USER_NAME_OR_PASSWORD = 0x04
    NOT_AUTHORIZED = 0x05


_RC = ReasonCode
_TO_311: dict[int, int] = {
    _RC.SUCCESS: ConnackCode311.ACCEPTED,
    _RC.UNSUPPORTED_PROTOCOL_VERSION: ConnackCode311.UNACCEPTABLE_PROTOCOL_VERSION,
    _RC.CLIENT_IDENTIFIER_NOT_VALID: ConnackCode311.IDENTIFIER_REJECTED,
    _RC.BAD_USER_NAME_OR_PASSWORD: ConnackCode311.BAD_USER_NAME_OR_PASSWORD,
    _RC.BAD_AUTHENTICATION_METHOD: ConnackCode311.BAD_USER_NAME_OR_PASSWORD,
    _RC.NOT_AUTHORIZED: ConnackCode311.NOT_AUTHORIZED,
    _RC.BANNED: ConnackCode311.NOT_AUTHORIZED,
}


def connack_code_311(reason: ReasonCode | int) -> int:
    """Map a 5.0 CONNACK Reason Code to the nearest 3.1/3.1.1 return code.

    Codes with no closer 3.1.1 meaning (server busy, moved, quota, and generic
    errors such as 0x80/0x83) map to 0x03 "Server unavailable".  Never raises.
    """
    return int(_TO_311.get(int(reason), ConnackCode311.SERVER_UNAVAILABLE))


# Which Reason Codes each packet type may carry (MQTT 5.0 Table 2-6).  Keys are
# fixed-header packet type numbers (see packets.PacketType).
_CONNACK = 2
_PUBACK, _PUBREC, _PUBREL, _PUBCOMP = 4, 5, 6, 7
_SUBACK, _UNSUBACK, _DISCONNECT, _AUTH = 9, 11, 14, 15

_OK_ACKS = (_CONNACK, _PUBACK, _PUBREC, _PUBREL, _PUBCOMP, _UNSUBACK, _AUTH)
_TABLE_2_6: dict[int, tuple[int, ...]] = {
    0x00: _OK_ACKS + (_SUBACK, _DISCONNECT),
    0x01: (_SUBACK,),
    0x02: (_SUBACK,),
    0x04: (_DISCONNECT,),
    0x10: (_PUBACK, _PUBREC),
    0x11: (_UNSUBACK,),
    0x18: (_AUTH,),
    0x19: (_AUTH,),
    0x80: (_CONNACK, _PUBACK, _PUBREC, _SUBACK, _UNSUBACK, _DISCONNECT),
    0x81: (_CONNACK, _DISCONNECT),
    0x82: (_CONNACK, _DISCONNECT),
    0x83: (_CONNACK, _PUBACK, _PUBREC, _SUBACK, _UNSUBACK, _DISCONNECT),
    0x84: (_CONNACK,),
    0x85: (_CONNACK,),
    0x86: (_CONNACK,),
    0x87: (_CONNACK, _PUBACK, _PUBREC, _SUBACK, _UNSUBACK, _DISCONNECT),
    0x88: (_CONNACK,),
    0x89: (_CONNACK, _DISCONNECT),
    0x8A: (_CONNACK,),
    0x8B: (_DISCONNECT,),
    0x8C: (_CONNACK, _DISCONNECT),
    0x8D: (_DISCONNECT,),
    0x8E: (_DISCONNECT,),
    0x8F: (_SUBACK, _UNSUBACK, _DISCONNECT),
    0x90: (_CONNACK, _PUBACK, _PUBREC, _DISCONNECT),
    0x91: (_PUBACK, _PUBREC, _SUBACK, _UNSUBACK),
    0x92: (_PUBREL, _PUBCOMP),
    0x93: (_DISCONNECT,),
    0x94: (_DISCONNECT,),
    0x95: (_CONNACK, _DISCONNECT),
    0x96: (_DISCONNECT,),
    0x97: (_CONNACK, _PUBACK, _PUBREC, _SUBACK, _DISCONNECT),
    0x98: (_DISCONNECT,),
    0x99: (_CONNACK, _PUBACK, _PUBREC, _DISCONNECT),
    0x9A: (_CONNACK, _DISCONNECT),
    0x9B: (_CONNACK, _DISCONNECT),
    0x9C: (_CONNACK, _DISCONNECT),
    0x9D: (_CONNACK, _DISCONNECT),
    0x9E: (_SUBACK, _DISCONNECT),
    0x9F: (_CONNACK, _DISCONNECT),
    0xA0: (_DISCONNECT,),
    0xA1: (_SUBACK, _DISCONNECT),
    0xA2: (_SUBACK, _DISCONNECT),
}

#: packet type -> the frozenset of 5.0 Reason Codes it may carry.
REASON_CODES_BY_PACKET: dict[int, frozenset[int]] = {
    ptype: frozenset(code for code, types in _TABLE_2_6.items() if ptype in types)
    for ptype in (_CONNACK, _PUBACK, _PUBREC, _PUBREL, _PUBCOMP, _SUBACK,
                  _UNSUBACK, _DISCONNECT, _AUTH)
}

#: SUBACK return codes allowed in 3.1.1 [MQTT-3.9.3-2] (3.1 has no 0x80, but
#: brokers send it anyway, so it is accepted for 3.1 too).
SUBACK_CODES_311: frozenset[int] = frozenset((0x00, 0x01, 0x02, 0x80))


class MqttError(Exception):
    """A packet the codec cannot accept.

    ``reason_code`` is the 5.0 Reason Code to put in the CONNACK/DISCONNECT
    (for 3.1/3.1.1 the connection is simply closed, [MQTT-4.8.0-1] in 3.1.1);
    ``text`` is a human-readable explanation.
    """

    reason_code: int = ReasonCode.UNSPECIFIED_ERROR

    def __init__(self, text: str, reason_code: int | None = None) -> None:
        super().__init__(text)
        self.text = text
        if reason_code is not None:
            self.reason_code = ReasonCode(reason_code)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.text!r}, reason_code=0x{int(self.reason_code):02X})"


class MalformedPacket(MqttError):
    """The packet cannot be parsed per the specification (0x81)."""

    reason_code = ReasonCode.MALFORMED_PACKET


class ProtocolError(MqttError):
    """The packet parses but carries data the protocol forbids (0x82)."""

    reason_code = ReasonCode.PROTOCOL_ERROR


class PacketTooLarge(MqttError):
    """The packet is larger than the receiver's Maximum Packet Size (0x95)."""

    reason_code = ReasonCode.PACKET_TOO_LARGE


class UnsupportedProtocolVersion(MqttError):
    """CONNECT names a protocol other than MQIsdp/3, MQTT/4 or MQTT/5 (0x84).

    ``protocol_name``/``protocol_level`` are what the client sent, so the
    session can answer CONNACK 0x01 (3.x, [MQTT-3.1.2-2]) or 0x84 (5.0)
    before closing.
    """

    reason_code = ReasonCode.UNSUPPORTED_PROTOCOL_VERSION

    def __init__(self, text: str, protocol_name: str = "", protocol_level: int = 0) -> None:
        super().__init__(text)
        self.protocol_name = protocol_name
        self.protocol_level = protocol_level
