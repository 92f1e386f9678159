"""Promises the core keeps: when a published message is safe.

``VirtualHost.publish_safe`` returns, besides what it routed, None when the message is safe
at once (no queue that took it keeps it anywhere but in memory) or a ``Promise``, whose
``then(callback)`` calls back once the message is safe. A publisher confirm, a STOMP
receipt or an MQTT PUBACK/PUBREC waits for it; no protocol asks the store itself.

What "safe" means is the queue's to say, in what ``Queue.publish`` returns: True (taken,
nothing to wait for), False (refused) or a promise.
- A classic durable queue that stored the message returns ``ON_DISK``, a marker the vhost
  turns into one promise on the store's open batch (``StoreWrites``: kept when every store
  write made so far is on disk, the store's group commit). One such promise is made per
  batch and shared by every publish in it, so waiting costs no object per message.
- A replicated (quorum) queue returns its own promise, kept when a majority of its
  members have the message; a publish that reaches both kinds waits for ``both``.

A promise calls back on the event loop, never before ``then`` returns unless it is kept
already, and never if the node stops first.

A promise may also break: a cluster's stand-in for a queue on another node
(``ha/clustering/remote.py``) breaks its promise when that node is lost before it answered.
``can_break`` says whether one may; ``then_or(kept, broken)`` calls back either way (once).
A protocol that can refuse late (AMQP's basic.nack) uses it; one that cannot calls ``then``,
whose callback a broken promise never calls (nothing is confirmed that was not kept).

A promise that may wait long (a quorum queue's, while its group has no leader) ``forgets``:
``forget(callback)`` drops a callback given to ``then`` (or the ``kept`` of ``then_or``), so
a channel that closes meanwhile leaves nothing of itself held by it. Such a promise also
says ``can_break`` (a quorum queue's ``Committed`` never breaks; a ``Refusable`` may), so a
protocol waits on it with ``then_or`` and the store's promises keep their own path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .store.base import Store


class Promise:
    """Kept once what it promises holds; ``then(callback)`` calls back then (at once if it
    is kept already)."""

    __slots__ = ()
    can_break = False
    forgets = False

    def then(self, callback: Callable[[], None]) -> None:
        raise NotImplementedError

    def then_or(self, kept: Callable[[], None], broken: Callable[[], None]) -> None:
        """``kept()`` once kept, or ``broken()`` once it breaks (a promise that cannot break:
        ``then``)."""
        self.then(kept)

    def forget(self, callback: Callable[[], None]) -> None:
        """Drop ``callback`` (a ``then`` callback or a ``then_or`` kept one) unless it was
        called: only promises whose ``forgets`` is True do anything."""


class _OnDisk(Promise):
    """What a queue that stored the message returns; the vhost makes it a ``StoreWrites``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ON_DISK"


ON_DISK = _OnDisk()


class StoreWrites(Promise):
    """Kept when the store's writes up to ``ticket`` (``Store.barrier``) are on disk."""

    __slots__ = ("store", "ticket")

    def __init__(self, store: "Store", ticket: int) -> None:
        self.store = store
        self.ticket = ticket

    def then(self, callback: Callable[[], None]) -> None:
        self.store.when_durable(self.ticket, callback)

    def __repr__(self) -> str:
        return f"StoreWrites({self.ticket})"


class AllOf(Promise):
    """Kept when every one of ``promises`` is."""

    __slots__ = ("promises",)

    def __init__(self, promises: list[Promise]) -> None:
        self.promises = promises

    def then(self, callback: Callable[[], None]) -> None:
        left = [len(self.promises)]

        def one_kept() -> None:
            left[0] -= 1
            if left[0] == 0:
                callback()

        for p in self.promises:
            p.then(one_kept)

    @property
    def can_break(self) -> bool:  # type: ignore[override]
        return any(p.can_break for p in self.promises)

    def then_or(self, kept: Callable[[], None], broken: Callable[[], None]) -> None:
        """Kept when every part is; broken (once) as soon as one part breaks."""
        left = [len(self.promises)]

        def one_kept() -> None:
            left[0] -= 1
            if left[0] == 0:
                kept()

        def one_broken() -> None:
            if left[0] > 0:
                left[0] = -1
                broken()

        for p in self.promises:
            p.then_or(one_kept, one_broken)

    def __repr__(self) -> str:
        return f"AllOf({self.promises!r})"


class Breakable(Promise):
    """A promise kept by ``keep()`` or broken by ``break_()``, whichever comes first: the base
    of the promises that may break (a stand-in's batch, ``Refusable``)."""

    __slots__ = ("state", "_calls")
    can_break = True

    def __init__(self) -> None:
        self.state = 0  # 0 open, 1 kept, -1 broken
        self._calls: list[tuple[Callable[[], None], Callable[[], None] | None]] = []

    def then(self, callback: Callable[[], None]) -> None:
        if self.state == 0:
            self._calls.append((callback, None))
        elif self.state == 1:
            callback()

    def then_or(self, kept: Callable[[], None], broken: Callable[[], None]) -> None:
        if self.state == 0:
            self._calls.append((kept, broken))
        elif self.state == 1:
            kept()
        else:
            broken()

    def keep(self) -> None:
        if self.state == 0:
            self.state = 1
            calls, self._calls = self._calls, []
            for kept, _ in calls:
                kept()

    def break_(self) -> None:
        if self.state == 0:
            self.state = -1
            calls, self._calls = self._calls, []
            for _, broken in calls:
                if broken is not None:
                    broken()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({('broken', 'open', 'kept')[self.state + 1]})"


class Refusable(Breakable):
    """One publish's promise inside a batch's (``batch``), for a queue that may refuse that
    one message alone (``x-overflow: reject-publish``): a quorum queue's publish that passed
    the check on the applied state but is refused when it commits; a publish through a
    cluster's stand-in that the home node's queue refused. Kept when its batch is, unless
    ``refuse()`` came first (or the batch broke): then broken, and the publish is nacked
    (AMQP) or never acknowledged (STOMP, MQTT)."""

    __slots__ = ()
    forgets = True

    def __init__(self, batch: Promise) -> None:
        super().__init__()
        batch.then_or(self.keep, self.break_)  # a batch that breaks breaks it too

    refuse = Breakable.break_

    def forget(self, callback: Callable[[], None]) -> None:
        self._calls = [c for c in self._calls if c[0] is not callback]


def both(a: Promise | None, b: Promise | None) -> Promise | None:
    """A promise kept when a and b are (None: nothing to wait for)."""
    if a is None or a is b:
        return b
    if b is None:
        return a
    if type(a) is StoreWrites and type(b) is StoreWrites and a.store is b.store:
        return a if a.ticket >= b.ticket else b  # a later batch covers the earlier ones
    parts = (a.promises if type(a) is AllOf else [a]) + (b.promises if type(b) is AllOf else [b])
    return AllOf(parts)
