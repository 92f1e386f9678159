"""``ha/clustering/mgmt.ClusterAsk``: the management API's request/answer between nodes, over a
test double of the links (frames delivered in order, a link that can be down or silent), on
trio's mock clock: every peer's answer by name, a peer whose link is down left out at once, a
silent one after the timeout, an answer that fails left out, a late answer ignored."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from mqemu.ha.clustering.mgmt import CHANNEL, TIMEOUT, ClusterAsk

pytestmark = pytest.mark.timeout(30)

NAMES = ["node-1", "node-2", "node-3"]


class Net:
    """Three nodes' links: ``down`` refuses sends to a node, ``silent`` drops them."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.links = {n: FakeLinks(self, n) for n in NAMES}
        self.down: set[str] = set()
        self.silent: set[str] = set()
        self.delay = 0.0


class FakeLinks:
    def __init__(self, net: Net, node: str) -> None:
        self.net, self.node = net, node
        self.handlers: dict = {}

    def on(self, channel, callback) -> None:
        self.handlers[channel] = callback

    def up(self, peer) -> bool:
        return peer not in self.net.down and self.node not in self.net.down

    def send(self, peer, channel, data) -> bool:
        if not self.up(peer):
            return False
        if peer not in self.net.silent:
            async def deliver():
                await trio.sleep(self.net.delay)
                self.net.links[peer].handlers[channel](self.node, data)
            self.net.nursery.start_soon(deliver)
        return True


async def _cluster(nursery, answer=None):
    net = Net(nursery)
    asks = {}
    for n in NAMES:
        def answer_of(op, args, n=n):
            if answer is not None:
                return answer(n, op, args)
            return {"node": n, "op": op, "args": args}
        asks[n] = ClusterAsk(net.links[n], NAMES, answer_of, lambda vh, q: None)
        await nursery.start(asks[n].run)
    return net, asks


@pytest.fixture
def autojump_clock():
    return trio.testing.MockClock(autojump_threshold=0)


async def test_every_peer_answers(nursery, autojump_clock):
    net, asks = await _cluster(nursery)
    got = await asks["node-2"].ask("queues", {"vhost": "/"})
    assert got == {"node-1": {"node": "node-1", "op": "queues", "args": {"vhost": "/"}},
                   "node-3": {"node": "node-3", "op": "queues", "args": {"vhost": "/"}}}
    only = await asks["node-2"].ask("queue", {}, peers=["node-3", "node-2"])  # never itself
    assert list(only) == ["node-3"]


async def test_a_peer_whose_link_is_down_is_left_out_at_once(nursery, autojump_clock):
    net, asks = await _cluster(nursery)
    net.down.add("node-3")
    start = trio.current_time()
    got = await asks["node-1"].ask("node", {})
    assert got["node-3"] is None and got["node-2"]["node"] == "node-2"
    assert trio.current_time() == start  # nothing waited for the node that cannot be reached


async def test_a_silent_peer_is_left_out_after_the_timeout(nursery, autojump_clock):
    net, asks = await _cluster(nursery)
    net.silent.add("node-2")
    start = trio.current_time()
    got = await asks["node-1"].ask("node", {})
    assert got["node-2"] is None and got["node-3"] is not None
    assert trio.current_time() - start == pytest.approx(TIMEOUT)


async def test_a_late_answer_is_ignored(nursery, autojump_clock):
    net, asks = await _cluster(nursery)
    net.delay = TIMEOUT * 0.6  # there and back: later than the timeout
    got = await asks["node-1"].ask("node", {})
    assert got == {"node-2": None, "node-3": None}
    net.delay = 0.0
    await trio.sleep(TIMEOUT * 2)  # the late answers arrive and are dropped
    assert asks["node-1"]._pending == {}
    assert (await asks["node-1"].ask("node", {}))["node-2"] is not None


async def test_a_failing_answer_is_left_out_and_async_answers_work(nursery, autojump_clock):
    async def slow(args):
        await trio.sleep(0.1)
        return args["n"] * 2

    def answer(node, op, args):
        if node == "node-3":
            raise RuntimeError("broken")
        return slow(args)
    net, asks = await _cluster(nursery, answer)
    got = await asks["node-1"].ask("double", {"n": 21})
    assert got == {"node-2": 42, "node-3": None}


async def test_malformed_frames_are_dropped(nursery, autojump_clock):
    net, asks = await _cluster(nursery)
    net.links["node-1"].handlers[CHANNEL]("node-2", b"not json")
    net.links["node-1"].handlers[CHANNEL]("node-2", json.dumps({"a": 999, "ok": 1}).encode())  # no such request
    assert (await asks["node-1"].ask("node", {}))["node-2"] is not None
