"""Python bytecodes the broker executes for a lone message, and how many of them come before
the delivery is written (what the latency waits for).

A node runs in this process; ``shared/bench/loadgen.py --workload latency`` runs against it
in a subprocess at a low rate (default 50 msg/s, so every message is alone in its pass).
``sys.settrace`` counts opcode events in the broker's thread while the loadgen runs. Two
figures per message:

- ``to_write``: from trio's ``process_events`` (the loop woke up for the publisher's bytes)
  to the ``os.write`` of the delivery (median over the messages): the broker's part of the
  round trip that the latency benchmark times;
- ``total``: every bytecode of the run divided by the messages (connection set-up, the work
  after the write, timers included).

With ``--top N`` the functions with the most own bytecodes before the write, per message.
It imports whichever build the interpreter imports, so the same file measures an older tree
(``PYTHONPATH=COPY python bench/bench_lone.py``).

Run: python bench/bench_lone.py [--proto mqtt|amqp|stomp] [--n 300] [--rate 50] [--top 20]
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
from typing import Any

import trio

from mqemu.ha.node import open_node

LOADGEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench", "loadgen.py")


class Counter:
    def __init__(self) -> None:
        self.total = 0
        self.since_wake = 0
        self.on = False
        self.to_write: list[int] = []
        self.own: collections.Counter[Any] = collections.Counter()  # before the write
        self.this_pass: collections.Counter[Any] = collections.Counter()
        self.written: list[collections.Counter[Any]] = []  # each write's pass, merged in ``own``
        self.writing = False
        self.passes = 0

    def trace(self, frame: Any, event: str, arg: Any) -> Any:
        if not self.on:
            return None
        if event == "call" and frame.f_code.co_name == "process_events":
            self.since_wake = 0
            self.writing = True
            self.this_pass = collections.Counter()
            self.passes += 1
        frame.f_trace_opcodes = True
        return self.local

    def local(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "opcode":
            self.total += 1
            if self.writing:
                self.since_wake += 1
                self.this_pass[frame.f_code] += 1
        return self.local

    def wrote(self) -> None:
        if self.on and self.writing:
            self.to_write.append(self.since_wake)
            self.written.append(self.this_pass)
            self.this_pass = collections.Counter()
            self.writing = False


async def main(a: argparse.Namespace) -> None:
    counter = Counter()
    real_write = os.write

    def write(fd: int, data: Any) -> int:
        counter.wrote()
        return real_write(fd, data)

    os.write = write  # type: ignore[assignment]
    async with open_node(ports={a.proto: 0}) as node:
        port = node.ports[a.proto]
        cmd = [sys.executable, LOADGEN, "--proto", a.proto, "--port", str(port), "--workload", "latency",
               "--rate", str(a.rate), "--n", str(a.n)]
        counter.on = True
        sys.settrace(counter.trace)
        trio.lowlevel.current_task().coro.cr_frame.f_trace = None
        try:
            result = await trio.run_process(cmd, capture_stdout=True)
        finally:
            sys.settrace(None)
            counter.on = False
            os.write = real_write  # type: ignore[assignment]
    n = len(counter.to_write)
    print(f"{a.proto}: {n} deliveries written; bytecodes from wake-up to the write: median "
          f"{statistics.median(counter.to_write):.0f} (min {min(counter.to_write)}, max "
          f"{max(counter.to_write)}); all bytecodes per message: {counter.total / a.n:.0f}; "
          f"loop passes per message: {counter.passes / a.n:.2f}")
    print(result.stdout.decode().strip()[:300])
    if a.top:
        for c in counter.written:
            counter.own.update(c)
        for code, count in counter.own.most_common(a.top):
            print(f"{count / n:8.1f}  {code.co_name} ({os.path.basename(code.co_filename)}:{code.co_firstlineno})")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--proto", choices=("mqtt", "amqp", "stomp"), default="mqtt")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--rate", type=int, default=50)
    p.add_argument("--top", type=int, default=0)
    trio.run(main, p.parse_args())
