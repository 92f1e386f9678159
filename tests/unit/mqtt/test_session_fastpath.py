"""The PUBLISH/PUBACK fast path accepts exactly what the codec accepts, with the same result."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from mqemu.protocols.mqtt.codec import MqttDecoder, MqttError
from mqemu.protocols.mqtt.fastpath import ScanCache, scan
from mqemu.protocols.mqtt.packets import Puback, Publish, encode

_packets = st.one_of(
    st.builds(lambda t, b, q, r, pid: encode(Publish(t, b, q, r, False, pid if q else None), 4),
              st.text(min_size=1, max_size=8),
              # Remaining Length in one, two and three bytes
              st.one_of(st.binary(max_size=200), st.integers(16370, 16400).map(bytes)),
              st.integers(0, 2),
              st.booleans(), st.integers(1, 65535)),
    st.builds(lambda pid: encode(Puback(pid), 4), st.integers(1, 65535)),
    st.binary(min_size=1, max_size=12),  # junk
)


# One cache for every example, as a connection keeps one: a topic or a header checked once
# is taken from it, and nothing the codec refuses may ever be found in it.
_CACHE = ScanCache()


@settings(max_examples=400, deadline=None)
@given(st.lists(_packets, max_size=5), st.booleans())
def test_fast_path_matches_codec(chunks: list[bytes], twice: bool) -> None:
    data = b"".join(chunks) * (2 if twice else 1)  # twice: every header is seen again
    fast: list = []
    used = scan(data, 1 << 20,
                lambda t, b, q, r, pid, props: fast.append(Publish(t, b, q, r, False, pid)),
                lambda pid: fast.append(Puback(pid)), lambda: False, _CACHE)
    dec = MqttDecoder(1 << 20, protocol_level=4)
    dec.feed(data[:used])
    assert dec.read_packets() == fast
    assert dec.buffered == 0
    # Whatever the fast path left over, the codec decodes or rejects on its own.
    rest = MqttDecoder(1 << 20, protocol_level=4)
    rest.feed(data[used:])
    try:
        rest.read_packets()
    except MqttError:
        pass


def _scan(data: bytes, cache: ScanCache) -> tuple[int, list]:
    got: list = []
    used = scan(data, 1 << 20, lambda t, b, q, r, pid, props: got.append(Publish(t, b, q, r, False, pid)),
                lambda pid: got.append(Puback(pid)), lambda: False, cache)
    return used, got


def test_a_repeated_header_is_taken_from_the_cache_with_the_same_result() -> None:
    cache = ScanCache()
    packets = [Publish("a/b", b"%05d" % i, 1, False, False, i + 1) for i in range(50)]
    data = b"".join(encode(p, 4) for p in packets)
    assert _scan(data, cache) == (len(data), packets)
    assert cache.prefix == encode(packets[0], 4)[:2 + 2 + 3] and cache.topic == "a/b"
    assert _scan(data, cache) == (len(data), packets)  # from the cache from the first byte


def test_what_follows_a_cached_header_is_still_checked() -> None:
    cache = ScanCache()
    one = encode(Publish("t", b"xy", 1, False, False, 7), 4)
    assert _scan(one, cache) == (len(one), [Publish("t", b"xy", 1, False, False, 7)])
    zero_id = one[:-4] + b"\x00\x00" + one[-2:]  # the same header, packet id 0 [MQTT-2.3.1-1]
    assert _scan(one + zero_id, cache)[0] == len(one)
    assert _scan(one + one[:-1], cache)[0] == len(one)  # a partial packet waits for the codec
    other = encode(Publish("t", b"xyz", 1, False, False, 8), 4)  # another length: parsed again
    assert _scan(other, cache) == (len(other), [Publish("t", b"xyz", 1, False, False, 8)])
