"""In-process TCP proxies with toxiproxy's network faults, for rehearsing failover.

A ``Proxy`` listens on host:port (0 = a free port, kept for the proxy's life) and joins every
client it accepts to a new connection to its upstream (changeable at run time: it applies to
new connections only). ``disable()`` stops listening, so new clients get ECONNREFUSED, and
cuts the open connections; ``enable()`` listens again on the same port. Toxics
(``toxics.Toxic``) are added and removed at run time by name; a ``down`` toxic keeps the
proxy from listening while it is there, whatever ``enable()`` says.

Each connection is one task with a nursery holding one pump per direction. A pump receives up
to 64 KiB and, while its link has no toxic and nothing queued, sends it on with one
``send_all``: no per-byte work and no task hop. A link with toxics hands its chunks, stamped
with their arrival time, to a writer task that applies them (``toxics.LinkShaper``), so a
latency delays every chunk from its own arrival and chunks in flight overlap. An end of
stream is passed on as a half-close (``send_eof``); the connection closes when both
directions have ended. A reset (ECONNRESET) from either peer resets the other.

``ProxySet`` runs several proxies in one nursery, finds them by name or by tags (``node``,
``protocol``) and describes them as JSON (``to_dict``). ``open_proxies()`` and
``open_proxy()`` are the async context managers around them.

The proxies know nothing of mqemu: they work in front of any TCP endpoint.
"""

from __future__ import annotations

import errno
import logging
import math
import random
import socket
import struct
from contextlib import asynccontextmanager, contextmanager
from typing import Any, AsyncIterator, Iterator

import trio

from .toxics import LinkShaper, Toxic

log = logging.getLogger("mqemu.ha.proxy")

CHUNK = 65536  # bytes per receive
QUEUE_LIMIT = 4 * 1024 * 1024  # bytes a toxic link may hold before its pump stops reading
CONNECT_TIMEOUT = 5.0  # seconds to reach the upstream before the client is hung up on
# accept() errors that mean "out of descriptors or memory, try again", as trio's serve_listeners
ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}

Address = tuple[str, int]


def parse_address(value: Address | str) -> Address:
    """``("host", port)`` from a tuple or a ``"host:port"`` string."""
    if isinstance(value, str):
        host, sep, port_text = value.rpartition(":")
        if not sep:
            raise ValueError(f"expected host:port, not {value!r}")
        return host.strip("[]"), int(port_text)
    return str(value[0]), int(value[1])


def _reset(sock: trio.socket.SocketType) -> None:
    """Close with SO_LINGER 0, so the peer gets a RST instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


class _Connection:
    """One client joined to one upstream connection."""

    __slots__ = ("client", "server", "scope", "nursery", "links", "closed", "_open_directions")

    def __init__(self, client: trio.SocketStream) -> None:
        self.client = client
        self.server: trio.SocketStream | None = None
        self.scope = trio.CancelScope()
        self.nursery: trio.Nursery | None = None
        self.links: dict[str, _Link] = {}
        self.closed = False
        self._open_directions = 2

    def close(self, reset: bool = False) -> None:
        """Close both sockets now (with a RST if ``reset``) and stop the connection's tasks."""
        if self.closed:
            return
        self.closed = True
        for stream in (self.client, self.server):
            if stream is not None:
                if reset:
                    _reset(stream.socket)
                stream.socket.close()
        self.scope.cancel()

    def direction_done(self) -> None:
        self._open_directions -= 1
        if self._open_directions == 0:
            self.close()


