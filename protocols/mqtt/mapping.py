"""MQTT PUBLISH <-> the neutral ``Message`` (AMQP 0-9-1 basic property names).

How each MQTT 5.0 property travels (so AMQP and STOMP clients see it, and it comes back):

=============================  =====================================================
MQTT                           Message.properties
=============================  =====================================================
QoS of the PUBLISH             header ``x-mqtt-publish-qos`` (RabbitMQ's name);
                               QoS >= 1 also sets ``delivery_mode`` 2, as RabbitMQ does
RETAIN flag of the PUBLISH     header ``x-mqtt-retain`` (only when set), for
                               retain-as-published
Content Type                   ``content_type``
Correlation Data               ``correlation_id`` when it is UTF-8 of at most 255 bytes
                               (an AMQP shortstr), else header ``x-correlation-id``
                               holding the bytes (RabbitMQ 3.13 does the same)
Response Topic                 ``reply_to``, as a routing key (``/`` <-> ``.``), so an
                               AMQP responder publishing to ``amq.topic`` with
                               routing key ``reply_to`` reaches the MQTT requester
Message Expiry Interval        ``expiration`` in milliseconds (the queue then expires it);
                               the remaining time is sent on delivery [MQTT-3.3.2-6]
User Property                  ``headers`` (a name sent twice becomes a list)
Payload Format Indicator       header ``x-mqtt-payload-format-indicator``
=============================  =====================================================

Messages from other protocols: a persistent message (``delivery_mode`` 2) without the QoS
header counts as published with QoS 1, others QoS 0 (RabbitMQ's rule); simple header values
become user properties.
"""

from __future__ import annotations

import math
from typing import Any

from mqemu.broker.message import Field, Message

from .topics import key_to_topic, topic_to_key

QOS_HEADER = "x-mqtt-publish-qos"
RETAIN_HEADER = "x-mqtt-retain"
PFI_HEADER = "x-mqtt-payload-format-indicator"
CORRELATION_HEADER = "x-correlation-id"
_INTERNAL = frozenset((QOS_HEADER, RETAIN_HEADER, PFI_HEADER, CORRELATION_HEADER))

# MQTT's own message fields (``Message.fields``, kept by the store):
# - the client id of the connection that published it, for no-local [MQTT-3.8.3-3];
PUBLISHER = Field("mqtt", "publisher", str)
# - on a retained message queued for one subscription at SUBSCRIBE, that subscription's
#   filter as the client wrote it: it goes out with RETAIN 1 [MQTT-3.3.1-8] to that
#   subscription only, whatever else the topic matches.
RETAINED_FOR = Field("mqtt", "retained_for", str)

# Property dicts shared by every message that carries no MQTT 5.0 property: the core and the
# other sessions replace ``properties`` rather than change it, so sharing is safe.
_PLAIN: dict[tuple[int, bool], dict[str, Any]] = {
    (qos, retain): {
        "headers": {QOS_HEADER: qos, **({RETAIN_HEADER: True} if retain else {})},
        "delivery_mode": 2 if qos else 1,
    }
    for qos in (0, 1, 2) for retain in (False, True)
}

# The same dicts by QoS, then RETAIN (PLAIN[qos][retain]): the publish path's lookup.
PLAIN: tuple[tuple[dict[str, Any], dict[str, Any]], ...] = tuple(
    (_PLAIN[(qos, False)], _PLAIN[(qos, True)]) for qos in (0, 1, 2))


def to_message(routing_key: str, payload: bytes, qos: int, retain: bool,
               props: dict[str, Any] | None) -> Message:
    """A Message for ``amq.topic`` from a PUBLISH (or a will) and its 5.0 properties."""
    if not props:
        return Message("amq.topic", routing_key, payload, _PLAIN[(qos, retain)])
    headers: dict[str, Any] = {QOS_HEADER: qos}
    if retain:
        headers[RETAIN_HEADER] = True
    out: dict[str, Any] = {"delivery_mode": 2 if qos else 1, "headers": headers}
    for name, value in props.items():
        if name == "user_property":
            for k, v in value:
                if k in _INTERNAL:
                    continue  # the broker's own names cannot be set by a client
                old = headers.get(k)
                if old is None:
                    headers[k] = v
                elif isinstance(old, list):
                    old.append(v)
                else:
                    headers[k] = [old, v]
        elif name == "content_type":
            out["content_type"] = value
        elif name == "correlation_data":
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                text = None
            if text is not None and len(value) <= 255:
                out["correlation_id"] = text
            else:
                headers[CORRELATION_HEADER] = bytes(value)
        elif name == "response_topic":
            out["reply_to"] = topic_to_key(value)
        elif name == "message_expiry_interval":
            out["expiration"] = str(value * 1000)
        elif name == "payload_format_indicator":
            headers[PFI_HEADER] = value
    return Message("amq.topic", routing_key, payload, out)


