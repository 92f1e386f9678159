#!/usr/bin/env python3
"""The management API's cost: request latency (median of N) for ``GET /api/overview``,
``GET /api/queues`` with Q queues, a ``publish`` and a ``get``; and AMQP publish throughput
(pika, one connection, no confirms) with and without a monitor polling ``/api/queues``
every ``--poll`` seconds, runs interleaved A/B/A/B/A. A handler runs in the node's loop: a
listing of many queues holds message traffic for as long as it takes to build and encode. The node runs in a thread of this process
(``NodeThread``), the clients in the main thread.

usage: .venv/bin/python bench/bench_mgmt.py [--queues 1000] [--n 200] [--messages 20000] [--poll 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import httpx
import pika

from mqemu.ha.node import NodeThread


def latency(client: httpx.Client, method: str, path: str, n: int, **kw: object) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        r = client.request(method, path, **kw)  # type: ignore[arg-type]
        times.append(time.perf_counter() - t)
        assert r.status_code < 300, r.text
    return statistics.median(times) * 1000


def poll(base: str, stop: threading.Event, every: float) -> None:
    with httpx.Client(base_url=base, auth=("guest", "guest")) as pc:
        while not stop.wait(every):
            pc.get("/queues")


def throughput(port: int, messages: int) -> float:
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = conn.channel()
    ch.queue_declare("bench-tp")
    body = b"x" * 100
    t = time.perf_counter()
    for _ in range(messages):
        ch.basic_publish("", "bench-tp", body)
    ch.queue_purge("bench-tp")  # a round trip: every publish is in
    elapsed = time.perf_counter() - t
    conn.close()
    return messages / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queues", type=int, default=1000)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--poll", type=float, default=1.0)
    args = ap.parse_args()
    with NodeThread(ports={"http": 0}) as node:
        vh = node.node.broker.vhosts["/"]
        node.call(lambda: [vh.declare_queue(f"q{i}") for i in range(args.queues)])
        base = f"http://127.0.0.1:{node.ports['http']}/api"
        with httpx.Client(base_url=base, auth=("guest", "guest")) as c:
            print(f"GET /api/overview            {latency(c, 'GET', '/overview', args.n):7.2f} ms")
            print(f"GET /api/queues ({args.queues} queues) {latency(c, 'GET', '/queues', max(5, args.n // 10)):7.2f} ms")
            pub = {"properties": {}, "routing_key": "q0", "payload": "x", "payload_encoding": "string"}
            print(f"POST publish                 {latency(c, 'POST', '/exchanges/%2F/amq.default/publish', args.n, json=pub):7.2f} ms")
            get = {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}
            print(f"POST get                     {latency(c, 'POST', '/queues/%2F/q0/get', args.n, json=get):7.2f} ms")
        rates: dict[str, list[float]] = {"plain": [], "polled": []}
        for label in ("plain", "polled", "plain", "polled", "plain"):
            stop = threading.Event()
            poller = None
            if label == "polled":
                poller = threading.Thread(target=poll, args=(base, stop, args.poll), daemon=True)
                poller.start()
            rates[label].append(throughput(node.ports["amqp"], args.messages))
            stop.set()
            if poller is not None:
                poller.join()
        plain, polled = statistics.median(rates["plain"]), statistics.median(rates["polled"])
        print(f"AMQP publish msg/s: plain {plain:,.0f}, with /api/queues polled every {args.poll} s {polled:,.0f} "
              f"(ratio {polled / plain:.2f})")


if __name__ == "__main__":
    main()