class _Link:
    """One direction of a connection: a pump, and a writer while toxics are (or were) at work."""

    __slots__ = ("stream", "conn", "src", "dst", "shaper", "pending", "timers", "_queue", "_space")

    def __init__(self, stream: str, conn: _Connection, src: trio.SocketStream, dst: trio.SocketStream,
                 rng: random.Random) -> None:
        self.stream = stream
        self.conn = conn
        self.src = src
        self.dst = dst
        self.shaper = LinkShaper(dst.send_all, conn.close, rng)
        self.pending = 0  # bytes (+1 per chunk) handed to the writer and not yet sent
        self.timers: dict[str, trio.CancelScope] = {}  # timeout toxic name -> its timer
        self._queue: trio.MemorySendChannel | None = None
        self._space: trio.Event | None = None

    async def pump(self) -> None:
        src, dst, shaper = self.src, self.dst, self.shaper
        try:
            while True:
                data = await src.receive_some(CHUNK)
                if shaper.toxics or self.pending:
                    await self._enqueue(data)
                    if not data:
                        return
                    continue
                if not data:
                    break
                await dst.send_all(data)
            await dst.send_eof()
            self.conn.direction_done()
        except trio.ClosedResourceError:
            pass  # closed by the proxy (cut, disable, a toxic)
        except (trio.BrokenResourceError, OSError):
            self.conn.close(reset=True)

    async def _enqueue(self, data: bytes) -> None:
        if self._queue is None:
            self._queue, receive = trio.open_memory_channel(math.inf)
            assert self.conn.nursery is not None
            self.conn.nursery.start_soon(self._write, receive)
        self.pending += len(data) + 1
        self._queue.send_nowait((trio.current_time(), data))
        while self.pending > QUEUE_LIMIT:
            self._space = trio.Event()
            await self._space.wait()

    async def _write(self, receive: trio.MemoryReceiveChannel) -> None:
        shaper = self.shaper
        try:
            async for arrival, data in receive:
                if not data:
                    await shaper.before_eof()
                    await self.dst.send_eof()
                    self.conn.direction_done()
                    return
                await shaper.deliver(arrival, data)
                self.pending -= len(data) + 1
                if self._space is not None and self.pending <= QUEUE_LIMIT:
                    self._space.set()
        except trio.ClosedResourceError:
            pass
        except (trio.BrokenResourceError, OSError):
            self.conn.close(reset=True)


