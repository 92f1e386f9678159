"""The Raft hub: its framing (exact bytes), member ids from the sorted node names, one link frame
per peer per flush whatever the groups, and two Raft groups committing over three real
``NodeLinks`` in one trio program (a node cut off and back)."""

from __future__ import annotations

import random

import pytest
import trio

from mqemu.ha.links import LINK_TIMINGS, NodeLinks
from mqemu.ha.raft.hub import CHANNEL, HubFramingError, RaftHub, decode_records, encode_record
from mqemu.ha.raft.member import Config
from mqemu.ha.raft.runtime import ListMachine, NotLeader, Runner
from mqemu.ha.raft.storage import MemoryStorage

pytestmark = pytest.mark.timeout(60)

NAMES = ["node-3", "node-1", "node-2"]  # any order: ids come from the sorted names


def test_record_bytes():
    assert encode_record(b"meta", b"\x01\x02") == b"\x04meta\x00\x00\x00\x02\x01\x02"
    assert encode_record(b"q", b"") == b"\x01q\x00\x00\x00\x00"
    payload = encode_record(b"meta", b"\x01\x02") + encode_record(b"q", b"") + encode_record("é".encode(), b"x")
    assert payload == b"\x04meta\x00\x00\x00\x02\x01\x02\x01q\x00\x00\x00\x00\x02\xc3\xa9\x00\x00\x00\x01x"
    assert decode_records(payload) == [("meta", b"\x01\x02"), ("q", b""), ("é", b"x")]
    assert decode_records(b"") == []


@pytest.mark.parametrize("bad", [
    b"\x04met",                       # the group cut short
    b"\x04meta\x00\x00",              # the length cut short
    b"\x04meta\x00\x00\x00\x03ab",    # the message cut short
    b"\x00\x00\x00\x00\x00",          # an empty group name
    b"\x01\xff\x00\x00\x00\x00",      # a group name that is not UTF-8
    b"\x01q\x00\x00\x00\x00\x05",     # a whole record, then a cut one
])
def test_bad_payloads(bad):
    with pytest.raises(HubFramingError):
        decode_records(bad)


class FakeLinks:
    def __init__(self, node: str) -> None:
        self.node = node
        self.sent: list[tuple[str, str, bytes]] = []
        self.handlers = {}

    def on(self, channel, callback):
        self.handlers[channel] = callback

    def send(self, peer, channel, data):
        self.sent.append((peer, channel, data))
        return peer != "node-3"  # node-3's link is down


def test_ids_are_sorted_names_and_a_flush_is_one_frame_per_peer():
    links = FakeLinks("node-2")
    hub = RaftHub(links, NAMES)
    assert (hub.names, hub.id, hub.members) == (["node-1", "node-2", "node-3"], 1, [0, 1, 2])
    a, b = hub.transport("meta"), hub.transport("q1")
    assert hub.transport("meta") is a
    a.send(0, b"m1")
    b.send(0, b"q")
    a.send(0, b"m2")
    a.send(2, b"m3")
    hub.flush()
    assert links.sent == [
        ("node-1", CHANNEL, encode_record(b"meta", b"m1") + encode_record(b"q1", b"q") + encode_record(b"meta", b"m2")),
        ("node-3", CHANNEL, encode_record(b"meta", b"m3")),
    ]
    assert (hub.frames_sent, hub.records_sent, hub.dropped) == (1, 4, 1)
    hub.flush()
    assert len(links.sent) == 2  # nothing pending, nothing sent
    # what arrives goes to each group's inbox with the sender's id; unknown groups are dropped
    links.handlers[CHANNEL]("node-3", encode_record(b"q1", b"x") + encode_record(b"nope", b"y")
                            + encode_record(b"meta", b"z"))
    links.handlers[CHANNEL]("node-1", b"\x04met")  # a bad payload is logged and dropped
    assert a.inbox == [(2, b"z")] and b.inbox == [(2, b"x")]
    with pytest.raises(ValueError):
        hub.transport("")
    with pytest.raises(ValueError):
        RaftHub(FakeLinks("node-9"), NAMES)


async def _until(condition, timeout=20.0):
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


async def test_two_groups_commit_over_real_links_and_survive_a_cut():
    from mqemu.ha.proxy import open_proxies

    names = sorted(NAMES)
    async with open_proxies() as proxies, trio.open_nursery() as nursery:
        pair = {}
        for x in names:
            for y in names:
                if x != y:
                    pair[x, y] = await proxies.add(f"{x}->{y}", ("127.0.0.1", 1))
        links, hubs, runners = {}, {}, {}
        for x in names:
            links[x] = NodeLinks(x, "c1", {y: ("127.0.0.1", pair[x, y].listen_port) for y in names if y != x},
                                 timing=LINK_TIMINGS["fast"])
            await nursery.start(links[x].run)
        for (_x, y), proxy in pair.items():
            proxy.upstream = ("127.0.0.1", links[y].port)
        machines = {}
        for x in names:
            hubs[x] = RaftHub(links[x], names)
            await nursery.start(hubs[x].run)
            for group in ("meta", "queue-a"):
                machines[x, group] = ListMachine()
                runners[x, group] = Runner(hubs[x].id, hubs[x].members, MemoryStorage(), hubs[x].transport(group),
                                           machines[x, group], tick=0.01, config=Config(election_ticks=15),
                                           rng=random.Random(hash((x, group))))
                await nursery.start(runners[x, group].run)

        async def commit(group, data):
            while True:
                leaders = [r for (x, g), r in runners.items() if g == group and r.is_leader]
                if leaders:
                    try:
                        with trio.move_on_after(2):
                            return await leaders[0].commit([data])
                    except NotLeader:
                        pass
                await trio.sleep(0.02)

        for i in range(20):
            await commit("meta", b"m%d" % i)
            await commit("queue-a", b"a%d" % i)
        await _until(lambda: all(len(machines[x, g].items) == 20 for x in names for g in ("meta", "queue-a")))
        assert all(machines[x, "meta"].items == [b"m%d" % i for i in range(20)] for x in names)
        assert all(hubs[x].frames_sent < hubs[x].records_sent for x in names if hubs[x].records_sent > 50)
        # cut node-1 off both ways: the other two commit; node-1 catches up after the heal
        for (x, y), proxy in pair.items():
            if "node-1" in (x, y):
                proxy.add_toxic("down", name="cut")
        await commit("meta", b"while-cut")
        assert b"while-cut" not in machines["node-1", "meta"].items
        for (x, y), proxy in pair.items():
            if "node-1" in (x, y):
                proxy.remove_toxic("cut")
        await _until(lambda: machines["node-1", "meta"].items[-1:] == [b"while-cut"])
        nursery.cancel_scope.cancel()
