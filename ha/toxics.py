"""Toxics: the network faults a ``proxy.Proxy`` applies to its links, modelled on toxiproxy's.

A toxic has a type, a name, a stream (``upstream`` = client to server, ``downstream`` =
server to client), a ``toxicity`` (the probability that it applies to a given link, drawn
once per link when the link opens or the toxic is added, as toxiproxy decides it) and the
type's attributes:

- ``latency``: ``latency`` ms, ``jitter`` ms; every chunk leaves ``latency`` +/- ``jitter``
  after it arrived (chunks in flight overlap, so the rate is not cut), or when the toxic is
  removed, if that is sooner (so a huge latency is a pause that its removal ends).
- ``bandwidth``: ``rate`` KB/s (1 KB = 1000 bytes; 0 = no limit).
- ``timeout``: data is dropped; the connection closes ``timeout`` ms after the toxic reached
  the link (0 = never: data is dropped until the toxic is removed).
- ``reset_peer``: the first chunk after the toxic reached the link is dropped and, ``timeout``
  ms later (0 = at once), both sockets are reset (SO_LINGER 0: the peers read ECONNRESET).
- ``slow_close``: an end of stream is passed on ``delay`` ms late.
- ``slicer``: every chunk is sent in pieces of ``average_size`` +/- ``size_variation`` bytes,
  ``delay`` µs apart.
- ``limit_data``: the connection closes once ``bytes`` bytes have passed (exactly that many
  reach the peer).
- ``down``: not a link toxic: the proxy stops listening and cuts its connections while the
  toxic is there (the same as ``Proxy.disable``; stream and toxicity do not apply; its name
  is ``down`` unless given).

This module holds the records and the per-link shaping (``LinkShaper``); it opens no socket.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import trio

STREAMS = ("upstream", "downstream")

# type -> its attributes and their defaults (toxiproxy's names and units)
TOXIC_TYPES: dict[str, dict[str, int]] = {
    "latency": {"latency": 0, "jitter": 0},
    "bandwidth": {"rate": 0},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 0},
    "slow_close": {"delay": 0},
    "slicer": {"average_size": 0, "size_variation": 0, "delay": 0},
    "limit_data": {"bytes": 0},
    "down": {},
}


@dataclass(slots=True)
class Toxic:
    """One toxic as added to a proxy; ``to_dict`` gives toxiproxy's JSON form."""

    type: str
    name: str = ""
    stream: str = "downstream"
    toxicity: float = 1.0
    attributes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        defaults = TOXIC_TYPES.get(self.type)
        if defaults is None:
            raise ValueError(f"unknown toxic type {self.type!r}; known: {', '.join(TOXIC_TYPES)}")
        if self.stream not in STREAMS:
            raise ValueError(f"stream must be 'upstream' or 'downstream', not {self.stream!r}")
        if not 0.0 <= float(self.toxicity) <= 1.0:
            raise ValueError(f"toxicity must be between 0 and 1, not {self.toxicity!r}")
        if self.type == "down" and self.toxicity != 1.0:
            raise ValueError("a down toxic takes the whole proxy down: its toxicity must be 1")
        unknown = set(self.attributes) - set(defaults)
        if unknown:
            raise ValueError(f"{self.type} takes {sorted(defaults) or 'no attributes'}, not {sorted(unknown)}")
        attrs = dict(defaults)
        for key, value in self.attributes.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{self.type}.{key} must be a number >= 0, not {value!r}")
            attrs[key] = int(value)
        if self.type == "slicer" and attrs["average_size"] < 1:
            raise ValueError("slicer.average_size must be at least 1")
        self.attributes = attrs
        self.toxicity = float(self.toxicity)
        if not self.name:
            self.name = "down" if self.type == "down" else f"{self.type}_{self.stream}"

    def __getitem__(self, key: str) -> int:
        return self.attributes[key]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Toxic":
        """A toxic from toxiproxy's JSON form (``to_dict``'s); raises ValueError if it is not one."""
        unknown = set(data) - {"name", "type", "stream", "toxicity", "attributes"}
        if unknown or "type" not in data:
            raise ValueError(f"a toxic needs a type and takes name, stream, toxicity, attributes; got {sorted(data)}")
        return cls(str(data["type"]), str(data.get("name") or ""), str(data.get("stream", "downstream")),
                   data.get("toxicity", 1.0), dict(data.get("attributes") or {}))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "stream": self.stream, "toxicity": self.toxicity,
                "attributes": dict(self.attributes)}


