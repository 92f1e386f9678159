"""The in-process proxies (``ha/proxy.py``) over real sockets on port 0: a trio echo server
(and a few others) behind them, then a real mqemu node with pika, stomp.py and paho-mqtt.

Times are real here: lower bounds only (0.9 x what a toxic sets), and upper bounds only
where they are many times the expected figure."""

from __future__ import annotations

import errno
import json
import os
import queue
import threading
import time
from functools import partial

import paho.mqtt.client as mqtt
import pika
import pytest
import stomp
import trio
from paho.mqtt.enums import CallbackAPIVersion

from mqemu.ha.proxy import Proxy, ProxySet, open_proxies, open_proxy
from mqemu.ha.toxics import Toxic

pytestmark = pytest.mark.timeout(20)


# -- servers and client helpers ----------------------------------------------------------

async def start_server(nursery: trio.Nursery, handler) -> tuple[str, int]:
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return "127.0.0.1", listeners[0].socket.getsockname()[1]


async def echo(stream: trio.SocketStream, prefix: bytes = b"") -> None:
    """Echo every chunk; at the client's end of stream, half-close back."""
    try:
        while data := await stream.receive_some(65536):
            await stream.send_all(prefix + data if prefix else data)
        await stream.send_eof()
    except trio.BrokenResourceError:
        pass


async def read_all(stream: trio.SocketStream) -> bytes:
    out = bytearray()
    while data := await stream.receive_some(65536):
        out += data
    return bytes(out)


async def read_exactly(stream: trio.SocketStream, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        data = await stream.receive_some(n - len(out))
        assert data, f"end of stream after {len(out)} of {n} bytes"
        out += data
    return bytes(out)


async def connect(proxy: Proxy) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", proxy.listen_port)


async def round_trip(stream: trio.SocketStream, data: bytes) -> float:
    start = trio.current_time()
    await stream.send_all(data)
    assert await read_exactly(stream, len(data)) == data
    return trio.current_time() - start


@pytest.fixture
async def echo_addr(nursery):
    return await start_server(nursery, echo)


# -- clean proxying ----------------------------------------------------------------------

async def test_large_transfer_passes_unchanged_both_ways(echo_addr) -> None:
    payload = os.urandom(8 * 1024 * 1024)
    with trio.fail_after(10):
        async with open_proxy(echo_addr) as proxy:
            stream = await connect(proxy)
            got = bytearray()

            async def send() -> None:
                for i in range(0, len(payload), 100_000):
                    await stream.send_all(payload[i:i + 100_000])
                await stream.send_eof()

            async with trio.open_nursery() as n:
                n.start_soon(send)
                got += await read_all(stream)
            assert bytes(got) == payload
            await stream.aclose()


async def test_half_close_passes_both_ways(nursery) -> None:
    received: list[bytes] = []
    server_done = trio.Event()

    async def server(stream: trio.SocketStream) -> None:
        await stream.send_all(b"greeting")
        await stream.send_eof()  # the server is done writing but still reads
        received.append(await read_all(stream))
        server_done.set()

    addr = await start_server(nursery, server)
    with trio.fail_after(5):
        async with open_proxy(addr) as proxy:
            stream = await connect(proxy)
            assert await read_all(stream) == b"greeting"
            await stream.send_all(b"after the server's eof")
            await stream.send_eof()
            await server_done.wait()
            assert received == [b"after the server's eof"]
            # client to server half-close with the echo server: everything comes back, then EOF
            proxy.upstream = await start_server(nursery, echo)
            stream = await connect(proxy)
            await stream.send_all(b"x" * 300_000)
            await stream.send_eof()
            assert await read_all(stream) == b"x" * 300_000


async def test_unreachable_upstream_hangs_up_on_the_client(nursery) -> None:
    addr = await start_server(nursery, echo)
    with trio.fail_after(5):
        async with open_proxies() as proxies:
            proxy = await proxies.add("p", addr)
            # a port nobody listens on: bind one, learn it, close it
            probe = trio.socket.socket()
            await probe.bind(("127.0.0.1", 0))
            proxy.upstream = probe.getsockname()
            probe.close()
            stream = await connect(proxy)
            assert await read_all(stream) == b""


# -- enable, disable, cut, upstream ------------------------------------------------------

async def expect_refused(port: int) -> None:
    sock = trio.socket.socket()
    try:
        with pytest.raises(OSError) as e:
            await sock.connect(("127.0.0.1", port))
        assert e.value.errno == errno.ECONNREFUSED
    finally:
        sock.close()


async def test_disable_refuses_and_cuts_enable_listens_on_the_same_port(echo_addr) -> None:
    with trio.fail_after(5):
        async with open_proxy(echo_addr) as proxy:
            port = proxy.listen_port
            open_one = await connect(proxy)
            await round_trip(open_one, b"hello")
            proxy.disable()
            assert not proxy.listening and proxy.connections == 0
            assert await read_all(open_one) == b""  # cut: the client reads an end of stream
            await expect_refused(port)
            proxy.enable()
            assert proxy.listen_port == port and proxy.listening
            again = await connect(proxy)
            await round_trip(again, b"back")
            await again.aclose()
            # the port taken by someone else while the proxy was disabled: enable says so
            proxy.disable()
            squatter = trio.socket.socket()
            squatter.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)  # past TIME_WAIT
            try:
                await squatter.bind(("127.0.0.1", port))
                squatter.listen()
                with pytest.raises(OSError) as e:
                    proxy.enable()
                assert e.value.errno == errno.EADDRINUSE
                assert not proxy.enabled and not proxy.listening
            finally:
                squatter.close()


