"""A trio runner around one sans-IO Raft ``Member``: a tick timer, an inbox, persistence in a
worker thread (one ``Storage.save`` per Ready, so everything that arrives during a write is
batched into the next one), and a ``Transport`` that others' cluster links can implement.

Ticks come from trio's clock: after a pause (SIGSTOP) every missed tick is given to the member
before anything else, so a leader's read lease expires by the clock, not by the ticks it got.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from typing import Protocol

import trio

from mqemu.ha.raft import codec
from mqemu.ha.raft.member import LEADER, Config, Member, Ready, sends_before_write
from mqemu.ha.raft.storage import Storage

log = logging.getLogger("mqemu.ha.raft")


class Transport(Protocol):
    """Carries whole messages between members. ``send`` never blocks: a link that is down or
    full drops the message (Raft retries). ``receive`` waits for at least one message and
    gives every (sender, bytes) already there, so the member handles them in one batch."""

    def send(self, peer: int, data: bytes) -> None: ...

    async def receive(self) -> list[tuple[int, bytes]]: ...


class StateMachine(Protocol):
    def apply(self, index: int, term: int, data: bytes) -> None: ...   # data b"": a leader's no-op

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...

    # optional: ``applied_all()``, called after each batch of applies (one Ready's entries)


class NotLeader(Exception):
    def __init__(self, leader: int | None) -> None:
        super().__init__(f"not the leader (leader: {leader})")
        self.leader = leader


class LostProposal(Exception):
    """The entry was replaced by another leader's: propose it again."""


class Runner:
    def __init__(self, id: int, members: list[int], storage: Storage, transport: Transport,
                 machine: StateMachine, tick: float = 0.01, config: Config | None = None,
                 rng: random.Random | None = None) -> None:
        self.id = id
        self.members = members
        self.storage = storage
        self.transport = transport
        self.machine = machine
        self._applied_all: Callable[[], None] | None = getattr(machine, "applied_all", None)
        self.tick_seconds = tick
        self.config = config or Config()
        self.rng = rng or random.Random()
        self.member: Member | None = None
        self._wake = trio.Event()
        self._waiters: dict[int, tuple[int, trio.Event, list[BaseException | None]]] = {}
        self._read_waiters: dict[int, tuple[trio.Event, list[int | None]]] = {}
        self._read_seq = 0
        self.applied = 0
        self.saves = 0
        self.early_sends = 0  # Readies whose messages left before their write (a leader's appends)

    @property
    def is_leader(self) -> bool:
        return self.member is not None and self.member.role == LEADER

    @property
    def leader(self) -> int | None:
        return self.member.leader if self.member is not None else None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        rec = await trio.to_thread.run_sync(self.storage.recover)
        if rec.snapshot is not None:
            self.machine.restore(rec.snapshot)
        self.applied = rec.snap_index
        self.member = Member(self.id, self.members, self.rng, self.config, rec)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._ticker)
                nursery.start_soon(self._receiver)
                task_status.started()
                await self._loop()
        finally:
            self._fail_waiters(NotLeader(None))
            self.storage.close()

    # -- API -------------------------------------------------------------------------------

    def propose(self, datas: list[bytes]) -> int:
        """Append ``datas`` if this member leads: the index of the first (raises NotLeader)."""
        m = self._m()
        index = m.propose(datas)
        if index is None:
            raise NotLeader(m.leader)
        self._wake.set()
        return index

    async def commit(self, datas: list[bytes]) -> int:
        """Propose and wait until the entries are applied here: the index of the last one."""
        first = self.propose(datas)
        last = first + len(datas) - 1
        event = trio.Event()
        box: list[BaseException | None] = [None]
        self._waiters[last] = (self._m().term, event, box)
        await event.wait()
        if box[0] is not None:
            raise box[0]
        return last

    async def read(self) -> int:
        """A linearizable read barrier: returns once this member's state machine holds every
        entry committed before the call (raises NotLeader if it cannot promise that)."""
        self._read_seq += 1
        ctx = self._read_seq
        event = trio.Event()
        box: list[int | None] = [None]
        self._read_waiters[ctx] = (event, box)
        self._m().read(ctx)
        self._wake.set()
        await event.wait()
        if box[0] is None:
            raise NotLeader(self.leader)
        return box[0]

    def transfer(self, target: int) -> bool:
        ok = self._m().transfer(target)
        self._wake.set()
        return ok

    def leader_down(self, leader: int, campaign: bool = True) -> bool:
        """``Member.leader_down``: forget ``leader``, known dead (and campaign at once)."""
        if self.member is None or not self.member.leader_down(leader, campaign):
            return False
        self._wake.set()
        return True

    def campaign(self) -> None:
        """``Member.campaign``: stand for election now."""
        if self.member is not None:
            self.member.campaign()
            self._wake.set()

    # -- loops -----------------------------------------------------------------------------

    def _m(self) -> Member:
        if self.member is None:
            raise NotLeader(None)
        return self.member

    async def _ticker(self) -> None:
        m = self._m()
        period = self.tick_seconds
        next_tick = trio.current_time() + period
        while True:
            await trio.sleep_until(next_tick)
            now = trio.current_time()
            due = max(1, math.floor((now - next_tick) / period) + 1)
            for _ in range(due):
                m.tick()
            next_tick += due * period
            self._wake.set()

    async def _receiver(self) -> None:
        m = self._m()
        while True:
            for peer, data in await self.transport.receive():
                try:
                    msg = codec.decode(data)
                except codec.CodecError as e:
                    log.warning("event=raft_bad_message member=%s peer=%s error=%s", self.id, peer, e)
                    continue
                m.step(msg)
            self._wake.set()

    async def _loop(self) -> None:
        m = self._m()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while m.has_ready():
                rd = m.ready()
                if rd.writes:
                    if sends_before_write(m, rd):  # the followers' fsyncs overlap this one
                        self._send(rd.messages)
                        rd.messages = []
                        self.early_sends += 1
                    await trio.to_thread.run_sync(self.storage.save, rd)
                    self.saves += 1
                self._after_write(m, rd)

    def _send(self, messages: list) -> None:
        send, encode = self.transport.send, codec.encode
        for peer, msg in messages:
            send(peer, encode(msg))

    def _after_write(self, m: Member, rd: Ready) -> None:
        if rd.messages:
            self._send(rd.messages)
        if rd.last_index:
            m.persisted(rd.last_index, rd.last_term)
        if rd.snapshot is not None and rd.snapshot_installed:
            self.machine.restore(rd.snapshot[2])
            self.applied = rd.snapshot[0]
        if rd.committed:
            apply = self.machine.apply
            index = rd.commit_first
            for term, data in zip(rd.committed_terms, rd.committed):
                apply(index, term, data)
                index += 1
            self.applied = index - 1
            if self._applied_all is not None:
                self._applied_all()
            if self._waiters:
                self._settle(rd)
        for ctx, at in rd.reads:
            entry = self._read_waiters.pop(ctx, None)
            if entry is not None:
                entry[1][0] = at
                entry[0].set()
        if rd.want_snapshot:
            m.compact(self.applied, self.machine.snapshot())

    def _settle(self, rd: Ready) -> None:
        first = rd.commit_first
        last = first + len(rd.committed) - 1
        for index in [i for i in self._waiters if i <= last]:
            term, event, box = self._waiters.pop(index)
            if index >= first and rd.committed_terms[index - first] != term:
                box[0] = LostProposal(f"entry {index} of term {term} was replaced")
            event.set()

    def _fail_waiters(self, exc: BaseException) -> None:
        for _term, event, box in self._waiters.values():
            box[0] = exc
            event.set()
        self._waiters.clear()
        for event, _rbox in self._read_waiters.values():
            event.set()
        self._read_waiters.clear()


