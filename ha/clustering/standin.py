"""A classic queue's stand-in on the nodes that are not its home (issue 13 item 4).

The vhost holds it under the queue's name (``VirtualHost.add_stand_in``), so routing,
bindings and lookups find it as any queue; it answers the calls protocols make on a queue
(the set ``broker.quorum.QuorumQueue`` answers) by asking the queue's home node through
``remote.RemoteQueues``, over the link channel ``queues``:

- ``publish`` adds the message to this pass's batch for the home node and returns the
  batch's promise (``RemoteBatch``: kept when the home node has every message of the batch
  safe, broken when the home node is lost first or refused one of them);
- a consumer added here is registered on the home node, whose queue delivers to it through
  the link; acks, rejects and requeues go back by the home's delivery ids;
- ``get_later`` is basic.get's asynchronous form (the protocol answers when the home does);
- ``purge`` asks the home; counts (``ready``, the home's consumers) are what the home last
  sent (``n`` records, after every pass that touched the queue).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Iterable

from mqemu.broker.message import Message, QueueEntry
from mqemu.broker.promise import Breakable, Promise, Refusable
from mqemu.broker.queue import QueueCounts, QueueStatistics
from mqemu.broker.queue_args import QueueSettings

if TYPE_CHECKING:
    from mqemu.broker.consumer import Consumer

    from .remote import RemoteQueues


class RemoteBatch(Breakable):
    """The promise of one pass's publishes to one home node."""

    __slots__ = ("guards", "order")

    def __init__(self) -> None:
        super().__init__()
        # (stand-in, index in its part) -> the promise of one publish the home may refuse
        # alone (its queue's overflow is reject-publish): only that one is nacked
        self.guards: dict[tuple[Any, int], Refusable] | None = None
        self.order: list[Any] = []  # the stand-ins of the batch's parts, in the sent order

    def refused(self, which: list[int]) -> None:
        """The home refused these messages (``[part, i, ...]``): each one's own promise
        breaks when it has one, else the whole batch (a refusal it did not expect); the rest
        are kept."""
        guards = self.guards
        for k in range(0, len(which), 2):
            part, i = which[k], which[k + 1]
            g = guards.get((self.order[part], i)) if guards and part < len(self.order) else None
            if g is None:
                self.break_()
                return
            g.refuse()
        self.keep()


def broken_promise() -> RemoteBatch:
    p = RemoteBatch()
    p.state = -1
    return p


class RemoteEntry(QueueEntry):
    """A delivery from the home node: ``seq`` is the home's delivery id, ``gen`` the link
    generation it came over (an ack after that link was lost is dropped: the home returned
    the message to its queue when it lost the link)."""

    __slots__ = ("gen",)

    def __init__(self, message: Message, seq: int, redelivered: bool, gen: int) -> None:
        super().__init__(message, None)
        self.seq = seq
        self.redelivered = redelivered
        self.gen = gen


