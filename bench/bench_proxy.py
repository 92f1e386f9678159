"""What an HA proxy (``ha/proxy.py``) costs: bulk throughput and small round trips, direct
and through a proxy running in a process of its own, clean and with a toxic that does nothing
(``latency`` 0: every chunk takes the toxic path through the link's writer task).

usage: .venv/bin/python bench/bench_proxy.py [--mib 256] [--round-trips 5000] [--rounds 3]
Prints one line per case: the median of the rounds.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time

import trio

CHUNK = 65536


def run_proxy(upstream_port: int, toxic: bool, conn) -> None:  # in the child process
    from mqemu.ha.proxy import open_proxy

    async def main() -> None:
        async with open_proxy(("127.0.0.1", upstream_port)) as proxy:
            if toxic:
                proxy.add_toxic("latency", latency=0)
                proxy.add_toxic("latency", name="up", stream="upstream", latency=0)
            conn.send(proxy.listen_port)
            await trio.to_thread.run_sync(conn.recv)  # until the parent says stop

    trio.run(main)


async def server(stream: trio.SocketStream) -> None:
    """The first byte says what to do: ``B`` sink bulk data and answer its byte count at
    EOF, ``P`` echo every message."""
    try:
        data = await stream.receive_some(CHUNK)
        mode, data = data[:1], data[1:]
        total = len(data)
        if mode == b"P" and data:
            await stream.send_all(data)
        while data := await stream.receive_some(CHUNK):
            total += len(data)
            if mode == b"P":
                await stream.send_all(data)
        await stream.send_all(str(total).encode())
        await stream.send_eof()
    except trio.BrokenResourceError:
        pass


async def bulk(port: int, mib: int) -> float:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    block = b"\0" * (1024 * 1024)
    await stream.send_all(b"B")
    start = time.perf_counter()
    for _ in range(mib):
        await stream.send_all(block)
    await stream.send_eof()
    answer = b""
    while data := await stream.receive_some(100):
        answer += data
    elapsed = time.perf_counter() - start
    assert int(answer) == mib * 1024 * 1024, answer
    await stream.aclose()
    return mib / elapsed


async def round_trips(port: int, n: int) -> float:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    msg = b"p" * 100
    await stream.send_all(b"P")
    start = time.perf_counter()
    for _ in range(n):
        await stream.send_all(msg)
        got = 0
        while got < len(msg):
            got += len(await stream.receive_some(CHUNK))
    elapsed = time.perf_counter() - start
    await stream.aclose()
    return elapsed / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--round-trips", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    async def bench() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, server, 0)
            port = listeners[0].socket.getsockname()[1]
            for label, toxic in (("direct", None), ("proxy, clean", False), ("proxy, latency 0 toxic", True)):
                target, child, parent = port, None, None
                if toxic is not None:
                    ctx = multiprocessing.get_context("spawn")  # a fork inside trio.run cannot run trio
                    parent, child_end = ctx.Pipe()
                    child = ctx.Process(target=run_proxy, args=(port, toxic, child_end))
                    child.start()
                    target = await trio.to_thread.run_sync(parent.recv)
                rates, rtts = [], []
                for _ in range(args.rounds):
                    rates.append(await bulk(target, args.mib))
                    rtts.append(await round_trips(target, args.round_trips))
                print(f"{label:24s} bulk {statistics.median(rates):8.0f} MiB/s   "
                      f"round trip {statistics.median(rtts):6.0f} µs (100 B)")
                if child is not None:
                    parent.send("stop")
                    child.join(10)
            nursery.cancel_scope.cancel()

    trio.run(bench)


if __name__ == "__main__":
    main()
