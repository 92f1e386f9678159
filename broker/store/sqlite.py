"""The SQLite store: durable definitions, persistent messages and protocol records in
``DIR/mqemu.sqlite``, written in group commits off the event loop.

Writes made by the core are plain calls that append an operation to the open batch. The
flusher task (``run``) takes the whole batch when it has one, commits it in a worker thread
(one transaction, one fsync) and then, back on the event loop, calls the ``when_durable``
callbacks of that batch: publisher confirms go out only once their messages are on disk.
While one batch commits, the next one fills, so the commit rate follows the disk's fsync
rate and the batch size follows the load.

A message added and removed again before its batch is taken (published, delivered and
acked within one commit time) is never written: both operations are cancelled in memory,
as RabbitMQ's message store skips writing messages that are already acked.

A commit that fails (``database or disk is full``, an I/O error) is kept and retried; until
it succeeds the store raises its write alarm (the broker blocks publishers) and withholds
the callbacks, so nothing is confirmed that is not on disk.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import trio

from . import sqlite_schema as schema
from .base import QueueKey, Snapshot, Store, StoreCorrupt
from .lock import DataDirLock
from .message_codec import dump_meta
from .pagefile import Pager, remove_page_file

if TYPE_CHECKING:
    from ..exchange import Binding, Exchange
    from ..message import Message
    from ..queue import Queue

log = logging.getLogger("mqemu.broker.store")

RETRY_FIRST = 0.2  # seconds before retrying a failed commit; doubles up to RETRY_MAX
RETRY_MAX = 5.0
# Bytes of message bodies accepted but not yet committed past which publishers are blocked
# (the flusher fell behind, e.g. starved of the GIL by a saturated loop); unblocked below half.
BACKLOG_HIGH = 32 << 20

# Operation kinds, each one SQL statement run with executemany over consecutive rows.
_MSG = ("INSERT OR REPLACE INTO messages (id, exchange, routing_key, properties, body, shared) "
        "VALUES (?, ?, ?, ?, ?, ?)")
_QM_ADD = "INSERT OR IGNORE INTO queue_messages (qid, msg_id) VALUES (?, ?)"
_QM_DEL = "DELETE FROM queue_messages WHERE qid = ? AND msg_id = ?"
_MSG_DEL = "DELETE FROM messages WHERE id = ?"
_EX_PUT = ("INSERT OR REPLACE INTO exchanges (vhost, name, type, auto_delete, internal, arguments) "
           "VALUES (?, ?, ?, ?, ?, ?)")
_EX_DEL = "DELETE FROM exchanges WHERE vhost = ? AND name = ?"
_Q_PUT = ("INSERT OR REPLACE INTO queues (qid, vhost, name, exclusive, auto_delete, arguments) "
          "VALUES (?, ?, ?, ?, ?, ?)")
_Q_DEL = "DELETE FROM queues WHERE qid = ?"
_Q_DEL_MSGS = "DELETE FROM queue_messages WHERE qid = ?"
_ORPHANS_POSSIBLE = "INSERT OR REPLACE INTO meta (key, value) VALUES ('orphans_possible', 1)"
_B_PUT = ("INSERT OR REPLACE INTO bindings (vhost, source, destination, kind, routing_key, args_key, "
          "arguments) VALUES (?, ?, ?, ?, ?, ?, ?)")
_B_DEL = ("DELETE FROM bindings WHERE vhost = ? AND source = ? AND destination = ? AND kind = ? "
          "AND routing_key = ? AND args_key = ?")
_R_PUT = "INSERT OR REPLACE INTO records (namespace, key, value) VALUES (?, ?, ?)"
_R_DEL = "DELETE FROM records WHERE namespace = ? AND key = ?"


class SQLiteStore(Store):
    """The embedded durable store. ``open`` first; run ``run`` as a task; ``close`` last.

    ``check`` is the integrity check made at open: "quick" (default), "full" or "none".
    """

    keeps_messages = True

    def __init__(self, data_dir: str, *, check: str = "quick") -> None:
        self.data_dir = data_dir
        self.check = check
        self._lock = DataDirLock(data_dir)
        self._con: sqlite3.Connection | None = None
        self._qids: dict[tuple[str, str], int] = {}
        self._next_qid = 1
        self._next_id = 1
        self._shared: dict[int, int] = {}  # message id -> queues holding it, when more than one
        # The message written last and its id: adding it again (to the next queue the same
        # publish routes it to) adds a row for that queue, not a second copy of the message.
        self._last_msg: "Message | None" = None
        self._last_id = 0
        # The open batch: operations (kind, row); None marks one cancelled in memory.
        self._ops: list[tuple[str, Any] | None] = []
        self._pending_add: dict[tuple[int, int], int] = {}  # (qid, msg id) -> index in _ops
        self._pending_msg: dict[int, int] = {}  # msg id -> index of its message row in _ops
        self._failed: list[tuple[str, Any] | None] = []  # a batch whose commit failed, retried first
        # Tickets: the open batch is number _ticket; batches up to _durable are on disk.
        self._ticket = 1
        self._durable = 0
        self._callbacks: list[Callable[[], None]] = []  # for the open batch
        self._in_flight: dict[int, list[Callable[[], None]]] = {}
        self._wake = trio.Event()
        self._idle = False
        self._alarm = False
        #: Number of transactions committed (each is one fsync of the WAL).
        self.commits = 0
        self.committed_ops = 0  # operations written (cancelled ones not counted)
        self.commit_seconds = 0.0  # time spent in commits (worker thread), fsyncs included
        # Bodies of queues past their memory budget: transient ones in DIR/pages.sqlite
        # (scratch, emptied at open and deleted at close), stored ones read from the database.
        self.pager = Pager(data_dir, os.path.join(data_dir, schema.DB_NAME))
        self.pager.on_backlog = lambda on: self._notify_alarm()
        self._backlog = 0  # bytes of bodies added and not yet committed
        self.backlogged = False

    # -- lifecycle ----------------------------------------------------------------------
    async def open(self) -> Snapshot:
        """Lock the data directory, open and check the database, load it.

        Raises StoreLocked (another node holds the directory), StoreCorrupt (damaged or
        truncated file, named) or StoreError. On error the lock is released.
        """
        self._lock.acquire()
        try:
            started = time.monotonic()
            remove_page_file(self.data_dir)  # scratch pages of a node that was killed
            self._con = await trio.to_thread.run_sync(schema.connect, self.data_dir, self.check)
            try:
                loaded = await trio.to_thread.run_sync(schema.load, self._con, self.memory_budget,
                                                       self.queue_paging)
            except sqlite3.DatabaseError as e:
                raise StoreCorrupt(f"database file {self.path} is damaged: {e}; nothing was loaded") from None
        except BaseException:
            if self._con is not None:
                self._con.close()
                self._con = None
            self._lock.release()
            raise
        self._qids, self._next_qid = loaded.qids, loaded.next_qid
        self._next_id, self._shared = loaded.next_msg_id, loaded.shared
        n = sum(len(v) for v in loaded.snapshot.messages.values())
        paged = sum(len(v.ids) for v in loaded.snapshot.paged.values())
        log.info("store opened", extra={"path": self.path, "messages": n + paged, "paged": paged,
                                        "orphans_dropped": loaded.orphans,
                                        "seconds": round(time.monotonic() - started, 3)})
        return loaded.snapshot

    def lock_held(self) -> bool:
        return self._lock.held()

    @property
    def path(self) -> str:
        return os.path.join(self.data_dir, schema.DB_NAME)

    async def close(self, flush: bool = True) -> None:
        """Commit what is pending (callbacks are dropped: nobody is left to answer) and
        release the data directory. A failing final commit is logged, not raised: what it
        held was never confirmed. ``flush=False`` (the lock was lost: another node may own
        the directory now) writes nothing more."""
        if self._con is None:
            return
        ops = self._take()
        try:
            if flush and any(op is not None for op in ops):
                await trio.to_thread.run_sync(self._commit, ops)
        except sqlite3.Error as e:
            log.error("final commit to %s failed: %s; unconfirmed writes are lost", self.path, e)
        finally:
            self.pager.close()
            con, self._con = self._con, None
            con.close()
            self._lock.release()
        # One COMMIT is one fsync of the WAL (synchronous=FULL); the bench reads this line.
        log.info("store closed", extra={"path": self.path, "commits": self.commits, "ops": self.committed_ops,
                                        "busy_seconds": round(self.commit_seconds, 3)})

    # -- the flusher --------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Commit batches (and serve the pager) until cancelled; a cancelled commit in a
        thread finishes first."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.pager.run)
            await self._flush(task_status)

    async def _flush(self, task_status: Any) -> None:
        task_status.started()
        delay = RETRY_FIRST
        while True:
            if not self._ops and not self._callbacks and not self._failed:
                self._wake = trio.Event()
                self._idle = True
                await self._wake.wait()
            ticket = self._ticket
            ops = self._take()
            if not any(op is not None for op in ops):
                # Everything in the batch was cancelled in memory (acked before written), and
                # the batch before is on disk: nothing to wait for.
                self._durable = ticket
                self._run_callbacks(ticket)
                continue
            try:
                await trio.to_thread.run_sync(self._commit, ops)
            except trio.Cancelled:
                # Cancelled before the thread started (a started commit always finishes):
                # keep the batch for close() to commit, or a busy node's stop loses it.
                self._failed = ops
                raise
            except sqlite3.Error as e:
                self._failed = ops
                self._write_alarm(True, e)
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_FIRST
            if self._alarm:
                self._write_alarm(False, None)
            self._backlog -= sum(len(op[1][1].body) for op in ops if op is not None and op[0] is _MSG)
            if self.backlogged and self._backlog < BACKLOG_HIGH // 2:
                self.backlogged = False
                self._notify_alarm()
            self._durable = ticket
            self._run_callbacks(ticket)

    def _take(self) -> list[tuple[str, Any] | None]:
        """Close the open batch: its operations (after a failed batch's) and its callbacks."""
        ops = self._failed + self._ops if self._failed else self._ops
        self._failed = []
        self._ops = []
        self._pending_add.clear()
        self._pending_msg.clear()
        if self._callbacks:
            self._in_flight[self._ticket] = self._callbacks
            self._callbacks = []
        self._ticket += 1
        return ops

    def _run_callbacks(self, upto: int) -> None:
        for ticket in [t for t in self._in_flight if t <= upto]:
            for cb in self._in_flight.pop(ticket):
                cb()

    def _commit(self, ops: list[tuple[str, Any] | None]) -> None:
        """Write ops in one transaction (worker thread). Raises sqlite3.Error, rolled back."""
        con = self._con
        assert con is not None
        started = time.perf_counter()
        con.execute("BEGIN IMMEDIATE")
        try:
            written = self._execute(con, ops)
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        self.commits += 1
        self.committed_ops += written
        self.commit_seconds += time.perf_counter() - started

    def _execute(self, con: sqlite3.Connection, ops: list[tuple[str, Any] | None]) -> int:
        """Run consecutive operations of one kind with one executemany; returns how many."""
        shared = self._shared
        written = 0
        kind = None
        rows: list[Any] = []
        for op in ops:
            if op is None:
                continue
            if op[0] is not kind:
                if rows:
                    _run(con, kind, rows, shared)
                kind, rows = op[0], []
            rows.append(op[1])
            written += 1
        if rows:
            _run(con, kind, rows, shared)
        return written

    def _write_alarm(self, on: bool, error: Exception | None) -> None:
        if on and not self._alarm:
            log.error("cannot write to %s: %s; publishers are blocked and confirms withheld until it can",
                      self.path, error)
        elif not on:
            log.warning("writing to %s again; publishers unblocked", self.path)
        self._alarm = on
        self._notify_alarm()

    def _notify_alarm(self) -> None:
        if self.on_write_alarm is not None:
            self.on_write_alarm(self._alarm or self.backlogged or self.pager.backlogged)

    @property
    def alarm_reason(self) -> str:
        """Why the store blocks publishers, in RabbitMQ's words for connection.blocked."""
        return "low on disk" if self._alarm or self.pager.failing else "low on memory"

    def memory_held(self) -> int:
        return self._backlog + self.pager.backlog_bytes

    def _push(self, op: tuple[str, Any]) -> None:
        self._ops.append(op)
        if self._idle:
            self._idle = False
            self._wake.set()

    # -- tickets ------------------------------------------------------------------------
    def barrier(self) -> int:
        return self._ticket

    def when_durable(self, ticket: int, callback: Callable[[], None]) -> None:
        if ticket <= self._durable:
            callback()
            return
        if ticket >= self._ticket:
            self._callbacks.append(callback)
        else:
            self._in_flight.setdefault(ticket, []).append(callback)
        if self._idle:
            self._idle = False
            self._wake.set()

    # -- messages -----------------------------------------------------------------------
    def add_message(self, queue: QueueKey, message: "Message") -> int | None:
        qid = self._qids.get(queue)
        if qid is None:  # a durable queue the store was not told about: keep nothing
            return None
        if message is not self._last_msg:
            mid = self._last_id = self._next_id
            self._last_msg = message
            self._next_id += 1
            self._pending_msg[mid] = len(self._ops)
            # The row is encoded in the commit thread: a message acked before its batch is
            # taken costs no encoding at all.
            self._ops.append((_MSG, (mid, message)))
            self._backlog += len(message.body)
            if self._backlog > BACKLOG_HIGH and not self.backlogged:
                self.backlogged = True
                self._notify_alarm()
        else:
            mid = self._last_id
            self._shared[mid] = self._shared.get(mid, 1) + 1
        self._pending_add[(qid, mid)] = len(self._ops)
        self._push((_QM_ADD, (qid, mid)))
        return mid

    def remove_message(self, queue: QueueKey, handle: int) -> None:
        qid = self._qids.get(queue)
        if qid is not None:
            self._remove(qid, handle)

    def _remove(self, qid: int, mid: int) -> bool:
        """Drop queue qid's row for message mid; True when it was the last holder."""
        ops = self._ops
        index = self._pending_add.pop((qid, mid), None)
        if index is not None:
            ops[index] = None
        else:
            self._push((_QM_DEL, (qid, mid)))
        holders = self._shared.pop(mid, 1)
        if holders > 1:
            self._shared[mid] = holders - 1
            return False
        if mid == self._last_id:
            self._last_msg = None  # written again (with a new id) if it is ever added again
        index = self._pending_msg.pop(mid, None)
        if index is not None:
            self._backlog -= len(ops[index][1][1].body)
            ops[index] = None
        else:
            self._push((_MSG_DEL, (mid,)))
        return True

    # -- paging -------------------------------------------------------------------------
    @property
    def can_page(self) -> bool:
        return self.pager.running

    def page_out(self, queue: QueueKey, message: "Message", handle: int | None) -> int:
        if handle is not None and queue in self._qids:
            return handle  # already a row of the database (written in this batch or before)
        return self.pager.put(message)

    def page_in(self, queue: QueueKey, keys: "Sequence[int]",
                callback: "Callable[[list[Message | None]], None]") -> None:
        if any(k > 0 for k in keys):
            # Stored rows are read by another connection: wait until their batch is committed.
            self.when_durable(self.barrier(), lambda: self.pager.read(keys, callback))
        else:
            self.pager.read(keys, callback)

    def page_discard(self, queue: QueueKey, keys: "Sequence[int]") -> None:
        qid = self._qids.get(queue)
        if qid is not None:
            for k in keys:
                if k > 0:
                    self._remove(qid, k)
        self.pager.discard(keys)

    # -- definitions --------------------------------------------------------------------
    def save_exchange(self, vhost: str, exchange: "Exchange") -> None:
        self._push((_EX_PUT, (vhost, exchange.name, exchange.type, int(exchange.auto_delete),
                              int(exchange.internal), schema.dumps(dict(exchange.arguments)))))

    def delete_exchange(self, vhost: str, name: str) -> None:
        self._push((_EX_DEL, (vhost, name)))

    def save_queue(self, vhost: str, queue: "Queue") -> None:
        key = (vhost, queue.name)
        qid = self._qids.get(key)
        if qid is None:
            qid = self._qids[key] = self._next_qid
            self._next_qid += 1
        self._push((_Q_PUT, (qid, vhost, queue.name, int(queue.exclusive_owner is not None),
                             int(queue.auto_delete), schema.dumps(dict(queue.arguments)))))

    def delete_queue(self, vhost: str, name: str) -> None:
        qid = self._qids.pop((vhost, name), None)
        if qid is not None:
            # Message rows only this queue held are dropped at the next open (orphans).
            self._push((_Q_DEL, (qid,)))

    def save_binding(self, vhost: str, binding: "Binding") -> None:
        self._push((_B_PUT, (*_binding_key(vhost, binding), schema.dumps(binding.arguments))))

    def delete_binding(self, vhost: str, binding: "Binding") -> None:
        self._push((_B_DEL, _binding_key(vhost, binding)))

    # -- records ------------------------------------------------------------------------
    def put_record(self, namespace: str, key: str, value: bytes) -> None:
        self._push((_R_PUT, (namespace, key, bytes(value))))

    def delete_record(self, namespace: str, key: str) -> None:
        self._push((_R_DEL, (namespace, key)))


def _binding_key(vhost: str, b: "Binding") -> tuple:
    # The arguments' repr is the key: it is the same for equal frozen argument tuples,
    # which a pickle is not (pickle memoizes shared objects).
    return (vhost, b.source, b.destination, b.destination_kind, b.routing_key, repr(b.arguments))


def _run(con: sqlite3.Connection, kind: str, rows: list[Any], shared: dict[int, int]) -> None:
    if kind is _MSG:
        # The id was taken when the message was added (the store keeps it, not the message).
        # shared: a message is added to every queue it reaches in the one publish call that
        # routes it, so by the time its batch is taken the holder count is final.
        rows = [(mid, m.exchange, m.routing_key, dump_meta(m), m.body,
                 int(shared.get(mid, 1) > 1)) for mid, m in rows]
    con.executemany(kind, rows)
    if kind is _Q_DEL:
        con.executemany(_Q_DEL_MSGS, rows)
        con.execute(_ORPHANS_POSSIBLE)
