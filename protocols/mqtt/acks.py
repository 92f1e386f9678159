"""The acknowledgements a connection sends for PUBLISH and PUBREL (PUBACK, PUBREC, PUBCOMP),
held until what they acknowledge is safe: the part of ``MqttConnection`` that owns that
state (``MqttConnection.acks``).

A PUBACK or PUBREC waits for the core's promise (``VirtualHost.publish_safe``: on disk for a
durable queue that took the message; ``VirtualHost.writes_safe`` for a retained message's
record), as AMQP publisher confirms do; acks behind a held one wait with it, so
acknowledgements keep the order of the packets they answer.

A promise that breaks (``Promise.can_break``: a cluster's queue whose home node was lost
before it stored the message) cannot be answered in MQTT 3.1.1, which has no negative
PUBACK: the gate drops what it holds and calls ``failed``, which closes the connection, so
the client sends its unacknowledged publishes again when it reconnects.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mqemu.broker.promise import Promise


class AckGate:
    """Owns the held acknowledgements: ``send`` (nothing to wait for, but behind any held
    one) and ``send_after`` (waits for a promise too)."""

    __slots__ = ("_failed", "_gone", "_send", "_waiting", "held", "held_promise", "kept")

    def __init__(self, send: Callable[[bytes], None], gone: Callable[[], bool],
                 failed: Callable[[], None] | None = None) -> None:
        self._send = send  # the connection's send
        self._gone = gone  # the connection is closed or lingering: held acks are dropped
        self._failed = failed  # a promise broke: the connection must end (see the module)
        # [promise, bytes]; promise None for one that only waits for those before it
        self.held: deque[list] = deque()
        self.held_promise: Promise | None = None  # the last promise waited for
        self.kept: Promise | None = None  # the last promise kept
        # promises that may wait long (``Promise.forgets``: a quorum queue without a leader)
        # -> the callback given them, forgotten when the connection closes (``close``)
        self._waiting: dict[Promise, Callable[[], None]] = {}

    def send(self, data: bytes) -> None:
        """An acknowledgement that waits for nothing but the held ones before it."""
        if self.held:
            self.held.append([None, data])
        else:
            self._send(data)

    def send_after(self, promise: Promise | None, data: bytes) -> None:
        """Send data once promise is kept (None, or kept already: as ``send``)."""
        if promise is None or promise is self.kept:
            self.send(data)
            return
        self.held.append([promise, data])
        if promise is not self.held_promise:  # one callback per promise (per store batch)
            self.held_promise = promise
            if promise.can_break:
                kept = lambda: self._kept(promise)  # noqa: E731
                if promise.forgets:
                    self._waiting[promise] = kept
                promise.then_or(kept, self._broken)
            else:
                promise.then(lambda: self._kept(promise))

    def _broken(self) -> None:
        self.held.clear()  # nothing after a lost publish may be acknowledged before it
        self.held_promise = None
        if not self._gone() and self._failed is not None:
            self._failed()

    def close(self) -> None:
        """The connection closed: what waits is dropped, and the promises that may wait long
        forget this gate's callbacks (nothing of the connection stays held by them)."""
        self.held.clear()
        self.held_promise = None
        waiting, self._waiting = self._waiting, {}
        for promise, kept in waiting.items():
            promise.forget(kept)

    def _kept(self, promise: Promise) -> None:
        if self._waiting:
            self._waiting.pop(promise, None)
        self.kept = promise
        held = self.held
        if self._gone():
            held.clear()  # the connection is gone: the client resends what was not acked
            return
        for item in held:
            if item[0] is promise:
                item[0] = None
        send = self._send
        while held and held[0][0] is None:
            send(held.popleft()[1])
