"""Node-to-node links: how the nodes of a cluster talk (protocol-neutral; no broker import).

``NodeLinks`` listens on the node's cluster port and keeps one outgoing connection to every
peer. What node A sends to node B always travels on A's own connection to B, so each
direction of a pair is one TCP connection the harness can cut on its own (the topology puts a
proxy on each directed pair). On a connection both sides first send a HELLO (node and
cluster names, ``link_codec``); the side that connected then sends DATA and heartbeats, the
side that accepted sends heartbeats only. Either side closes a connection on which it heard
nothing for ``timeout`` seconds; the outgoing side reconnects with a doubling back-off.

Each peer has two states: ``out`` (our connection to it has its HELLO and is heard from) and
``in`` (its connection to us has), ``up``/``down`` each; ``on_change`` is told of every
change. The API other parts use (Raft, cluster metadata): ``send(peer, channel, data)`` and
``on(channel, callback)``, where ``callback(peer, payload)`` runs in the link's reader task,
once per frame, in order. Sends to one peer are batched: ``send`` appends to the peer's
buffer and wakes its writer, which writes everything pending in one ``send_all``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import trio

from .link_codec import (DATA, HEARTBEAT, HELLO, LinkDecoder, LinkProtocolError, decode_data, decode_hello,
                         encode_data, encode_heartbeat, encode_hello)

log = logging.getLogger("mqemu.ha.links")

CHUNK = 65536
# how a link connection ends: the peer went, the stream broke, silence, or bytes that are no frame
_CLOSED = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, LinkProtocolError)
MAX_PENDING = 64 * 1024 * 1024  # bytes buffered for one peer before send() refuses


@dataclass(frozen=True, slots=True)
class LinkTiming:
    heartbeat: float  # seconds between heartbeats
    timeout: float  # seconds of silence after which a connection is dead
    backoff_min: float  # first reconnect delay; doubles up to backoff_max
    backoff_max: float


# ``engine``: RabbitMQ's net_ticktime of 60 s (a tick every 15 s, a silent peer down after
# 45 to 75 s). ``fast``: for tests, a silent peer is down within a second.
LINK_TIMINGS = {"fast": LinkTiming(0.1, 1.0, 0.05, 0.5), "engine": LinkTiming(15.0, 60.0, 0.5, 10.0)}


class _Peer:
    __slots__ = ("name", "address", "out", "in_", "pending", "wake", "out_stream", "in_stream", "backoff",
                 "sent", "received")

    def __init__(self, name: str, address: tuple[str, int]) -> None:
        self.name = name
        self.address = address
        self.out = False
        self.in_ = False
        self.pending = bytearray()
        self.wake = trio.Event()
        self.out_stream: trio.SocketStream | None = None
        self.in_stream: trio.SocketStream | None = None
        self.backoff = 0.0
        self.sent = 0  # DATA frames written / received, for the status
        self.received = 0


class NodeLinks:
    """The link service of one node; run it with ``await nursery.start(links.run)`` (reports
    the bound cluster port)."""

    def __init__(self, node: str, cluster: str, peers: dict[str, tuple[str, int]], *, host: str = "127.0.0.1",
                 port: int = 0, timing: LinkTiming = LINK_TIMINGS["fast"],
                 on_change: Callable[[str, str, bool], None] | None = None) -> None:
        self.node = node
        self.cluster = cluster
        self.host = host
        self.port = port
        self.timing = timing
        self.on_change = on_change
        self.peers = {name: _Peer(name, address) for name, address in peers.items() if name != node}
        self._handlers: dict[str, Callable[[str, bytes], None]] = {}
        self._hello = encode_hello(cluster, node)

    # -- the API -------------------------------------------------------------------------------
    def on(self, channel: str, callback: Callable[[str, bytes], None]) -> None:
        """``callback(peer, payload)`` for every DATA frame of ``channel`` (one per channel)."""
        self._handlers[channel] = callback

    def send(self, peer: str, channel: str, data: bytes) -> bool:
        """Queue ``data`` for ``peer``; False (dropped) when our link to it is down or its
        buffer is full. Nothing is retried here: the sender's protocol (Raft) retries."""
        p = self.peers[peer]
        if not p.out or len(p.pending) > MAX_PENDING:
            return False
        p.pending += encode_data(channel, data)
        p.sent += 1
        p.wake.set()
        return True

    def up(self, peer: str) -> bool:
        """Both directions with ``peer`` work."""
        p = self.peers[peer]
        return p.out and p.in_

    def state(self) -> dict[str, dict[str, Any]]:
        return {p.name: {"out": "up" if p.out else "down", "in": "up" if p.in_ else "down",
                         "sent": p.sent, "received": p.received} for p in self.peers.values()}

    # -- tasks -------------------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        log.info("cluster links listening", extra={"port": self.port, "cluster": self.cluster,
                                                   "peers": sorted(self.peers)})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._accepted, listeners)
            for peer in self.peers.values():
                nursery.start_soon(self._keep_outgoing, peer)
            task_status.started(self.port)

    def _set(self, peer: _Peer, direction: str, up: bool) -> None:
        attr = "out" if direction == "out" else "in_"
        if getattr(peer, attr) == up:
            return
        setattr(peer, attr, up)
        log.info("link %s %s", direction, "up" if up else "down", extra={"peer": peer.name})
        if self.on_change is not None:
            self.on_change(peer.name, direction, up)

    async def _keep_outgoing(self, peer: _Peer) -> None:
        t = self.timing
        while True:
            try:
                with trio.fail_after(t.timeout):
                    stream = await trio.open_tcp_stream(*peer.address)
            except (OSError, trio.TooSlowError):
                pass
            else:
                try:
                    await self._outgoing(peer, stream)
                except* _CLOSED as group:  # the nursery inside groups them
                    log.debug("outgoing link closed: %s", group.exceptions[0], extra={"peer": peer.name})
                finally:
                    self._set(peer, "out", False)
                    peer.out_stream = None
                    peer.pending.clear()
                    await trio.aclose_forcefully(stream)
            peer.backoff = min(t.backoff_max, peer.backoff * 2) if peer.backoff else t.backoff_min
            await trio.sleep(peer.backoff)

    async def _outgoing(self, peer: _Peer, stream: trio.SocketStream) -> None:
        decoder = LinkDecoder()
        await stream.send_all(self._hello)
        with trio.fail_after(self.timing.timeout):
            name = await self._read_hello(stream, decoder)
        if name != peer.name:
            raise LinkProtocolError(f"{peer.address} is {name}, not {peer.name}")
        peer.out_stream = stream
        peer.backoff = 0.0
        self._set(peer, "out", True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_outgoing, peer, stream)
            await self._read(stream, decoder, peer, None)  # heartbeats only come back
            nursery.cancel_scope.cancel()

    async def _write_outgoing(self, peer: _Peer, stream: trio.SocketStream) -> None:
        heartbeat = encode_heartbeat()
        interval = self.timing.heartbeat
        next_beat = trio.current_time() + interval
        while True:
            with trio.move_on_at(next_beat):
                await peer.wake.wait()
            peer.wake = trio.Event()
            if trio.current_time() >= next_beat:
                peer.pending += heartbeat
                next_beat = trio.current_time() + interval
            if peer.pending:
                data, peer.pending = bytes(peer.pending), bytearray()
                await stream.send_all(data)

    async def _read_hello(self, stream: trio.SocketStream, decoder: LinkDecoder) -> str:
        while True:
            data = await stream.receive_some(CHUNK)
            if not data:
                raise trio.BrokenResourceError("closed before its hello")
            frames = decoder.feed(data)
            if frames:
                kind, body = frames[0]
                if kind != HELLO:
                    raise LinkProtocolError(f"expected a hello, got frame kind {kind}")
                cluster, name = decode_hello(body)
                if cluster != self.cluster:
                    raise LinkProtocolError(f"{name} is in cluster {cluster!r}, not {self.cluster!r}")
                if any(k != HEARTBEAT for k, _ in frames[1:]):  # data before the hello was answered
                    raise LinkProtocolError("frames before the hello was answered")
                return name

    async def _read(self, stream: trio.SocketStream, decoder: LinkDecoder, peer: _Peer,
                    handlers: dict[str, Callable[[str, bytes], None]] | None) -> None:
        """Read frames until the stream ends or is silent for the timeout; DATA frames go to
        ``handlers`` (None: the outgoing side, where only heartbeats may come)."""
        timeout = self.timing.timeout
        name = peer.name
        while True:
            with trio.move_on_after(timeout) as silent:
                data = await stream.receive_some(CHUNK)
            if silent.cancelled_caught:
                raise trio.TooSlowError(f"nothing heard for {timeout} s")
            if not data:
                return
            for kind, body in decoder.feed(data):
                if kind == DATA:
                    if handlers is None:
                        raise LinkProtocolError("data on an outgoing link")
                    channel, payload = decode_data(body)
                    peer.received += 1
                    handler = handlers.get(channel)
                    if handler is not None:
                        handler(name, payload)
                elif kind != HEARTBEAT:
                    raise LinkProtocolError(f"unexpected frame kind {kind}")

    async def _accepted(self, stream: trio.SocketStream) -> None:
        decoder = LinkDecoder()
        peer: _Peer | None = None
        try:
            with trio.fail_after(self.timing.timeout):
                name = await self._read_hello(stream, decoder)
            peer = self.peers.get(name)
            if peer is None:
                raise LinkProtocolError(f"{name} is not a peer of {self.node}")
            await stream.send_all(self._hello)
            if peer.in_stream is not None:  # a reconnect: the older connection is dead
                await trio.aclose_forcefully(peer.in_stream)
            peer.in_stream = stream
            self._set(peer, "in", True)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._beat, stream)
                await self._read(stream, decoder, peer, self._handlers)
                nursery.cancel_scope.cancel()
        except* _CLOSED as group:
            log.debug("incoming link closed: %s", group.exceptions[0], extra={"peer": peer.name if peer else None})
        except* Exception:  # a channel's callback failed: that connection ends, the node carries on
            log.exception("incoming link failed", extra={"peer": peer.name if peer else None})
        finally:
            if peer is not None and peer.in_stream is stream:
                peer.in_stream = None
                self._set(peer, "in", False)
            await trio.aclose_forcefully(stream)

    async def _beat(self, stream: trio.SocketStream) -> None:
        heartbeat = encode_heartbeat()
        while True:
            await trio.sleep(self.timing.heartbeat)
            await stream.send_all(heartbeat)


def parse_peers(text: str) -> dict[str, tuple[str, int]]:
    """``node-2=127.0.0.1:4001,node-3=127.0.0.1:4002`` -> ``{"node-2": ("127.0.0.1", 4001), ...}``."""
    peers: dict[str, tuple[str, int]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, address = item.partition("=")
        host, colon, port = address.rpartition(":")
        if not sep or not colon or not name or not port.isdigit():
            raise ValueError(f"a peer is NAME=HOST:PORT, not {item!r}")
        peers[name] = (host.strip("[]"), int(port))
    return peers

