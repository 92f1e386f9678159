"""Histories: what a workload's clients did and saw, one JSON object per line (JSONL).

Every record has:

- ``time``: ``time.monotonic()`` seconds. On Linux this is the system-wide CLOCK_MONOTONIC,
  so records written by the workload and by a fault injector in another process of the same
  machine can be compared;
- ``wall``: ``time.time()`` seconds, for people reading the file;
- ``process``: the client that wrote it (``publisher-0``, ``consumer-0``, ``nemesis``, ...);
- ``type``: as in Jepsen: ``invoke`` (an operation starts), ``ok`` (it surely happened),
  ``fail`` (it surely did not happen), ``info`` (nobody knows: the connection died first, or
  a note such as an error or a fault's end);
- ``f``: what was done: ``enqueue`` (publish), ``dequeue`` (a delivery reached the client),
  ``ack`` (the client acknowledged a delivery), ``connect`` / ``reconnect``, ``error`` (a
  connection broke), ``fault`` (a fault was injected), ``done`` (the process finished);
- ``value``: the message id (``enqueue``, ``dequeue``, ``ack``), the endpoint
  (``connect``), or for ``fault`` an object ``{"action": ..., "target": ...}``;
- optional ``error`` (text), and per message ``publisher`` and ``seq`` (the publisher's
  sequence number) and ``redelivered`` (the broker's redelivered / DUP flag). An ``ack``
  record of type ``ok`` means the broker answered it (STOMP: the ACK's receipt) unless it
  has ``confirmed: false``: AMQP and MQTT acks have no answer, so ``ok`` there only says
  the ack was written on a live connection, and a break of that connection afterwards
  may still have cut it.

A fault is two records: ``type: "invoke"`` when it starts and ``type: "ok"`` (or
``"info"``) when it is over; a fault without an end lasts until the end of the history.

What the topology recorded (``Topology.facts()``, through ``facts_records``) joins a history
as well: its faults (``value`` ``{"action", "target", "id"}``, whoever applied them: the
harness, ``mqemu fault`` from a shell, a test), and ``f: "node"`` records of ``type:
"info"``: a node's own events (``process`` the node's name, ``value`` the event: ``role``,
``lock-acquired`` with ``waited``, ``store-loaded`` and ``recovered`` with ``seconds``, ``listening`` with
``protocol``, ``lock-lost``) and the supervisor's view (``process: "topology"``, ``value:
"role"``, ``node`` and ``role``: an ``active`` there is the moment the node's endpoints
open to clients). The checker counts nothing from them; it lists them per fault as the
takeover's phases, and the timeline draws them.

The verdict's terms (computed by ``mqemu.ha.checker``, after Jepsen's queue and total-queue
checkers; a message id is one message even if its publisher sent it again after a broken
connection):

- attempted: a publish of the id was invoked;
- acknowledged (confirmed): the broker told the publisher it has the message (AMQP confirm,
  STOMP receipt, MQTT PUBACK);
- ``lost``: acknowledged to the publisher and never delivered to any consumer. This is the
  one category a broker must never produce;
- ``recovered``: delivered although its publisher never got an acknowledgement (the publish
  ended unknown or failed); no harm done, the publisher just could not know;
- ``unexpected``: delivered but never attempted by anyone (a leftover from an earlier run,
  a corrupt body, a message made up by the broker);
- ``duplicated``: delivered as a fresh copy more times than it was published (Jepsen counts
  a publish sent again after a broken connection as one more attempt, and so do we here:
  the broker may rightly hold two copies). A delivery is a fresh copy unless it comes after
  a delivery of the same id that the consumer never acknowledged: that one is the
  at-least-once contract working, counted apart as ``redelivered``. An ack is not surely
  done when it ended unknown (``info``: its receipt never came) or when it was
  ``confirmed: false`` and its consumer's connection then broke (an ``error`` record before
  that consumer's next connect); a delivery after such an ack, flagged ``redelivered`` by
  the broker, is a redelivery too;
- ``reordered``: a first delivery whose publisher sequence is lower than one already
  delivered from the same publisher (redeliveries and repeated ids ignored);
- ``ok-frac``: the share of attempted messages that were delivered (at least once).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import threading
import time
from typing import IO, Any, Iterable, Iterator

TYPES = frozenset({"invoke", "ok", "fail", "info"})
_encode = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps with separators builds one per call


class HistoryError(ValueError):
    """A history file that is not JSONL records of this format; the text names the line."""


class HistoryWriter:
    """Appends records to a JSONL file. Thread-safe; records are kept in a list and written
    every ``flush_every`` records and on ``flush()``/``close()``, so a record costs one dict
    and one ``json.dumps``. Use it as a context manager or call ``close()``."""

    def __init__(self, path: str | os.PathLike[str], flush_every: int = 256, append: bool = False) -> None:
        self.path = os.fspath(path)
        self.flush_every = flush_every
        self._file: IO[str] | None = open(self.path, "a" if append else "w", encoding="utf-8")
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def record(self, process: str, type: str, f: str, value: Any = None, **extra: Any) -> dict[str, Any]:
        """Append one record stamped with the current times; returns it."""
        rec = {"time": time.monotonic(), "wall": time.time(), "process": process, "type": type, "f": f,
               "value": value, **extra}
        line = _encode(rec)
        with self._lock:
            self._lines.append(line)
            if len(self._lines) >= self.flush_every:
                self._write_locked()
        return rec

    def fault(self, action: str, target: str, type: str = "invoke", **extra: Any) -> dict[str, Any]:
        """A fault's start (``type="invoke"``) or end (``type="ok"``), from the ``nemesis``."""
        return self.record("nemesis", type, "fault", {"action": action, "target": target}, **extra)

    def flush(self) -> None:
        with self._lock:
            self._write_locked()

    def _write_locked(self) -> None:
        if self._file is None or not self._lines:
            return
        self._file.write("\n".join(self._lines) + "\n")
        self._file.flush()
        self._lines.clear()

    def close(self) -> None:
        with self._lock:
            self._write_locked()
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> "HistoryWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def parse_lines(lines: Iterable[str], name: str = "history") -> Iterator[dict[str, Any]]:
    """The records of JSONL lines (blank lines skipped).

    Raises HistoryError naming the line for text that is not a JSON object, or an object
    without a numeric ``time``, a known ``type`` and a string ``f`` and ``process``.
    """
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise HistoryError(f"{name}:{n}: not JSON: {e}") from None
        if not isinstance(rec, dict):
            raise HistoryError(f"{name}:{n}: a record is a JSON object, not {type(rec).__name__}")
        t = rec.get("time")
        if not isinstance(t, (int, float)) or isinstance(t, bool):
            raise HistoryError(f"{name}:{n}: 'time' must be a number of seconds")
        if rec.get("type") not in TYPES:
            raise HistoryError(f"{name}:{n}: 'type' must be one of {', '.join(sorted(TYPES))}")
        for key in ("f", "process"):
            if not isinstance(rec.get(key), str):
                raise HistoryError(f"{name}:{n}: '{key}' must be a string")
        yield rec