class Proxy:
    """A TCP proxy with toxics; run it with ``await nursery.start(proxy.run)``.

    ``listen`` and ``upstream`` are ``(host, port)`` or ``"host:port"``. ``tags`` are free
    labels for lookups (``ProxySet.select``), e.g. ``{"node": "node-1", "protocol": "amqp"}``.
    ``seed`` fixes the draws of toxicity, jitter and slice sizes.
    """

    def __init__(self, name: str, upstream: Address | str, listen: Address | str = ("127.0.0.1", 0), *,
                 enabled: bool = True, tags: dict[str, str] | None = None, seed: int | None = None) -> None:
        self.name = name
        self._upstream = parse_address(upstream)
        self.listen_host, self.listen_port = parse_address(listen)
        self.tags = dict(tags or {})
        self.enabled = enabled
        self._rng = random.Random(seed)
        self._toxics: dict[str, Toxic] = {}
        self._conns: set[_Connection] = set()
        self._nursery: trio.Nursery | None = None
        self._listener: trio.SocketListener | None = None
        self._accept_scope: trio.CancelScope | None = None
        self._placeholder: socket.socket | None = None  # holds the port while not listening

    # -- state -------------------------------------------------------------------------

    @property
    def upstream(self) -> Address:
        return self._upstream

    @upstream.setter
    def upstream(self, value: Address | str) -> None:
        """Where new connections go; open ones stay where they are."""
        self._upstream = parse_address(value)
        log.info("proxy upstream changed", extra={"proxy": self.name, "upstream": self._address(self._upstream)})

    @property
    def listening(self) -> bool:
        return self._listener is not None

    @property
    def connections(self) -> int:
        """Open connections (a cut one is no longer counted, though its task may still be ending)."""
        return sum(not conn.closed for conn in self._conns)

    @property
    def toxics(self) -> list[Toxic]:
        return list(self._toxics.values())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "listen": self._address((self.listen_host, self.listen_port)),
                "upstream": self._address(self._upstream), "enabled": self.enabled, "listening": self.listening,
                "connections": self.connections, "tags": dict(self.tags),
                "toxics": [t.to_dict() for t in self._toxics.values()]}

    @staticmethod
    def _address(addr: Address) -> str:
        host, port = addr
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    # -- control -----------------------------------------------------------------------

    def enable(self) -> None:
        """Listen again (on the same port). Raises OSError if the port was taken meanwhile;
        the proxy then stays disabled."""
        self.enabled = True
        try:
            self._apply()
        except OSError:
            self.enabled = False
            raise

    def disable(self) -> None:
        """Stop listening (new clients get ECONNREFUSED) and cut every open connection."""
        self.enabled = False
        self._apply()

    def cut(self, reset: bool = False) -> int:
        """Close every open connection (FIN, or RST if ``reset``); returns how many."""
        conns = [conn for conn in self._conns if not conn.closed]
        for conn in conns:
            conn.close(reset)
        if conns:
            log.info("proxy connections cut", extra={"proxy": self.name, "count": len(conns), "reset": reset})
        return len(conns)

    def add_toxic(self, type: str | Toxic, *, name: str | None = None, stream: str = "downstream",
                  toxicity: float = 1.0, **attributes: int) -> Toxic:
        """Add a toxic to this proxy's links (and to every link opened while it is there):
        ``add_toxic("latency", latency=100)``, or a ``Toxic`` (e.g. ``Toxic.from_dict(json)``).

        Raises ValueError for an unknown type or attribute, a bad value or a name in use.
        """
        toxic = type if isinstance(type, Toxic) else Toxic(type, name or "", stream, toxicity, attributes)
        if toxic.name in self._toxics:
            raise ValueError(f"proxy {self.name} already has a toxic named {toxic.name!r}")
        self._toxics[toxic.name] = toxic
        log.info("toxic added", extra={"proxy": self.name, "toxic": toxic.name, "type": toxic.type,
                                       "stream": toxic.stream, "toxicity": toxic.toxicity, **toxic.attributes})
        if toxic.type == "down":
            self._apply()
        else:
            for conn in list(self._conns):
                if conn.links:
                    self._attach(conn, toxic)
        return toxic

    def remove_toxic(self, name: str) -> Toxic:
        """Remove a toxic by name from the proxy and every link; raises KeyError if absent."""
        toxic = self._toxics.pop(name)
        log.info("toxic removed", extra={"proxy": self.name, "toxic": name})
        if toxic.type == "down":
            self._apply()
            return toxic
        for conn in self._conns:
            link = conn.links.get(toxic.stream)
            if link is not None:
                link.shaper.remove(name)
                timer = link.timers.pop(name, None)
                if timer is not None:
                    timer.cancel()
        return toxic

    @contextmanager
    def toxic(self, type: str, **kwargs: Any) -> Iterator[Toxic]:
        """``with proxy.toxic("latency", latency=100): ...`` adds the toxic for the block."""
        added = self.add_toxic(type, **kwargs)
        try:
            yield added
        finally:
            if self._toxics.get(added.name) is added:
                self.remove_toxic(added.name)

    def reset(self) -> None:
        """Remove every toxic and enable the proxy (toxiproxy's /reset)."""
        for name in list(self._toxics):
            self.remove_toxic(name)
        self.enable()

    # -- tasks -------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Bind (even a disabled proxy binds once, to learn its port), report the port, and
        serve until cancelled. Raises OSError if the address cannot be bound."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                self._open_listener()
                if not (self.enabled and not self._is_down()):
                    self._close_listener()
                task_status.started(self.listen_port)
                await trio.sleep_forever()
            finally:
                self._close_listener()
                self._release_port()
                self.cut()
                self._nursery = None

    def _is_down(self) -> bool:
        return any(t.type == "down" for t in self._toxics.values())

    def _apply(self) -> None:
        """Listen or not, as ``enabled`` and the down toxics say; cut when not."""
        if self.enabled and not self._is_down():
            if self._listener is None and self._nursery is not None:
                self._open_listener()
                log.info("proxy listening", extra={"proxy": self.name, "port": self.listen_port})
        else:
            if self._listener is not None:
                self._close_listener()
                log.info("proxy not listening", extra={"proxy": self.name, "port": self.listen_port})
            self.cut()

    def _open_listener(self) -> None:
        self._release_port()
        family, kind, proto, _, addr = socket.getaddrinfo(self.listen_host, self.listen_port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(socket.SOMAXCONN)
        except OSError:
            sock.close()
            raise
        self.listen_port = sock.getsockname()[1]
        self._listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        self._accept_scope = trio.CancelScope()
        assert self._nursery is not None
        self._nursery.start_soon(self._accept_loop, self._listener, self._accept_scope)

    def _close_listener(self) -> None:
        if self._accept_scope is not None:
            self._accept_scope.cancel()
            self._accept_scope = None
        if self._listener is not None:
            self._listener.socket.close()  # the port refuses from now on
            self._listener = None
            self._hold_port()

    def _hold_port(self) -> None:
        """Keep the port bound, not listening, while the proxy is disabled: connections are
        still refused, and no other listener (a node's port 0, say) can be given the port,
        where clients of this proxy would reach it. The kernel gives port 0 and outgoing
        connections only ports no socket holds."""
        sock = socket.socket(socket.AF_INET6 if ":" in self.listen_host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.listen_host, self.listen_port))
        except OSError:
            sock.close()  # the port stays free; enable() will say if it was taken
            return
        self._placeholder = sock

    def _release_port(self) -> None:
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None

    async def _accept_loop(self, listener: trio.SocketListener, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                try:
                    client = await listener.accept()
                except trio.ClosedResourceError:
                    return
                except OSError as e:
                    if e.errno not in ACCEPT_RETRY_ERRNOS:
                        raise
                    log.warning("proxy accept failed; retrying", extra={"proxy": self.name, "error": str(e)})
                    await trio.sleep(0.1)
                    continue
                if scope.cancel_called:  # accepted just as the proxy was disabled
                    client.socket.close()
                    return
                # registered before its task starts, so a cut() from now on closes it
                conn = _Connection(client)
                self._conns.add(conn)
                assert self._nursery is not None
                self._nursery.start_soon(self._serve, conn, self._upstream)

    async def _serve(self, conn: _Connection, upstream: Address) -> None:
        client = conn.client
        try:
            with conn.scope:
                try:
                    with trio.fail_after(CONNECT_TIMEOUT):
                        server = await trio.open_tcp_stream(*upstream)
                except (OSError, trio.TooSlowError) as e:
                    log.info("proxy upstream unreachable", extra={"proxy": self.name,
                                                                  "upstream": self._address(upstream),
                                                                  "error": str(e) or type(e).__name__})
                    return
                conn.server = server
                if conn.closed:  # cut while dialling: close() ran before this socket existed
                    server.socket.close()
                    return
                async with trio.open_nursery() as nursery:
                    conn.nursery = nursery
                    conn.links = {"upstream": _Link("upstream", conn, client, server, self._rng),
                                  "downstream": _Link("downstream", conn, server, client, self._rng)}
                    for toxic in self._toxics.values():
                        if toxic.type != "down":
                            self._attach(conn, toxic)
                    for link in conn.links.values():
                        nursery.start_soon(link.pump)
        except Exception:  # a fault in one connection closes that connection, not the proxy
            log.exception("proxy connection failed", extra={"proxy": self.name})
        finally:
            conn.close()
            self._conns.discard(conn)

    def _attach(self, conn: _Connection, toxic: Toxic) -> None:
        link = conn.links[toxic.stream]
        if not link.shaper.add(toxic):
            return
        if toxic.type == "timeout" and toxic["timeout"] > 0 and conn.nursery is not None:
            timer = trio.CancelScope()
            link.timers[toxic.name] = timer
            conn.nursery.start_soon(_close_after, conn, timer, toxic["timeout"] / 1000)


async def _close_after(conn: _Connection, timer: trio.CancelScope, seconds: float) -> None:
    """The timeout toxic's timer: close the connection unless the toxic goes first."""
    with timer:
        await trio.sleep(seconds)
        conn.close()


class ProxySet:
    """Proxies that live in one nursery, found by name or tags; see ``open_proxies``."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._proxies: dict[str, Proxy] = {}
        self._scopes: dict[str, trio.CancelScope] = {}

    async def add(self, name: str, upstream: Address | str, listen: Address | str = ("127.0.0.1", 0),
                  **kwargs: Any) -> Proxy:
        """Start a proxy (keyword arguments as ``Proxy``); returns once it has its port."""
        if name in self._proxies:
            raise ValueError(f"a proxy named {name!r} exists")
        proxy = Proxy(name, upstream, listen, **kwargs)
        scope = trio.CancelScope()

        async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await proxy.run(task_status=task_status)

        await self._nursery.start(run)
        self._proxies[name] = proxy
        self._scopes[name] = scope
        return proxy

    def remove(self, name: str) -> None:
        """Stop a proxy: its port closes and its connections are cut."""
        proxy = self._proxies.pop(name)
        proxy.disable()
        self._scopes.pop(name).cancel()

    def __getitem__(self, name: str) -> Proxy:
        return self._proxies[name]

    def __contains__(self, name: object) -> bool:
        return name in self._proxies

    def __iter__(self) -> Iterator[Proxy]:
        return iter(list(self._proxies.values()))

    def __len__(self) -> int:
        return len(self._proxies)

    def select(self, **tags: str) -> list[Proxy]:
        """The proxies whose tags include all of ``tags``, e.g. ``select(node="node-1")``."""
        return [p for p in self._proxies.values() if all(p.tags.get(k) == v for k, v in tags.items())]

    def reset(self) -> None:
        for proxy in self:
            proxy.reset()

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every proxy by name, as toxiproxy's ``GET /proxies`` lists them."""
        return {name: proxy.to_dict() for name, proxy in self._proxies.items()}


@asynccontextmanager
async def open_proxies() -> AsyncIterator[ProxySet]:
    """A ``ProxySet`` for the body of the block; every proxy stops at its end."""
    async with trio.open_nursery() as nursery:
        proxies = ProxySet(nursery)
        try:
            yield proxies
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_proxy(upstream: Address | str, listen: Address | str = ("127.0.0.1", 0), *, name: str = "proxy",
                     **kwargs: Any) -> AsyncIterator[Proxy]:
    """One proxy for the body of the block: ``async with open_proxy(("127.0.0.1", 5672)) as p``."""
    async with open_proxies() as proxies:
        yield await proxies.add(name, upstream, listen, **kwargs)
