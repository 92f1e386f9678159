"""Quorum queues (issue 13 item 5): confirmed enqueues/s, and the machine's cost per command.

- ``confirmed``: one broker whose quorum queue runs its three-member Raft group in this
  process (``InProcessGroups``: loopback links, ``FileStorage`` with fsync in ``--dir``);
  ``--clients`` tasks each publish ``--batch`` persistent messages through
  ``VirtualHost.publish_safe`` in one scheduler pass and wait for the promise (the confirm),
  until ``--messages`` are confirmed. Reports confirmed messages/s, Raft entries and fsyncs.
  ``--classic`` runs the same clients against a durable classic queue on the SQLite store
  for the side-by-side figure.
- ``paths``: the two paths a cluster pays per message, in one process without I/O: the
  leader's (``--batch`` persistent messages with AMQP property bytes published, the previous
  batch's deliveries acked one by one, then the batch committed and applied with
  ``LocalReplicator``) and a follower's apply of that same log (decode, machine, carry out).
  ``--only leader|follower`` runs one path once (for callgrind: the difference between two
  ``--messages`` counts, divided, is the instructions per message).
- ``cost``: microseconds per message, in one process without I/O, of the classic
  ``Queue.publish`` (transient), ``QueueMachine.enqueue``, a quorum queue's whole leader path
  (encode, batch, decode, apply; ``LocalReplicator`` flushed once per ``--batch``), and the
  settle of a consumed message in each.

Usage: python bench/bench_quorum.py [confirmed|cost] [--messages N] [--rounds R] ...
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from typing import Any

import trio

from mqemu.broker.consumer import Consumer
from mqemu.broker.core import Broker
from mqemu.broker.message import Message
from mqemu.broker.queue_machine import QueueMachine
from mqemu.broker.quorum_codec import split
from mqemu.broker.quorum_replication import Committed, LocalReplicator
from mqemu.ha.raft.member import Config
from mqemu.ha.raft.replicator import InProcessGroups

BODY = b"x" * 100


class Sink:
    blocked = False

    def __init__(self) -> None:
        self.got: list = []

    def deliver(self, consumer: Any, entry: Any) -> None:
        self.got.append(entry)

    def consumer_cancelled(self, consumer: Any) -> None:
        pass


async def confirmed(messages: int, batch: int, clients: int, directory: str, classic: bool,
                    election_ticks: int = 50) -> tuple[float, str]:
    groups = InProcessGroups(directory, config=Config(election_ticks=election_ticks, snapshot_every=100_000))
    if classic:
        from mqemu.broker.store.sqlite import SQLiteStore
        store = SQLiteStore(directory)
        broker = Broker(store=store)
    else:
        broker = Broker(replicators=groups)
    async with trio.open_nursery() as nursery:
        if classic:
            broker.recover(await store.open())
            await nursery.start(store.run)
        vh = broker.vhosts["/"]
        args = {"x-queue-type": "classic" if classic else "quorum"}
        q = vh.declare_queue("bench", durable=True, arguments=args)
        if not classic:
            head = groups.groups[("/", "bench")][0]
            while not head.leading:
                await trio.sleep(0.01)
        left = [messages]
        props = {"delivery_mode": 2}

        async def client() -> None:
            while left[0] > 0:
                n = min(batch, left[0])
                left[0] -= n
                promise = None
                for _ in range(n):
                    promise = vh.publish_safe("", "bench", Message("", "bench", BODY, props))[2]
                done = trio.Event()
                assert promise is not None
                promise.then(done.set)
                await done.wait()

        t0 = time.perf_counter()
        async with trio.open_nursery() as clients_nursery:
            for _ in range(clients):
                clients_nursery.start_soon(client)
        elapsed = time.perf_counter() - t0
        if classic:
            info = f"store ready={len(q.ready)}"
        else:
            reps = groups.groups[("/", "bench")]
            info = (f"entries={head.entries} fsyncs={[r.runner.saves for r in reps]} "
                    f"leaderships={[r.terms_led for r in reps]} ready={len(q.ready)}")
        nursery.cancel_scope.cancel()
    if classic:
        await store.close(flush=False)
    return messages / elapsed, info


def cost(messages: int, batch: int) -> dict[str, float]:
    out: dict[str, float] = {}
    msgs = [Message("", "q", BODY, {"delivery_mode": 1}) for _ in range(messages)]

    vh = Broker().vhosts["/"]
    q = vh.declare_queue("classic", arguments={"x-queue-type": "classic"})
    t0 = time.perf_counter()
    for m in msgs:
        q.publish(m, 0.0)
    out["classic publish"] = (time.perf_counter() - t0) / messages * 1e6
    sink = Sink()
    c = Consumer(q, "c", sink, no_ack=False, prefetch=0)
    q.add_consumer(c)
    t0 = time.perf_counter()
    for e in sink.got:
        q.ack(e, c)
    out["classic deliver+ack (ack only)"] = (time.perf_counter() - t0) / messages * 1e6

    machine = QueueMachine(durable=False)
    t0 = time.perf_counter()
    for m in msgs:
        machine.enqueue(m, 0.0)
    out["machine enqueue"] = (time.perf_counter() - t0) / messages * 1e6
    machine.consumer_added("c", 0, 0.0)
    ids = list(machine.consumers["c"].checked_out)
    t0 = time.perf_counter()
    for mid in ids:
        machine.settle("c", (mid,), 0.0)
    out["machine settle"] = (time.perf_counter() - t0) / messages * 1e6

    reps: list[LocalReplicator] = []
    qvh = Broker(replicators=lambda v, n: reps.append(LocalReplicator()) or reps[-1]).vhosts["/"]
    qq = qvh.declare_queue("qq", durable=True, arguments={"x-queue-type": "quorum"})
    rep = reps[0]
    t0 = time.perf_counter()
    for i, m in enumerate(msgs):
        qq.publish(m, 0.0)
        if i % batch == batch - 1:
            rep.flush()
    rep.flush()
    out["quorum publish (encode+decode+apply)"] = (time.perf_counter() - t0) / messages * 1e6
    qsink = Sink()
    qc = Consumer(qq, "c", qsink, no_ack=False, prefetch=0)
    qq.add_consumer(qc)
    rep.flush()
    t0 = time.perf_counter()
    for i, e in enumerate(qsink.got):
        qq.ack(e, qc)
        if i % batch == batch - 1:
            rep.flush()
    rep.flush()
    out["quorum ack (encode+decode+apply)"] = (time.perf_counter() - t0) / messages * 1e6
    assert not qq.machine.messages
    return out


class _Follower:
    """A member that never leads: what it proposes goes nowhere."""

    is_leader = False

    def __init__(self) -> None:
        self.member: Any = None

    def start(self, member: Any) -> None:
        self.member = member

    def propose(self, command: bytes) -> Any:
        return Committed()


def paths(messages: int, batch: int, only: str | None = None) -> dict[str, float]:
    log: list[bytes] = []
    reps: list[LocalReplicator] = []
    vh = Broker(replicators=lambda v, n: reps.append(LocalReplicator(log=log)) or reps[-1]).vhosts["/"]
    q = vh.declare_queue("qq", durable=True, arguments={"x-queue-type": "quorum"})
    rep, sink = reps[0], Sink()
    c = Consumer(q, "c", sink, no_ack=False, prefetch=1000)
    q.add_consumer(c)
    rep.flush()
    props = {"delivery_mode": 2, "content_type": "application/octet-stream"}
    raw = b"\x90\x00\x18application/octet-stream\x02"  # those properties as AMQP sends them
    msgs = [Message("", "qq", b"x" * 256, props, raw) for _ in range(messages)]
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    for i in range(0, messages + batch, batch):
        for m in msgs[i:i + batch]:
            q.publish(m, 1.0)
        got, sink.got = sink.got, []
        for e in got:
            q.ack(e, c)
        rep.flush()
    out["leader: publish + deliver + ack"] = (time.perf_counter() - t0) / messages * 1e6
    assert not q.machine.messages
    if only == "leader":
        return out
    fq = Broker(replicators=lambda v, n: _Follower()).vhosts["/"].declare_queue(
        "qq", durable=True, arguments={"x-queue-type": "quorum"})
    t0 = time.perf_counter()
    for b in log:
        for command in split(b):
            fq.apply(command)
    out["follower: apply"] = (time.perf_counter() - t0) / messages * 1e6
    assert not fq.machine.messages
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", nargs="?", default="confirmed", choices=["confirmed", "cost", "paths"])
    p.add_argument("--only", choices=["leader", "follower"], default=None)
    p.add_argument("--messages", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--classic", action="store_true")
    p.add_argument("--dir", default=None)
    p.add_argument("--election-ticks", type=int, default=50,
                   help="10 ms ticks before a follower campaigns (three members share one process and GIL here)")
    a = p.parse_args()
    if a.mode == "paths" and a.only:
        paths(a.messages, a.batch, a.only)
        return
    if a.mode in ("cost", "paths"):
        runs = [(cost if a.mode == "cost" else paths)(a.messages, a.batch) for _ in range(a.rounds)]
        for key in runs[0]:
            vals = [r[key] for r in runs]
            print(f"{key:40s} median {statistics.median(vals):6.2f} us  ({min(vals):.2f} - {max(vals):.2f})")
        return
    rates = []
    for _ in range(a.rounds):
        directory = tempfile.mkdtemp(prefix="bench-quorum-", dir=a.dir)
        try:
            rate, info = trio.run(confirmed, a.messages, a.batch, a.clients, directory, a.classic,
                                  a.election_ticks)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        rates.append(rate)
        print(f"{'classic' if a.classic else 'quorum'}: {rate:,.0f} confirmed msg/s  {info}")
    print(f"median {statistics.median(rates):,.0f} confirmed msg/s ({min(rates):,.0f} - {max(rates):,.0f})")


if __name__ == "__main__":
    main()