def facts_records(facts: dict[str, Any], start: float | None = None,
                  end: float | None = None) -> list[dict[str, Any]]:
    """History records of a topology's ``facts()`` (``ControlClient.facts()`` from another
    process): its faults and node events from ``start`` to ``end`` (history times; a fault
    still on at ``start`` counts). Times are the topology's CLOCK_MONOTONIC; when
    ``local_clock`` shows the topology runs elsewhere (its clock reading falls outside our
    request), they are moved by the difference of the clocks at the request."""
    offset = 0.0
    local = facts.get("local_clock")
    if local is not None:
        remote = facts["clock"]["time"]
        if not local["before"] <= remote <= local["after"]:
            offset = (local["before"] + local["after"]) / 2 - remote
    lo = float("-inf") if start is None else start
    hi = float("inf") if end is None else end
    out: list[dict[str, Any]] = []
    for f in facts.get("faults", []):
        began = f["time"] + offset
        ended = None if f.get("end") is None else f["end"] + offset
        if began > hi or (ended is not None and ended < lo):
            continue
        value = {"action": f["action"], "target": f["target"], "id": f["id"]}
        extra = {k: v for k, v in f.items() if k not in ("time", "wall", "end", "action", "target", "id")}
        out.append({"time": began, "wall": f.get("wall"), "process": "nemesis", "type": "invoke", "f": "fault",
                    "value": value, **extra})
        if ended is not None:
            out.append({"time": ended, "wall": None, "process": "nemesis", "type": "ok", "f": "fault",
                        "value": value})
    streams = [("topology", e) for e in facts.get("events", []) if e.get("event") == "role"]
    streams += [(name, e) for name, events in facts.get("nodes", {}).items() for e in events]
    for process, e in streams:
        if "mono" not in e:
            continue
        t = e["mono"] + offset
        if lo <= t <= hi:
            extra = {k: v for k, v in e.items() if k not in ("time", "mono", "event")}
            out.append({"time": t, "wall": e.get("time"), "process": process, "type": "info", "f": "node",
                        "value": e["event"], **extra})
    out.sort(key=lambda r: r["time"])
    return out


