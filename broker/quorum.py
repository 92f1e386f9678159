"""A quorum queue: a ``QueueMachine`` whose commands go through a ``Replicator`` (issue 13
item 5).

The vhost makes one for ``x-queue-type: quorum`` when its node has a replicator factory
(``VirtualHost.replicators``); without one, quorum queues stay classic ``Queue``s with quorum
delivery counts, as before. It answers the calls the protocols make on a ``Queue``
(publish, get, ack, reject, consumers, purge, statistics), but changes nothing in place:
each call becomes a command (``quorum_codec`` bytes) proposed to the replicator, and the
queue's state changes only when the replicator gives the command back, committed, to
``apply``. Every member applies every command, and every member proposes (its replicator
sends a follower's commands to the leader). The machine is deterministic, so every member
knows which consumer each message went to: the member whose consumer it is carries out the
delivery when it applies the command. Only the member that leads (after
``leadership(True)``: it has applied everything committed before its term) does what must
happen once: dead-lettering through the vhost, the TTL timer, ``basic.get`` picking the
message (another member's ``get_later`` proposes a take of the head and answers the client
when it applies, so every member agrees which message was taken), and removing
the consumers of owners it cannot reach (``drop_owners``: what they held goes back,
redelivered, with its delivery count raised: ``x-delivery-count``, ``x-delivery-limit``). A
publish's promise is the replicator's: kept once the enqueue is committed.

Consumer tags in the machine are ``owner/prefix.n``: the replicator's ``owner`` (the node),
this queue object's random prefix and a counter, so two members' consumers never share one
and every member can tell whose a consumer is. A consumer of this member's that the machine
removed (its node was cut off from the leader) is registered again under a new tag; tags of
this owner with another prefix (a process of this node before a restart) are removed by
this member (``drop_stale``). A consumer cancelled with deliveries unacked keeps them until
the channel settles or returns them (``cancel`` in the machine).
"""

from __future__ import annotations

import os
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .message import Message, QueueEntry
from .promise import Promise, Refusable
from .queue import QueueCounts, QueueStatistics
from .queue_args import QueueSettings
from .queue_machine import MachineMessage, QueueMachine
from .quorum_codec import add_ids, decode, dump, encode, encode_enqueue, encode_ids, load

if TYPE_CHECKING:
    from .consumer import Consumer
    from .queue_port import QueuePort
    from .quorum_replication import Replicator


def limits_for(settings: QueueSettings, default_limit: int | None) -> tuple:
    """The machine's limits (``QueueMachine.limits``) under these settings."""
    limit = settings.delivery_limit if settings.delivery_limit is not None else default_limit
    # RabbitMQ 3.10's quorum queues (checked): reject-publish refuses once the queue is over
    # its limit (a queue of x-max-length 1 takes a second message, nacks the third);
    # reject-publish-dlx drops the head as drop-head does, and acks.
    overflow = {"reject-publish": "reject-over", "reject-publish-dlx": "drop-head"}.get(settings.overflow,
                                                                                        settings.overflow)
    return (settings.message_ttl, settings.max_length, settings.max_length_bytes, overflow, limit)


def machine_for(settings: QueueSettings, default_limit: int | None) -> QueueMachine:
    """The machine of a quorum queue with these arguments. Messages are kept by the log,
    so the machine asks for no store writes (``durable=False``)."""
    ttl, max_length, max_bytes, overflow, limit = limits_for(settings, default_limit)
    return QueueMachine(durable=False, message_ttl=ttl, max_length=max_length, overflow=overflow,
                        delivery_limit=limit, max_length_bytes=max_bytes,
                        single_active=settings.single_active_consumer)


def _nothing() -> None:
    pass


