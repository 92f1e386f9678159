"""The PUBLISH/PUBACK fast path accepts exactly what the codec accepts, with the same result."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from mqemu.protocols.mqtt.codec import MqttDecoder, MqttError
from mqemu.protocols.mqtt.fastpath import scan
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


# One topic cache for every example, as a connection keeps one: a topic checked once is
# taken from it, and nothing the codec refuses may ever be found in it.
_TOPICS: dict[bytes, str] = {}


@settings(max_examples=400, deadline=None)
@given(st.lists(_packets, max_size=5))
def test_fast_path_matches_codec(chunks: list[bytes]) -> None:
    data = b"".join(chunks)
    fast: list = []
    used = scan(data, 1 << 20,
                lambda t, b, q, r, pid, props: fast.append(Publish(t, b, q, r, False, pid)),
                lambda pid: fast.append(Puback(pid)), lambda: False, _TOPICS)
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