async def test_a_disabled_proxy_holds_its_port(echo_addr) -> None:
    """While disabled the port refuses, and no other socket is given it (a node's port-0
    listener there would answer this proxy's clients)."""
    with trio.fail_after(5):
        async with open_proxy(echo_addr) as proxy:
            port = proxy.listen_port
            proxy.disable()
            await expect_refused(port)
            other = trio.socket.socket()  # no SO_REUSEADDR: any holder of the port conflicts
            try:
                with pytest.raises(OSError) as held:
                    await other.bind(("127.0.0.1", port))
                assert held.value.errno == errno.EADDRINUSE
            finally:
                other.close()
            proxy.enable()
            await round_trip(await connect(proxy), b"still mine")


async def test_down_toxic_refuses_until_removed_and_respects_disable(echo_addr) -> None:
    with trio.fail_after(5):
        async with open_proxy(echo_addr) as proxy:
            stream = await connect(proxy)
            proxy.add_toxic("down")
            assert await read_all(stream) == b""
            await expect_refused(proxy.listen_port)
            proxy.remove_toxic("down")
            await round_trip(await connect(proxy), b"up")
            with proxy.toxic("down"):
                proxy.disable()
            # the down toxic went, but the proxy was disabled meanwhile: still refused
            await expect_refused(proxy.listen_port)
            proxy.reset()
            await round_trip(await connect(proxy), b"reset")


async def test_cut_closes_open_links_and_keeps_listening(echo_addr) -> None:
    with trio.fail_after(5):
        async with open_proxy(echo_addr) as proxy:
            a, b = await connect(proxy), await connect(proxy)
            await round_trip(a, b"a")
            await round_trip(b, b"b")
            assert proxy.cut() == 2
            assert await read_all(a) == b""
            c = await connect(proxy)
            await round_trip(c, b"c")
            assert proxy.cut(reset=True) == 1
            with pytest.raises(trio.BrokenResourceError) as e:
                await read_all(c)
            assert isinstance(e.value.__cause__, ConnectionResetError)


