"""Queues larger than memory: paging bodies out past the memory budget and reading them back.

Each test runs a real store (memory or SQLite) with its paging task and drives the core by
hand; ``settle()`` waits until the store has served every page-out and page-in.
"""

from __future__ import annotations

from collections import deque
from contextlib import asynccontextmanager
from typing import AsyncIterator

import pytest
import trio
from mqemu.broker.config import BrokerConfig, ConfigError, load_config, parse_budget
from mqemu.broker.core import Broker
from mqemu.broker.errors import PreconditionFailed
from mqemu.broker.message import Message
from mqemu.broker.paging import PagedDeque
from mqemu.broker.queue import Consumer
from mqemu.broker.store.memory import MemoryStore
from mqemu.broker.store.sqlite import SQLiteStore

KIB = b"x" * 1000


class Owner:
    def __init__(self) -> None:
        self.blocked = False
        self.got = []

    def deliver(self, consumer, entry) -> None:
        self.got.append(entry)

    def consumer_cancelled(self, consumer) -> None:
        pass

    def bodies(self) -> list[bytes]:
        return [e.message.body for e in self.got]


class Node:
    def __init__(self, store, broker) -> None:
        self.store, self.broker = store, broker
        self.vhost = broker.vhosts["/"]

    async def settle(self) -> None:
        """Wait until every pending write, read and callback of the store has run."""
        for _ in range(200):
            done = trio.Event()
            self.store.when_durable(self.store.barrier(), done.set)
            with trio.fail_after(5):
                await done.wait()
            await trio.sleep(0.005)
            pager = self.store.pager
            if not (pager._writes or pager._reads or pager._discards) and not any(
                    q._paged is not None and q._paged.loading is not None for q in self.vhost.queues.values()):
                return
        raise AssertionError("the store never went idle")


