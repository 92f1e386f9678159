"""The home side of classic queues used from other nodes (``remote.py``): what a queue's home
node does with its peers' records (``p`` publishes, ``c``/``x`` consumers, ``a``/``r`` settles,
``k`` credit, ``g`` gets, ``u`` purges), and the owner of a peer's consumer on the real queue.

``HomeSide`` is a mixin of ``remote.RemoteQueues`` (it uses its ``peers``, ``broker``,
``_mark`` and ``_touch``). A peer's consumer is a ``Consumer`` of the queue whose owner
(``_RemoteOwner``) buffers deliveries for the peer, numbered per link (``_Peer.next_id``) and
held until the peer acks or rejects them; credit is the consumer's prefetch, or ``WINDOW``
for prefetch 0 and for no-ack consumers (whose window the peer gives back with ``k``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from mqemu.broker.consumer import Consumer
from mqemu.broker.message import QueueEntry
from mqemu.broker.message_wire import WireError, dump_message, load_message
from mqemu.broker.promise import ON_DISK, Promise, both
from mqemu.broker.queue import Queue

from .standin import StandIn

if TYPE_CHECKING:
    from .remote import _Peer

WINDOW = 1000  # deliveries in flight to a no-ack (or prefetch 0) consumer on another node


class _RemoteOwner:
    """The owner of a peer's consumer on its home node: deliveries go to the peer."""

    __slots__ = ("service", "peer", "tag", "blocked", "inflight")

    def __init__(self, service: "HomeSide", peer: str, tag: str) -> None:
        self.service = service
        self.peer = peer
        self.tag = tag
        self.blocked = False
        self.inflight = 0  # no-ack deliveries the peer has not given credit back for

    def deliver(self, consumer: Consumer, entry: QueueEntry) -> None:
        self.service._deliver(self, consumer, entry)

    def consumer_cancelled(self, consumer: Consumer) -> None:
        self.service._home_cancelled(self, consumer)


