"""A quorum queue's ``Replicator`` over a Raft ``Runner`` (issue 13 item 5).

``RaftReplicator`` is both sides of the seam: the queue's replicator
(``broker.quorum_replication``) and the runner's ``StateMachine``. One per queue member;
``run()`` runs its runner and two small tasks.

- ``propose(command)`` adds the command to the open batch and returns the batch's promise
  (one ``Committed`` per batch). A proposer task wakes once per scheduler pass and proposes
  the whole batch as one Raft entry (``quorum_codec.join``), so a reader's burst of publishes
  and acks costs one entry. Commands wait while this member does not lead.
- ``apply(index, term, data)`` (the runner, for every committed entry, on every member) hands
  each command of the batch to the queue; the promise of a batch proposed here is kept when
  its entry is applied with the term it was proposed in. An entry replaced by another
  leader's (a different term at that index) was never committed: its batch is proposed again
  the next time this member leads, so those publishes are confirmed late, not lost.
- Leadership: the queue's ``leadership(True)`` comes when this member applies the no-op its
  own term starts with (everything committed before is applied by then);
  ``leadership(False)`` as soon as a check (every tick, and at each apply) finds the runner
  no longer leading in that term.
- ``snapshot``/``restore`` are the queue's (its machine's whole state), so the runner's
  compaction (``Config.snapshot_every``) and a lagging member's snapshot install go through
  them.

The member is started (``start``, by the queue's constructor) before ``run``.
"""

from __future__ import annotations

import os
import random
from typing import Any, Iterable

import trio

from mqemu.broker.promise import Promise
from mqemu.broker.queue_machine import QueueMachine
from mqemu.broker.quorum import MachineReplica
from mqemu.broker.quorum_codec import ENQUEUE, join, split
from mqemu.broker.quorum_replication import Committed, ReplicaMember
from mqemu.ha.raft.member import Config
from mqemu.ha.raft.runtime import LoopbackNetwork, NotLeader, Runner, Transport
from mqemu.ha.raft.storage import FileStorage, MemoryStorage, Storage


class RaftReplicator:
    def __init__(self, id: int, members: list[int], storage: Storage, transport: Transport, tick: float = 0.01,
                 config: Config | None = None, rng: random.Random | None = None) -> None:
        self.runner = Runner(id, members, storage, transport, self, tick=tick, config=config, rng=rng)
        self.member: ReplicaMember | None = None
        self.leading = False
        self.term = 0  # the term this member leads in (when leading)
        self._pending: list[bytes] = []
        self._promise: Committed | None = None
        self._inflight: dict[int, tuple[int, bytes, Committed]] = {}  # index -> (term, batch, promise)
        self._lost: list[tuple[bytes, Committed]] = []  # batches to propose again once leading
        self._wake = trio.Event()
        self._restored: bytes | None = None
        self.entries = 0   # Raft entries proposed
        self.commands = 0  # commands in them
        self.terms_led = 0  # leaderships taken

    # -- the queue's side ------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        return self.leading

    def start(self, member: ReplicaMember) -> None:
        self.member = member
        if self._restored is not None:
            member.restore(self._restored)
            self._restored = None

    def propose(self, command: bytes) -> Promise:
        self.commands += 1
        self._pending.append(command)
        p = self._promise
        if p is None:
            p = self._promise = Committed()
            self._wake.set()
        return p

    # -- the runner's side (StateMachine) --------------------------------------------------
    def apply(self, index: int, term: int, data: bytes) -> None:
        member = self.member
        assert member is not None, "start the replicator's member before running it"
        if data:
            for command in split(data):
                member.apply(command)
        mine = self._inflight.pop(index, None) if self._inflight else None
        if mine is not None:
            if mine[0] == term:
                mine[2].keep()
            else:
                self._lost.append((mine[1], mine[2]))
        if self.leading:
            self._check()
        elif not data:
            m = self.runner.member
            if m is not None and self.runner.is_leader and m.term == term:
                self._lead(term)

    def snapshot(self) -> bytes:
        assert self.member is not None
        return self.member.snapshot()

    def restore(self, data: bytes) -> None:
        if self.member is None:
            self._restored = data
        else:
            self.member.restore(data)

    # -- leadership ------------------------------------------------------------------------
    def _lead(self, term: int) -> None:
        self.leading = True
        self.term = term
        self.terms_led += 1
        if self._lost:  # publishes proposed in an earlier term and replaced: again, first
            lost, self._lost = self._lost, []
            self._pending[:0] = _publishes([c for batch, _ in lost for c in split(batch)])
            if self._promise is None:
                self._promise = Committed()
            for _, promise in lost:
                self._promise.then(promise.keep)
        assert self.member is not None
        self.member.leadership(True)
        self._wake.set()

    def _check(self) -> None:
        m = self.runner.member
        if not self.runner.is_leader or m is None or m.term != self.term:
            self.leading = False
            # What the queue proposed as leader but publishes is void: the next leader
            # returns what its consumers held; publishes wait for this member to lead again.
            self._pending = _publishes(self._pending)
            assert self.member is not None
            self.member.leadership(False)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.runner.run)
            nursery.start_soon(self._proposer)
            nursery.start_soon(self._watch)
            task_status.started()

    async def _watch(self) -> None:
        while True:
            await trio.sleep(self.runner.tick_seconds)
            if self.leading:
                self._check()

    async def _proposer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            if not self._pending or not self.leading:
                continue  # proposed once this member leads (``_lead`` wakes it)
            batch, self._pending = join(self._pending), []
            promise, self._promise = self._promise, None
            assert promise is not None
            try:
                index = self.runner.propose([batch])
            except NotLeader:
                self._lost.append((batch, promise))
                self._check()
                continue
            self.entries += 1
            self._inflight[index] = (self.term, batch, promise)


def _publishes(commands: Iterable[bytes]) -> list[bytes]:
    """The enqueues among commands (the others belong to a leadership that is over)."""
    return [c for c in commands if c[0] == ENQUEUE]


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
