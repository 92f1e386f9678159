#!/usr/bin/env python3
"""Queues larger than memory: a node's RSS with a big queue, and the cost of the paging
check on the in-memory fast path.

``rss``: starts ``mqemu serve`` (with ``--data-dir`` unless ``--transient``) with
``[store] memory_budget``, publishes N messages of SIZE bytes with pika from several
processes into one queue (persistent into a durable queue, or transient), and reports the
node's RSS (now and peak) once they are all queued; then (``--data-dir`` only) restarts the
node on the same directory and reports the recovery time and RSS; then drains the queue with
one pika consumer, checking the count and order, and reports the rate and peak RSS.

``fastpath``: ``Queue.publish`` -> ``dispatch`` -> a no-ack stub consumer, N messages in a
queue under its budget, best and median of several rounds (in process, no sockets).

usage: python3 bench/bench_large_queue.py rss [--n 1000000] [--size 1024] [--budget 64MB]
                                              [--publishers 3] [--transient] [--no-drain]
       python3 bench/bench_large_queue.py fastpath [--n 100000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time

QUEUE = "big"


def status(pid: int) -> dict[str, float]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


class NodeProc:
    def __init__(self, work: str, data: str | None, config: str) -> None:
        self.ready = os.path.join(work, "ready.json")
        if os.path.exists(self.ready):
            os.unlink(self.ready)
        self.log = open(os.path.join(work, "node.log"), "ab")
        args = [sys.executable, "-m", "mqemu.ha.cli", "serve", "--amqp-port", "0", "--stomp-port", "off",
                "--mqtt-port", "off", "--config", config, "--ready-file", self.ready]
        if data:
            args += ["--data-dir", data]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        while not os.path.exists(self.ready):
            if self.proc.poll() is not None:
                raise SystemExit(f"node exited: see {self.log.name}")
            time.sleep(0.02)
        self.ready_after = time.monotonic() - self.started
        self.port = json.load(open(self.ready))["amqp"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(120)
        self.log.close()


def _publisher(port: int, n: int, size: int, persistent: bool, offset: int) -> None:
    import pika
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, blocked_connection_timeout=300))
    ch = conn.channel()
    props = pika.BasicProperties(delivery_mode=2 if persistent else 1)
    pad = b"x" * (size - 16)
    for i in range(offset, offset + n):
        ch.basic_publish("", QUEUE, b"%016d" % i + pad, props)
    conn.close()


def message_count(port: int, durable: bool) -> int:
    import pika
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    n = conn.channel().queue_declare(QUEUE, durable=durable, passive=True).method.message_count
    conn.close()
    return n


def drain(port: int, n: int, publishers: int) -> float:
    """Consume n messages; checks each publisher's messages arrive in its order."""
    import pika
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=2000)
    per = n // publishers
    last = [p * per - 1 for p in range(publishers)]
    got = 0
    started = time.monotonic()
    for method, _, body in ch.consume(QUEUE, auto_ack=False, inactivity_timeout=30):
        if method is None:
            raise SystemExit(f"drain stalled after {got} of {n} messages")
        i = int(body[:16])
        p = i // per
        assert i == last[p] + 1, f"out of order: {i} after {last[p]}"
        last[p] = i
        got += 1
        if got % 1000 == 0 or got == n:
            ch.basic_ack(method.delivery_tag, multiple=True)
        if got == n:
            break
    took = time.monotonic() - started
    ch.cancel()
    conn.close()
    return took


def rss(a: argparse.Namespace) -> int:
    import pika
    work = a.keep or tempfile.mkdtemp(prefix="mqemu-large-")
    os.makedirs(work, exist_ok=True)
    config = os.path.join(work, "mqemu.toml")
    with open(config, "w") as f:
        f.write(f'[store]\nmemory_budget = "{a.budget}"\n')
    data = None if a.transient else os.path.join(work, "data")
    durable = not a.transient
    node = NodeProc(work, data, config)
    try:
        base = status(node.proc.pid)["VmRSS"]
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.port))
        conn.channel().queue_declare(QUEUE, durable=durable)
        conn.close()
        per = a.n // a.publishers
        n = per * a.publishers
        started = time.monotonic()
        procs = [multiprocessing.Process(target=_publisher, args=(node.port, per, a.size, durable, p * per))
                 for p in range(a.publishers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        while message_count(node.port, durable) < n:
            time.sleep(0.2)
        took = time.monotonic() - started
        time.sleep(1.0)  # let the last batch commit and the read-ahead settle
        st = status(node.proc.pid)
        print(f"{n} x {a.size} B {'persistent, --data-dir' if durable else 'transient, memory store'}, "
              f"budget {a.budget}: queued in {took:.1f} s ({n / took:,.0f} msg/s); "
              f"RSS {st['VmRSS']:.0f} MB (peak {st['VmHWM']:.0f} MB, idle node {base:.0f} MB)")
        if durable:
            node.stop()
            node = NodeProc(work, data, config)
            count = message_count(node.port, durable)
            st = status(node.proc.pid)
            print(f"restart: ready {node.ready_after:.2f} s after start with {count} messages; "
                  f"RSS {st['VmRSS']:.0f} MB (peak {st['VmHWM']:.0f} MB)")
            assert count == n, count
        if not a.no_drain:
            took = drain(node.port, n, a.publishers)
            st = status(node.proc.pid)
            print(f"drained {n} in {took:.1f} s ({n / took:,.0f} msg/s), in order; "
                  f"RSS {st['VmRSS']:.0f} MB (peak {st['VmHWM']:.0f} MB)")
    finally:
        node.stop()
        if not a.keep:
            subprocess.run(["rm", "-rf", work])
    return 0


def fastpath(a: argparse.Namespace) -> int:
    from mqemu.broker.core import Broker
    from mqemu.broker.message import Message
    from mqemu.broker.queue import Consumer

    class Owner:
        blocked = False
        n = 0

        def deliver(self, consumer, entry) -> None:
            self.n += 1

        def consumer_cancelled(self, consumer) -> None:
            pass

    def round_() -> float:
        broker = Broker()
        q = broker.vhosts["/"].declare_queue("q")
        owner = Owner()
        q.add_consumer(Consumer(q, "c", owner, no_ack=True))
        body = b"x" * 1024
        msgs = [Message("", "q", body, {}) for _ in range(a.n)]
        publish = q.publish
        t = time.perf_counter()
        for m in msgs:
            publish(m, 0.0)
        took = time.perf_counter() - t
        assert owner.n == a.n
        return took

    times = sorted(round_() for _ in range(a.rounds))
    print(f"publish+dispatch {a.n} to a no-ack stub consumer: best {times[0] / a.n * 1e9:.0f} ns/msg, "
          f"median {statistics.median(times) / a.n * 1e9:.0f} ns/msg ({a.rounds} rounds)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rss")
    r.add_argument("--n", type=int, default=1_000_000)
    r.add_argument("--size", type=int, default=1024)
    r.add_argument("--budget", default="64MB")
    r.add_argument("--publishers", type=int, default=3)
    r.add_argument("--transient", action="store_true", help="no --data-dir, transient messages")
    r.add_argument("--no-drain", action="store_true")
    r.add_argument("--keep", default=None, metavar="DIR", help="work (and leave the data) in DIR")
    f = sub.add_parser("fastpath")
    f.add_argument("--n", type=int, default=100_000)
    f.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    return rss(a) if a.cmd == "rss" else fastpath(a)


if __name__ == "__main__":
    sys.exit(main())
