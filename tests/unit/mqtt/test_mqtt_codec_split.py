"""Any split of the input gives the same packets; incomplete input never raises."""

from __future__ import annotations

import pytest

from mqemu.protocols.mqtt.codec import NEED_DATA, MqttDecoder
from mqtt_vectors import AFTER_CONNECT, ALL, CONNECTS


def stream_for(level: int) -> tuple[bytes, list]:
    connect = CONNECTS[level]
    rest = [v for v in AFTER_CONNECT if v[1] == level]
    return (connect[2] + b"".join(v[2] for v in rest),
            [connect[3]] + [v[3] for v in rest])


@pytest.mark.parametrize("name,level,wire,packet", ALL, ids=[v[0] for v in ALL])
def test_each_packet_split_at_every_byte(name, level, wire, packet):
    prefix = b"" if packet is CONNECTS[level][3] else CONNECTS[level][2]
    for cut in range(len(wire) + 1):
        d = MqttDecoder()
        d.feed(prefix)
        if prefix:
            d.next_packet()
        d.feed(wire[:cut])
        if cut < len(wire):
            assert d.next_packet() is NEED_DATA
        d.feed(wire[cut:])
        assert d.read_packets() == [packet]
        assert d.buffered == 0


@pytest.mark.parametrize("level", [3, 4, 5])
def test_stream_byte_by_byte(level):
    wire, expected = stream_for(level)
    d = MqttDecoder()
    got = []
    for i in range(len(wire)):
        d.feed(wire[i:i + 1])
        while (p := d.next_packet()) is not NEED_DATA:
            got.append(p)
    assert got == expected


@pytest.mark.parametrize("level", [3, 4, 5])
def test_stream_every_two_way_split(level):
    wire, expected = stream_for(level)
    for cut in range(len(wire) + 1):
        d = MqttDecoder()
        d.feed(wire[:cut])
        got = d.read_packets()
        d.feed(wire[cut:])
        got += d.read_packets()
        assert got == expected, cut


@pytest.mark.parametrize("level", [4, 5])
def test_stream_every_three_way_split(level):
    wire, expected = stream_for(level)
    wire = wire[:90]  # keep it quadratic but quick
    d0 = MqttDecoder()
    d0.feed(wire)
    whole = d0.read_packets()
    for a in range(len(wire) + 1):
        for b in range(a, len(wire) + 1):
            d = MqttDecoder()
            got = []
            for chunk in (wire[:a], wire[a:b], wire[b:]):
                d.feed(chunk)
                got += d.read_packets()
            assert got == whole


def test_compaction_keeps_partial_packet():
    wire, expected = stream_for(4)
    d = MqttDecoder()
    d.feed(wire * 2000 + wire[:5])   # > 64 KiB buffered: next_packet compacts
    got = []
    while (p := d.next_packet()) is not NEED_DATA:
        got.append(p)
    assert got == expected * 2000
    assert d.buffered == 5
    d.feed(wire[5:])
    assert d.read_packets() == expected
