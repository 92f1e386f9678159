"""SQLite store faults: a held data directory, damaged files, a full disk.

Corrupt-file fixtures as Mosquitto keeps them for its persistence file: a database made by
the store, then truncated or overwritten, must give an error naming the file, never an
empty broker.
"""

from __future__ import annotations

import os
import sqlite3

import pytest
import trio

from mqemu.broker.core import Broker
from mqemu.broker.message import Message
from mqemu.broker.store.base import StoreCorrupt, StoreLocked
from mqemu.broker.store.sqlite import SQLiteStore


async def make_database(data_dir: str, messages: int = 200) -> str:
    """A data dir holding one durable queue with messages; returns the database path."""
    store = SQLiteStore(data_dir)
    await store.open()
    broker = Broker(store=store)
    vh = broker.vhosts["/"]
    vh.declare_queue("q", durable=True)
    for _ in range(messages):
        vh.publish("", "q", Message("", "", os.urandom(500), {"delivery_mode": 2}))
    await store.close()  # commits and checkpoints: everything is in the main file
    return store.path


async def test_second_store_on_a_held_data_dir_names_dir_and_pid(tmp_path):
    first = SQLiteStore(str(tmp_path))
    await first.open()
    try:
        with pytest.raises(StoreLocked) as info:
            await SQLiteStore(str(tmp_path)).open()
        assert str(tmp_path) in str(info.value) and f"pid {os.getpid()}" in str(info.value)
    finally:
        await first.close()
    second = SQLiteStore(str(tmp_path))  # released on close
    await second.open()
    await second.close()


def _truncate_half(path: str) -> None:
    os.truncate(path, os.path.getsize(path) // 2)


def _truncate_to_zero(path: str) -> None:
    os.truncate(path, 0)


def _garbage_header(path: str) -> None:
    with open(path, "r+b") as f:
        f.write(os.urandom(100))


def _garbage_pages(path: str) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size // 3)
        f.write(b"\xff" * 8192)


@pytest.mark.parametrize("damage", [_truncate_half, _truncate_to_zero, _garbage_header, _garbage_pages])
async def test_damaged_database_is_refused_naming_the_file(tmp_path, damage):
    path = await make_database(str(tmp_path))
    damage(path)
    store = SQLiteStore(str(tmp_path))
    with pytest.raises(StoreCorrupt) as info:
        await store.open()
    assert path in str(info.value)
    # the lock was released: the directory is not left held after the error
    other = SQLiteStore(str(tmp_path / "elsewhere"))
    await other.open()
    await other.close()
    with open(os.path.join(str(tmp_path), "LOCK"), "rb") as f:
        assert f.read() == b""


async def test_full_disk_blocks_publishers_and_withholds_confirms(tmp_path, monkeypatch):
    store = SQLiteStore(str(tmp_path))
    await store.open()
    broker = Broker(store=store)
    alarms: list[bool] = []
    broker.alarm_listeners.add(alarms.append)
    vh = broker.vhosts["/"]
    vh.declare_queue("q", durable=True)
    real_execute = store._execute
    full = True
    failures = 0
    failed_twice = trio.Event()

    def execute(con, ops):  # in the flusher's worker thread
        nonlocal failures
        if full:
            failures += 1
            if failures == 2:
                trio.from_thread.run_sync(failed_twice.set)
            raise sqlite3.OperationalError("database or disk is full")
        return real_execute(con, ops)

    monkeypatch.setattr(store, "_execute", execute)
    monkeypatch.setattr("mqemu.broker.store.sqlite.RETRY_FIRST", 0.01)
    confirmed = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        vh.publish("", "q", Message("", "", b"kept", {"delivery_mode": 2}))
        store.when_durable(store.barrier(), confirmed.set)
        with trio.fail_after(5):
            await failed_twice.wait()  # the commit failed, and so did its first retry
        assert broker.store_alarm and broker.memory_alarm and alarms == [True]  # publishers blocked
        assert not confirmed.is_set()  # nothing confirmed that is not on disk
        full = False
        with trio.fail_after(5):
            await confirmed.wait()
        assert not broker.store_alarm and not broker.memory_alarm and alarms == [True, False]
        nursery.cancel_scope.cancel()
    await store.close()
    store = SQLiteStore(str(tmp_path))
    snap = await store.open()
    assert [m.body for m in snap.messages[("/", "q")]] == [b"kept"]
    await store.close()
