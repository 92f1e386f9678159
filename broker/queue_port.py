"""What a queue asks of the rest of the node: its port.

A ``Queue`` (with its mixins ``paging.PagingQueue`` and ``selective.SelectiveDispatch``)
never reaches into its virtual host. The vhost hands each queue a ``QueuePort`` when it
makes it (``VirtualHost.queue_port``); the queue binds the few callables it needs once, in
its constructor, so the hot paths (publish, dispatch, ack) make no more calls than a direct
one would.

The port holds:
- ``vhost_name`` and ``key`` (``(vhost name, queue name)``, the store's key for the queue);
- ``clock()`` and ``call_at(when, callback)`` (the node's timers);
- ``profile`` and ``activemq`` (the engine's policies: redelivery, message groups, ...);
- ``budget`` (the node's ``paging.MemoryBudget``; None: the queue never pages);
- ``dead_letter(queue, entries, reason)``, ``delete_queue(name)`` (auto-delete) and
  ``schedule_expiry(queue)`` (``x-expires``), answered by the vhost;
- the store, for this queue only: ``persists`` (the queue is durable and the store keeps
  messages), ``store_add(message)`` -> a store handle (kept on the ``QueueEntry``),
  ``store_remove(handle)``, and the paging calls ``can_page()``, ``page_out(message,
  handle)``, ``page_in(keys, callback)``, ``page_discard(keys)``.

Tests that build a queue directly make a port from anything shaped like a vhost
(``QueuePort(vhost, name)``: name, clock, timers, profile, activemq, store, budget and the
three vhost calls).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from .message import Message, QueueEntry
    from .paging import MemoryBudget
    from .profile import EngineProfile
    from .queue import Queue
    from .store.base import Store


def _keeps_nothing(*args: Any) -> None:
    return None


class QueuePort:
    """One queue's narrow interface to its vhost, timers, budget and store (see module)."""

    __slots__ = ("vhost_name", "key", "clock", "call_at", "profile", "activemq", "budget",
                 "dead_letter", "delete_queue", "schedule_expiry", "persists", "store_add",
                 "store_remove", "_store")

    def __init__(self, vhost: Any, queue_name: str, durable: bool = False) -> None:
        self.vhost_name: str = vhost.name
        self.key: tuple[str, str] = (vhost.name, queue_name)
        self.clock: Callable[[], float] = vhost.clock
        self.call_at: Callable[[float, Callable[[float], None]], Any] = vhost.timers.call_at
        self.profile: "EngineProfile" = vhost.profile
        self.activemq = vhost.activemq
        self.budget: "MemoryBudget | None" = getattr(vhost, "budget", None)
        self.dead_letter: Callable[["Queue", list["QueueEntry"], str], None] = vhost.dead_letter
        self.delete_queue: Callable[[str], Any] = partial(vhost.delete_queue, internal=True)
        self.schedule_expiry: Callable[["Queue"], None] = vhost.schedule_queue_expiry
        store: "Store | None" = vhost.store
        self._store = store
        self.persists = durable and store is not None and store.keeps_messages
        if self.persists:
            assert store is not None
            self.store_add: Callable[["Message"], int | None] = partial(store.add_message, self.key)
            self.store_remove: Callable[[int], None] = partial(store.remove_message, self.key)
        else:
            self.store_add = _keeps_nothing
            self.store_remove = _keeps_nothing

    # -- paging (slow paths: plain methods) ---------------------------------------------
    def can_page(self) -> bool:
        """True while the store can take bodies (its paging task runs)."""
        store = self._store
        return store is not None and store.can_page

    def page_out(self, message: "Message", handle: int | None) -> int:
        assert self._store is not None
        return self._store.page_out(self.key, message, handle)

    def page_in(self, keys: "Sequence[int]", callback: "Callable[[list[Message | None]], None]") -> None:
        assert self._store is not None
        self._store.page_in(self.key, keys, callback)

    def page_discard(self, keys: "Sequence[int]") -> None:
        assert self._store is not None
        self._store.page_discard(self.key, keys)
