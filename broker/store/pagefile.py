"""Paging: message bodies a queue keeps on disk instead of in memory.

A queue past its memory budget keeps only an index of its tail (keys, expiry, sizes) and
asks the store to hold the bodies. The ``Pager`` is what every store uses for that:

- ``put(message)``: a message that is not already stored (transient, or in a non-durable
  queue) is written to the *page file*, a scratch SQLite database with no journal and no
  fsync (its content need not survive the process). Returns a negative key.
- persistent messages in durable queues are already rows of the SQLite store's database:
  their key is their (positive) message id and nothing more is written.
- ``read(keys, callback)``: the bodies for keys, read in a worker thread together with every
  other pending write, read and discard, then handed to ``callback`` on the event loop as
  ``Message`` objects (None for a key that is gone). Page-file rows are deleted as they are
  read (the message is in memory again); stored rows stay.
- ``discard(keys)``: page-file rows of messages settled without being read (purge, delete).

One worker-thread hop serves everything that piled up since the last one, so paging costs
no syscall or task switch per message. The page file is opened on first use; ``close``
deletes it.

The backlog (bodies put and not yet written) is bounded: past ``BACKLOG_HIGH`` bytes the
pager sets ``backlogged`` and calls ``on_backlog(True)`` (the store turns that into its alarm,
which blocks publishers) until the worker has written it down below half. A page file that
cannot be written (disk full) keeps its backlog, so publishers stay blocked until it can.
One hop writes at most ``HOP_BYTES`` of bodies and deletes at most ``HOP_DISCARDS`` rows, so
a stop never waits for a long hop, and the rows of a deleted million-message queue do not
hold up the writes behind them.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import tempfile
from typing import Any, Callable, Sequence

import trio

from ..message import Message
from .message_codec import dump_meta, load_meta, make_message

log = logging.getLogger("mqemu.broker.store.pager")

PAGE_FILE = "pages.sqlite"
RETRY = 1.0  # seconds before retrying failed page-file work
_IN = 900  # keys per "IN (...)" list (SQLite's old default variable limit is 999)
BACKLOG_HIGH = 32 << 20  # bytes of bodies waiting for the page file: publishers blocked past it
HOP_BYTES = 8 << 20  # bytes of bodies written per worker-thread hop at most
HOP_DISCARDS = 20_000  # page-file rows deleted per hop at most (a deleted paged queue)

_PAGE_SCHEMA = ("CREATE TABLE IF NOT EXISTS pages (id INTEGER PRIMARY KEY, exchange TEXT NOT NULL, "
                "routing_key TEXT NOT NULL, properties BLOB NOT NULL, body BLOB NOT NULL)")
_PAGE_PUT = "INSERT OR REPLACE INTO pages (id, exchange, routing_key, properties, body) VALUES (?, ?, ?, ?, ?)"


class _Read:
    __slots__ = ("keys", "callback")

    def __init__(self, keys: Sequence[int], callback: Callable[[list[Message | None]], None]) -> None:
        self.keys = keys
        self.callback = callback


class Pager:
    """Page file plus (for the SQLite store) a read connection to the durable database.

    ``directory``: where the page file goes (None: a temporary directory made on first use
    and removed at close). ``stored_db``: the SQLite store's database file, read for positive
    keys, or None (memory store: every key is negative).
    """

    def __init__(self, directory: str | None = None, stored_db: str | None = None) -> None:
        self.directory = directory
        self.stored_db = stored_db
        self.running = False  # the worker task is up: queues may page
        self._tmpdir: str | None = None
        self._pages: sqlite3.Connection | None = None  # used by the worker thread only
        self._stored: sqlite3.Connection | None = None
        self._next = 1
        self._writes: list[tuple[int, Message]] = []
        self.backlog_bytes = 0  # bodies in _writes (put, not yet written)
        self.backlogged = False  # past BACKLOG_HIGH, until below half of it
        self.failing = False  # the last hop failed (disk full, I/O error)
        #: called with True when the backlog passes BACKLOG_HIGH (or the page file cannot
        #: be written), with False when it has been written down again
        self.on_backlog: Callable[[bool], None] | None = None
        self._reads: list[_Read] = []
        self._discards: list[int] = []
        self._wake = trio.Event()
        self._props: dict[bytes, tuple] = {}
        #: counters for tests and benches
        self.written = 0
        self.read_rows = 0
        self.hops = 0

    # -- calls from the event loop (plain, never await) ------------------------------------
    def put(self, message: Message) -> int:
        key = self._next
        self._next += 1
        self._writes.append((key, message))
        self.backlog_bytes += len(message.body)
        if self.backlog_bytes > BACKLOG_HIGH and not self.backlogged:
            self._set_backlogged(True)
        self._wake.set()
        return -key

    def _set_backlogged(self, on: bool) -> None:
        self.backlogged = on
        if self.on_backlog is not None:
            self.on_backlog(on)

    def read(self, keys: Sequence[int], callback: Callable[[list[Message | None]], None]) -> None:
        self._reads.append(_Read(keys, callback))
        self._wake.set()

    def discard(self, keys: Sequence[int]) -> None:
        self._discards.extend(-k for k in keys if k < 0)
        if self._discards:
            self._wake.set()

    # -- the worker task ----------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.running = True
        task_status.started()
        try:
            while True:
                if not (self._writes or self._reads or self._discards):
                    self._wake = trio.Event()
                    await self._wake.wait()
                writes, written = self._take_writes()
                reads, discards = self._reads, self._discards[:HOP_DISCARDS]
                self._reads, self._discards = [], self._discards[HOP_DISCARDS:]
                try:
                    results = await trio.to_thread.run_sync(self._work, writes, reads, discards)
                except sqlite3.Error as e:
                    # Disk full or an I/O error on the scratch file: keep the work, retry.
                    # One line when it starts failing, one when it works again.
                    if not self.failing:
                        log.error("page file cannot be written: %s; retrying every %.1f s", e, RETRY)
                        self.failing = True
                        if not self.backlogged:
                            self._set_backlogged(True)
                    self._writes[:0], self._reads[:0], self._discards[:0] = writes, reads, discards
                    await trio.sleep(RETRY)
                    continue
                self.hops += 1
                self.backlog_bytes -= written
                if self.failing:
                    self.failing = False
                    log.warning("page file written again")
                if self.backlogged and self.backlog_bytes < BACKLOG_HIGH // 2:
                    self._set_backlogged(False)
                for req, messages in zip(reads, results):
                    req.callback(messages)
        finally:
            self.running = False
            # Stopping: what is not written yet is scratch data nobody will read. Only the
            # hop in progress (at most HOP_BYTES) delays the stop.
            self.abandon()

    def _take_writes(self) -> tuple[list[tuple[int, Message]], int]:
        """The oldest writes, up to HOP_BYTES of bodies, and their size."""
        writes = self._writes
        size = 0
        for i, (_, m) in enumerate(writes):
            size += len(m.body)
            if size >= HOP_BYTES:
                self._writes = writes[i + 1:]
                return writes[:i + 1], size
        self._writes = []
        return writes, size

    def abandon(self) -> None:
        """The node is stopping: drop the backlog (page-file rows are scratch data that a
        restart never reads)."""
        self._writes, self._reads, self._discards = [], [], []
        self.backlog_bytes = 0

    def close(self) -> None:
        """Close the connections and delete the page file (the worker task has stopped)."""
        for con in (self._pages, self._stored):
            if con is not None:
                con.close()
        self._pages = self._stored = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        elif self.directory is not None:
            remove_page_file(self.directory)

    # -- the worker thread --------------------------------------------------------------
    def _page_con(self) -> sqlite3.Connection:
        if self._pages is None:
            directory = self.directory
            if directory is None:
                directory = self._tmpdir = tempfile.mkdtemp(prefix="mqemu-pages-")
            else:
                remove_page_file(directory)
            con = sqlite3.connect(os.path.join(directory, PAGE_FILE), isolation_level=None,
                                  check_same_thread=False)
            # Scratch data: no journal, no fsync, a small cache (it counts in the node's RSS).
            for pragma in ("PRAGMA journal_mode=OFF", "PRAGMA synchronous=OFF", "PRAGMA cache_size=-4096",
                           "PRAGMA temp_store=MEMORY"):
                con.execute(pragma)
            con.execute(_PAGE_SCHEMA)
            self._pages = con
        return self._pages

    def _stored_con(self) -> sqlite3.Connection:
        if self._stored is None:
            assert self.stored_db is not None
            con = sqlite3.connect(self.stored_db, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA query_only=1")
            con.execute("PRAGMA cache_size=-4096")
            self._stored = con
        return self._stored

    def _work(self, writes: list[tuple[int, Message]], reads: list[_Read],
              discards: list[int]) -> list[list[Message | None]]:
        """Writes, then reads, then discards, in one transaction of the page file (rolled
        back whole on error, so the caller can retry the same work)."""
        con = self._page_con() if (writes or discards or any(k < 0 for r in reads for k in r.keys)) else None
        if con is not None:
            con.execute("BEGIN")
        try:
            if writes:
                assert con is not None
                con.executemany(_PAGE_PUT, [(k, m.exchange, m.routing_key,
                                             dump_meta(m), m.body) for k, m in writes])
            results = [self._read(con, req.keys) for req in reads]
            for i in range(0, len(discards), _IN):
                assert con is not None
                part = discards[i:i + _IN]
                con.execute(f"DELETE FROM pages WHERE id IN ({','.join('?' * len(part))})", part)
            if con is not None:
                con.execute("COMMIT")
        except BaseException:
            if con is not None and con.in_transaction:
                con.execute("ROLLBACK")
            raise
        self.written += len(writes)
        return results

    def _read(self, con: sqlite3.Connection | None, keys: Sequence[int]) -> list[Message | None]:
        found: dict[int, Message] = {}
        paged = [-k for k in keys if k < 0]
        stored = [k for k in keys if k > 0]
        for i in range(0, len(paged), _IN):
            assert con is not None
            part = paged[i:i + _IN]
            marks = ",".join("?" * len(part))
            for rid, exchange, key, props, body in con.execute(
                    f"SELECT id, exchange, routing_key, properties, body FROM pages WHERE id IN ({marks})", part):
                found[-rid] = self._message(exchange, key, props, body)
            con.execute(f"DELETE FROM pages WHERE id IN ({marks})", part)
        if stored:
            scon = self._stored_con()
            for i in range(0, len(stored), _IN):
                part = stored[i:i + _IN]
                for mid, exchange, key, props, body in scon.execute(
                        "SELECT id, exchange, routing_key, properties, body FROM messages "
                        f"WHERE id IN ({','.join('?' * len(part))})", part):
                    found[mid] = self._message(exchange, key, props, body)
        self.read_rows += len(found)
        return [found.get(k) for k in keys]

    def _message(self, exchange: str, key: str, props: bytes, body: bytes) -> Message:
        # Most messages share a few property sets: unpickle each once (the core replaces a
        # properties dict, never changes one in place).
        decoded = self._props.get(props)
        if decoded is None:
            decoded = load_meta(props)
            if len(self._props) >= 1000:
                self._props.clear()
            self._props[props] = decoded
        return make_message(exchange, key, body, decoded)


def remove_page_file(directory: str) -> None:
    """Delete a page file left in directory (by a node that was killed)."""
    for name in (PAGE_FILE, PAGE_FILE + "-journal"):
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            pass
