"""The balancer in front of plain TCP backends (each says its name, then echoes): health
checks and their thresholds, the algorithms, fail-open, and the reset of an unhealthy
target's connections."""

from __future__ import annotations

import socket

import pytest
import trio

from mqemu.ha.balancer import HEALTH_TIMINGS, Balancer, HealthTiming

pytestmark = pytest.mark.timeout(30)

FAST = HEALTH_TIMINGS["fast"]


class Backend:
    """A TCP server that sends its name on connect and then echoes; ``stop()`` closes the
    listener and every connection (a dead node: RST to its clients)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.streams: set[trio.SocketStream] = set()
        self.scope = trio.CancelScope()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """``scope`` stops the listener only: open connections stay until ``stop()``."""
        (listener,) = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listener.socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started()
            with self.scope:
                while True:
                    nursery.start_soon(self._serve, await listener.accept())
            await listener.aclose()

    async def _serve(self, stream: trio.SocketStream) -> None:
        self.streams.add(stream)
        try:
            await stream.send_all(self.name.encode())
            async for data in stream:
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.streams.discard(stream)

    def stop(self) -> None:
        self.scope.cancel()
        for stream in list(self.streams):
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            stream.socket.close()


async def start(nursery, names=("a", "b", "c"), **kwargs):
    backends = {}
    for name in names:
        backends[name] = Backend(name)
        await nursery.start(backends[name].run)
    balancer = Balancer(("amqp",), **kwargs)
    for name, backend in backends.items():
        balancer.register(name, "amqp", ("127.0.0.1", backend.port))
    await nursery.start(balancer.run)
    return backends, balancer


async def until(condition, timeout=10.0):
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


async def connect(balancer) -> tuple[trio.SocketStream, str]:
    stream = await trio.open_tcp_stream("127.0.0.1", balancer.ports["amqp"])
    name = await stream.receive_some(1)
    return stream, name.decode()


def all_healthy(balancer):
    return all(t.state == "healthy" for t in balancer.targets.values())


async def test_round_robin_over_healthy_targets_with_counts(nursery):
    backends, balancer = await start(nursery, algorithm="round-robin")
    assert {t.state for t in balancer.targets.values()} == {"initial"}
    await until(lambda: all_healthy(balancer))
    conns = [await connect(balancer) for _ in range(6)]
    assert [name for _, name in conns] == ["a", "b", "c", "a", "b", "c"]
    await conns[0][0].send_all(b"ping")
    assert await conns[0][0].receive_some(4) == b"ping"
    await until(lambda: balancer.status()["targets"]["a"]["connections"] == 2)
    assert balancer.status()["targets"]["b"] == {"health": {"amqp": "healthy"}, "connections": 2}
    for stream, _ in conns:
        await stream.aclose()
    await until(lambda: sum(t["connections"] for t in balancer.status()["targets"].values()) == 0)


async def test_an_unhealthy_target_loses_its_connections_and_new_ones(nursery):
    backends, balancer = await start(nursery, algorithm="round-robin")
    await until(lambda: all_healthy(balancer))
    conns = [await connect(balancer) for _ in range(3)]
    # b stops listening but keeps its connections: only the health check can notice
    backends["b"].scope.cancel()
    await until(lambda: balancer.targets["b", "amqp"].state == "unhealthy")
    stream_b = next(s for s, name in conns if name == "b")
    with pytest.raises(trio.BrokenResourceError):  # reset by the balancer, as an NLB does
        with trio.fail_after(5):
            while True:
                if not await stream_b.receive_some(100):
                    raise AssertionError("closed with a FIN, not reset")
    names = [(await connect(balancer))[1] for _ in range(4)]
    assert "b" not in names and set(names) == {"a", "c"}
    # a, c untouched
    for stream, name in conns:
        if name != "b":
            await stream.send_all(b"x")
            assert await stream.receive_some(1) == b"x"
    # b back on a new port: healthy after the healthy threshold, and picked again
    backends["b"] = Backend("b")
    backends["b"].scope = trio.CancelScope()
    await nursery.start(backends["b"].run)
    balancer.set_address("b", "amqp", ("127.0.0.1", backends["b"].port))
    await until(lambda: balancer.targets["b", "amqp"].state == "healthy")
    assert "b" in {(await connect(balancer))[1] for _ in range(3)}


async def test_thresholds_count_checks_in_a_row(nursery):
    timing = HealthTiming(interval=0.05, timeout=1.0, healthy_threshold=3, unhealthy_threshold=3)
    backends, balancer = await start(nursery, names=("a",), timing=timing)
    target = balancer.targets["a", "amqp"]
    balancer._record(target, True)  # a check of our own: two of three so far, plus the loop's
    await until(lambda: target.state == "healthy")
    for _ in range(2):
        balancer._record(target, False)
    assert target.state == "healthy"  # two failures do not make it unhealthy
    balancer._record(target, True)
    balancer._record(target, False)
    balancer._record(target, False)
    assert target.state == "healthy" and target.failures == 2  # the success broke the run
    balancer._record(target, False)
    assert target.state == "unhealthy"


async def test_no_healthy_target_fails_open(nursery):
    once = HealthTiming(interval=600, timeout=1.0, healthy_threshold=1, unhealthy_threshold=1)  # one check
    backends, balancer = await start(nursery, names=("a", "b"), algorithm="round-robin", timing=once)
    await until(lambda: all_healthy(balancer))
    for target in balancer.targets.values():
        target.state = "unhealthy"  # as if every check failed, while the backends still answer
    names = {(await connect(balancer))[1] for _ in range(2)}
    assert names == {"a", "b"}


async def test_no_target_at_all_resets_the_client(nursery):
    balancer = Balancer(("amqp",))
    balancer.register("a", "amqp", None)  # a node that has no port now
    await nursery.start(balancer.run)
    stream = await trio.open_tcp_stream("127.0.0.1", balancer.ports["amqp"])
    with pytest.raises(trio.BrokenResourceError):
        with trio.fail_after(5):
            await stream.receive_some(1)


@pytest.mark.parametrize("algorithm", ["flow-hash", "least-connections"])
async def test_other_algorithms_spread_new_connections(nursery, algorithm):
    backends, balancer = await start(nursery, algorithm=algorithm)
    await until(lambda: all_healthy(balancer))
    conns = [await connect(balancer) for _ in range(30)]
    counts = {name: sum(n == name for _, n in conns) for name in backends}
    if algorithm == "least-connections":
        assert counts == {"a": 10, "b": 10, "c": 10}
    else:
        assert all(counts.values()), counts  # 30 flows with random source ports reach every target


def test_unknown_algorithm():
    with pytest.raises(ValueError, match="round-robin"):
        Balancer(("amqp",), algorithm="random")
