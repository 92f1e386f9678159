"""The SQLite store's file: schema, the checks made at open, and loading a Snapshot.

Everything here runs in a worker thread (``trio.to_thread``), never on the event loop.

Values that are not plain columns (message properties, exchange, queue and binding
arguments) are pickled: they hold AMQP field-table values (nested tables, arrays,
timestamps, decimals, bytes) that pickle round-trips exactly and fast. The file is the
node's own, written only by mqemu: it is trusted as the process's memory is.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
from array import array
from typing import Any, Callable

from ..message import NEVER_MS, Message
from .base import PagedRows, Snapshot, StoreCorrupt, StoreError
from .message_codec import Meta, load_meta, make_message

DB_NAME = "mqemu.sqlite"
# 2: a message row's properties blob may also hold the message's protocol fields
# (``message_codec``). A schema 1 file is read as it is and marked 2 at open; an mqemu
# that knows only schema 1 then refuses the file ("written by a newer mqemu").
SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS exchanges (
    vhost TEXT NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL, auto_delete INTEGER NOT NULL,
    internal INTEGER NOT NULL, arguments BLOB NOT NULL, PRIMARY KEY (vhost, name));
CREATE TABLE IF NOT EXISTS queues (
    qid INTEGER PRIMARY KEY, vhost TEXT NOT NULL, name TEXT NOT NULL, exclusive INTEGER NOT NULL,
    auto_delete INTEGER NOT NULL, arguments BLOB NOT NULL, UNIQUE (vhost, name));
CREATE TABLE IF NOT EXISTS bindings (
    vhost TEXT NOT NULL, source TEXT NOT NULL, destination TEXT NOT NULL, kind TEXT NOT NULL,
    routing_key TEXT NOT NULL, args_key TEXT NOT NULL, arguments BLOB NOT NULL,
    PRIMARY KEY (vhost, source, destination, kind, routing_key, args_key));
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, exchange TEXT NOT NULL, routing_key TEXT NOT NULL,
    properties BLOB NOT NULL, body BLOB NOT NULL,
    shared INTEGER NOT NULL DEFAULT 0);  -- 1: routed to several queues when written
-- one row per (queue, message): a message routed to several queues is stored once
CREATE TABLE IF NOT EXISTS queue_messages (
    qid INTEGER NOT NULL, msg_id INTEGER NOT NULL, PRIMARY KEY (qid, msg_id)) WITHOUT ROWID;
-- flags: orphans_possible = 1 after a queue was deleted (message rows may be left unheld)
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    namespace TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (namespace, key)) WITHOUT ROWID;
"""

# Why these settings (see ARCHITECTURE.md, "Store"):
# - WAL: a commit appends to one file and fsyncs it once; readers never block the writer.
# - synchronous=FULL: in WAL mode, every COMMIT fsyncs the WAL before it returns, so a
#   confirmed message survives a power loss, not only a kill -9 (NORMAL would fsync only at
#   checkpoints: safe against a process crash, not against losing the machine).
PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=OFF",
    "PRAGMA temp_store=MEMORY",
    "PRAGMA cache_size=-32768",  # 32 MiB of page cache
)


def dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def connect(data_dir: str, check: str = "quick") -> sqlite3.Connection:
    """Open (or create) the database in data_dir and check it.

    ``check``: "quick" (PRAGMA quick_check: every page and b-tree, not index contents),
    "full" (integrity_check) or "none". Raises StoreCorrupt naming the file when it is
    damaged, truncated or not a database, StoreError for other failures. The caller
    closes the returned connection.
    """
    path = os.path.join(data_dir, DB_NAME)
    try:
        size = os.path.getsize(path)
    except OSError:
        size = None
    if size is not None and size < 100:
        # SQLite would treat an empty file as a new database: refuse rather than start empty.
        raise StoreCorrupt(f"database file {path} is truncated ({size} bytes, no SQLite header); "
                           "nothing was loaded. Restore it from a backup or move it away to start empty")
    try:
        con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open database file {path}: {e}") from e
    try:
        _check(con, path, check)
        for pragma in PRAGMAS:
            con.execute(pragma)
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"database file {path} was written by a newer mqemu (schema {version})")
        con.executescript(SCHEMA)
        con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except sqlite3.DatabaseError as e:
        con.close()
        raise StoreCorrupt(f"database file {path} is damaged: {e}; nothing was loaded. "
                           "Restore it from a backup or move it away to start empty") from None
    except BaseException:
        con.close()
        raise
    return con


