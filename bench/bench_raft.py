"""Raft throughput (issue 13 item 6): committed entries/s for three members in one process.

- ``core``: the sans-IO members only, messages handed over in memory and encoded/decoded
  with the codec (``--no-codec`` to skip it), MemoryStorage; the leader proposes batches of
  ``--batch`` 16-byte commands, keeping ``--window`` entries uncommitted at most. Reports
  entries/s and the cost of one entry (all three members' work) in microseconds.
- ``runtime``: three trio ``Runner``s over the loopback transport with ``FileStorage`` in
  ``--dir`` (fsync on unless ``--no-fsync``), ``--clients`` tasks each committing batches.

Usage: python bench/bench_raft.py [core|runtime] [--entries N] [--batch B] [--rounds R]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time

from mqemu.ha.raft import codec
from mqemu.ha.raft.member import LEADER, Config, Member
from mqemu.ha.raft.storage import MemoryStorage


def core(entries: int, batch: int, window: int, use_codec: bool) -> float:
    ids = [0, 1, 2]
    cfg = Config(election_ticks=10, snapshot_every=10 ** 9)
    members = {i: Member(i, ids, random.Random(i), cfg) for i in ids}
    stores = {i: MemoryStorage() for i in ids}
    inbox: list[tuple[int, object]] = []

    def pump() -> None:
        moving = True
        while moving:
            moving = False
            for i, m in members.items():
                if m.has_ready():
                    moving = True
                    r = m.ready()
                    stores[i].save(r)
                    if r.last_index:
                        m.persisted(r.last_index, r.last_term)
                    for dst, msg in r.messages:
                        inbox.append((dst, codec.encode(msg) if use_codec else msg))
            while inbox:
                moving = True
                dst, msg = inbox.pop(0)
                members[dst].step(codec.decode(msg) if use_codec else msg)  # type: ignore[arg-type]

    while not any(m.role == LEADER for m in members.values()):
        for m in members.values():
            m.tick()
        pump()
    leader = next(m for m in members.values() if m.role == LEADER)
    payload = [b"0123456789abcdef"] * batch
    start_commit = leader.commit
    t0 = time.perf_counter()
    while leader.commit - start_commit < entries:
        if leader.last_index - leader.commit < window:
            leader.propose(payload)
        pump()
    dt = time.perf_counter() - t0
    return (leader.commit - start_commit) / dt


async def runtime(entries: int, batch: int, clients: int, fsync: bool, directory: str) -> float:
    import trio

    from mqemu.ha.raft.runtime import ListMachine, LostProposal, LoopbackNetwork, NotLeader, Runner
    from mqemu.ha.raft.storage import FileStorage

    class Counter(ListMachine):
        def apply(self, index: int, term: int, data: bytes) -> None:
            pass

    ids = [0, 1, 2]
    net = LoopbackNetwork(ids, capacity=100000)
    runners = [Runner(i, ids, FileStorage(f"{directory}/m{i}", fsync=fsync), net.transport(i), Counter(),
                      config=Config(election_ticks=10, snapshot_every=10 ** 9), rng=random.Random(i)) for i in ids]
    async with trio.open_nursery() as nursery:
        for r in runners:
            await nursery.start(r.run)
        while not any(r.is_leader for r in runners):
            await trio.sleep(0.01)
        payload = [b"0123456789abcdef"] * batch
        done = [0]
        elections = [0]

        async def client() -> None:
            while done[0] < entries:
                leader = next((r for r in runners if r.is_leader), None)
                if leader is None:
                    await trio.sleep(0.01)
                    continue
                try:
                    await leader.commit(payload)
                except (NotLeader, LostProposal):
                    elections[0] += 1   # a stalled process lost its lease: commit again through the next
                    continue
                done[0] += batch

        t0 = time.perf_counter()
        async with trio.open_nursery() as inner:
            for _ in range(clients):
                inner.start_soon(client)
        dt = time.perf_counter() - t0
        saves = sum(r.saves for r in runners)
        nursery.cancel_scope.cancel()
    print(f"  fsynced batches (three members): {saves}, proposals retried after a leader change: {elections[0]}")
    return done[0] / dt


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", nargs="?", default="core", choices=["core", "runtime"])
    p.add_argument("--entries", type=int, default=200000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--window", type=int, default=8192)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--no-codec", action="store_true")
    p.add_argument("--no-fsync", action="store_true")
    p.add_argument("--dir", default=None)
    a = p.parse_args()
    rates = []
    for rnd in range(a.rounds):
        if a.mode == "core":
            rate = core(a.entries, a.batch, a.window, not a.no_codec)
        else:
            import trio
            d = tempfile.mkdtemp(dir=a.dir)
            try:
                rate = trio.run(runtime, a.entries, a.batch, a.clients, not a.no_fsync, d)
            finally:
                shutil.rmtree(d)
        rates.append(rate)
        print(f"round {rnd}: {rate:,.0f} entries/s ({1e6 / rate:.2f} us per entry, three members)")
    med = statistics.median(rates)
    print(f"median: {med:,.0f} entries/s = {1e6 / med:.2f} us per committed entry")


if __name__ == "__main__":
    main()