async def test_a_cut_while_dialling_closes_the_upstream_connection(nursery, monkeypatch) -> None:
    """The dial finishes after the cut (shielded here, so it always does): the proxy must
    close the upstream socket it got, or the upstream server never hears the end."""
    import mqemu.ha.proxy as proxy_module

    ended = trio.Event()

    async def upstream_handler(stream: trio.SocketStream) -> None:
        await read_all(stream)
        ended.set()

    upstream = await start_server(nursery, upstream_handler)
    dialling, cut_done = trio.Event(), trio.Event()
    real_open = trio.open_tcp_stream

    async def slow_open(host, port):
        with trio.CancelScope(shield=True):
            dialling.set()
            await cut_done.wait()
            return await real_open(host, port)

    monkeypatch.setattr(proxy_module.trio, "open_tcp_stream", slow_open)
    with trio.fail_after(5):
        async with open_proxy(upstream) as proxy:
            client = await real_open("127.0.0.1", proxy.listen_port)
            await dialling.wait()
            assert proxy.cut() == 1
            cut_done.set()
            await ended.wait()  # the upstream connection was closed
            assert await read_all(client) == b""


async def test_changing_the_upstream_affects_new_connections_only(nursery) -> None:
    a = await start_server(nursery, partial(echo, prefix=b"A:"))
    b = await start_server(nursery, partial(echo, prefix=b"B:"))
    with trio.fail_after(5):
        async with open_proxy(a) as proxy:
            first = await connect(proxy)
            await first.send_all(b"1")
            assert await read_exactly(first, 3) == b"A:1"
            proxy.upstream = f"{b[0]}:{b[1]}"
            second = await connect(proxy)
            await second.send_all(b"2")
            assert await read_exactly(second, 3) == b"B:2"
            await first.send_all(b"3")
            assert await read_exactly(first, 3) == b"A:3"
            assert proxy.to_dict()["upstream"] == f"127.0.0.1:{b[1]}"


# -- toxics --------------------------------------------------------------------------------

async def test_latency_each_way_and_overlapping_chunks(echo_addr) -> None:
    with trio.fail_after(8):
        async with open_proxy(echo_addr) as proxy:
            stream = await connect(proxy)
            assert await round_trip(stream, b"warm") < 1.0
            with proxy.toxic("latency", latency=200):
                assert await round_trip(stream, b"down") >= 0.18
            with proxy.toxic("latency", stream="upstream", latency=200, jitter=20):
                assert await round_trip(stream, b"up") >= 0.9 * 0.18
            # five chunks 0.1 s apart through 0.5 s of latency (that they overlap, about 0.9 s in
            # all rather than 2.5, is checked with exact times in test_toxics.py)
            with proxy.toxic("latency", latency=500):
                start = trio.current_time()
                for i in range(5):
                    await stream.send_all(b"%d" % i)
                    await trio.sleep(0.1)
                assert await read_exactly(stream, 5) == b"01234"
                elapsed = trio.current_time() - start
            assert elapsed >= 0.9 * 0.9
            assert proxy.toxics == []
            assert await round_trip(stream, b"clean") < 1.0


async def test_bandwidth_limits_the_rate(echo_addr) -> None:
    with trio.fail_after(8):
        async with open_proxy(echo_addr) as proxy:
            proxy.add_toxic("bandwidth", rate=200)  # 200 KB/s downstream
            stream = await connect(proxy)
            assert await round_trip(stream, b"z" * 200_000) >= 0.9 * 1.0


async def test_slicer_delivers_in_several_reads(echo_addr) -> None:
    with trio.fail_after(5):
        async with open_proxy(echo_addr) as proxy:
            proxy.add_toxic("slicer", average_size=20, size_variation=5, delay=2000)
            stream = await connect(proxy)
            data = bytes(range(200))
            await stream.send_all(data)
            reads = []
            while sum(map(len, reads)) < len(data):
                reads.append(await stream.receive_some(65536))
            assert b"".join(reads) == data
            assert len(reads) >= 3


@pytest.mark.parametrize("stream_name", ["upstream", "downstream"])
async def test_limit_data_closes_after_exactly_n_bytes(nursery, stream_name) -> None:
    seen: list[bytes] = []
    done = trio.Event()

    async def server(stream: trio.SocketStream) -> None:
        got = await read_all(stream)  # until the proxy closes
        seen.append(got)
        done.set()

    async def talker(stream: trio.SocketStream) -> None:
        await stream.send_all(b"s" * 1000)
        await read_all(stream)

    addr = await start_server(nursery, server if stream_name == "upstream" else talker)
    with trio.fail_after(5):
        async with open_proxy(addr) as proxy:
            proxy.add_toxic("limit_data", stream=stream_name, bytes=300)
            stream = await connect(proxy)
            if stream_name == "upstream":
                await stream.send_all(b"c" * 1000)
                await done.wait()
                assert seen == [b"c" * 300]
            else:
                assert await read_all(stream) == b"s" * 300


