"""The metadata group in one trio program: three brokers, each with its ``ClusterMeta`` over real
``NodeLinks`` joined by proxies. A change on any node reaches the others; a node cut off
refuses changes (541) while the others go on; on its return it catches up from a snapshot
(a small ``snapshot_every``), deletions included; a proposer's delete-then-redeclare keeps the
redeclared queue and its messages."""

from __future__ import annotations

import pytest
import trio

from mqemu.broker.core import Broker
from mqemu.broker.errors import InternalError
from mqemu.broker.message import Message
from mqemu.ha.clustering.meta import ClusterMeta
from mqemu.ha.links import LINK_TIMINGS, NodeLinks
from mqemu.ha.proxy import open_proxies
from mqemu.ha.raft.hub import RaftHub
from mqemu.ha.raft.member import Config

pytestmark = pytest.mark.timeout(60)

NAMES = ["node-1", "node-2", "node-3"]
CLASSIC = {"x-queue-type": "classic"}


async def _until(condition, timeout=20.0):
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


async def _three_nodes(proxies, nursery, config):
    """Three nodes' links (each direction through its own proxy: ``pair[x, y]``), Raft hubs
    and metadata groups, running in ``nursery``, once every group is available."""
    pair = {}
    for x in NAMES:
        for y in NAMES:
            if x != y:
                pair[x, y] = await proxies.add(f"{x}->{y}", ("127.0.0.1", 1))
    links, metas, brokers = {}, {}, {}
    for x in NAMES:
        links[x] = NodeLinks(x, "c1", {y: ("127.0.0.1", pair[x, y].listen_port) for y in NAMES if y != x},
                             timing=LINK_TIMINGS["fast"])
        await nursery.start(links[x].run)
    for (_x, y), proxy in pair.items():
        proxy.upstream = ("127.0.0.1", links[y].port)
    for x in NAMES:
        brokers[x] = Broker()
        hub = RaftHub(links[x], NAMES)
        await nursery.start(hub.run)
        metas[x] = ClusterMeta(brokers[x], links[x], hub, None, tick=0.01, config=config)
        await nursery.start(metas[x].run)
    await _until(lambda: all(m.available() for m in metas.values()))
    return pair, links, metas, brokers


async def test_changes_spread_a_cut_node_refuses_and_catches_up_from_a_snapshot():
    async with open_proxies() as proxies, trio.open_nursery() as nursery:
        pair, links, metas, brokers = await _three_nodes(proxies, nursery, Config(election_ticks=15, snapshot_every=5))
        vh = {x: brokers[x].vhosts["/"] for x in NAMES}
        vh["node-2"].declare_queue("old", durable=True, arguments=CLASSIC)
        vh["node-1"].declare_exchange("x", "direct", durable=True)
        await _until(lambda: all("old" in v.queues and "x" in v.exchanges for v in vh.values()))
        assert metas["node-3"].state.queues["/", "old"]["node"] == "node-2"

        for (x, y), proxy in pair.items():
            if "node-3" in (x, y):
                proxy.add_toxic("down", name="cut")
        await _until(lambda: not metas["node-3"].available() and metas["node-1"].available())
        with pytest.raises(InternalError, match="failed to declare queue 'refused' in vhost '/' because the "
                                                "metadata store is unavailable: node-3 cannot reach a majority"):
            vh["node-3"].declare_queue("refused", durable=True, arguments=CLASSIC)
        assert "refused" not in vh["node-3"].queues
        for i in range(12):
            vh["node-1"].declare_queue(f"q{i}", durable=True, arguments=CLASSIC)
            vh["node-1"].bind("x", f"q{i}", f"k{i}")
        vh["node-2"].delete_queue("old")
        await _until(lambda: len(metas["node-1"].state.queues) == 12 and not metas["node-1"].unacked
                     and not metas["node-2"].unacked)
        assert metas["node-1"].runner.member is not None
        for (x, y), proxy in pair.items():
            if "node-3" in (x, y):
                proxy.remove_toxic("cut")
        await _until(lambda: metas["node-3"].state.dump() == metas["node-1"].state.dump())
        assert metas["node-3"].runner.member.snap_index > 0  # it came by a snapshot
        assert "old" not in vh["node-3"].queues and {f"q{i}" for i in range(12)} <= set(vh["node-3"].queues)
        assert len([b for b in vh["node-3"].bindings() if b.source == "x"]) == 12

        # the proposer's own delete, then its redeclare and a message: its delete applied late
        # does not take the new queue away
        v1 = vh["node-1"]
        v1.delete_queue("q0")
        v1.declare_queue("q0", durable=True, arguments=CLASSIC)
        v1.publish("", "q0", Message("", "q0", b"kept", {}))
        await _until(lambda: not metas["node-1"].unacked)
        assert len(v1.queues["q0"].ready) == 1
        await _until(lambda: "q0" in vh["node-2"].queues and ("/", "q0") in metas["node-2"].state.queues)
        nursery.cancel_scope.cancel()


async def test_a_change_is_answered_once_every_node_reached_has_applied_it():
    """``when_spread``: the -ok of a change waits until each peer reached both ways says it has
    applied it (the queue is there when the callback runs); a peer cut off is not waited for."""
    async with open_proxies() as proxies, trio.open_nursery() as nursery:
        pair, links, metas, brokers = await _three_nodes(proxies, nursery, Config(election_ticks=15))
        vh = {x: brokers[x].vhosts["/"] for x in NAMES}
        m1 = metas["node-1"]

        async def declared(name, expect):
            seen = []
            mark = m1.changes
            vh["node-1"].declare_queue(name, durable=True, arguments=CLASSIC)
            assert m1.changes == mark + 1
            m1.when_spread(m1.changes, lambda: seen.append({x: name in v.queues for x, v in vh.items()}))
            assert not seen  # never answered in the declaring call itself
            start = trio.current_time()
            await _until(lambda: seen, timeout=5)
            assert seen == [expect]
            return trio.current_time() - start

        await _until(lambda: all(m.runner.leader is not None for m in metas.values()))
        leader = NAMES[m1.runner.leader]
        slow = "node-3" if leader != "node-3" else "node-2"  # a follower, not the declaring node
        pair[leader, slow].add_toxic("latency", name="slow", stream="upstream", latency=80)  # it applies last
        for i in range(5):
            await declared(f"q{i}", {x: True for x in NAMES})
        pair[leader, slow].remove_toxic("slow")
        for (x, y), proxy in pair.items():
            if slow in (x, y):
                proxy.add_toxic("down", name="cut")
        await _until(lambda: not links["node-1"].up(slow))
        took = await declared("while-cut", {x: x != slow for x in NAMES})
        assert took < 1.0  # node-3 is not reached: not waited for (the bound is 2 s)
        nursery.cancel_scope.cancel()
