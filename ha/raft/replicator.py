"""A quorum queue's ``Replicator`` over a Raft ``Runner`` (issue 13 item 5).

``RaftReplicator`` is both sides of the seam: the queue's replicator
(``broker.quorum_replication``) and the runner's ``StateMachine``. One per queue member;
``run()`` runs its runner and two small tasks.

- ``propose(command)`` adds the command to the open batch and returns the batch's promise
  (one ``Committed`` per batch). A proposer task wakes once per scheduler pass and makes the
  whole batch one Raft entry (``quorum_codec.join``) behind this member's proposer name and
  its next sequence number, so a reader's burst of publishes and acks costs one entry.
- Any member proposes: the leader appends its entries; a follower sends them to the leader
  (``forward(leader, payload)``: the caller's link; the leader's side hands what arrives to
  ``forwarded``). Every entry not yet seen applied is sent again, in order, when the leader
  changes and when none was applied for ``RETRY`` seconds. ``apply`` takes an entry only
  when its number is its proposer's next (``seqs``, replicated state, kept in snapshots), so
  an entry sent twice, or to two leaders, applies once and in its proposer's order: a publish
  during an election is confirmed late, never lost, never duplicated. Without ``forward``
  a follower's entries wait until it leads.
- ``apply(index, term, data)`` (the runner, for every committed entry, on every member) hands
  each command of the batch to the queue; the promise of an entry of this member's is kept
  when it applies here.
- Leadership: the queue's ``leadership(True)`` comes when this member applies the no-op its
  own term starts with (everything committed before is applied by then);
  ``leadership(False)`` as soon as a check (every tick, and at each apply) finds the runner
  no longer leading in that term.
- ``snapshot``/``restore``: ``seqs`` then the queue's own (its machine's whole state), so the
  runner's compaction (``Config.snapshot_every``) and a lagging member's snapshot install go
  through them.

An entry: ``proposer_length:u8 | proposer (UTF-8) | seq:u64 | batch``; a forwarded payload:
entries each behind a u32 length (``join``); a snapshot: ``u32 | message_wire value of seqs |
the queue's snapshot``.

The member is started (``start``, by the queue's constructor) before ``run``.
"""

from __future__ import annotations

import logging
import os
import random
import struct
from typing import Any, Callable

import trio

from mqemu.broker.message_wire import WireError, dump_value, load_value
from mqemu.broker.promise import Promise
from mqemu.broker.queue_machine import QueueMachine
from mqemu.broker.quorum import MachineReplica
from mqemu.broker.quorum_codec import CommandError, join, split
from mqemu.broker.quorum_replication import Committed, ReplicaMember
from mqemu.ha.raft.member import Config
from mqemu.ha.raft.runtime import LoopbackNetwork, NotLeader, Runner, Transport
from mqemu.ha.raft.storage import FileStorage, MemoryStorage, Storage

log = logging.getLogger("mqemu.ha.raft")

RETRY = 1.0  # seconds without one of this member's entries applied before they are all sent again
_SEQ = struct.Struct(">Q")
_LEN = struct.Struct(">I")


def entry_bytes(proposer: bytes, seq: int, batch: bytes) -> bytes:
    return b"%c%s%s%s" % (len(proposer), proposer, _SEQ.pack(seq), batch)


def parse_entry(data: bytes) -> tuple[str, int, bytes]:
    """(proposer, seq, batch) of an entry; raises CommandError."""
    n = data[0]
    if len(data) < 1 + n + 8:
        raise CommandError("an entry shorter than its header")
    try:
        proposer = data[1:1 + n].decode()
    except UnicodeDecodeError:
        raise CommandError("a proposer name that is not UTF-8") from None
    return proposer, _SEQ.unpack_from(data, 1 + n)[0], data[1 + n + 8:]


