"""Classic queues usable from every node (issue 13 item 4): the link side of the stand-ins
(``standin.py``) and the home side that serves them, over the link channel ``queues``
(records: ``remote_codec``).

One ``RemoteQueues`` per cluster node plays both parts:

- **for its stand-ins** (queues homed elsewhere): publishes go to the home node in one
  batch per peer per pass, with one ``RemoteBatch`` promise kept when the home answers
  ``P`` (the messages are safe there: on disk for a persistent message to a durable queue)
  or broken when it refused one, or when the link to it is lost first (the AMQP channel
  nacks, as RabbitMQ 3.10's channel nacks the unconfirmed publishes of a queue process
  that exited abnormally; STOMP and MQTT then send no receipt or PUBACK). Consumers are
  registered on the home, deliveries arrive in ``D`` records and are handed to the local
  consumer; acks, rejects and requeues go back by delivery id. Losing the link cancels the
  stand-ins' consumers (``consumer_cancelled``: AMQP basic.cancel) and drops what their
  clients still hold (the home returned it).
- **as a home**: a peer's consumer is a ``Consumer`` on the real queue whose owner
  (``_RemoteOwner``) buffers deliveries for the peer; credit is the consumer's prefetch (a
  window of ``WINDOW`` for prefetch 0 and for no-ack consumers, whose credit the peer
  returns as it hands deliveries over), so a slow consumer never makes the home buffer
  without bound. Losing the link removes the peer's consumers and returns everything the
  peer held to its queues, flagged redelivered. Queues peers touched in a pass (publishes,
  consumers, acks, gets, purges) get their counts sent to every peer (``n``) at the end of
  that pass, and all this node's durable queues' counts to a peer whose link comes up.

The home side's handlers are ``remote_home.HomeSide``. Everything is sent by the task ``run``: records queue up per peer during a pass and go as
one link frame per peer when the task next runs.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Callable, Iterable

import trio

from mqemu.broker.consumer import Consumer
from mqemu.broker.message import QueueEntry
from mqemu.broker.message_wire import WireError, dump_message, load_message
from mqemu.broker.promise import Promise, Refusable

from .remote_codec import decode, encode
from .remote_home import WINDOW, HomeSide
from .standin import RemoteBatch, RemoteEntry, StandIn

if TYPE_CHECKING:
    from mqemu.broker.message import Message

log = logging.getLogger("mqemu.ha.clustering.remote")

CHANNEL = "queues"
__all__ = ["CHANNEL", "WINDOW", "RemoteQueues"]



class _Peer:
    """What this node has going on with one peer."""

    __slots__ = ("name", "out", "gen", "batch", "batch_parts", "pending", "acks", "rejects", "deliveries",
                 "purges", "touched", "held", "next_id", "consumers", "credit")

    def __init__(self, name: str) -> None:
        self.name = name
        self.out: list[list[Any]] = []  # records of this pass, in order
        self.gen = 0  # the link generation (raised when the link is lost)
        # as a stand-in's node
        self.batch: RemoteBatch | None = None  # this pass's publishes
        self.batch_parts: dict[StandIn, list[bytes]] = {}
        self.pending: dict[int, RemoteBatch] = {}  # batches sent, not answered
        self.acks: list[int] | None = None  # this pass's ack record's ids
        self.rejects: dict[bool, list[int]] = {}
        self.purges: list[StandIn] = []
        self.credit: dict[str, int] = {}  # no-ack credit to give back, by consumer tag
        # as the home
        self.deliveries: dict[str, list[Any]] = {}  # this pass's D record items, by tag
        self.touched: set[Any] = set()  # queues whose counts go back at the end of the pass
        self.held: dict[int, tuple[Any, Consumer | None, QueueEntry]] = {}  # id -> (queue, consumer, entry)
        self.next_id = int.from_bytes(os.urandom(5), "big")  # ids differ from a restarted node's
        self.consumers: dict[str, Consumer] = {}  # the peer's consumers here, by its tag


class RemoteQueues(HomeSide):
    """One node's stand-ins and the home side of its own queues (see the module docstring)."""

    def __init__(self, broker: Any, links: Any) -> None:
        self.broker = broker
        self.links = links
        self.node = links.node
        self.peers = {name: _Peer(name) for name in links.peers}
        self.stand_ins: dict[tuple[str, str], StandIn] = {}
        self._consumers: dict[str, Consumer] = {}  # the stand-ins' consumers, by our tag
        self._tags: dict[Consumer, str] = {}  # and their tags
        self._owed: dict[str, int] = {}  # no-ack credit held back while the consumer's owner is blocked
        self._gets: dict[int, tuple[StandIn, bool, Callable[[QueueEntry | None], None], str, int]] = {}
        # consumers whose registration waits for the home's O record: tag -> (callback, home)
        self._answers: dict[str, tuple[Callable[[str | None], None], str]] = {}
        self._seq = 0
        self._prefix = f"{self.node}.{os.urandom(3).hex()}"
        self._dirty: set[_Peer] = set()
        self._touched: set[Any] = set()  # this node's queues whose counts go to every peer this pass
        self._wake = trio.Event()
        links.on(CHANNEL, self._received)

    # -- the task -----------------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            self.flush()

    def _mark(self, peer: _Peer) -> None:
        if not self._dirty:
            self._wake.set()
        self._dirty.add(peer)

    def _touch(self, q: Any) -> None:
        if not self._touched:
            self._wake.set()
        self._touched.add(q)

    def flush(self) -> None:
        """Send each peer this pass's records as one frame."""
        dirty, self._dirty = self._dirty, set()
        counts = None
        if self._touched:  # the counts of queues peers used this pass: to every peer
            counts = [["n", q.port.vhost_name, q.name, len(q.ready), len(q.consumers)]
                      for q in self._touched if not q.deleted]
            self._touched = set()
            dirty.update(p for p in self.peers.values() if self.links.up(p.name))
        for p in dirty:
            out = p.out
            if p.batch is not None:
                parts = [[s.vhost_name, s.name, msgs] for s, msgs in p.batch_parts.items()]
                p.batch.order = list(p.batch_parts)
                self._seq += 1
                out.insert(0, ["p", self._seq, parts])
                p.pending[self._seq] = p.batch
                p.batch, p.batch_parts = None, {}
            for s in p.purges:
                if not s.deleted:
                    out.append(["u", s.vhost_name, s.name])
            p.purges.clear()
            for tag, n in p.credit.items():
                c = self._consumers.get(tag)
                if c is not None:
                    out.append(["k", tag, n])
            p.credit.clear()
            for q in p.touched:
                if not q.deleted:
                    out.append(["n", q.port.vhost_name, q.name, len(q.ready), len(q.consumers)])
            p.touched.clear()
            if counts:
                out.extend(counts)
            p.out, p.acks, p.rejects, p.deliveries = [], None, {}, {}
            if out and not self.links.send(p.name, CHANNEL, encode(out)):
                self._lost(p)

    # -- stand-ins ------------------------------------------------------------------------------
    def stand_in(self, vh: Any, op: dict[str, Any], arguments: dict[str, Any]) -> None:
        """Make ``vh`` hold a stand-in for the classic queue ``op`` declares on its home node
        ``op["node"]`` (a replicated declaration applied here). A local queue of that name
        holding messages or consumers is kept (logged): it is not thrown away."""
        name, home = op["name"], op["node"]
        q = vh.queues.get(name)
        if isinstance(q, StandIn) and q.home == home and q.arguments == arguments and q.durable == op["durable"]:
            return
        if q is not None and not isinstance(q, StandIn) and (len(q.ready) or q.consumers or q.unacked):
            log.warning("queue %r in vhost %r is homed on %s but holds messages here: kept", name, vh.name, home)
            return
        self.stand_ins = {k: x for k, x in self.stand_ins.items() if not x.deleted}
        s = StandIn(self, vh.name, name, home, op["durable"], op["auto_delete"], arguments, vh.clock)
        s.reachable = self.links.up(home) if home in self.peers else False
        vh.add_stand_in(s)
        self.stand_ins[(vh.name, name)] = s

    def _peer(self, s: StandIn) -> _Peer:
        return self.peers[s.home]

    def publish(self, s: StandIn, message: "Message", refuses: bool = False) -> Promise:
        """Into this pass's batch for ``s``'s home; its promise is the batch's, or, for a
        queue that may refuse one message alone (``refuses``), that message's own in it."""
        p = self.peers[s.home]
        batch = p.batch
        if batch is None:
            batch = p.batch = RemoteBatch()
            self._mark(p)
        msgs = p.batch_parts.get(s)
        if msgs is None:
            msgs = p.batch_parts[s] = []
        if refuses:
            guard = Refusable(batch)
            if batch.guards is None:
                batch.guards = {}
            batch.guards[(s, len(msgs))] = guard
            msgs.append(dump_message(message))
            return guard
        msgs.append(dump_message(message))
        return batch

    def consume(self, s: StandIn, c: Consumer, answered: Callable[[str | None], None] | None = None) -> None:
        """Register ``c`` on the home node; ``answered(None or the refusal's text)`` once the
        home has checked it (``exclusive`` use is checked there, across nodes). The home's
        credit is the consumer's prefetch, capped by its owner's channel-wide one (AMQP's
        ``basic.qos global``: ``global_prefetch``)."""
        if not s.reachable:  # its home is down: cancelled at once, as the home-down path does
            s.consumers.remove(c)
            if answered is not None:
                answered(None)
            c.owner.consumer_cancelled(c)
            return
        self._seq += 1
        tag = f"{self._prefix}.{self._seq}"
        self._consumers[tag] = c
        self._tags[c] = tag
        p = self.peers[s.home]
        if answered is not None:
            self._answers[tag] = (answered, p.name)
        prefetch = c.prefetch
        shared = getattr(c.owner, "global_prefetch", 0)
        if shared and not c.no_ack and (not prefetch or shared < prefetch):
            prefetch = shared
        p.out.append(["c", s.vhost_name, s.name, tag, prefetch, c.no_ack, c.exclusive, c.priority, c.arguments])
        self._mark(p)

    def _forget(self, c: Consumer) -> str | None:
        tag = self._tags.pop(c, None)
        if tag is not None:
            self._consumers.pop(tag, None)
            self._owed.pop(tag, None)
            self._answers.pop(tag, None)
        return tag

    def cancel(self, s: StandIn, c: Consumer) -> None:
        tag = self._forget(c)
        if tag is None:
            return
        p = self.peers[s.home]
        p.credit.pop(tag, None)
        p.out.append(["x", tag])
        self._mark(p)

    def resume(self, s: StandIn) -> None:
        """Give back the no-ack credit of consumers whose owner has room again."""
        p = self.peers[s.home]
        owed = self._owed
        if not owed:
            return
        for c in s.consumers:
            if c.no_ack and not c.owner.blocked:
                tag = self._tags.get(c)
                if tag is None:
                    continue
                n = owed.pop(tag, 0)
                if n:
                    p.credit[tag] = p.credit.get(tag, 0) + n
                    self._mark(p)

    def settle(self, s: StandIn, entries: Iterable[QueueEntry], requeue: bool | None) -> None:
        """Acks (requeue None) or rejects of deliveries that came from ``s``'s home."""
        p = self.peers[s.home]
        gen = p.gen
        ids = [e.seq for e in entries if getattr(e, "gen", None) == gen]
        if not ids:
            return
        if requeue is None:
            if p.acks is None:
                p.acks = []
                p.out.append(["a", p.acks])
            p.acks.extend(ids)
        else:
            rec = p.rejects.get(requeue)
            if rec is None:
                rec = p.rejects[requeue] = []
                p.out.append(["r", rec, requeue])
            rec.extend(ids)
        self._mark(p)

    def get(self, s: StandIn, no_ack: bool, callback: Callable[[QueueEntry | None], None]) -> None:
        p = self.peers[s.home]
        self._seq += 1
        self._gets[self._seq] = (s, no_ack, callback, p.name, p.gen)
        p.out.append(["g", s.vhost_name, s.name, self._seq, no_ack])
        self._mark(p)

    def purge(self, s: StandIn) -> None:
        if s.reachable:
            p = self.peers[s.home]
            p.purges.append(s)
            self._mark(p)

    # -- links ----------------------------------------------------------------------------------
    def link_changed(self, peer: str) -> None:
        p = self.peers.get(peer)
        if p is None:
            return
        up = self.links.up(peer)
        if not up:
            self._lost(p)
        else:  # the peer's stand-ins learn the counts of this node's queues (after its restart)
            for vh in self.broker.vhosts.values():
                for q in vh.queues.values():
                    if not isinstance(q, StandIn) and q.exclusive_owner is None and q.durable:
                        p.touched.add(q)
            if p.touched:
                self._mark(p)
        for s in self.stand_ins.values():
            if s.home == peer:
                s.reachable = up

    def _lost(self, p: _Peer) -> None:
        """The link with ``p`` is lost: unanswered publishes break, the stand-ins' consumers
        are cancelled, what their clients hold is dropped; as the home, the peer's consumers
        go and what it held returns to the queues, redelivered."""
        if not (p.pending or p.batch or p.consumers or p.held or p.out or self._gets
                or any(s.home == p.name and s.consumers for s in self.stand_ins.values())):
            p.gen += 1
            return
        log.warning("link to %s lost: its queues' publishes, consumers and deliveries are dropped here", p.name)
        p.gen += 1
        batches = list(p.pending.values()) + ([p.batch] if p.batch is not None else [])
        p.pending.clear()
        p.batch, p.batch_parts = None, {}
        p.out, p.acks, p.rejects, p.deliveries = [], None, {}, {}
        p.purges.clear()
        p.credit.clear()
        p.touched.clear()
        for b in batches:
            b.break_()
        for gid, (_s, _no_ack, callback, peer, _gen) in list(self._gets.items()):
            if peer == p.name:
                del self._gets[gid]
                callback(None)
        for tag, (answered, peer) in list(self._answers.items()):
            if peer == p.name:  # registered (consume-ok), then cancelled below as the others
                del self._answers[tag]
                answered(None)
        for s in [s for s in self.stand_ins.values() if s.home == p.name]:
            s.unacked = 0
            for c in list(s.consumers):
                s.consumers.remove(c)
                self._forget(c)
                c.unacked = 0
                c.owner.consumer_cancelled(c)
        # as the home
        consumers, p.consumers = p.consumers, {}
        for c in consumers.values():
            c.queue.remove_consumer(c)
        held, p.held = p.held, {}
        self._return(held.values())

    # -- what arrives -----------------------------------------------------------------------------
    def _received(self, peer: str, payload: bytes) -> None:
        """A peer's records. Bytes that are not records raise: the link closes (logged)."""
        p = self.peers[peer]
        records = decode(payload)
        touched_queues: set[Any] = set()
        for r in records:
            kind = r[0]
            handler = getattr(self, "_on_" + (kind if kind.islower() else "R" + kind))
            handler(p, r, touched_queues)
        for q in touched_queues:
            q.dispatch()

    # as a stand-in's node
    def _on_RP(self, p: _Peer, r: list, touched: set) -> None:
        batch = p.pending.pop(r[1], None)
        if batch is not None:
            if r[2]:
                batch.refused(r[2])
            else:
                batch.keep()

    def _on_RD(self, p: _Peer, r: list, touched: set) -> None:
        tag, items = r[1], r[2]
        c = self._consumers.get(tag)
        if c is None:  # cancelled meanwhile: what it was sent goes back
            ids = [items[i] for i in range(0, len(items), 3) if items[i]]
            if ids:
                p.out.append(["r", ids, True])
                self._mark(p)
            return
        s: StandIn = c.queue  # type: ignore[assignment]
        gen = p.gen
        owner = c.owner
        no_ack = c.no_ack
        n = 0
        for i in range(0, len(items), 3):
            try:
                message = load_message(items[i + 2])
            except WireError as e:
                raise ValueError(f"a delivery from {p.name} that does not decode: {e}") from None
            entry = RemoteEntry(message, items[i], items[i + 1], gen)
            if not no_ack:
                c.unacked += 1
                s.unacked += 1
            n += 1
            owner.deliver(c, entry)
        s.counts.delivered += n
        if no_ack:
            if owner.blocked:
                self._owed[tag] = self._owed.get(tag, 0) + n
            else:
                p.credit[tag] = p.credit.get(tag, 0) + n
                self._mark(p)

    def _on_RO(self, p: _Peer, r: list, touched: set) -> None:
        """The home checked a consumer: registered (text empty) or refused (exclusive use)."""
        tag, refusal = r[1], r[2]
        waiting = self._answers.pop(tag, None)
        c = self._consumers.get(tag)
        if refusal and c is not None:
            self._forget(c)
            c.queue.consumer_gone(c)  # type: ignore[attr-defined]  # a stand-in's consumer
            if waiting is None:  # a consumer that did not wait for the check: cancelled
                c.owner.consumer_cancelled(c)
        if waiting is not None:
            waiting[0](refusal or None)

    def _on_RC(self, p: _Peer, r: list, touched: set) -> None:
        waiting = self._answers.pop(r[1], None)
        if waiting is not None:  # the queue went before the home checked it: registered, cancelled
            waiting[0](None)
        c = self._consumers.get(r[1])
        if c is not None:
            self._forget(c)
            if c.queue.consumer_gone(c):  # type: ignore[attr-defined]  # a stand-in's consumer
                c.owner.consumer_cancelled(c)

    def _on_RG(self, p: _Peer, r: list, touched: set) -> None:
        _, gid, ident, redelivered, data, ready = r
        item = self._gets.pop(gid, None)
        if item is None:
            if ident:
                p.out.append(["r", [ident], True])
                self._mark(p)
            return
        s, no_ack, callback, _peer, gen = item
        s.ready.n = ready
        if ident is None or data is None:
            s.counts.get_empty += 1
            callback(None)
            return
        try:
            message = load_message(data)
        except WireError as e:
            raise ValueError(f"a get answer from {p.name} that does not decode: {e}") from None
        entry = RemoteEntry(message, ident, redelivered, gen)
        if not no_ack:
            s.unacked += 1
        s.counts.delivered += 1
        callback(entry)

    def _on_n(self, p: _Peer, r: list, touched: set) -> None:
        s = self.stand_ins.get((r[1], r[2]))
        if s is not None and s.home == p.name and not s.deleted:
            s.ready.n = r[3]
            s.consumers.home = r[4]  # type: ignore[attr-defined]