def publish_qos(message: Message) -> int:
    """The QoS the message was published with (see the module docstring)."""
    props = message.properties
    headers = props.get("headers")
    if headers:
        q = headers.get(QOS_HEADER)
        if q is not None:
            return q if q.__class__ is int and 0 <= q <= 2 else 1
    return 1 if props.get("delivery_mode") == 2 else 0


def was_retained(message: Message) -> bool:
    headers = message.properties.get("headers")
    return bool(headers) and headers.get(RETAIN_HEADER) is True


def outgoing_properties(message: Message) -> dict[str, Any]:
    """The MQTT 5.0 properties a delivery of ``message`` carries (expiry excluded).

    Text is made a valid MQTT string and a value too long for one is left out (see
    ``mqtt_string``), so a message from another protocol never fails a delivery."""
    props = message.properties
    out: dict[str, Any] = {}
    headers = props.get("headers")
    if headers.__class__ is not dict:
        headers = None
    if headers:
        pfi = headers.get(PFI_HEADER)
        if pfi in (0, 1):
            out["payload_format_indicator"] = pfi
    ct = props.get("content_type")
    if ct is not None:
        ct = mqtt_string(str(ct))
        if ct is not None:
            out["content_type"] = ct
    rt = props.get("reply_to")
    if rt is not None:
        rt = mqtt_string(key_to_topic(str(rt)))
        if rt:
            out["response_topic"] = rt
    cid = props.get("correlation_id")
    if cid is not None:
        data = cid.encode("utf-8", "surrogateescape") if isinstance(cid, str) else _binary(cid)
        if data is not None and len(data) <= 0xFFFF:
            out["correlation_data"] = data
    elif headers and isinstance(headers.get(CORRELATION_HEADER), (bytes, bytearray)):
        data = bytes(headers[CORRELATION_HEADER])
        if len(data) <= 0xFFFF:
            out["correlation_data"] = data
    if headers:
        pairs = []
        for k, v in headers.items():
            if k in _INTERNAL or k.__class__ is not str:
                continue
            name = mqtt_string(k)
            if name is None:
                continue
            for item in (v if isinstance(v, list) else (v,)):
                text = _simple(item)
                if text is not None:
                    text = mqtt_string(text)
                    if text is not None:
                        pairs.append((name, text))
        if pairs:
            out["user_property"] = pairs
    return out


def mqtt_string(text: str) -> str | None:
    """``text`` as a valid MQTT UTF-8 Encoded String, or None when it is longer than one
    can be (65535 bytes [MQTT-1.5.4]). Text from another protocol may hold what MQTT
    forbids: U+0000 [MQTT-1.5.4-2], and bytes that were not UTF-8 (kept as lone
    surrogates) [MQTT-1.5.4-1]; each becomes U+FFFD."""
    if len(text) <= 16383 and text.isascii():
        return text.replace("\x00", "\ufffd") if "\x00" in text else text
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:  # a surrogate that stands for no byte
            text = text.encode("utf-8", "replace").decode("utf-8")
        raw = text.encode("utf-8")
    return text if len(raw) <= 0xFFFF else None


def _binary(value: Any) -> bytes | None:
    return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else None


def _simple(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def plain(message: Message) -> bool:
    """True when a delivery carries no 5.0 property derived from the message (fast path)."""
    props = message.properties
    if props.__class__ is dict and any(props is p for p in _PLAIN_VALUES):
        return True
    return not outgoing_properties(message)


_PLAIN_VALUES = tuple(_PLAIN.values())


def remaining_expiry(expires_at: float, now: float) -> int:
    """Seconds left, rounded up, never below 1 for a message still being delivered, and at
    most what the Four Byte Integer holds (an AMQP or STOMP expiration can be longer)."""
    return min(max(1, math.ceil(expires_at - now)), 0xFFFF_FFFF)
