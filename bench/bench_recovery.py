#!/usr/bin/env python3
"""Time to recover a durable queue of N persistent messages (default 1 000 000 x 256 B).

Fills a data directory through the SQLite store (in process, the same writes a publisher
makes), then starts ``mqemu serve --data-dir`` on it and measures the time until its ready
file appears, the recovery time the node logs, and the node's RSS once recovered.

usage: python3 bench/bench_recovery.py [--n N] [--size BYTES] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import trio

from mqemu.broker.core import Broker
from mqemu.broker.message import Message
from mqemu.broker.store.sqlite import SQLiteStore


async def fill(data_dir: str, n: int, size: int) -> float:
    started = time.monotonic()
    store = SQLiteStore(data_dir)
    await store.open()
    broker = Broker(store=store)
    vh = broker.vhosts["/"]
    q = vh.declare_queue("big", durable=True)
    body = os.urandom(size)
    props = {"delivery_mode": 2}
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        for start in range(0, n, 20_000):
            for _ in range(min(20_000, n - start)):
                vh.publish("", "big", Message("", "big", body, props))
            done = trio.Event()
            store.when_durable(store.barrier(), done.set)
            await done.wait()
            q.ready.clear()  # the bench needs the rows, not the entries in this process
        nursery.cancel_scope.cancel()
    await store.close()
    return time.monotonic() - started


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--keep", default=None, help="use (and keep) this data directory")
    a = ap.parse_args()
    work = a.keep or tempfile.mkdtemp(prefix="mqemu-recovery-")
    data = os.path.join(work, "data")
    if not os.path.exists(os.path.join(data, "mqemu.sqlite")):
        took = trio.run(fill, data, a.n, a.size)
        print(f"filled {a.n} x {a.size} B in {took:.1f} s; database "
              f"{os.path.getsize(os.path.join(data, 'mqemu.sqlite')) / 1e6:.0f} MB")
    ready = os.path.join(work, "ready.json")
    log = os.path.join(work, "node.log")
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mqemu.ha.cli", "serve", "--amqp-port", "0",
                                 "--stomp-port", "off", "--mqtt-port", "off", "--data-dir", data,
                                 "--ready-file", ready], stdout=out, stderr=subprocess.STDOUT)
    try:
        while not os.path.exists(ready):
            if proc.poll() is not None:
                print(open(log).read())
                return 1
            time.sleep(0.01)
        ready_after = time.monotonic() - started
        json.load(open(ready))
        text = open(log).read()
        opened = re.search(r"store opened .*seconds=([\d.]+)", text)
        recovered = re.search(r"recovered .* (\d+) messages in ([\d.]+) s", text)
        print(f"node ready {ready_after:.2f} s after start; store open+load {opened.group(1)} s; "
              f"queue rebuilt in {recovered.group(2)} s; {recovered.group(1)} messages; "
              f"RSS {rss_mb(proc.pid):.0f} MB")
    finally:
        proc.terminate()
        proc.wait(60)
        if not a.keep:
            subprocess.run(["rm", "-rf", work])
    return 0


if __name__ == "__main__":
    sys.exit(main())
