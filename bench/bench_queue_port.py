#!/usr/bin/env python3
"""The queue's hot path in process: publish -> dispatch -> a stub consumer -> ack, N
messages through a vhost, best of several rounds (no sockets).

``memory``: a transient queue on the memory store. ``sqlite``: a durable queue, persistent
messages, on a SQLite store (each message is added to the store and removed again before its
batch is taken: the store calls without disk writes).

usage: .venv/bin/python bench/bench_queue_port.py [--n 200000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import trio

from mqemu.broker.consumer import Consumer
from mqemu.broker.core import Broker
from mqemu.broker.message import Message
from mqemu.broker.store.sqlite import SQLiteStore


class Owner:
    blocked = False

    def __init__(self) -> None:
        self.last = None

    def deliver(self, consumer, entry) -> None:
        self.last = entry

    def consumer_cancelled(self, consumer) -> None:
        pass


def loop(broker: Broker, n: int, durable: bool) -> float:
    vh = broker.vhosts["/"]
    name = f"bench.{time.monotonic_ns()}"
    q = vh.declare_queue(name, durable=durable)
    owner = Owner()
    c = Consumer(q, "c", owner, no_ack=False, exclusive=False, priority=0, prefetch=0)
    q.add_consumer(c)
    props = {"delivery_mode": 2} if durable else {}
    publish, ack = vh.publish, q.ack
    started = time.perf_counter()
    for _ in range(n):
        publish("", name, Message("", name, b"x" * 64, props))
        ack(owner.last, c)
    took = time.perf_counter() - started
    vh.delete_queue(name)
    return took


async def sqlite_rounds(n: int, rounds: int) -> list[float]:
    with tempfile.TemporaryDirectory() as d:
        store = SQLiteStore(d)
        broker = Broker(store=store)
        await store.open()
        out = [loop(broker, n, True) for _ in range(rounds)]
        await store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    mem = [loop(Broker(), a.n, False) for _ in range(a.rounds)]
    sql = trio.run(sqlite_rounds, a.n, a.rounds)
    for label, times in (("memory", mem), ("sqlite", sql)):
        best = min(times)
        print(f"{label}: {a.n} publish+ack best {best:.3f}s = {a.n / best:,.0f} msg/s "
              f"(rounds {', '.join(f'{t:.3f}' for t in times)})")


if __name__ == "__main__":
    main()