class HomeSide:
    """What a home node does for its peers' stand-ins (see the module docstring)."""

    broker: Any
    peers: dict[str, "_Peer"]

    def _mark(self, peer: "_Peer") -> None:
        raise NotImplementedError

    def _touch(self, q: Any) -> None:
        raise NotImplementedError

    @staticmethod
    def _return(items: Iterable[tuple[Any, Consumer | None, QueueEntry]]) -> None:
        by: dict[tuple[Any, Consumer | None], list[QueueEntry]] = {}
        for q, c, e in items:
            by.setdefault((q, c), []).append(e)
        for (q, c), entries in by.items():
            if not q.deleted:
                entries.sort(key=lambda e: e.seq)
                q.release_consumer_entries(c, entries)
                q.dispatch()


    def _local(self, vhost: str, name: str) -> Queue | None:
        vh = self.broker.vhosts.get(vhost)
        q = vh.queues.get(name) if vh is not None else None
        return q if q is not None and not isinstance(q, StandIn) and not q.deleted else None

    def _on_p(self, p: "_Peer", r: list, touched: set) -> None:
        _, batch, parts = r
        refused: list[int] = []  # part, index in the part, ...
        safe: Promise | None = None
        now = self.broker.clock()
        for part, (vhost, name, msgs) in enumerate(parts):
            q = self._local(vhost, name)
            if q is None:
                for i in range(len(msgs)):
                    refused += (part, i)
                continue
            stored = False
            publish = q.publish
            for i, data in enumerate(msgs):
                try:
                    message = load_message(data)
                except WireError as e:
                    raise ValueError(f"a message from {p.name} that does not decode: {e}") from None
                res = publish(message, now)
                if res is True:
                    continue
                if res is False:
                    refused += (part, i)
                elif res is ON_DISK:
                    stored = True
                else:
                    safe = both(safe, res)
            if stored:  # one promise on the store's batch for the part
                safe = both(safe, self.broker.vhosts[vhost].writes_safe())
            self._touch(q)
        gen = p.gen

        def answer() -> None:
            if p.gen == gen:
                p.out.append(["P", batch, refused])
                self._mark(p)

        if safe is None:
            answer()
        else:
            safe.then(answer)

    def _on_c(self, p: "_Peer", r: list, touched: set) -> None:
        _, vhost, name, tag, prefetch, no_ack, exclusive, priority, args = r
        q = self._local(vhost, name)
        if q is None or tag in p.consumers:
            p.out.append(["C", tag])
            self._mark(p)
            return
        self._mark(p)
        if q.consumers and (exclusive or any(c.exclusive for c in q.consumers)):  # on every node
            p.out.append(["O", tag, f"queue '{name}' in vhost '{vhost}' in exclusive use"])
            return
        p.out.append(["O", tag, ""])  # before any delivery to it
        owner = _RemoteOwner(self, p.name, tag)
        c = Consumer(q, tag, owner, no_ack, exclusive, priority, 0 if no_ack else (prefetch or WINDOW), args)
        p.consumers[tag] = c
        self._touch(q)
        q.add_consumer(c)

    def _on_x(self, p: "_Peer", r: list, touched: set) -> None:
        c = p.consumers.pop(r[1], None)
        if c is not None:
            c.queue.remove_consumer(c)
            self._touch(c.queue)
            self._mark(p)

    def _on_a(self, p: "_Peer", r: list, touched: set) -> None:
        held = p.held
        for i in r[1]:
            item = held.pop(i, None)
            if item is not None:
                q, c, e = item
                q.ack(e, c)
                touched.add(q)
                self._touch(q)
        self._mark(p)

    def _on_r(self, p: "_Peer", r: list, touched: set) -> None:
        held = p.held
        by: dict[tuple[Any, Consumer | None], list[QueueEntry]] = {}
        for i in r[1]:
            item = held.pop(i, None)
            if item is not None:
                by.setdefault((item[0], item[1]), []).append(item[2])
        for (q, c), entries in by.items():
            entries.sort(key=lambda e: e.seq)
            q.reject(entries, c, r[2])
            touched.add(q)
            self._touch(q)
        self._mark(p)

    def _on_k(self, p: "_Peer", r: list, touched: set) -> None:
        c = p.consumers.get(r[1])
        if c is not None:
            owner = c.owner
            owner.inflight = max(0, owner.inflight - r[2])  # type: ignore[attr-defined]
            if owner.blocked and owner.inflight < WINDOW:  # type: ignore[attr-defined]
                owner.blocked = False
                touched.add(c.queue)

    def _on_g(self, p: "_Peer", r: list, touched: set) -> None:
        _, vhost, name, gid, no_ack = r
        q = self._local(vhost, name)
        entry = q.get(no_ack) if q is not None else None
        if entry is None:
            p.out.append(["G", gid, None, False, None, len(q.ready) if q is not None else 0])
        else:
            ident = 0
            if not no_ack:
                ident = p.next_id = p.next_id + 1
                p.held[ident] = (q, None, entry)
            p.out.append(["G", gid, ident, entry.redelivered, dump_message(entry.message), len(q.ready)])  # type: ignore[union-attr]
        if q is not None:
            self._touch(q)
        self._mark(p)

    def _on_u(self, p: "_Peer", r: list, touched: set) -> None:
        q = self._local(r[1], r[2])
        if q is not None:
            q.purge()
            self._touch(q)
            self._mark(p)

    def _deliver(self, owner: _RemoteOwner, c: Consumer, entry: QueueEntry) -> None:
        p = self.peers[owner.peer]
        if c.no_ack:
            ident = 0
            owner.inflight += 1
            if owner.inflight >= WINDOW:
                owner.blocked = True
        else:
            ident = p.next_id = p.next_id + 1
            p.held[ident] = (c.queue, c, entry)
        items = p.deliveries.get(owner.tag)
        if items is None:
            items = p.deliveries[owner.tag] = []
            p.out.append(["D", owner.tag, items])
            self._mark(p)
        items += (ident, entry.redelivered, dump_message(entry.message))
        self._touch(c.queue)

    def _home_cancelled(self, owner: _RemoteOwner, c: Consumer) -> None:
        p = self.peers[owner.peer]
        if p.consumers.pop(owner.tag, None) is not None:
            p.out.append(["C", owner.tag])
            self._mark(p)

