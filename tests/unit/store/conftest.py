"""Stores for the contract suite: every test runs on each back-end (``store_kind``)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import pytest
import trio

from mqemu.broker.core import Broker
from mqemu.broker.store.base import Snapshot, Store
from mqemu.broker.store.memory import MemoryStore
from mqemu.broker.store.sqlite import SQLiteStore


@pytest.fixture(params=["memory", "sqlite"])
def store_kind(request) -> str:
    return request.param


class Opened:
    """A store opened with its flusher running, a broker over it, and the snapshot it loaded."""

    def __init__(self, store: Store, broker: Broker, snapshot: Snapshot) -> None:
        self.store, self.broker, self.snapshot = store, broker, snapshot
        self.vhost = broker.vhosts["/"]

    async def durable(self) -> None:
        """Wait until every write made so far is on disk."""
        done = trio.Event()
        self.store.when_durable(self.store.barrier(), done.set)
        with trio.fail_after(5):
            await done.wait()


@pytest.fixture
def open_store(store_kind, tmp_path):
    """``async with open_store() as s``: a fresh store (memory) or the same data dir (sqlite)
    each time, recovered into a new broker; closed at the end of the block."""

    @asynccontextmanager
    async def opener() -> AsyncIterator[Opened]:
        store: Store = MemoryStore() if store_kind == "memory" else SQLiteStore(str(tmp_path / "data"))
        snapshot = await store.open()
        broker = Broker(store=store)
        broker.recover(snapshot)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(store.run)
                yield Opened(store, broker, snapshot)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await store.close()

    return opener