class RaftReplicator:
    def __init__(self, id: int, members: list[int], storage: Storage, transport: Transport, tick: float = 0.01,
                 config: Config | None = None, rng: random.Random | None = None,
                 forward: Callable[[int, bytes], Any] | None = None, owner: str = "") -> None:
        self.runner = Runner(id, members, storage, transport, self, tick=tick, config=config, rng=rng)
        self.member: ReplicaMember | None = None
        self._member_applied_all: Callable[[], None] | None = None
        self.owner = owner  # the node this member serves (consumer tags carry it)
        self.forward = forward
        self.leading = False
        self.term = 0  # the term this member leads in (when leading)
        self.proposer = f"{owner or id}/{os.urandom(4).hex()}"  # a new one per process
        self._proposer_b = self.proposer.encode()
        self.seq = 0
        self.seqs: dict[str, int] = {}  # replicated: each proposer's last applied sequence number
        self._pending: list[bytes | bytearray] = []
        self._promise: Committed | None = None
        self._unacked: dict[int, tuple[bytes, Committed]] = {}  # seq -> (entry, promise), in order
        self._wake = trio.Event()
        self._restored: bytes | None = None
        self._leader_seen: int | None = None
        self._progress = trio.Event()
        self.entries = 0   # Raft entries proposed here
        self.commands = 0  # commands in them
        self.terms_led = 0  # leaderships taken
        self.forwarded_entries = 0  # entries this member sent to a leader (resends included)

    # -- the queue's side ------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        return self.leading

    @property
    def leader(self) -> int | None:
        return self.runner.leader

    def start(self, member: ReplicaMember) -> None:
        self.member = member
        self._member_applied_all = getattr(member, "applied_all", None)
        if self._restored is not None:
            member.restore(self._restored)
            self._restored = None

    def is_open(self, command: bytes | bytearray) -> bool:
        """``command`` is the newest of the batch the proposer task has not taken yet."""
        pending = self._pending
        return bool(pending) and pending[-1] is command

    def propose(self, command: bytes | bytearray) -> Promise:
        self.commands += 1
        self._pending.append(command)
        p = self._promise
        if p is None:
            p = self._promise = Committed()
            self._wake.set()
        return p

    # -- the runner's side (StateMachine) --------------------------------------------------
    def applied_all(self) -> None:
        """The runner applied every committed entry it had (one Ready's): a member with
        ``applied_all`` is told (its deliveries wait for it)."""
        if self._member_applied_all is not None:
            self._member_applied_all()

    def apply(self, index: int, term: int, data: bytes) -> None:
        member = self.member
        assert member is not None, "start the replicator's member before running it"
        if data:
            try:
                proposer, seq, batch = parse_entry(data)
                commands = split(batch)
            except CommandError as e:
                log.error("quorum entry %d skipped: %s", index, e)
                return
            seqs = self.seqs
            if seq != seqs.get(proposer, 0) + 1:
                return  # sent twice, or after one of its proposer's entries that is not in yet
            seqs[proposer] = seq
            for command in commands:
                member.apply(command)
            if proposer == self.proposer:
                self._acked(seq)
        if self.leading:
            self._check()
        elif not data:
            m = self.runner.member
            if m is not None and self.runner.is_leader and m.term == term:
                self._lead(term)

    def _acked(self, seq: int) -> None:
        unacked = self._unacked
        while unacked:
            first = next(iter(unacked))
            if first > seq:
                break
            unacked.pop(first)[1].keep()
        self._progress.set()

    def snapshot(self) -> bytes:
        assert self.member is not None
        seqs = dump_value(self.seqs)
        return _LEN.pack(len(seqs)) + seqs + self.member.snapshot()

    def restore(self, data: bytes) -> None:
        try:
            (n,) = _LEN.unpack_from(data)
            seqs = load_value(data[4:4 + n])
            if seqs.__class__ is not dict or any(v.__class__ is not int for v in seqs.values()):
                raise CommandError("the proposers' numbers are not a dict of ints")
        except (struct.error, WireError) as e:
            raise CommandError(f"bad quorum snapshot: {e}") from None
        self.seqs = seqs
        mine = seqs.get(self.proposer)
        if mine is not None:
            self._acked(mine)
        rest = data[4 + n:]
        if self.member is None:
            self._restored = rest
        else:
            self.member.restore(rest)

    # -- leadership ------------------------------------------------------------------------
    def _lead(self, term: int) -> None:
        self.leading = True
        self.term = term
        self.terms_led += 1
        assert self.member is not None
        self.member.leadership(True)
        self._wake.set()

    def _check(self) -> None:
        m = self.runner.member
        if not self.runner.is_leader or m is None or m.term != self.term:
            self.leading = False
            assert self.member is not None
            self.member.leadership(False)

    # -- forwarding ------------------------------------------------------------------------
    def forwarded(self, payload: bytes) -> None:
        """Entries a follower sent (``join``ed): appended if this member leads, else dropped
        (the proposer sends them again to whoever leads)."""
        if not self.runner.is_leader:
            return
        try:
            entries = split(payload)
        except CommandError as e:
            log.warning("a bad forwarded quorum payload: %s", e)
            return
        try:
            self.runner.propose(entries)
        except NotLeader:
            pass

    def _push(self, entries: list[bytes]) -> None:
        """Entries to whoever leads now (dropped when nobody does: sent again later)."""
        leader = self.runner.leader
        if leader is None or not entries:
            return
        if leader == self.runner.id:
            try:
                self.runner.propose(entries)
            except NotLeader:
                pass
        elif self.forward is not None:
            self.forwarded_entries += len(entries)
            self.forward(leader, join(entries))

    # -- tasks -----------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.runner.run)
            nursery.start_soon(self._proposer)
            nursery.start_soon(self._watch)
            nursery.start_soon(self._resend)
            task_status.started()

    async def _watch(self) -> None:
        while True:
            await trio.sleep(self.runner.tick_seconds)
            if self.leading:
                self._check()
            leader = self.runner.leader
            if leader != self._leader_seen:
                self._leader_seen = leader
                if self._unacked:
                    self._push([e for e, _ in self._unacked.values()])

    async def _resend(self) -> None:
        while True:
            with trio.move_on_after(RETRY):
                await self._progress.wait()
            self._progress = trio.Event()
            if self._unacked and self.runner.leader is not None:
                self._push([e for e, _ in self._unacked.values()])

    async def _proposer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            if not self._pending:
                continue
            batch, self._pending = join(self._pending), []
            promise, self._promise = self._promise, None
            assert promise is not None
            self.seq += 1
            entry = entry_bytes(self._proposer_b, self.seq, batch)
            self._unacked[self.seq] = (entry, promise)
            self.entries += 1
            self._push([entry])


