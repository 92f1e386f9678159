"""A fast path for the two packets a busy 3.1.1 connection mostly receives: PUBLISH and PUBACK.

``scan`` walks whole packets at the start of a read, while the decoder holds no partial
packet, and hands each well-formed PUBLISH (QoS 0/1/2, 3.1 and 3.1.1 only) or PUBACK to the
session without building packet objects. At the first packet it is not sure of (another
type, anything unusual, a partial packet at the end) it stops and returns the offset; the
session feeds the rest to ``MqttDecoder``, which decodes it or raises the right error. So
the fast path accepts only what the codec accepts, and the codec alone reports errors.

Checks kept from the codec: PUBLISH QoS 3 [MQTT-3.3.1-4] and DUP with QoS 0 [MQTT-3.3.1-2]
fall back; the topic must be non-empty well-formed UTF-8 without U+0000 [MQTT-1.5.3-1],
[MQTT-1.5.3-2] and without wildcards [MQTT-3.3.2-2]; packet ids are non-zero
[MQTT-2.3.1-1]; PUBACK has flags 0 [MQTT-2.2.2-2] and a remaining length of 2; a packet over
the maximum size falls back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

TOPIC_CACHE_LIMIT = 1024  # topics a connection's cache keeps (cleared when full)

# What a first byte says: 0, 1, 2: a PUBLISH of that QoS the fast path takes; 3: a PUBACK
# (flags 0 [MQTT-2.2.2-2]); -1: anything else, left to the codec (other packet types, QoS 3
# [MQTT-3.3.1-4], DUP with QoS 0 [MQTT-3.3.1-2]).
_KIND = tuple(
    3 if b == 0x40 else
    (b >> 1) & 3 if b >> 4 == 3 and (b >> 1) & 3 != 3 and not (b & 0x08 and not (b >> 1) & 3) else
    -1
    for b in range(256))


class ScanCache:
    """What a connection's fast path remembers between packets: the topic names already
    checked (``topics``: their UTF-8 bytes to the text, at most ``TOPIC_CACHE_LIMIT``), and
    the last PUBLISH's leading bytes (``prefix``: fixed header, topic length and topic) with
    what they mean. A client publishing to one topic at one size repeats those bytes
    exactly; a packet that starts with them is known after one comparison: its type, flags,
    length and topic are the ones already checked."""

    __slots__ = ("topics", "prefix", "topic", "kind", "retain", "size")

    def __init__(self) -> None:
        self.topics: dict[bytes, str] = {}
        self.prefix = b"\xff"  # matches nothing a client sends here (0xF0 is reserved)
        self.topic = ""
        self.kind = 0  # the QoS
        self.retain = False
        self.size = 0  # the whole packet's length


def scan(data: bytes, max_size: int, on_publish: Callable[[str, bytes, int, bool, int | None, None], Any],
         on_puback: Callable[[int], Any], closed: Callable[[], bool], cache: ScanCache) -> int:
    """Handle the leading PUBLISH/PUBACK packets of data; returns how many bytes were used.
    ``cache`` is the connection's (``ScanCache``); only valid packets enter it."""
    n = len(data)
    p = 0
    prefix = cache.prefix
    while p + 2 <= n:
        if data.startswith(prefix, p):  # the last PUBLISH's header and topic again
            end = p + cache.size
            if end > n:
                return p
            t = p + len(prefix)
            kind = cache.kind
            if kind:
                pid = (data[t] << 8) | data[t + 1]
                if not pid:
                    return p
                on_publish(cache.topic, data[t + 2:end], kind, cache.retain, pid, None)
            else:
                on_publish(cache.topic, data[t:end], 0, cache.retain, None, None)
            p = end
            if closed():
                return p
            continue
        first = data[p]
        kind = _KIND[first]
        if kind < 0:
            return p
        rem = data[p + 1]
        if rem < 0x80:
            q = p + 2
        elif p + 2 < n and data[p + 2] < 0x80:  # two bytes: up to 16383, most packets
            rem = (rem & 0x7F) | (data[p + 2] << 7)
            q = p + 3
        else:
            rem &= 0x7F
            q = p + 2
            shift = 7
            while True:
                if q >= n or shift > 21:
                    return p
                d = data[q]
                q += 1
                rem |= (d & 0x7F) << shift
                shift += 7
                if not d & 0x80:
                    break
        end = q + rem
        if end > n or end - p > max_size:
            return p
        if kind == 3:
            if rem != 2:
                return p
            pid = (data[q] << 8) | data[q + 1]
            if not pid:
                return p
            on_puback(pid)
        else:
            if rem < 2:
                return p
            t = q + 2 + ((data[q] << 8) | data[q + 1])
            if t == q + 2 or t > end:
                return p
            raw = data[q + 2:t]
            topics = cache.topics
            topic = topics.get(raw)
            if topic is None:
                try:
                    topic = raw.decode("utf-8")
                except UnicodeDecodeError:
                    return p
                if "+" in topic or "#" in topic or "\x00" in topic:
                    return p
                if len(topics) >= TOPIC_CACHE_LIMIT:
                    topics.clear()
                topics[raw] = topic
            retain = first & 1 == 1
            if kind:
                if t + 2 > end:
                    return p
                pid = (data[t] << 8) | data[t + 1]
                if not pid:
                    return p
                on_publish(topic, data[t + 2:end], kind, retain, pid, None)
            else:
                on_publish(topic, data[t:end], 0, retain, None, None)
            prefix = cache.prefix = data[p:t]
            cache.topic, cache.kind, cache.retain, cache.size = topic, kind, retain, end - p
        p = end
        if closed():
            return p
    return p
