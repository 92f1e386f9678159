"""Node-to-node links in one trio program: three ``NodeLinks`` joined through one proxy per
directed pair, as a cluster topology joins them; frames delivered in order per channel, and
each end's up/down state when one direction or both are cut, loudly or silently."""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest
import trio

from mqemu.ha.links import LINK_TIMINGS, NodeLinks, parse_peers
from mqemu.ha.proxy import open_proxies

pytestmark = pytest.mark.timeout(30)

NAMES = ("node-1", "node-2", "node-3")
TIMING = LINK_TIMINGS["fast"]


@asynccontextmanager
async def cluster(names=NAMES, cluster_names=None):
    """Nodes linked through proxies ``a->b``; yields (links by name, proxies by pair)."""
    async with open_proxies() as proxies, trio.open_nursery() as nursery:
        pair = {}
        for a in names:
            for b in names:
                if a != b:
                    pair[a, b] = await proxies.add(f"{a}->{b}", ("127.0.0.1", 1))
        links = {}
        for a in names:
            peers = {b: ("127.0.0.1", pair[a, b].listen_port) for b in names if b != a}
            name = (cluster_names or {}).get(a, "c1")
            links[a] = NodeLinks(a, name, peers, timing=TIMING)
            await nursery.start(links[a].run)
        for (_a, b), proxy in pair.items():
            proxy.upstream = ("127.0.0.1", links[b].port)
        yield links, pair
        nursery.cancel_scope.cancel()


async def until(condition, timeout=10.0):
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


def all_up(links):
    return all(link.up(peer) for link in links.values() for peer in link.peers)


async def test_frames_arrive_in_order_per_channel_with_the_sender_named():
    async with cluster() as (links, _):
        await until(lambda: all_up(links))
        got = {name: [] for name in NAMES}
        for name, link in links.items():
            link.on("raft", lambda peer, data, name=name: got[name].append((peer, data)))
        for i in range(1000):
            assert links["node-1"].send("node-2", "raft", b"%d" % i)
        assert links["node-3"].send("node-2", "raft", b"x" * 100_000)
        assert links["node-1"].send("node-3", "other", b"no handler: dropped")
        await until(lambda: len(got["node-2"]) == 1001)
        from_1 = [d for p, d in got["node-2"] if p == "node-1"]
        assert from_1 == [b"%d" % i for i in range(1000)]
        assert ("node-3", b"x" * 100_000) in got["node-2"]
        assert got["node-1"] == got["node-3"] == []
        assert links["node-2"].state()["node-1"]["received"] == 1000
        assert links["node-1"].state()["node-2"]["sent"] == 1000


async def test_a_one_way_cut_is_seen_at_both_ends_and_heals():
    async with cluster() as (links, pair):
        await until(lambda: all_up(links))
        pair["node-1", "node-2"].add_toxic("down")  # refused and cut: node-1 -> node-2 only
        await until(lambda: links["node-1"].state()["node-2"]["out"] == "down"
                    and links["node-2"].state()["node-1"]["in"] == "down")
        assert not links["node-1"].send("node-2", "raft", b"lost")
        assert links["node-2"].state()["node-1"]["out"] == "up"  # the other direction still works
        assert links["node-1"].state()["node-2"]["in"] == "up"
        assert links["node-1"].up("node-3") and links["node-3"].up("node-2")
        pair["node-1", "node-2"].remove_toxic("down")
        await until(lambda: all_up(links))
        got = []
        links["node-2"].on("raft", lambda peer, data: got.append(data))
        assert links["node-1"].send("node-2", "raft", b"back")
        await until(lambda: got == [b"back"])


async def test_a_silent_partition_is_found_by_the_heartbeat_timeout():
    async with cluster() as (links, pair):
        await until(lambda: all_up(links))
        start = trio.current_time()
        for a, b in (("node-1", "node-3"), ("node-3", "node-1")):
            for stream in ("upstream", "downstream"):
                pair[a, b].add_toxic("timeout", name=f"drop-{stream}", stream=stream, timeout=0)
        await until(lambda: not links["node-1"].up("node-3") and not links["node-3"].up("node-1"))
        assert trio.current_time() - start >= TIMING.timeout * 0.5  # nothing said it: the timeout did
        # a reconnect meets the same silence: its hello goes unanswered
        await trio.sleep(TIMING.timeout * 1.5)
        assert links["node-1"].state()["node-3"] == {**links["node-1"].state()["node-3"], "out": "down", "in": "down"}
        assert links["node-1"].up("node-2") and links["node-2"].up("node-3")
        for a, b in (("node-1", "node-3"), ("node-3", "node-1")):
            for stream in ("upstream", "downstream"):
                pair[a, b].remove_toxic(f"drop-{stream}")
            pair[a, b].cut(reset=True)
        await until(lambda: all_up(links))


async def test_a_failing_callback_ends_that_connection_only():
    async with cluster(names=("node-1", "node-2")) as (links, _):
        await until(lambda: all_up(links))
        got = []

        def handler(peer, data):
            if data == b"bad":
                raise RuntimeError("a bug in a channel's handler")
            got.append(data)

        links["node-2"].on("raft", handler)
        changes = []
        links["node-2"].on_change = lambda *change: changes.append(change)
        assert links["node-1"].send("node-2", "raft", b"bad")
        await until(lambda: ("node-1", "in", False) in changes)  # the connection ended ...
        await until(lambda: all_up(links))  # ... and the link came back
        assert links["node-1"].send("node-2", "raft", b"good")
        await until(lambda: got == [b"good"])


async def test_a_node_of_another_cluster_is_refused():
    async with cluster(names=("node-1", "node-2"), cluster_names={"node-2": "c2"}) as (links, _):
        with trio.move_on_after(TIMING.timeout * 2):
            await until(lambda: links["node-1"].state()["node-2"]["out"] == "up")
            raise AssertionError("a link across clusters came up")
        assert links["node-1"].state()["node-2"]["in"] == "down"


async def test_a_restarted_peer_is_reconnected():
    async with open_proxies() as proxies, trio.open_nursery() as nursery:
        p12 = await proxies.add("1->2", ("127.0.0.1", 1))
        p21 = await proxies.add("2->1", ("127.0.0.1", 1))
        one = NodeLinks("node-1", "c", {"node-2": ("127.0.0.1", p12.listen_port)}, timing=TIMING)
        await nursery.start(one.run)
        p21.upstream = ("127.0.0.1", one.port)
        for _ in range(2):  # node-2 starts, stops, starts again on a new port
            async with trio.open_nursery() as two_nursery:
                two = NodeLinks("node-2", "c", {"node-1": ("127.0.0.1", p21.listen_port)}, timing=TIMING)
                await two_nursery.start(two.run)
                p12.upstream = ("127.0.0.1", two.port)
                await until(lambda two=two: one.up("node-2") and two.up("node-1"))
                two_nursery.cancel_scope.cancel()
            await until(lambda: not one.up("node-2"))
        nursery.cancel_scope.cancel()


def test_parse_peers():
    assert parse_peers("node-2=127.0.0.1:4001, node-3=[::1]:4002,") == {
        "node-2": ("127.0.0.1", 4001), "node-3": ("::1", 4002)}
    for bad in ("node-2", "node-2=host", "=h:1", "n=h:x"):
        with pytest.raises(ValueError):
            parse_peers(bad)
