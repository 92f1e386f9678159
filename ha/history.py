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
  sequence number) and ``redelivered`` (the broker's redelivered / DUP flag).

A fault is two records: ``type: "invoke"`` when it starts and ``type: "ok"`` (or
``"info"``) when it is over; a fault without an end lasts until the end of the history.

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
  at-least-once contract working, counted apart as ``redelivered``;
- ``reordered``: a first delivery whose publisher sequence is lower than one already
  delivered from the same publisher (redeliveries and repeated ids ignored);
- ``ok-frac``: the share of attempted messages that were delivered (at least once).
"""

from __future__ import annotations

import json
import os
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


def read_history(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of a history file, in time order (stable for equal times).

    Raises HistoryError for a malformed line and OSError if the file cannot be read.
    """
    with open(path, encoding="utf-8") as f:
        records = list(parse_lines(f, os.fspath(path)))
    records.sort(key=lambda r: r["time"])
    return records
