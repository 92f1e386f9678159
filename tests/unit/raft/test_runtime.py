"""Three trio runners in one process over the loopback transport, with file storage: commits,
a leader killed (its task cancelled: nothing more written) and restarted from its files."""

from __future__ import annotations

import random
import threading

import pytest
import trio

from mqemu.ha.raft.member import Config
from mqemu.ha.raft.runtime import ListMachine, LoopbackNetwork, LostProposal, NotLeader, Runner
from mqemu.ha.raft.storage import FileStorage

pytestmark = pytest.mark.timeout(60)

IDS = [0, 1, 2]


class Node:
    def __init__(self, net: LoopbackNetwork, i: int, path) -> None:
        self.net, self.i, self.path = net, i, path
        self.machine = ListMachine()
        self.runner: Runner | None = None
        self.scope: trio.CancelScope | None = None

    async def start(self, nursery: trio.Nursery) -> None:
        self.machine = ListMachine()
        self.runner = Runner(self.i, IDS, FileStorage(str(self.path / f"m{self.i}")), self.net.transport(self.i),
                             self.machine, tick=0.01, config=Config(election_ticks=10, snapshot_every=50),
                             rng=random.Random(self.i))
        self.scope = trio.CancelScope()

        async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
            assert self.scope is not None and self.runner is not None
            with self.scope:
                await self.runner.run(task_status=task_status)

        await nursery.start(run)

    def kill(self) -> None:
        assert self.scope is not None
        self.scope.cancel()


async def leader_of(nodes: list[Node], exclude: int | None = None) -> Node:
    while True:
        for n in nodes:
            if n.i != exclude and n.runner is not None and n.runner.is_leader:
                return n
        await trio.sleep(0.01)


async def commit(nodes: list[Node], data: bytes | list[bytes], exclude: int | None = None) -> int:
    """Commit through whichever node leads; a proposal that a new leader's entries replaced
    (an election on a loaded machine) was never committed, so it is proposed again."""
    while True:
        leader = await leader_of(nodes, exclude)
        assert leader.runner is not None
        try:
            return await leader.runner.commit(data if isinstance(data, list) else [data])
        except (NotLeader, LostProposal):
            await trio.sleep(0.01)


async def test_three_runners_commit_through_a_leader_kill(tmp_path):
    net = LoopbackNetwork(IDS)
    nodes = [Node(net, i, tmp_path) for i in IDS]
    async with trio.open_nursery() as nursery:
        for n in nodes:
            await n.start(nursery)
        with trio.fail_after(30):
            for k in range(120):   # past snapshot_every: the logs are compacted
                await commit(nodes, b"a%d" % k)
            first = await leader_of(nodes)
            first.kill()
            await commit(nodes, b"b0", exclude=first.i)
            second = await leader_of(nodes, exclude=first.i)
            assert second.runner is not None and second.runner.member is not None
            assert second.runner.member.term > 1
            await commit(nodes, [b"b%d" % k for k in range(1, 200)], exclude=first.i)
            await first.start(nursery)   # from its files: snapshot and log
            want = [b"a%d" % k for k in range(120)] + [b"b%d" % k for k in range(200)]
            while not all(n.machine.items == want for n in nodes):
                await trio.sleep(0.01)
            while True:  # a linearizable read through whichever node leads now
                leader = await leader_of(nodes)
                try:
                    assert leader.runner is not None and await leader.runner.read() >= len(want)
                    break
                except NotLeader:
                    await trio.sleep(0.01)
            assert first.runner is not None and first.runner.member is not None
            assert first.runner.member.snap_index > 0
        nursery.cancel_scope.cancel()


async def test_a_follower_refuses_proposals(tmp_path):
    net = LoopbackNetwork(IDS)
    nodes = [Node(net, i, tmp_path) for i in IDS]
    async with trio.open_nursery() as nursery:
        for n in nodes:
            await n.start(nursery)
        with trio.fail_after(10):
            leader = await leader_of(nodes)
            follower = next(n for n in nodes if n is not leader)
            assert follower.runner is not None
            with pytest.raises(NotLeader):
                follower.runner.propose([b"x"])
            with pytest.raises(NotLeader):
                await follower.runner.read()
        nursery.cancel_scope.cancel()


class GatedStorage(FileStorage):
    """A leader's disk that holds every write until the test opens the gate."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.gate.set()

    def save(self, ready) -> None:
        self.gate.wait(10)
        super().save(ready)


async def test_a_leader_s_appends_reach_the_followers_while_its_own_write_is_in_flight(tmp_path):
    net = LoopbackNetwork(IDS)
    nodes = [Node(net, i, tmp_path) for i in IDS]
    async with trio.open_nursery() as nursery:
        for n in nodes:
            await n.start(nursery)
        with trio.fail_after(20):
            await commit(nodes, b"first")
            leader = await leader_of(nodes)
            assert leader.runner is not None and leader.runner.member is not None
            storage = GatedStorage(str(tmp_path / "unused"))
            storage.__dict__.update(leader.runner.storage.__dict__)  # the same files, now gated
            storage.gate = threading.Event()
            leader.runner.storage = storage
            done = trio.Event()

            async def propose() -> None:
                assert leader.runner is not None
                await leader.runner.commit([b"second"])
                done.set()

            nursery.start_soon(propose)
            index = leader.runner.member.last_index + 1
            followers = [n for n in nodes if n is not leader]
            # the followers get (and write) the entry while the leader's own write waits
            while not all(f.runner is not None and f.runner.member is not None
                          and f.runner.member.persisted_index >= index for f in followers):
                await trio.sleep(0.01)
            assert not done.is_set() and leader.runner.early_sends >= 1
            storage.gate.set()
            await done.wait()
            while not all(n.machine.items == [b"first", b"second"] for n in nodes):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