class QuorumQueue:
    """A replicated queue (see the module docstring)."""

    _paged = None  # never pages: the vhost and the budget read it
    exclusive_owner = None
    auto_delete = False

    def __init__(self, port: "QueuePort", name: str, replicator: "Replicator", arguments: dict[str, Any] | None = None,
                 settings: QueueSettings | None = None) -> None:
        self.port = port
        self.name = name
        self.durable = True
        self.arguments = arguments or {}
        # The machine starts from the declared arguments on every member (a restart rebuilds
        # it with its policy known: the log replayed on it must give what it gave the others);
        # the policy's limits reach it through the log (``configure``, ``apply_settings``).
        declared = QueueSettings.parse(name, port.vhost_name, self.arguments)
        self.settings = settings or declared
        self._default_limit = port.profile.quorum_delivery_limit
        self.machine = machine_for(declared, self._default_limit)
        self._configuring: tuple | None = None  # limits this member proposed, not yet applied
        self.consumers: list[Consumer] = []
        self.unacked = 0
        self.counts = QueueCounts()
        self.had_consumer = False
        self._deleted = False
        self._clock = port.clock
        self.last_used = port.clock()
        self.replicator = replicator
        self.active = False  # leads, and has applied what was committed before its term
        owner = getattr(replicator, "owner", "")
        self.owner = owner
        self._owner_prefix = f"{owner}/"
        self._prefix = f"{owner}/{os.urandom(4).hex()}."
        self._asked: set[str] = set()  # tags whose removal this member proposed
        self._rejoin: list[Consumer] = []  # removed by the leader, to register again once reachable
        self._seq = 0
        self._local: dict[str, Consumer] = {}   # machine tag -> a consumer served here
        self._tags: dict[Consumer, str] = {}    # consumer -> its machine tag (kept past a cancel)
        self._cancelled: set[Consumer] = set()  # cancelled, still holding deliveries
        self._holder: str | None = None         # the machine tag of this member's basic.get holder
        self._taking: dict[int, int] = {}       # ids proposed takes asked for (how many takes)
        self._gets: deque[list] = deque()       # [no_ack, callback] of gets a take of the head answers
        self._returning: set[int] = set()       # ids a proposed requeue puts back
        # proposed here, not yet applied: (bytes, logged form, a publish's Refusable or None)
        self._mine: deque[tuple[bytes | bytearray, tuple, Refusable | None]] = deque()
        self._timer_at: float | None = None
        self._propose = replicator.propose
        # deliveries held to the end of the replicator's batch of applies, when it has
        # batches (its ``applied_all`` calls ours; None: carried out as each command applies)
        self._deferred: list[tuple] | None = [] if hasattr(replicator, "applied_all") else None
        # acks coalesced: the last settle proposed (tag, bytes, ids) grows while it is the
        # newest command of the replicator's open batch (``is_open``, when it has one)
        self._is_open = getattr(replicator, "is_open", None)
        self._open: tuple[str, bytearray, list[int]] | None = None
        replicator.start(self)

    @property
    def deleted(self) -> bool:
        return self._deleted

    def touch(self, now: float) -> None:
        """Used now (a redeclare)."""
        self.last_used = now

    def delete(self) -> list["Consumer"]:
        """The vhost deletes the queue: purged, marked, its replicator stopped (``close``, when
        it has one), its consumers dropped and returned (the vhost tells their owners)."""
        self.purge()
        self._deleted = True
        close = getattr(self.replicator, "close", None)
        if close is not None:
            close()
        consumers, self.consumers = self.consumers, []
        return consumers

    # -- what the protocols read ----------------------------------------------------------
    @property
    def ready(self) -> Any:
        return self.machine.ready

    @property
    def ready_count(self) -> int:
        """What basic.get-ok's message count says: the ready messages but those takes this
        member proposed are taking (the leader answers a get before its take applies)."""
        return max(0, len(self.machine.ready) - len(self._taking))  # (an id may be taken twice, or gone)

    @property
    def bytes_ready(self) -> int:
        return self.machine.bytes_ready

    def placement(self) -> dict[str, Any]:
        """``leader``, ``members``, ``online`` (node names) when the replicator knows them
        (the management API's queue listing shows them)."""
        of = getattr(self.replicator, "placement", None)
        return of() if of is not None else {}

    def statistics(self) -> QueueStatistics:
        return QueueStatistics(self.name, len(self.machine.ready), self.unacked, self.machine.bytes_ready,
                               len(self.consumers))

    def __repr__(self) -> str:
        return f"QuorumQueue({self.name!r}, ready={len(self.machine.ready)}, active={self.active})"

    # -- publishing -----------------------------------------------------------------------
    def publish(self, message: Message, now: float) -> "bool | Promise":
        """Propose the enqueue: its promise is kept once it is committed. With ``x-overflow:
        reject-publish`` a publish the queue has no room for as it stands is refused, and one
        the machine refuses when it commits (the queue filled meanwhile) breaks its promise
        (``Refusable``: nacked, never confirmed)."""
        m = self.machine
        data = encode_enqueue(message, now)
        if m.overflow == "reject-over":
            if m._over(0, 0):
                return False
            self.counts.enqueued += 1
            p = Refusable(self._propose(data))
            self._mine.append((data, ("enqueue", message, now), p))
            return p
        self.counts.enqueued += 1
        self._mine.append((data, ("enqueue", message, now), None))
        return self._propose(data)

    def _send(self, command: tuple) -> Promise:
        """Propose a command; this member keeps its logged form to apply without decoding it
        (its commands apply once each, in its order)."""
        data = encode(command)
        self._mine.append((data, command, None))
        return self._propose(data)

    # -- delivering -----------------------------------------------------------------------
    def dispatch(self) -> None:
        """Nothing to do: the machine hands out deliveries as commands apply."""

    def get(self, no_ack: bool) -> QueueEntry | None:
        """basic.get: the ready head, taken by a ``take`` command (None when there is none,
        or while this member does not lead)."""
        now = self.last_used = self._clock()
        if not self.active:
            return None
        m = self.machine
        mid = None
        for ready in m.ready:
            if ready in self._taking:
                continue
            x = m.messages[ready]
            if x.expires_at is not None and x.expires_at <= now:
                continue
            mid = ready
            break
        if self._returning:  # a requeue proposed before this get puts its ids back first
            limit = m.delivery_limit
            for back in sorted(self._returning):
                if mid is not None and back > mid:
                    break
                x = m.messages.get(back)  # type: ignore[assignment]
                if x is not None and (limit is None or x.delivery_count < limit):
                    mid = back
                    break
        if mid is None:
            return None
        x = m.messages[mid]
        redelivered, count = x.redelivered, x.delivery_count
        if mid in self._returning:
            redelivered, count = True, count + 1
        if self._holder is None:
            self._holder = self._new_tag()
        self._taking[mid] = self._taking.get(mid, 0) + 1
        self._returning.discard(mid)
        self._send(("take", self._holder, mid, no_ack, now))
        if not no_ack:
            self.unacked += 1
        self.counts.delivered += 1
        return self._entry(mid, x, redelivered, always_count=True, count=count)

    def get_later(self, no_ack: bool, callback: Callable[[QueueEntry | None], None]) -> None:
        """basic.get on any member: the leader answers at once (``get``); another member
        proposes a take of the head (forwarded to the leader, committed through the log) and
        calls ``callback(entry or None)`` when it applies, so every member agrees which
        message was taken (None: nothing was ready then, or the proposal was lost)."""
        if self.active:
            callback(self.get(no_ack))
            return
        self.last_used = now = self._clock()
        if self._holder is None:
            self._holder = self._new_tag()
        pending = [no_ack, callback]
        self._gets.append(pending)

        def lost() -> None:
            if pending in self._gets:
                self._gets.remove(pending)
                callback(None)
        self._send(("take", self._holder, 0, no_ack, now)).then_or(_nothing, lost)

    def _took(self, fx: list) -> None:
        """This member's take of the head applied: answer the oldest get waiting for one."""
        no_ack, callback = self._gets.popleft()
        took = next((e for e in fx if e[0] == "took"), None)
        if took is None or took[2] is None:
            callback(None)
            return
        mid = took[2]
        m = self.machine
        x = m.messages.get(mid) or m.gone[mid]
        if not no_ack:
            self.unacked += 1
        self.counts.delivered += 1
        callback(self._entry(mid, x, took[3], always_count=True))

    def _entry(self, mid: int, x: MachineMessage, redelivered: bool, always_count: bool = False,
               count: int | None = None) -> QueueEntry:
        message = x.message
        if count is None:
            count = x.delivery_count
        if count or always_count:  # RabbitMQ 3.10: a get shows a count of 0 too, a consumer not
            headers = dict(message.headers)
            headers["x-delivery-count"] = count
            message = message.copy_with(headers=headers)
        entry = QueueEntry(message, x.expires_at)
        entry.seq = mid
        entry.redelivered = redelivered
        entry.delivery_count = count
        return entry

    # -- settling -------------------------------------------------------------------------
    def _tag_of(self, consumer: "Consumer | None") -> str | None:
        return self._holder if consumer is None else self._tags.get(consumer)

    def _release(self, consumer: "Consumer | None", n: int) -> None:
        self.unacked = max(0, self.unacked - n)
        if consumer is not None:
            consumer.unacked = max(0, consumer.unacked - n)
            if not consumer.unacked and self._cancelled and consumer in self._cancelled:
                self._cancelled.discard(consumer)  # cancelled and settled: forget it
                self._tags.pop(consumer, None)

    def _settle_command(self, kind: str, entries: Iterable[QueueEntry], consumer: "Consumer | None") -> None:
        tag = self._tag_of(consumer)
        entries = list(entries)
        self._release(consumer, len(entries))
        if tag is not None and not self.deleted:
            ids = [e.seq for e in entries]
            if kind == "settle":
                o = self._open
                if o is not None and o[0] == tag and self._is_open is not None and self._is_open(o[1]):
                    add_ids(o[1], ids)  # the same command, more ids: one apply for the lot
                    o[2].extend(ids)
                    return
                if self._is_open is not None:
                    now = self._clock()
                    data = encode_ids(kind, tag, ids, now)
                    self._open = (tag, data, ids)
                    self._mine.append((data, (kind, tag, ids, now), None))
                    self._propose(data)
                    return
            elif kind == "requeue":
                self._returning.update(ids)
            self._send((kind, tag, ids, self._clock()))

    def ack(self, entry: QueueEntry, consumer: "Consumer | None") -> None:
        self._settle_command("settle", (entry,), consumer)

    def reject(self, entries: list[QueueEntry], consumer: "Consumer | None", requeue: bool) -> None:
        self._settle_command("requeue" if requeue else "reject", entries, consumer)

    def release_consumer_entries(self, consumer: "Consumer | None", entries: list[QueueEntry]) -> None:
        """A channel closed with entries unacked: they go back."""
        self._settle_command("requeue", entries, consumer)

    def requeue(self, entries: Iterable[QueueEntry]) -> None:
        """Entries back whoever holds them (a slow path: the holder is looked up)."""
        by_tag: dict[str, list[int]] = {}
        for e in entries:
            for tag, c in self.machine.consumers.items():
                if e.seq in c.checked_out:
                    by_tag.setdefault(tag, []).append(e.seq)
                    break
        for tag, ids in by_tag.items():
            if tag.startswith(self._prefix):
                self._send(("requeue", tag, ids, self._clock()))

    # -- consumers ------------------------------------------------------------------------
    def _new_tag(self) -> str:
        self._seq += 1
        return f"{self._prefix}{self._seq}"

    def _register(self, consumer: "Consumer") -> None:
        tag = self._new_tag()
        self._tags[consumer] = tag
        self._local[tag] = consumer
        self._send(("consumer_added", tag, consumer.prefetch, self._clock(), consumer.priority, consumer.no_ack))

    def add_consumer(self, consumer: "Consumer") -> None:
        self.consumers.append(consumer)
        if consumer.priority:
            self.consumers.sort(key=lambda c: -c.priority)
        self.had_consumer = True
        self._register(consumer)

    def remove_consumer(self, consumer: "Consumer") -> None:
        """basic.cancel (or the channel closing): no more deliveries; what it holds stays
        checked out until settled or returned."""
        try:
            self.consumers.remove(consumer)
        except ValueError:
            return
        self.last_used = self._clock()
        tag = self._tags.get(consumer)
        if tag is None:
            return
        self._local.pop(tag, None)
        if consumer.unacked:
            self._cancelled.add(consumer)  # its tag stays until what it holds is settled
        else:
            del self._tags[consumer]
        self._send(("cancel", tag, self.last_used))

    # -- housekeeping ---------------------------------------------------------------------
    def expire(self, now: float) -> None:
        if self.active and not self.deleted:
            self._send(("expire", now))

    def _expiry_due(self, now: float) -> None:
        self._timer_at = None
        self.expire(now)

    def apply_settings(self, settings: QueueSettings) -> None:
        """A policy set, changed or cleared (every member's metadata applies it): kept for what
        reads ``settings`` (dead-lettering), and the machine's limits follow through the log."""
        self.settings = settings
        self._sync_limits()

    def _sync_limits(self) -> None:
        """The leader proposes ``configure`` when the limits its settings make are not the
        machine's (a policy change, a queue made or rebuilt under a policy, a new leader whose
        node saw a change the machine missed): every member changes them at the same place of
        the log, as RabbitMQ's ``update_config`` command does, so the machines stay the same."""
        if not self.active or self.deleted:
            return
        want = limits_for(self.settings, self._default_limit)
        if want == self.machine.limits() or want == self._configuring:
            return
        self._configuring = want
        self._send(("configure", *want, self._clock()))

    def purge(self) -> int:
        n = len(self.machine.ready)
        self._send(("purge", self._clock()))
        return n

    # -- the replicator's calls -----------------------------------------------------------
    def apply(self, command: bytes) -> None:
        """A committed command: every member applies it and carries out what is its own."""
        mine = self._mine
        refusable = None
        if mine and mine[0][0] == command:  # this member's own: its logged form is at hand
            _, cmd, refusable = mine.popleft()
        else:
            cmd = decode(command)
        try:
            fx = self.machine.apply(cmd)
        except ValueError:
            return  # a consumer tag applied twice: the same no-op on every member
        if refusable is not None and fx and fx[0][0] == "refused":
            refusable.refuse()  # refused at commit: nacked, never confirmed
        if cmd[0] == "take":
            if not cmd[2]:  # a take of the head: a get another member waits for
                if cmd[1] == self._holder and self._gets:
                    self._took(fx)
            else:
                n = self._taking.pop(cmd[2], 1) - 1
                if n:
                    self._taking[cmd[2]] = n
        elif cmd[0] == "requeue" and self._returning:
            self._returning.difference_update(cmd[2])
        elif cmd[0] == "configure":
            if self._configuring is not None and self._configuring == tuple(cmd[1:6]):
                self._configuring = None
        elif cmd[0] == "consumer_removed":
            c = self._local.get(cmd[1])
            if c is not None and cmd[1] not in self._asked:  # removed by the leader: join again
                del self._local[cmd[1]]
                self._rejoin.append(c)
                self.rejoin()
            self._asked.discard(cmd[1])
        if fx:
            self._carry_out(fx)

    def _carry_out(self, fx: list) -> None:
        m = self.machine
        delivered = 0
        for e in fx:
            kind = e[0]
            if kind == "deliver":
                if self._deferred is not None:
                    self._deferred.append(e)
                else:
                    delivered += self._deliver(e)
            elif kind == "dead_letter":
                if not self.active:
                    continue
                gone = m.gone
                self.port.dead_letter(self, [QueueEntry(gone[mid].message, None) for mid in e[2]], e[1])  # type: ignore[arg-type]
            elif kind == "timer":
                if not self.active:
                    continue
                when = e[1]
                if self._timer_at is None or when < self._timer_at:
                    self._timer_at = when
                    self.port.call_at(when, self._expiry_due)
        if delivered:
            self.counts.delivered += delivered

    def _deliver(self, e: tuple) -> int:
        """Carry out one ``deliver`` effect: 1 if this member's consumer got the message."""
        m = self.machine
        c = self._local.get(e[1])
        mid = e[2]
        if c is None:
            # another member's consumer, or one of ours cancelled meanwhile (a command
            # proposed before the cancel): that one goes back
            if mid in m.messages and e[1].startswith(self._prefix):
                self._send(("requeue", e[1], [mid], self._clock()))
            return 0
        x = m.messages.get(mid) or m.gone[mid]
        if not c.no_ack:
            c.unacked += 1
            self.unacked += 1
        c.owner.deliver(c, self._entry(mid, x, e[3]))
        return 1

    def applied_all(self) -> None:
        """The end of one batch of committed entries (with a replicator that has batches):
        the deliveries applied in it go out now, those whose consumer still holds the
        message. A member catching up (its node was paused or cut off) applies in one batch
        deliveries to its consumers and then their removal by the leader, which gave the
        messages to others, flagged redelivered: those are not delivered here, so no consumer
        gets an unflagged copy of a message another consumer has."""
        pending = self._deferred
        if not pending:
            return
        self._deferred = []
        consumers = self.machine.consumers
        delivered = 0
        for e in pending:
            held = consumers.get(e[1])
            if held is not None and e[2] in held.checked_out:
                delivered += self._deliver(e)
        if delivered:
            self.counts.delivered += delivered

    def leadership(self, leading: bool) -> None:
        """Leading: the head's expiry runs; consumers of every member stay registered."""
        if leading == self.active:
            return
        self.active = leading
        self._taking.clear()
        self._returning.clear()
        self._timer_at = None
        self._configuring = None
        if not leading:
            self._asked.clear()  # removals proposed while leading that never commit are not pending
        if leading:
            self._sync_limits()
            if self.machine.ready:
                self._send(("expire", self._clock()))

    def drop_owners(self, owners: "set[str]") -> int:
        """The leader removes the consumers of owners it cannot reach (their nodes are down
        or cut off): what they held goes back, redelivered. Returns how many it proposed."""
        if not self.active or not owners:
            return 0
        now = self._clock()
        n = 0
        for tag in list(self.machine.consumers):
            owner = tag.split("/", 1)[0]
            if owner in owners and tag not in self._asked:
                self._asked.add(tag)
                self._send(("consumer_removed", tag, now))
                n += 1
        return n

    def drop_stale(self) -> int:
        """Tags of this member's owner that are not this queue object's (a process of this
        node before a restart): removed, what they held goes back."""
        now = self._clock()
        n = 0
        for tag in list(self.machine.consumers):
            if tag.startswith(self._owner_prefix) and not tag.startswith(self._prefix) and tag not in self._asked:
                self._asked.add(tag)
                self._send(("consumer_removed", tag, now))
                n += 1
        return n

    def rejoin(self) -> int:
        """Register again this member's consumers the leader removed (it could not reach this
        node), once this node and the leader reach each other both ways (the replicator's
        ``leader_reachable``; always, for one without it): a consumer is removed once per
        cut, not each time the leader looks while a one-way partition lasts. Returns how many
        it registered (the cluster calls it on every link change and every half second)."""
        if not self._rejoin or self.deleted:
            return 0
        reachable = getattr(self.replicator, "leader_reachable", None)
        if reachable is not None and not reachable():
            return 0
        waiting, self._rejoin = self._rejoin, []
        n = 0
        for c in waiting:
            if c in self.consumers and c not in self._cancelled:
                self._register(c)
                n += 1
        return n

    def consumer_owners(self) -> "dict[str, int]":
        """Owner -> consumers registered in the machine (status)."""
        out: dict[str, int] = {}
        for tag in self.machine.consumers:
            owner = tag.split("/", 1)[0]
            out[owner] = out.get(owner, 0) + 1
        return out

    def snapshot(self) -> bytes:
        return dump(self.machine)

    def restore(self, data: bytes) -> None:
        self.machine = load(data)
        if self._deferred:
            self._deferred = []  # the snapshot's state decides who holds what
        # what the snapshot covers is not applied one by one: a publish that might have been
        # refused in it is nacked rather than confirmed unseen
        for _, _, refusable in self._mine:
            if refusable is not None:
                refusable.refuse()
        self._mine.clear()


class MachineReplica:
    """A member that keeps a quorum queue's machine and carries out nothing: the stand-in
    for another node's member where a test or a benchmark runs a whole group in one process.
    ``on_leadership(leading)`` is told when it would lead (such a member should hand the
    leadership on: it serves no clients)."""

    def __init__(self, machine: QueueMachine, on_leadership: "Any" = None) -> None:
        self.machine = machine
        self.on_leadership = on_leadership

    def apply(self, command: bytes) -> None:
        try:
            self.machine.apply(decode(command))
        except ValueError:
            pass

    def leadership(self, leading: bool) -> None:
        if self.on_leadership is not None:
            self.on_leadership(leading)

    def snapshot(self) -> bytes:
        return dump(self.machine)

    def restore(self, data: bytes) -> None:
        self.machine = load(data)
