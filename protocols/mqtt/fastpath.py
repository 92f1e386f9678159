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


def scan(data: bytes, max_size: int, on_publish: Callable[[str, bytes, int, bool, int | None], Any],
         on_puback: Callable[[int], Any], closed: Callable[[], bool]) -> int:
    """Handle the leading PUBLISH/PUBACK packets of data; returns how many bytes were used."""
    n = len(data)
    p = 0
    while p + 2 <= n:
        first = data[p]
        kind = first >> 4
        if kind != 3 and kind != 4:
            return p
        rem = data[p + 1]
        q = p + 2
        if rem & 0x80:
            rem &= 0x7F
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
        if kind == 4:
            if first != 0x40 or rem != 2:
                return p
            pid = (data[q] << 8) | data[q + 1]
            if not pid:
                return p
            on_puback(pid)
        else:
            qos = (first >> 1) & 3
            if qos == 3 or (first & 0x08 and not qos) or rem < 2:
                return p
            tlen = (data[q] << 8) | data[q + 1]
            t = q + 2 + tlen
            if not tlen or t > end:
                return p
            raw = data[q + 2:t]
            try:
                topic = raw.decode("utf-8")
            except UnicodeDecodeError:
                return p
            if "+" in topic or "#" in topic or "\x00" in topic:
                return p
            pid = None
            if qos:
                if t + 2 > end:
                    return p
                pid = (data[t] << 8) | data[t + 1]
                if not pid:
                    return p
                t += 2
            on_publish(topic, data[t:end], qos, bool(first & 1), pid)
        p = end
        if closed():
            return p
    return p