class InProcessGroups:
    """A replicator factory (``Broker(replicators=...)``) that runs each quorum queue's whole
    Raft group in this process: the node's queue is member 0, the others ``MachineReplica``s
    over a ``LoopbackNetwork``, each with ``FileStorage`` under ``directory/<n>/m<i>`` (fsync)
    or, without a directory, ``MemoryStorage``. A replica that wins an election hands the
    leadership to member 0. For tests and benchmarks of one node; the cluster gives each node
    one member over its links instead. The runners are started in ``nursery`` (or, without
    one, as trio system tasks of the running loop) once the queue starts its replicator."""

    def __init__(self, directory: str | None = None, size: int = 3, tick: float = 0.01,
                 config: Config | None = None, nursery: trio.Nursery | None = None) -> None:
        self.directory = directory
        self.size = size
        self.tick = tick
        self.config = config
        self.nursery = nursery
        self.groups: dict[tuple[str, str], list[_GroupMember]] = {}

    def _storage(self, n: int, i: int) -> Storage:
        if self.directory is None:
            return MemoryStorage()
        return FileStorage(os.path.join(self.directory, str(n), f"m{i}"))

    def __call__(self, vhost: str, queue: str) -> RaftReplicator:
        n = len(self.groups)
        ids = list(range(self.size))
        net = LoopbackNetwork(ids)
        reps = [_GroupMember(self, i, ids, self._storage(n, i), net.transport(i), tick=self.tick, config=self.config,
                             rng=random.Random(n * 31 + i)) for i in ids]
        self.groups[(vhost, queue)] = reps
        return reps[0]

    def started(self, head: "_GroupMember", member: ReplicaMember) -> None:
        """Member 0 has its queue: give the others replicas of its machine and run all."""
        group = next(g for g in self.groups.values() if g[0] is head)
        machine = getattr(member, "machine", None)
        assert isinstance(machine, QueueMachine)
        settings = machine.settings()
        for rep in group[1:]:
            rep.start(MachineReplica(QueueMachine.from_settings(settings), on_leadership=rep.hand_on))
        for rep in group:
            if self.nursery is not None:
                self.nursery.start_soon(rep.run)
            else:
                trio.lowlevel.spawn_system_task(rep.run)


class _GroupMember(RaftReplicator):
    def __init__(self, groups: InProcessGroups, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.groups = groups

    def start(self, member: ReplicaMember) -> None:
        first = self.member is None and self.runner.id == 0
        super().start(member)
        if first:
            self.groups.started(self, member)

    def hand_on(self, leading: bool) -> None:
        if leading:
            self.runner.transfer(0)