@pytest.mark.parametrize("stream_name", ["upstream", "downstream"])
async def test_reset_peer_gives_connection_reset(echo_addr, stream_name) -> None:
    with trio.fail_after(5):
        async with open_proxy(echo_addr) as proxy:
            stream = await connect(proxy)
            await round_trip(stream, b"before")
            proxy.add_toxic("reset_peer", stream=stream_name, timeout=200)
            start = trio.current_time()
            await stream.send_all(b"trigger")
            with pytest.raises(trio.BrokenResourceError) as e:
                await read_all(stream)
            assert isinstance(e.value.__cause__, ConnectionResetError)
            assert trio.current_time() - start >= 0.18


async def test_timeout_stalls_then_closes(echo_addr) -> None:
    with trio.fail_after(5):
        async with open_proxy(echo_addr) as proxy:
            stream = await connect(proxy)
            proxy.add_toxic("timeout", timeout=300)
            start = trio.current_time()
            await stream.send_all(b"into the void")
            assert await read_all(stream) == b""  # nothing came back, then the close
            assert trio.current_time() - start >= 0.27


async def test_timeout_zero_stalls_until_removed(echo_addr) -> None:
    with trio.fail_after(5):
        async with open_proxy(echo_addr) as proxy:
            stream = await connect(proxy)
            proxy.add_toxic("timeout", stream="upstream", timeout=0)
            await stream.send_all(b"dropped")
            with trio.move_on_after(0.3) as waited:
                await stream.receive_some(100)
            assert waited.cancelled_caught  # stalled: nothing reached the server
            proxy.remove_toxic("timeout_upstream")
            assert await round_trip(stream, b"flows again") < 2.0


async def test_slow_close_delays_the_end_of_stream(nursery) -> None:
    async def server(stream: trio.SocketStream) -> None:
        await stream.send_all(b"bye")
        await stream.aclose()

    addr = await start_server(nursery, server)
    with trio.fail_after(5):
        async with open_proxy(addr) as proxy:
            proxy.add_toxic("slow_close", delay=300)
            start = trio.current_time()
            stream = await connect(proxy)
            assert await read_exactly(stream, 3) == b"bye"
            assert await stream.receive_some(10) == b""
            assert trio.current_time() - start >= 0.27


async def test_toxicity_zero_has_no_effect_and_half_affects_some(echo_addr) -> None:
    with trio.fail_after(10):
        async with open_proxy(echo_addr, seed=3) as proxy:
            proxy.add_toxic("limit_data", bytes=1, toxicity=0.0)
            stream = await connect(proxy)
            await round_trip(stream, b"y" * 100_000)
            proxy.remove_toxic("limit_data_downstream")
            proxy.add_toxic("limit_data", bytes=1, toxicity=0.5)
            cut = 0
            for _ in range(20):
                s = await connect(proxy)
                await s.send_all(b"ab")
                got = await read_all_after_eof(s)
                assert got in (b"a", b"ab")
                cut += got == b"a"
            assert 0 < cut < 20


async def read_all_after_eof(stream: trio.SocketStream) -> bytes:
    await stream.send_eof()
    return await read_all(stream)


async def test_toxics_added_to_open_links_and_errors(echo_addr) -> None:
    with trio.fail_after(5):
        async with open_proxy(echo_addr) as proxy:
            stream = await connect(proxy)
            await round_trip(stream, b"open")
            proxy.add_toxic(Toxic.from_dict({"name": "cap", "type": "limit_data", "attributes": {"bytes": 2}}))
            with pytest.raises(ValueError, match="already has a toxic named 'cap'"):
                proxy.add_toxic("latency", name="cap")
            with pytest.raises(KeyError):
                proxy.remove_toxic("nope")
            await stream.send_all(b"xyz")
            assert await read_all(stream) == b"xy"


