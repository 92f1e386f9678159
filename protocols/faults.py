"""Quiet logs for faults that can repeat many times a second (no trio, no I/O).

A bug hit by every connection, or a listener out of file descriptors, must not write a
traceback per event: ``RateLimitedLog`` writes at most one line per ``interval`` seconds
per kind of fault, and the next line it writes says how many it left out. The first line
of a kind in the process carries the traceback; later ones carry it only at DEBUG level.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable


class RateLimitedLog:
    """One warning line per ``interval`` seconds per key; counts what it suppresses."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._next: dict[str, float] = {}  # key -> earliest time of the next line
        self._suppressed: dict[str, int] = {}
        self._traced: set[str] = set()  # keys whose traceback was written once

    def warn(self, log: logging.Logger, key: str, msg: str, *args: Any,
             exc: BaseException | None = None, extra: dict[str, Any] | None = None) -> bool:
        """Log ``msg % args`` unless a line for ``key`` was written less than ``interval``
        seconds ago (then count it). True if a line was written."""
        now = self.clock()
        if now < self._next.get(key, 0.0):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            if exc is not None and log.isEnabledFor(logging.DEBUG):
                log.debug(msg, *args, exc_info=exc, extra=extra)
            return False
        self._next[key] = now + self.interval
        skipped = self._suppressed.pop(key, 0)
        if skipped:
            msg += " (%d more since the last such line)"
            args += (skipped,)
        exc_info: Any = None
        if exc is not None:
            if key not in self._traced:
                self._traced.add(key)
                exc_info = exc
            elif log.isEnabledFor(logging.DEBUG):
                exc_info = exc
        log.warning(msg, *args, exc_info=exc_info, extra=extra)
        return True


# Shared by every listener of the process: a fault is counted once whatever the protocol.
FAULTS = RateLimitedLog()