def _check(con: sqlite3.Connection, path: str, check: str) -> None:
    if check == "none":
        return
    pragma = "PRAGMA integrity_check(5)" if check == "full" else "PRAGMA quick_check(5)"
    rows = [r[0] for r in con.execute(pragma)]
    if rows != ["ok"]:
        raise sqlite3.DatabaseError("; ".join(rows))


class Loaded:
    """A loaded snapshot plus what the store needs to go on writing."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()
        self.qids: dict[tuple[str, str], int] = {}
        self.next_qid = 1
        self.next_msg_id = 1
        self.shared: dict[int, int] = {}  # message id -> queues holding it, when more than one
        self.orphans = 0


def load(con: sqlite3.Connection, budget: int | None = None,
         paging: Callable[[dict[str, Any]], str] | None = None) -> Loaded:
    """Read every definition, message and record. Raises sqlite3.DatabaseError.

    ``budget``: bytes of bodies to load; a queue that may page (``paging(arguments)`` is not
    "never") and whose bodies do not fit in what is left of it, or is lazy, comes back as an
    index only (``Snapshot.paged``). None: load every body."""
    out = Loaded()
    snap = out.snapshot
    for vhost, name, type_, auto_delete, internal, args in con.execute(
            "SELECT vhost, name, type, auto_delete, internal, arguments FROM exchanges"):
        snap.exchanges.append({"vhost": vhost, "name": name, "type": type_, "durable": True,
                               "auto_delete": bool(auto_delete), "internal": bool(internal),
                               "arguments": pickle.loads(args)})
    names: dict[int, tuple[str, str]] = {}
    modes: dict[int, str] = {}
    for qid, vhost, name, exclusive, auto_delete, args in con.execute(
            "SELECT qid, vhost, name, exclusive, auto_delete, arguments FROM queues ORDER BY qid"):
        names[qid] = (vhost, name)
        out.qids[(vhost, name)] = qid
        out.next_qid = qid + 1
        arguments = pickle.loads(args)
        snap.queues.append({"vhost": vhost, "name": name, "durable": True, "exclusive": bool(exclusive),
                            "auto_delete": bool(auto_delete), "arguments": arguments})
        modes[qid] = "never" if paging is None or exclusive or auto_delete else paging(arguments)
    for vhost, source, dest, kind, key, args in con.execute(
            "SELECT vhost, source, destination, kind, routing_key, arguments FROM bindings"):
        snap.bindings.append({"vhost": vhost, "source": source, "destination": dest, "destination_kind": kind,
                              "routing_key": key, "arguments": pickle.loads(args)})
    # Messages held by no queue (a queue deleted while some were unacked): drop them now.
    # Only after a queue deletion: on a big store the scan costs most of a second.
    if con.execute("SELECT value FROM meta WHERE key = 'orphans_possible'").fetchone():
        con.execute("DELETE FROM queue_messages WHERE qid NOT IN (SELECT qid FROM queues)")
        out.orphans = con.execute(
            "DELETE FROM messages WHERE id NOT IN (SELECT msg_id FROM queue_messages)").rowcount
        con.execute("DELETE FROM meta WHERE key = 'orphans_possible'")
    if budget is None:
        _load_messages(con, names, out)
    else:
        _load_within(con, names, modes, budget, out)
    for ns, key, value in con.execute("SELECT namespace, key, value FROM records"):
        snap.records.setdefault(ns, {})[key] = value
    return out


class _Rows:
    """Turns message rows into Messages, for both loaders.

    Most messages share a handful of property sets ({"delivery_mode": 2}, ...): each distinct
    blob is unpickled once and the result shared (the core never changes a properties dict in
    place; it replaces it). A message in several queues comes back as one object (one body in
    memory), as published, with its count of holders; the row's shared flag says which to track.
    """

    def __init__(self) -> None:
        self.props: dict[bytes, Meta] = {}
        self.seen: dict[int, Message] = {}
        self.holders: dict[int, int] = {}

    def add(self, current: list[Message], ids: array, mid: int, exchange: str, key: str, props: bytes,
            body: bytes, shared: int) -> None:
        ids.append(mid)
        if shared and mid in self.seen:
            self.holders[mid] += 1
            current.append(self.seen[mid])
            return
        decoded = self.props.get(props)
        if decoded is None:
            decoded = load_meta(props)
            if len(self.props) < 10_000:
                self.props[props] = decoded
        msg = make_message(exchange, key, body, decoded)
        current.append(msg)
        if shared:
            self.seen[mid] = msg
            self.holders[mid] = self.holders.get(mid, 0) + 1  # another queue may hold it as an index

    def shared(self) -> dict[int, int]:
        return {mid: n for mid, n in self.holders.items() if n > 1}


def _load_messages(con: sqlite3.Connection, names: dict[int, tuple[str, str]], out: Loaded) -> None:
    rows = _Rows()
    current_qid = None
    current: list[Message] = []
    ids = array("q")
    top = con.execute("SELECT MAX(id) FROM messages").fetchone()[0] or 0
    out.next_msg_id = top + 1
    for qid, mid, exchange, key, props, body, shared in con.execute(
            "SELECT qm.qid, m.id, m.exchange, m.routing_key, m.properties, m.body, m.shared "
            "FROM queue_messages qm JOIN messages m ON m.id = qm.msg_id ORDER BY qm.qid, qm.msg_id"):
        if qid != current_qid:
            current_qid = qid
            current = out.snapshot.messages.setdefault(names[qid], [])
            ids = out.snapshot.message_ids.setdefault(names[qid], array("q"))
        rows.add(current, ids, mid, exchange, key, props, body, shared)
    out.shared = rows.shared()


def _load_within(con: sqlite3.Connection, names: dict[int, tuple[str, str]], modes: dict[int, str],
                 budget: int, out: Loaded) -> None:
    """Load bodies while they fit in budget; every other queue that may page comes back as
    an index (id, size, TTL), read without its bodies."""
    top = con.execute("SELECT MAX(id) FROM messages").fetchone()[0] or 0
    out.next_msg_id = top + 1
    # length() of a blob is read from the record header: this scan reads no body.
    totals = {qid: n for qid, n in con.execute(
        "SELECT qm.qid, SUM(LENGTH(m.body)) FROM queue_messages qm JOIN messages m ON m.id = qm.msg_id "
        "GROUP BY qm.qid")}
    left = budget
    rows = _Rows()
    holders = rows.holders
    ttl_cache: dict[bytes, int] = {}
    for qid in sorted(totals):
        if qid not in names:
            continue
        mode = modes.get(qid, "never")
        size = totals[qid] or 0
        if mode == "never" or (mode == "budget" and size <= left):
            left -= size
            current = out.snapshot.messages.setdefault(names[qid], [])
            ids = out.snapshot.message_ids.setdefault(names[qid], array("q"))
            for mid, exchange, key, props, body, shared in con.execute(
                    "SELECT m.id, m.exchange, m.routing_key, m.properties, m.body, m.shared FROM queue_messages qm "
                    "JOIN messages m ON m.id = qm.msg_id WHERE qm.qid = ? ORDER BY qm.msg_id", (qid,)):
                rows.add(current, ids, mid, exchange, key, props, body, shared)
            continue
        ids, sizes, ttls = array("q"), array("q"), array("q")
        for mid, length, props, shared in con.execute(
                "SELECT m.id, LENGTH(m.body), m.properties, m.shared FROM queue_messages qm "
                "JOIN messages m ON m.id = qm.msg_id WHERE qm.qid = ? ORDER BY qm.msg_id", (qid,)):
            if shared:
                holders[mid] = holders.get(mid, 0) + 1
            ttl = ttl_cache.get(props)
            if ttl is None:
                ttl = _ttl_ms(load_meta(props)[0])
                if len(ttl_cache) < 10_000:
                    ttl_cache[props] = ttl
            ids.append(mid)
            sizes.append(length)
            ttls.append(ttl)
        out.snapshot.paged[names[qid]] = PagedRows(ids, sizes, ttls)
    out.shared = rows.shared()


def _ttl_ms(properties: dict[str, Any]) -> int:
    """A message's own TTL (the expiration property) in ms, -1 without a usable one."""
    exp = properties.get("expiration") if properties else None
    if exp is None:
        return -1
    try:
        ms = max(0, int(exp))
    except (TypeError, ValueError):
        return -1
    return ms if ms < NEVER_MS else -1