async def test_a_client_that_does_not_read_stalls_no_one_else(echo_addr) -> None:
    """A hostile client floods the echo server through the proxy and never reads the echo:
    its own connection backs up (the proxy holds at most its socket buffers and 4 MiB), while
    another client through the same proxy keeps its round trips and loses nothing."""
    with trio.fail_after(15):
        async with open_proxy(echo_addr) as proxy:
            proxy.add_toxic("latency", latency=1, stream="upstream", toxicity=1.0, name="toxic-path")
            hostile = await connect(proxy)
            flooded = trio.Event()

            async def flood() -> None:
                sent = 0
                with trio.move_on_after(1.5):
                    while True:
                        await hostile.send_all(b"h" * 65536)
                        sent += 65536
                        if sent >= 16 * 1024 * 1024:
                            flooded.set()
                flooded.set()  # the proxy stopped taking more: the flood is blocked, as it should be

            async with trio.open_nursery() as n:
                n.start_soon(flood)
                good = await connect(proxy)
                for i in range(50):
                    assert await round_trip(good, b"%04d" % i) < 1.0
                await flooded.wait()
                for i in range(50):
                    assert await round_trip(good, b"%04d" % i) < 1.0
                n.cancel_scope.cancel()


async def test_a_failing_connection_closes_alone(echo_addr, monkeypatch, caplog) -> None:
    from mqemu.ha.toxics import LinkShaper

    async def broken(self, arrival, data):
        raise RuntimeError("shaper bug")

    with trio.fail_after(5):
        async with open_proxy(echo_addr, name="p") as proxy:
            monkeypatch.setattr(LinkShaper, "deliver", broken)
            with proxy.toxic("latency", latency=0):
                victim = await connect(proxy)
                await victim.send_all(b"boom")
                assert await read_all(victim) == b""
            bystander = await connect(proxy)
            await round_trip(bystander, b"still serving")
    failed = [r for r in caplog.records if r.name == "mqemu.ha.proxy" and r.levelname == "ERROR"]
    assert [(r.getMessage(), r.proxy) for r in failed] == [("proxy connection failed", "p")]


# -- a set of proxies ----------------------------------------------------------------------

async def test_proxy_set_lookup_describe_and_remove(echo_addr) -> None:
    with trio.fail_after(5):
        async with open_proxies() as proxies:
            assert isinstance(proxies, ProxySet)
            a = await proxies.add("node-1-amqp", echo_addr, tags={"node": "node-1", "protocol": "amqp"})
            b = await proxies.add("node-2-amqp", echo_addr, tags={"node": "node-2", "protocol": "amqp"},
                                  enabled=False)
            assert b.listen_port > 0 and not b.listening
            await expect_refused(b.listen_port)
            assert proxies["node-1-amqp"] is a and "node-2-amqp" in proxies and len(proxies) == 2
            assert proxies.select(node="node-2") == [b]
            assert proxies.select(protocol="amqp") == [a, b]
            with pytest.raises(ValueError, match="exists"):
                await proxies.add("node-1-amqp", echo_addr)
            a.add_toxic("latency", latency=5, stream="upstream", toxicity=0.5)
            described = json.loads(json.dumps(proxies.to_dict()))
            assert described["node-1-amqp"] == {
                "name": "node-1-amqp", "listen": f"127.0.0.1:{a.listen_port}",
                "upstream": f"{echo_addr[0]}:{echo_addr[1]}", "enabled": True, "listening": True,
                "connections": 0, "tags": {"node": "node-1", "protocol": "amqp"},
                "toxics": [{"name": "latency_upstream", "type": "latency", "stream": "upstream",
                            "toxicity": 0.5, "attributes": {"latency": 5, "jitter": 0}}]}
            assert described["node-2-amqp"]["enabled"] is False
            proxies.reset()
            assert a.toxics == [] and b.listening
            await round_trip(await connect(b), b"b")
            port = a.listen_port
            proxies.remove("node-1-amqp")
            await expect_refused(port)
            assert list(proxies) == [b]