class LinkShaper:
    """What the toxics on one link (one direction of one connection) do to its chunks.

    ``toxics`` is the list drawn for this link, in the order they were added; the writer of
    the link calls ``deliver(arrival, data)`` for every chunk and ``before_eof()`` at the end
    of the stream. ``send`` writes to the far socket, ``close(reset)`` ends the connection.
    """

    __slots__ = ("toxics", "_send", "_close", "_rng", "_counted", "_next_send", "_removed")

    def __init__(self, send: Callable[[bytes], Awaitable[None]], close: Callable[[bool], None],
                 rng: random.Random) -> None:
        self.toxics: list[Toxic] = []
        self._send = send
        self._close = close
        self._rng = rng
        self._counted: dict[str, int] = {}  # limit_data toxic name -> bytes passed
        self._next_send = 0.0  # bandwidth: when the next byte may leave
        self._removed: trio.Event | None = None  # set when a toxic goes (a held chunk leaves then)

    def add(self, toxic: Toxic) -> bool:
        """Draw the toxic for this link; True if it applies."""
        if toxic.toxicity < 1.0 and self._rng.random() >= toxic.toxicity:
            return False
        self.toxics.append(toxic)
        self._counted[toxic.name] = 0
        return True

    def remove(self, name: str) -> bool:
        for i, toxic in enumerate(self.toxics):
            if toxic.name == name:
                del self.toxics[i]
                self._counted.pop(name, None)
                if self._removed is not None:
                    self._removed.set()
                    self._removed = None
                return True
        return False

    async def deliver(self, arrival: float, data: bytes) -> None:
        """Pass one chunk that arrived at ``arrival`` (trio time) through the toxics, in order."""
        for toxic in list(self.toxics):
            kind = toxic.type
            if kind == "latency":
                jitter = toxic["jitter"]
                delay = toxic["latency"] + (self._rng.uniform(-jitter, jitter) if jitter else 0)
                until = arrival + max(delay, 0) / 1000
                while trio.current_time() < until and any(t is toxic for t in self.toxics):
                    # a chunk held by a latency toxic leaves when its time comes or the toxic goes
                    if self._removed is None:
                        self._removed = trio.Event()
                    with trio.move_on_at(until):
                        await self._removed.wait()
            elif kind == "timeout":
                return  # dropped; the link's timer closes the connection
            elif kind == "reset_peer":
                await trio.sleep(toxic["timeout"] / 1000)
                if any(t is toxic for t in self.toxics):  # not removed meanwhile
                    self._close(True)
                return
            elif kind == "limit_data":
                left = toxic["bytes"] - self._counted[toxic.name]
                if len(data) >= left:
                    if left > 0:
                        await self._shaped_send(data[:left])
                    self._close(False)
                    return
                self._counted[toxic.name] += len(data)
        await self._shaped_send(data)

    async def before_eof(self) -> None:
        """Delay the end of the stream by every slow_close toxic's delay."""
        for toxic in list(self.toxics):
            if toxic.type == "slow_close":
                await trio.sleep(toxic["delay"] / 1000)

    async def _shaped_send(self, data: bytes) -> None:
        slicer = rate = None
        for toxic in self.toxics:
            if toxic.type == "slicer":
                slicer = toxic
            elif toxic.type == "bandwidth" and toxic["rate"] > 0:
                rate = toxic["rate"] * 1000  # bytes per second
        if slicer is None and rate is None:
            await self._send(data)
            return
        for piece in self._pieces(data, slicer, rate):
            if rate is not None:
                now = trio.current_time()
                self._next_send = max(self._next_send, now) + len(piece) / rate
            await self._send(piece)
            if rate is not None:
                await trio.sleep_until(self._next_send)
            if slicer is not None and slicer["delay"]:
                await trio.sleep(slicer["delay"] / 1_000_000)

    def _pieces(self, data: bytes, slicer: Toxic | None, rate: float | None) -> list[bytes]:
        """Cut a chunk into the pieces the slicer (or a tenth of a second's bandwidth) sends."""
        view = memoryview(data)
        out: list[bytes] = []
        pos = 0
        most = max(int(rate / 10), 1) if rate is not None else len(data)
        while pos < len(data):
            if slicer is not None:
                var = min(slicer["size_variation"], slicer["average_size"] - 1)
                size = slicer["average_size"] + (self._rng.randint(-var, var) if var else 0)
            else:
                size = most
            size = max(1, min(size, most))
            out.append(bytes(view[pos:pos + size]))
            pos += size
        return out