class _Ready:
    """``len(queue.ready)``: the home's ready count, as last sent."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0

    def __iter__(self) -> Any:
        return iter(())


class _Consumers(list):
    """The consumers attached here; its length is the home's count when that is larger
    (consumers on other nodes and on the home count too, as for ``queue.declare-ok``)."""

    home = 0

    def __len__(self) -> int:
        return max(list.__len__(self), self.home)

    def __bool__(self) -> bool:
        return len(self) > 0


class StandIn:
    """A classic queue homed on node ``home`` (see the module docstring)."""

    _paged = None
    exclusive_owner = None
    bytes_ready = 0

    def __init__(self, service: "RemoteQueues", vhost: str, name: str, home: str, durable: bool,
                 auto_delete: bool, arguments: dict[str, Any], clock: Callable[[], float]) -> None:
        self.service = service
        self.vhost_name = vhost
        self.name = name
        self.home = home
        self.durable = durable
        self.auto_delete = auto_delete
        self.arguments = arguments
        self.settings = _no_expiry(QueueSettings.parse(name, vhost, arguments))
        self.consumers: list[Consumer] = _Consumers()
        self.ready = _Ready()
        self.unacked = 0
        self.counts = QueueCounts()
        self.had_consumer = False
        self.deleted = False
        self._clock = clock
        self.last_used = clock()
        self.reachable = False  # set by the service from the links
        self.refuses = _refuses(self.settings)  # the home may refuse a publish alone

    def __repr__(self) -> str:
        return f"StandIn({self.name!r}, home={self.home!r}, ready={self.ready.n})"

    def statistics(self) -> QueueStatistics:
        return QueueStatistics(self.name, self.ready.n, self.unacked, 0, len(self.consumers))

    # -- publishing -----------------------------------------------------------------------
    def publish(self, message: Message, now: float) -> "bool | Promise":
        if not self.reachable:
            return broken_promise()  # RabbitMQ: a queue whose node is down nacks (abnormal exit)
        self.counts.enqueued += 1
        return self.service.publish(self, message, self.refuses)

    # -- delivering -----------------------------------------------------------------------
    def dispatch(self) -> None:
        """A consumer's owner may have room again: no-ack credit held back goes home."""
        if self.consumers:
            self.service.resume(self)

    def get(self, no_ack: bool) -> QueueEntry | None:
        """The synchronous form finds nothing (the management API's get): ``get_later``."""
        return None

    def get_later(self, no_ack: bool, callback: Callable[[QueueEntry | None], None]) -> None:
        """basic.get through the home node: ``callback(entry or None)`` once it answers."""
        self.last_used = self._clock()
        if not self.reachable:
            callback(None)
            return
        self.service.get(self, no_ack, callback)

    # -- settling -------------------------------------------------------------------------
    def _release(self, consumer: "Consumer | None", n: int) -> None:
        self.unacked = max(0, self.unacked - n)
        if consumer is not None:
            consumer.unacked = max(0, consumer.unacked - n)

    def ack(self, entry: QueueEntry, consumer: "Consumer | None") -> None:
        self._release(consumer, 1)
        self.counts.acked += 1
        self.service.settle(self, (entry,), None)

    def reject(self, entries: list[QueueEntry], consumer: "Consumer | None", requeue: bool) -> None:
        self._release(consumer, len(entries))
        self.service.settle(self, entries, requeue)

    def release_consumer_entries(self, consumer: "Consumer | None", entries: list[QueueEntry]) -> None:
        self._release(consumer, len(entries))
        self.service.settle(self, entries, True)

    def requeue(self, entries: Iterable[QueueEntry]) -> None:
        entries = list(entries)
        self._release(None, len(entries))
        self.service.settle(self, entries, True)

    # -- consumers ------------------------------------------------------------------------
    def add_consumer(self, consumer: "Consumer") -> None:
        self.consumers.append(consumer)
        self.had_consumer = True
        self.service.consume(self, consumer)

    def consume_later(self, consumer: "Consumer", answered: Callable[[str | None], None]) -> None:
        """``add_consumer`` whose ``answered(None or a refusal's text)`` comes once the home
        has checked it (the AMQP channel sends consume-ok, or closes 403, then)."""
        self.consumers.append(consumer)
        self.had_consumer = True
        self.service.consume(self, consumer, answered)

    def remove_consumer(self, consumer: "Consumer") -> None:
        try:
            self.consumers.remove(consumer)
        except ValueError:
            return
        self.last_used = self._clock()
        self.service.cancel(self, consumer)

    def consumer_gone(self, consumer: "Consumer") -> bool:
        """The home cancelled ``consumer``: forget it here. False when it was gone already
        (the queue's deletion reached this node first)."""
        try:
            self.consumers.remove(consumer)
        except ValueError:
            return False
        return True

    # -- housekeeping ---------------------------------------------------------------------
    def expire(self, now: float) -> None:
        """The home node runs the queue's TTLs."""

    def apply_settings(self, settings: QueueSettings) -> None:
        """A policy: kept for what reads it; the home node applies it to the queue itself."""
        self.settings = _no_expiry(settings)
        self.refuses = _refuses(self.settings)

    def purge(self) -> int:
        """Purged on the home node (not when the purge is a deletion's: ``deleted`` is set
        before the pass ends, and the home deletes the queue itself)."""
        n = self.ready.n
        self.service.purge(self)
        return n

    def touch(self, now: float) -> None:
        """Used now (a redeclare)."""
        self.last_used = now

    def delete(self) -> list["Consumer"]:
        """The vhost deletes the stand-in (the queue's deletion, replicated): marked, its
        consumers dropped and returned (the vhost tells their owners)."""
        self.purge()
        self.deleted = True
        consumers = list(self.consumers)
        self.consumers.clear()
        return consumers


def _refuses(settings: QueueSettings) -> bool:
    """A queue that refuses a publish when full (``reject-publish``, ``reject-publish-dlx``)."""
    return settings.overflow in ("reject-publish", "reject-publish-dlx") and (
        settings.max_length is not None or settings.max_length_bytes is not None)


def _no_expiry(settings: QueueSettings) -> QueueSettings:
    """``x-expires`` runs on the home node only (a stand-in must not delete itself)."""
    if settings.expires is None:
        return settings
    return dataclasses.replace(settings, expires=None)
