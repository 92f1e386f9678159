"""Memory bounded under a flood: the pager's backlog blocks publishers past its bound (and
while the page file cannot be written), the memory alarm counts what the node holds besides
bodies in memory, and each alarm is logged under its own name when it clears."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

import pytest
import trio
from mqemu.broker.config import BrokerConfig
from mqemu.broker.core import INDEX_BYTES, Broker
from mqemu.broker.message import Message
from mqemu.broker.queue import Consumer
from mqemu.broker.store import pagefile
from mqemu.broker.store.memory import MemoryStore
from mqemu.broker.store.sqlite import SQLiteStore

BODY = b"x" * 1000


class Owner:
    def __init__(self) -> None:
        self.blocked = False
        self.got: list[bytes] = []

    def deliver(self, consumer, entry) -> None:
        self.got.append(entry.message.body)

    def consumer_cancelled(self, consumer) -> None:
        pass


@pytest.fixture(params=["memory", "sqlite"])
def kind(request) -> str:
    return request.param


@asynccontextmanager
async def running(store, **config) -> AsyncIterator[Broker]:
    broker = Broker(BrokerConfig(**config), store=store)
    broker.recover(await store.open())
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            yield broker
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await store.close()


def make_store(kind: str, tmp_path):
    return MemoryStore() if kind == "memory" else SQLiteStore(str(tmp_path / "data"))


def publish(broker: Broker, queue: str, n: int, start: int = 0) -> None:
    vh = broker.vhosts["/"]
    for i in range(start, start + n):
        vh.publish("", queue, Message("", queue, b"%06d" % i + BODY, {}))


async def wait_for(predicate, seconds: float = 20) -> None:
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.01)


async def test_pager_backlog_blocks_publishers_until_written(kind, tmp_path, monkeypatch):
    monkeypatch.setattr(pagefile, "BACKLOG_HIGH", 256 << 10)
    gate = threading.Event()
    real_work = pagefile.Pager._work

    def slow_work(self, writes, reads, discards):
        gate.wait(10)  # the disk is slower than the flood
        return real_work(self, writes, reads, discards)

    monkeypatch.setattr(pagefile.Pager, "_work", slow_work)
    async with running(make_store(kind, tmp_path), memory_budget=64 << 10,
                       memory_high_watermark=1 << 30) as broker:
        alarms: list[bool] = []
        broker.alarm_listeners.add(alarms.append)
        q = broker.vhosts["/"].declare_queue("flood")
        publish(broker, "flood", 1000)
        pager = broker.store.pager
        # Past the bound the alarm is set at once, not at the next periodic check.
        assert pager.backlogged and broker.memory_alarm and alarms == [True]
        assert broker.alarm_reason == "low on memory"
        ready, other = broker.memory_used()
        assert ready == q.bytes_ready and other >= pager.backlog_bytes > pagefile.BACKLOG_HIGH
        assert other >= q.messages_paged * INDEX_BYTES
        gate.set()
        await wait_for(lambda: not broker.memory_alarm)
        assert alarms == [True, False] and pager.backlog_bytes < pagefile.BACKLOG_HIGH // 2
        owner = Owner()
        q.add_consumer(Consumer(q, "c", owner, no_ack=True))
        await wait_for(lambda: len(owner.got) == 1000)
        assert owner.got == [b"%06d" % i + BODY for i in range(1000)]


async def test_page_file_disk_full_holds_the_alarm_and_logs_once(kind, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(pagefile, "BACKLOG_HIGH", 256 << 10)
    monkeypatch.setattr(pagefile, "RETRY", 0.01)
    full = True
    real_work = pagefile.Pager._work

    def work(self, writes, reads, discards):
        if full and writes:
            raise sqlite3.OperationalError("database or disk is full")
        return real_work(self, writes, reads, discards)

    monkeypatch.setattr(pagefile.Pager, "_work", work)
    async with running(make_store(kind, tmp_path), memory_budget=64 << 10,
                       memory_high_watermark=1 << 30) as broker:
        q = broker.vhosts["/"].declare_queue("flood")
        publish(broker, "flood", 100)  # under the backlog bound: blocked because it fails
        await wait_for(lambda: broker.memory_alarm)
        assert broker.store.pager.failing and broker.alarm_reason == "low on disk"
        await trio.sleep(0.2)  # some twenty retries
        publish(broker, "flood", 900, start=100)
        assert broker.memory_alarm
        full = False
        await wait_for(lambda: not broker.memory_alarm)
        owner = Owner()
        q.add_consumer(Consumer(q, "c", owner, no_ack=True))
        await wait_for(lambda: len(owner.got) == 1000)
        assert owner.got == [b"%06d" % i + BODY for i in range(1000)]
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("mqemu")]
    assert sum("page file cannot be written" in line for line in lines) == 1
    assert sum("page file written again" in line for line in lines) == 1
    assert [line for line in lines if "alarm" in line] == ["disk alarm set: publishers blocked",
                                                          "disk alarm cleared"]


async def test_store_disk_alarm_clears_as_disk_alarm(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    store = SQLiteStore(str(tmp_path / "data"))
    full = True
    real_execute = store._execute

    def execute(con, ops):
        if full:
            raise sqlite3.OperationalError("database or disk is full")
        return real_execute(con, ops)

    monkeypatch.setattr(store, "_execute", execute)
    monkeypatch.setattr("mqemu.broker.store.sqlite.RETRY_FIRST", 0.01)
    async with running(store) as broker:
        broker.vhosts["/"].declare_queue("q", durable=True)
        broker.vhosts["/"].publish("", "q", Message("", "q", b"kept", {"delivery_mode": 2}))
        await wait_for(lambda: broker.memory_alarm)
        full = False
        await wait_for(lambda: not broker.memory_alarm)
    alarms = [r.getMessage() for r in caplog.records if r.name == "mqemu.broker"]
    assert alarms == ["disk alarm set: publishers blocked", "disk alarm cleared"]


class StuckSession:
    """What the memory check reads of a session whose client does not read."""

    def __init__(self, outbound: int, sending: int) -> None:
        self.outbound_bytes, self.sending_bytes = outbound, sending


def test_memory_check_counts_outbound_buffers_of_clients_that_do_not_read(caplog):
    broker = Broker(BrokerConfig(memory_high_watermark=10 << 20))
    alarms: list[bool] = []
    broker.alarm_listeners.add(alarms.append)
    stuck = [StuckSession(3 << 20, 1 << 20) for _ in range(2)]
    broker.held_outbound.update(stuck)
    broker.check_memory()
    assert broker.memory_in_use == 8 << 20 and not broker.memory_alarm
    stuck[0].outbound_bytes = 5 << 20
    broker.check_memory()
    assert broker.memory_in_use == 10 << 20 and broker.memory_alarm and alarms == [True]
    broker.held_outbound.discard(stuck[0])  # it read (or went away)
    broker.check_memory()
    assert not broker.memory_alarm and alarms == [True, False]


async def test_stop_waits_for_one_hop_of_the_backlog_at_most(kind, tmp_path, monkeypatch):
    real_work = pagefile.Pager._work
    hops: list[int] = []

    def work(self, writes, reads, discards):
        size = sum(len(m.body) for _, m in writes)
        hops.append(size)
        time.sleep(size / (4 << 20))  # a disk that writes 4 MiB a second
        return real_work(self, writes, reads, discards)

    monkeypatch.setattr(pagefile.Pager, "_work", work)
    store = make_store(kind, tmp_path)
    async with running(store, memory_budget=64 << 10, memory_high_watermark=1 << 30) as broker:
        broker.vhosts["/"].declare_queue("flood")
        publish(broker, "flood", 30_000)  # ~30 MiB waiting for the page file
        await wait_for(lambda: hops)
        started = trio.current_time()
    # Leaving the block cancelled the pager and closed the store.
    assert trio.current_time() - started < 5  # one hop (2 s), not the whole backlog (7.5 s)
    assert max(hops) <= pagefile.HOP_BYTES + len(BODY) + 6
    assert store.pager.backlog_bytes == 0 and sum(hops) < 30_000 * 1006


async def test_a_deleted_paged_queue_is_discarded_in_bounded_hops(kind, tmp_path, monkeypatch):
    monkeypatch.setattr(pagefile, "HOP_DISCARDS", 1000)
    real_work = pagefile.Pager._work
    discarded: list[int] = []

    def work(self, writes, reads, discards):
        discarded.append(len(discards))
        return real_work(self, writes, reads, discards)

    monkeypatch.setattr(pagefile.Pager, "_work", work)
    async with running(make_store(kind, tmp_path), memory_budget=64 << 10,
                       memory_high_watermark=1 << 30) as broker:
        vh = broker.vhosts["/"]
        vh.declare_queue("big")
        publish(broker, "big", 5000)
        pager = broker.store.pager
        await wait_for(lambda: not pager._writes and not pager.backlog_bytes)
        paged = vh.queues["big"].messages_paged
        assert paged > 4000
        vh.delete_queue("big")
        other = vh.declare_queue("other")
        publish(broker, "other", 3000)  # its writes are not held up behind the discards
        # Every row but those of the chunk being read (deleted by that read) is discarded, in
        # hops of at most HOP_DISCARDS. (The pager takes a hop's discards before its worker
        # runs them: an empty ``_discards`` alone does not mean the last hop was counted.)
        await wait_for(lambda: sum(discarded) >= paged - 512 and not pager._discards
                       and not pager._writes and not pager.backlog_bytes)
        assert max(discarded) == 1000
        owner = Owner()
        other.add_consumer(Consumer(other, "c", owner, no_ack=True))
        await wait_for(lambda: len(owner.got) == 3000)
        assert owner.got == [b"%06d" % i + BODY for i in range(3000)]