@pytest.fixture(params=["memory", "sqlite"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def node(kind, tmp_path):
    @asynccontextmanager
    async def opener(budget: int | None = 64 << 10, kind: str = kind) -> AsyncIterator[Node]:
        store = MemoryStore() if kind == "memory" else SQLiteStore(str(tmp_path / "data"))
        broker = Broker(BrokerConfig(memory_budget=-1 if budget is None else budget), store=store)
        snapshot = await store.open()
        broker.recover(snapshot)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(store.run)
                n = Node(store, broker)
                await n.settle()
                yield n
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await store.close()
    return opener


def body(i: int) -> bytes:
    return b"%06d" % i + KIB


def publish(vh, queue: str, n: int, start: int = 0, **props) -> None:
    for i in range(start, start + n):
        vh.publish("", queue, Message("", queue, body(i), dict(props)))


async def test_past_the_budget_bodies_go_to_disk_and_come_back_in_order(node):
    async with node() as s:
        vh = s.vhost
        q = vh.declare_queue("big")
        publish(vh, "big", 3000)
        await s.settle()
        assert len(q.ready) == 3000 and q.statistics().messages_ready == 3000
        assert q.messages_paged > 2000 and isinstance(q.ready, PagedDeque)
        # Only what is in memory counts for the memory alarm: the budget plus one read-ahead chunk.
        assert s.broker.queued_bytes() == q.bytes_ready < (64 << 10) + (1 << 20)
        assert q.statistics().bytes_ready == 3000 * len(body(0))
        owner = Owner()
        q.add_consumer(Consumer(q, "c", owner, no_ack=True))
        await s.settle()
        assert owner.bodies() == [body(i) for i in range(3000)]
        assert len(q.ready) == 0 and type(q.ready) is deque and q._paged is None
        assert s.store.pager.hops > 1


async def test_a_queue_under_budget_keeps_the_plain_fast_path(node):
    async with node(budget=10 << 20) as s:
        q = s.vhost.declare_queue("small")
        publish(s.vhost, "small", 100)
        assert type(q.ready) is deque and q._paged is None and q.bytes_ready == 100 * len(body(0))
        await s.settle()
        assert s.store.pager.written == 0


async def test_paging_off_keeps_everything_in_memory(node):
    async with node(budget=None) as s:
        q = s.vhost.declare_queue("q", arguments={"x-queue-mode": "lazy"})
        publish(s.vhost, "q", 500)
        assert type(q.ready) is deque and q.bytes_ready == 500 * len(body(0))


async def test_lazy_queue_pages_from_the_first_message_and_get_reads_ahead(node):
    async with node(budget=1 << 30) as s:
        vh = s.vhost
        q = vh.declare_queue("lazy", arguments={"x-queue-mode": "lazy"})
        publish(vh, "lazy", 1500)
        assert q.messages_paged == 1500 and q.bytes_ready == 0
        await s.settle()
        assert 0 < q.ready.in_memory() <= 1024 and len(q.ready) == 1500
        got = []
        while True:
            entry = q.get(no_ack=True)
            if entry is None:
                if not q.messages_paged:
                    break
                await s.settle()
                continue
            got.append(entry.message.body)
        assert got == [body(i) for i in range(1500)]
        # A consumer that can take a message at once gets it without a write.
        owner = Owner()
        q.add_consumer(Consumer(q, "c", owner, no_ack=True))
        written = s.store.pager.written
        publish(vh, "lazy", 10, start=5000)
        assert len(owner.got) == 10 and s.store.pager.written == written


async def test_new_messages_stay_behind_the_paged_tail_and_requeues_go_first(node):
    async with node(budget=0) as s:
        vh = s.vhost
        q = vh.declare_queue("q")
        publish(vh, "q", 600)
        owner = Owner()
        c = Consumer(q, "c", owner, no_ack=False, prefetch=100)
        q.add_consumer(c)
        await s.settle()
        assert len(owner.got) == 100
        first = owner.got[:5]
        q.remove_consumer(c)
        q.release_consumer_entries(c, owner.got[:])  # a channel closed: all 100 back at the head
        publish(vh, "q", 400, start=600)
        owner2 = Owner()
        q.add_consumer(Consumer(q, "c2", owner2, no_ack=True))
        await s.settle()
        assert owner2.bodies() == [body(i) for i in range(1000)]
        assert [e.redelivered for e in owner2.got[:100]] == [True] * 100 and not owner2.got[100].redelivered
        assert owner2.got[0] is first[0]


async def test_purge_and_delete_drop_paged_messages(node, kind):
    async with node(budget=0) as s:
        vh = s.vhost
        q = vh.declare_queue("p", durable=True)
        publish(vh, "p", 700, delivery_mode=2)
        publish(vh, "p", 100, start=700)
        assert q.purge() == 800 and len(q.ready) == 0 and q._paged is None
        publish(vh, "p", 300, delivery_mode=2)
        assert len(q.ready) == 300
        await s.settle()
        vh.declare_queue("d", durable=True)
        publish(vh, "d", 300, delivery_mode=2)
        assert vh.delete_queue("d") == 300
        await s.settle()
        if kind == "memory":
            return
        con = s.store.pager._page_con()
        assert con.execute("SELECT COUNT(*) FROM pages").fetchone()[0] == 0
    async with node(budget=0) as s:
        q = s.vhost.queues["p"]
        assert len(q.ready) == 300 and "d" not in s.vhost.queues
        owner = Owner()
        q.add_consumer(Consumer(q, "c", owner, no_ack=True))
        await s.settle()
        assert owner.bodies() == [body(i) for i in range(300)]


async def test_persistent_messages_page_without_a_second_write_and_recover_as_an_index(node, kind):
    if kind == "memory":
        pytest.skip("the memory store keeps nothing across a restart")
    async with node(budget=64 << 10) as s:
        vh = s.vhost
        vh.declare_exchange("fan", "fanout", durable=True)
        for name in ("a", "b"):
            vh.declare_queue(name, durable=True)
            vh.bind("fan", name, "")
        for i in range(2000):
            vh.publish("fan", "", Message("fan", "", body(i), {"delivery_mode": 2, "headers": {"i": i}}))
        vh.publish("", "a", Message("", "a", b"transient"))
        await s.settle()
        assert s.store.pager.written == 1  # only the transient message went to the page file
        assert vh.queues["a"].messages_paged > 1000
    async with node(budget=64 << 10) as s:
        a, b = s.vhost.queues["a"], s.vhost.queues["b"]
        assert len(a.ready) == len(b.ready) == 2000
        # Recovery loaded an index: the node holds at most a read-ahead chunk of bodies.
        assert s.broker.queued_bytes() <= 2 * (1 << 20)
        oa = Owner()
        a.add_consumer(Consumer(a, "c", oa, no_ack=False))
        await s.settle()
        assert oa.bodies() == [body(i) for i in range(2000)]
        assert all(e.redelivered for e in oa.got) and oa.got[7].message.headers == {"i": 7}
        for e in oa.got:
            a.ack(e, a.consumers[0])
        await s.settle()
    async with node(budget=64 << 10) as s:
        a, b = s.vhost.queues["a"], s.vhost.queues["b"]
        assert len(a.ready) == 0 and len(b.ready) == 2000
        ob = Owner()
        b.add_consumer(Consumer(b, "c", ob, no_ack=True))
        await s.settle()
        assert ob.bodies() == [body(i) for i in range(2000)]
        await s.settle()
    async with node(budget=64 << 10) as s:
        assert len(s.vhost.queues["b"].ready) == 0
        con = s.store._con
        assert con.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0


async def test_paged_messages_expire_and_dead_letter_once_read(kind, tmp_path):
    now = [1000.0]
    store = MemoryStore() if kind == "memory" else SQLiteStore(str(tmp_path / "data"))
    broker = Broker(BrokerConfig(memory_budget=0), store=store, clock=lambda: now[0])
    await store.open()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            vh = broker.vhosts["/"]
            vh.declare_queue("dead")
            q = vh.declare_queue("ttl", arguments={"x-message-ttl": 1000, "x-dead-letter-exchange": "",
                                                  "x-dead-letter-routing-key": "dead"})
            publish(vh, "ttl", 50)
            now[0] += 5
            publish(vh, "ttl", 50, start=50)
            s = Node(store, broker)
            await s.settle()
            q.expire(now[0])
            await s.settle()
            assert len(q.ready) == 50
            owner = Owner()
            q.add_consumer(Consumer(q, "c", owner, no_ack=True))
            await s.settle()
            assert owner.bodies() == [body(i) for i in range(50, 100)]
            assert len(vh.queues["dead"].ready) == 50
            nursery.cancel_scope.cancel()
    finally:
        await store.close()


async def test_page_file_is_removed_at_close(tmp_path):
    store = MemoryStore()
    broker = Broker(BrokerConfig(memory_budget=0), store=store)
    await store.open()
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        publish_to = broker.vhosts["/"]
        publish_to.declare_queue("q")
        publish(publish_to, "q", 10)
        await Node(store, broker).settle()
        directory = store.pager._tmpdir
        assert directory is not None
        nursery.cancel_scope.cancel()
    await store.close()
    import os
    assert not os.path.exists(directory)


def test_without_a_running_store_queues_stay_in_memory():
    broker = Broker(BrokerConfig(memory_budget=0))
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q", arguments={"x-queue-mode": "lazy"})
    publish(vh, "q", 100)
    assert type(q.ready) is deque and len(q.ready) == 100


def test_queues_that_never_page():
    broker = Broker(BrokerConfig(memory_budget=0))
    vh = broker.vhosts["/"]
    for args in ({"x-max-priority": 5}, {"x-max-length": 10_000}, {"x-max-length-bytes": 1 << 30}):
        q = vh.declare_queue("q", arguments=args)
        assert q._paging == "never"
        vh.delete_queue("q")
    with pytest.raises(PreconditionFailed, match="x-queue-mode"):
        vh.declare_queue("bad", arguments={"x-queue-mode": "eager"})


def test_memory_budget_config(tmp_path):
    assert parse_budget("256MB") == 256_000_000 and parse_budget("1GiB") == 1 << 30
    assert parse_budget(4096) == 4096 and parse_budget("off") == -1 and parse_budget(0) == 0
    for bad in ("lots", -5, "12XB"):
        with pytest.raises(ConfigError):
            parse_budget(bad)
    path = tmp_path / "c.toml"
    path.write_text('memory_high_watermark = 1000000000\n[store]\nmemory_budget = "64MiB"\n')
    assert load_config(str(path)).memory_budget_bytes() == 64 << 20
    path.write_text('memory_high_watermark = 1000000000\n')
    assert load_config(str(path)).memory_budget_bytes() == 250_000_000  # 25 % of the watermark
    path.write_text('[store]\nmemory_budget = "off"\n')
    assert load_config(str(path)).memory_budget_bytes() is None
