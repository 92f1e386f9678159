"""Benchmark: the history writer's cost per record, and ``mqemu check`` on a large history.

Run: python bench/bench_checker.py [MESSAGES]
Writes a history of MESSAGES messages (default 100 000; 5 records each: publish invoke and
ok, delivery, ack invoke and ok) with a few faults, then reads and checks it. Prints
microseconds per record written and seconds to read and to check. Not a test.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from mqemu.ha.checker import check
from mqemu.ha.history import HistoryWriter, read_history


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run(n, os.path.join(tmp, "h.jsonl"))


def run(n: int, path: str) -> None:
    start = time.perf_counter()
    with HistoryWriter(path) as w:
        for i in range(n):
            if i % (n // 4 or 1) == 0:
                w.fault("kill", "active")
            mid = f"run-publisher-0-{i}"
            w.record("publisher-0", "invoke", "enqueue", mid, publisher="publisher-0", seq=i)
            w.record("publisher-0", "ok", "enqueue", mid, publisher="publisher-0", seq=i)
            w.record("consumer-0", "ok", "dequeue", mid, publisher="publisher-0", seq=i, redelivered=False)
            w.record("consumer-0", "invoke", "ack", mid)
            w.record("consumer-0", "ok", "ack", mid)
    written = time.perf_counter() - start
    records = 5 * n + 4
    start = time.perf_counter()
    history = read_history(path)
    read = time.perf_counter() - start
    start = time.perf_counter()
    verdict = check(history)
    checked = time.perf_counter() - start
    assert verdict.valid and verdict.counts.attempted == n
    print(f"{records} records ({os.path.getsize(path) / 1e6:.1f} MB): write {written / records * 1e6:.2f} us/record, "
          f"read {read:.2f} s, check {checked:.2f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