class LoopbackNetwork:
    """In-process links between runners for tests: ``cut``/``heal`` links, ``down`` a member."""

    def __init__(self, members: list[int], capacity: int = 10000) -> None:
        self.inboxes = {m: trio.open_memory_channel[tuple[int, bytes]](capacity) for m in members}
        self.blocked: set[tuple[int, int]] = set()
        self.dropped = 0

    def transport(self, member: int) -> LoopbackTransport:
        return LoopbackTransport(self, member)

    def cut(self, a: int, b: int, both: bool = True) -> None:
        self.blocked.add((a, b))
        if both:
            self.blocked.add((b, a))

    def isolate(self, member: int) -> None:
        for other in self.inboxes:
            if other != member:
                self.cut(member, other)

    def heal(self) -> None:
        self.blocked.clear()

    def deliver(self, src: int, dst: int, data: bytes) -> None:
        if (src, dst) in self.blocked:
            self.dropped += 1
            return
        try:
            self.inboxes[dst][0].send_nowait((src, data))
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self.dropped += 1


class LoopbackTransport:
    def __init__(self, net: LoopbackNetwork, member: int) -> None:
        self.net = net
        self.member = member

    def send(self, peer: int, data: bytes) -> None:
        self.net.deliver(self.member, peer, data)

    async def receive(self) -> list[tuple[int, bytes]]:
        channel = self.net.inboxes[self.member][1]
        batch = [await channel.receive()]
        while True:
            try:
                batch.append(channel.receive_nowait())
            except trio.WouldBlock:
                return batch


class ListMachine:
    """A state machine for tests: the applied commands in order (snapshot: them all)."""

    def __init__(self) -> None:
        self.items: list[bytes] = []
        self.on_apply: Callable[[int, bytes], None] | None = None

    def apply(self, index: int, term: int, data: bytes) -> None:
        if data:
            self.items.append(data)
            if self.on_apply is not None:
                self.on_apply(index, data)

    def snapshot(self) -> bytes:
        return b"".join(codec.frame(i) for i in self.items)

    def restore(self, data: bytes) -> None:
        self.items = codec.Deframer().feed(data)