# -- real clients to a real node -------------------------------------------------------------

def pika_round_trip(port: int) -> bytes:
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, connection_attempts=1))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", q, b"through the proxy", mandatory=True)
        for _method, _props, body in ch.consume(q, auto_ack=True, inactivity_timeout=5):
            return body
        raise AssertionError("unreachable")
    finally:
        conn.close()


def stomp_round_trip(port: int) -> bytes:
    got: queue.Queue = queue.Queue()

    class Listener(stomp.ConnectionListener):
        def on_message(self, frame) -> None:
            got.put(frame.body)

        def on_receipt(self, frame) -> None:
            got.put(("receipt", frame.headers["receipt-id"]))

    conn = stomp.Connection12([("127.0.0.1", port)], reconnect_attempts_max=1, vhost="/")
    conn.set_listener("l", Listener())
    conn.connect("guest", "guest", wait=True)
    try:
        conn.subscribe("/queue/proxy-test", id="1", ack="auto", receipt="sub")
        assert got.get(timeout=5) == ("receipt", "sub")
        conn.send("/queue/proxy-test", "via stomp", receipt="sent")
        items = [got.get(timeout=5) for _ in range(2)]
        assert ("receipt", "sent") in items
        items.remove(("receipt", "sent"))
        body = items[0]
        return body.encode() if isinstance(body, str) else body
    finally:
        conn.disconnect()


def paho_round_trip(port: int) -> bytes:
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="proxy-paho")
    inbox: queue.Queue = queue.Queue()
    subscribed = threading.Event()
    c.on_message = lambda cl, u, m: inbox.put(m.payload)
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.subscribe("proxy/t", qos=1)
        assert subscribed.wait(5)
        c.publish("proxy/t", b"via mqtt", qos=1).wait_for_publish(5)
        return inbox.get(timeout=5)
    finally:
        c.disconnect()
        c.loop_stop()


async def test_real_clients_through_clean_proxies(mqemu_node) -> None:
    with trio.fail_after(15):
        async with open_proxies() as proxies:
            for proto, port in mqemu_node.ports.items():
                await proxies.add(f"node-1-{proto}", ("127.0.0.1", port), tags={"protocol": proto})
            assert await trio.to_thread.run_sync(pika_round_trip, proxies["node-1-amqp"].listen_port) \
                == b"through the proxy"
            assert await trio.to_thread.run_sync(stomp_round_trip, proxies["node-1-stomp"].listen_port) \
                == b"via stomp"
            assert await trio.to_thread.run_sync(paho_round_trip, proxies["node-1-mqtt"].listen_port) \
                == b"via mqtt"


def pika_blocked_by_disable(port: int, disabled: threading.Event, cut: threading.Event) -> str:
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, connection_attempts=1))
    ch = conn.channel()
    ch.queue_declare("", exclusive=True)
    cut.set()
    assert disabled.wait(5)
    deadline = time.monotonic() + 5
    try:
        while time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.05)
    except pika.exceptions.AMQPConnectionError as e:
        return type(e).__name__
    finally:
        if conn.is_open:
            conn.close()
    return "still open"


async def test_disable_cuts_a_pika_connection_and_refuses_the_next(mqemu_node) -> None:
    with trio.fail_after(15):
        async with open_proxy(("127.0.0.1", mqemu_node.ports["amqp"])) as proxy:
            ready, disabled = threading.Event(), threading.Event()
            async with trio.open_nursery() as n:
                result: list[str] = []

                async def client() -> None:
                    result.append(await trio.to_thread.run_sync(
                        pika_blocked_by_disable, proxy.listen_port, disabled, ready))

                n.start_soon(client)
                await trio.to_thread.run_sync(ready.wait, 5)
                proxy.disable()
                disabled.set()
            assert result == ["StreamLostError"]
            with pytest.raises(pika.exceptions.AMQPConnectionError):
                await trio.to_thread.run_sync(pika_round_trip, proxy.listen_port)
