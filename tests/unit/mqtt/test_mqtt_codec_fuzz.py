"""Fuzz: after a valid CONNECT, arbitrary input may only raise MqttError."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqemu.protocols.mqtt.codec import NEED_DATA, MqttDecoder, MqttError, encode
from mqemu.protocols.mqtt.properties import encode_varint
from mqtt_vectors import AFTER_CONNECT, CONNECTS

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def run(level: int, data: bytes, chunk: int) -> list:
    d = MqttDecoder()
    d.feed(CONNECTS[level][2])
    assert d.next_packet() == CONNECTS[level][3]
    out = []
    try:
        for i in range(0, len(data), chunk):
            d.feed(data[i:i + chunk])
            while (p := d.next_packet()) is not NEED_DATA:
                out.append(p)
    except MqttError as exc:
        assert isinstance(exc.reason_code, int) and exc.text
    return out


@FUZZ
@given(level=st.sampled_from([3, 4, 5]), data=st.binary(max_size=400),
       chunk=st.integers(1, 64))
def test_arbitrary_bytes(level, data, chunk):
    run(level, data, chunk)


# Plausible packets: a real header byte, a correct remaining length, random body,
# so the fuzz reaches the per-packet decoders rather than dying in the header.
framed = st.builds(
    lambda first, body: bytes((first,)) + encode_varint(len(body)) + body,
    st.integers(0, 255), st.binary(max_size=120))


@FUZZ
@given(level=st.sampled_from([3, 4, 5]), packets=st.lists(framed, max_size=6),
       chunk=st.integers(1, 32))
def test_framed_random_bodies(level, packets, chunk):
    run(level, b"".join(packets), chunk)


# Golden packets with bytes flipped: mostly-valid structure, local damage.
golden = st.sampled_from([v for v in AFTER_CONNECT])


@FUZZ
@given(vector=golden, flips=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)),
                                     max_size=4), chunk=st.integers(1, 16))
def test_mutated_golden_packets(vector, flips, chunk):
    _, level, wire, packet = vector
    data = bytearray(wire)
    for pos, value in flips:
        data[pos % len(data)] = value
    got = run(level, bytes(data), chunk)
    if not flips:
        assert got == [packet]


@FUZZ
@given(level=st.sampled_from([4, 5]), data=st.binary(max_size=300))
def test_decoded_packets_reencode_and_decode_equal(level, data):
    # Whatever the decoder accepts must survive encode -> decode unchanged.
    for packet in run(level, data, 7):
        d = MqttDecoder(protocol_level=level)
        d.feed(encode(packet, level))
        assert d.read_packets() == [packet]