def _identity(rec: dict[str, Any]) -> tuple[Any, ...]:
    return rec["process"], rec["f"], rec["type"], round(rec["time"], 6), _encode(rec.get("value"))


def merge_facts(records: list[dict[str, Any]], facts: dict[str, Any]) -> list[dict[str, Any]]:
    """``records`` (a history, sorted) with the topology's facts over its span added, each
    once (facts already merged into the file are not added again); sorted by time."""
    if not records:
        return []
    seen = {_identity(r) for r in records if r["f"] in ("fault", "node")}
    extra = [r for r in facts_records(facts, records[0]["time"], records[-1]["time"]) if _identity(r) not in seen]
    return sorted(records + extra, key=lambda r: r["time"])


def append_facts(path: str | os.PathLike[str], facts: dict[str, Any]) -> int:
    """Append to a history file the topology's facts over its span (``merge_facts``), so
    ``mqemu check`` of the file alone sees every fault and node event; returns how many."""
    records = read_history(path)
    merged = merge_facts(records, facts)
    seen = {id(r) for r in records}
    extra = [r for r in merged if id(r) not in seen]
    if extra:
        with open(path, "a", encoding="utf-8") as f:
            f.write("".join(_encode(r) + "\n" for r in extra))
    return len(extra)


def read_histories(paths: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Several history files merged by time (a fault injector may keep its own). Fault and
    node records found in more than one file (the topology's facts, appended to each
    workload's history) are kept once. Raises as ``read_history``."""
    out: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    files = [(path, read_history(path)) for path in paths]
    # Two workloads' clients both named ``consumer-0`` are two clients: a name found in
    # several files is qualified with its file's name (``history-2-amqp/consumer-0``).
    owners: dict[str, set[int]] = {}
    for i, (_path, records) in enumerate(files):
        for rec in records:
            if rec["f"] not in ("fault", "node"):
                owners.setdefault(rec["process"], set()).add(i)
    shared = {name for name, where in owners.items() if len(where) > 1}
    for path, records in files:
        label = Path(path).stem
        for rec in records:
            if rec["f"] in ("fault", "node"):
                key = _identity(rec)
                if key in seen:
                    continue
                seen.add(key)
            elif rec["process"] in shared:
                rec["process"] = f"{label}/{rec['process']}"
            out.append(rec)
    out.sort(key=lambda r: r["time"])
    return out


def read_history(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of a history file, in time order (stable for equal times).

    Raises HistoryError for a malformed line and OSError if the file cannot be read.
    """
    with open(path, encoding="utf-8") as f:
        records = list(parse_lines(f, os.fspath(path)))
    records.sort(key=lambda r: r["time"])
    return records
