"""Deterministic simulation of Raft members (sans-IO ``Member`` + ``MemoryStorage``) under a
seeded schedule of faults, with Raft's safety properties checked on every step.

One ``Sim(seed)`` is a run: every random choice (election timeouts, faults, message drops,
duplicates and delays, proposals) comes from one ``random.Random(seed)``, so a seed replays
exactly. Time is counted in ticks; every step each live, running member ticks once, due
messages are delivered, and every member's output is taken and its writes completed after a
random disk delay (in order). Faults while ``faults`` is on:

- crash: the member stops; what it had not yet written (and the messages waiting for that)
  is lost; restart later from its storage;
- pause: no ticks, messages held; on resume the missed ticks come first (a monotonic clock);
- partitions: full (two sides) or one-way (some links in one direction), healed later;
- messages dropped, duplicated, and delayed by random amounts (so reordered).

Checked on every step (``Violation`` on failure): at most one leader per term; log matching
(an entry's index and term fix its data and its predecessor's term, checked on every entry
any member writes); committed entries never change (whatever member announces them) and every
applied state machine is a prefix of the same sequence (a hash chain over the applied
entries, snapshots included); leader completeness (a new leader's log holds every entry
committed so far); linearizable reads (a read answered at index i was asked after no commit
beyond i). ``liveness()`` then heals everything and requires a leader and a new entry committed
within a bound, then applied on every member within a longer one.
"""

from __future__ import annotations

import heapq
import random
import struct
import zlib
from collections.abc import Callable

from mqemu.ha.raft.member import LEADER, Config, Member, Ready, sends_before_write
from mqemu.ha.raft.messages import Message
from mqemu.ha.raft.storage import MemoryStorage

SM = struct.Struct("<QI")


class Violation(AssertionError):
    pass


class SimNode:
    __slots__ = ("id", "member", "storage", "alive", "paused", "pending", "held", "missed", "sm_index",
                 "sm_hash", "down_until", "resume_at")

    def __init__(self, id: int) -> None:
        self.id = id
        self.member: Member | None = None
        self.storage = MemoryStorage()
        self.alive = True
        self.paused = False
        self.pending: list[tuple[int, Ready]] = []   # (due tick, ready), written in order
        self.held: list[Message] = []                 # delivered while paused
        self.missed = 0          # the tick it was paused at
        self.sm_index = 0
        self.sm_hash = 0
        self.down_until = 0
        self.resume_at = 0


class Sim:
    def __init__(self, seed: int, members: int = 3, config: Config | None = None,
                 member_class: Callable[..., Member] = Member, faults: bool = True) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        r = self.rng
        self.cfg = config or Config(election_ticks=10, snapshot_every=r.choice([8, 30, 1000]),
                                    max_batch=r.choice([4, 64]), max_inflight=r.choice([1, 4, 32]),
                                    commit_notify=seed % 2 == 1)
        self.member_class = member_class
        self.ids = list(range(members))
        self.nodes = [SimNode(i) for i in self.ids]
        for node in self.nodes:
            self._start(node)
        self.now = 0
        self.faults = faults
        self.drop = r.choice([0.0, 0.02, 0.1])
        self.dup = r.choice([0.0, 0.02, 0.1])
        self.max_delay = r.choice([1, 2, 5])
        self.disk_delay = r.choice([0, 1, 3])
        self.blocked: set[tuple[int, int]] = set()
        self.net: list[tuple[int, int, int, Message]] = []   # (due, seq, dst, message)
        self.seq = 0
        self.proposed = 0
        # checker state
        self.leaders: dict[int, int] = {}
        self.checked: set[tuple[int, int]] = set()
        self.entries: dict[tuple[int, int], tuple[bytes, int | None]] = {}
        self.committed: dict[int, tuple[int, bytes]] = {}
        self.commit_max = 0
        self.chain: dict[int, int] = {0: 0}
        self.stats = {"elections": 0, "crashes": 0, "pauses": 0, "partitions": 0, "snapshots_installed": 0,
                      "early_sends": 0, "reads": 0, "applied": 0}

    # -- running ---------------------------------------------------------------------------

    def _start(self, node: SimNode) -> None:
        rec = node.storage.recover()
        node.member = self.member_class(node.id, self.ids, random.Random(self.rng.random()), self.cfg, rec)
        node.alive, node.paused, node.pending, node.held, node.missed = True, False, [], [], 0
        node.sm_index, node.sm_hash = rec.snap_index, 0
        if rec.snapshot is not None:
            node.sm_index, node.sm_hash = SM.unpack(rec.snapshot)
            self._check_chain(node.sm_index, node.sm_hash, "restart from snapshot")

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            self.step()

    def step(self) -> None:
        self.now += 1
        if self.faults:
            self._faults()
        for node in self.nodes:
            if node.alive and not node.paused:
                assert node.member is not None
                node.member.tick()
        self._deliver()
        self._clients()
        for node in self.nodes:
            if node.alive and not node.paused:
                self._drain(node)
        self._check_leaders()

    def _deliver(self) -> None:
        net = self.net
        while net and net[0][0] <= self.now:
            _, _, dst, m = heapq.heappop(net)
            node = self.nodes[dst]
            if not node.alive or (m.src, dst) in self.blocked:
                continue
            if node.paused:
                node.held.append(m)
                continue
            assert node.member is not None
            node.member.step(m)

    def _send(self, src: int, dst: int, m: Message) -> None:
        r = self.rng
        if (src, dst) in self.blocked or (self.faults and r.random() < self.drop):
            return
        copies = 2 if self.faults and r.random() < self.dup else 1
        for _ in range(copies):
            self.seq += 1
            heapq.heappush(self.net, (self.now + 1 + r.randrange(self.max_delay), self.seq, dst, m))

    def _clients(self) -> None:
        if not self.faults:
            return
        r = self.rng
        leaders = [n for n in self.nodes if n.alive and not n.paused and n.member and n.member.role == LEADER]
        if not leaders:
            return
        node = r.choice(leaders)
        assert node.member is not None
        if r.random() < 0.3 and node.member.last_index - node.member.commit < 100:   # clients wait for confirms
            batch = []
            for _ in range(1 + r.randrange(4)):
                self.proposed += 1
                batch.append(b"%d-%d" % (self.seed, self.proposed))
            node.member.propose(batch)
        if r.random() < 0.1:
            node.member.read(self.commit_max)
        if r.random() < 0.003:
            node.member.transfer(r.choice(node.member.peers))

    def _drain(self, node: SimNode) -> None:
        member = node.member
        assert member is not None
        while member.has_ready():
            rd = member.ready()
            self._check_ready(member, rd)
            if rd.writes and sends_before_write(member, rd):  # as the runner does
                for dst, m in rd.messages:
                    self._send(node.id, dst, m)
                rd.messages = []
                self.stats["early_sends"] += 1
            due = self.now + (self.rng.randrange(self.disk_delay + 1) if self.disk_delay else 0)
            if node.pending:
                due = max(due, node.pending[-1][0])
            node.pending.append((due, rd))
        while node.pending and node.pending[0][0] <= self.now:
            self._written(node, node.pending.pop(0)[1])
            if node.member is not member:
                return

    def _written(self, node: SimNode, rd: Ready) -> None:
        member = node.member
        assert member is not None
        node.storage.save(rd)
        for dst, m in rd.messages:
            self._send(node.id, dst, m)
        if rd.last_index:
            member.persisted(rd.last_index, rd.last_term)
        if rd.snapshot is not None and rd.snapshot_installed:
            node.sm_index, node.sm_hash = SM.unpack(rd.snapshot[2])
            self._check_chain(node.sm_index, node.sm_hash, "installed snapshot")
            self.stats["snapshots_installed"] += 1
        if rd.committed:
            if rd.commit_first != node.sm_index + 1:
                raise Violation(f"seed {self.seed}: member {node.id} applies {rd.commit_first} after {node.sm_index}")
            h = node.sm_hash
            index = node.sm_index
            for data in rd.committed:
                index += 1
                h = zlib.crc32(data, h)
                self._check_chain(index, h, f"member {node.id} applying")
            node.sm_index, node.sm_hash = index, h
            self.stats["applied"] += len(rd.committed)
        for ctx, at in rd.reads:
            if at is not None:
                self.stats["reads"] += 1
                if at < ctx:
                    raise Violation(f"seed {self.seed}: a read at {at} misses commit {ctx} made before it")
                if node.sm_index < at:
                    raise Violation(f"seed {self.seed}: read released at {at} before applying it")
        if rd.want_snapshot and node.sm_index > member.snap_index:
            member.compact(node.sm_index, SM.pack(node.sm_index, node.sm_hash))

    # -- faults ----------------------------------------------------------------------------

    def _faults(self) -> None:
        r = self.rng
        for node in self.nodes:
            if not node.alive and self.now >= node.down_until:
                self._start(node)
            elif node.paused and self.now >= node.resume_at:
                self._resume(node)
        x = r.random()
        if x < 0.004:
            node = r.choice(self.nodes)
            if node.alive:
                self.stats["crashes"] += 1
                node.alive, node.paused, node.member, node.pending, node.held = False, False, None, [], []
                node.down_until = self.now + 1 + r.randrange(60)
        elif x < 0.008:
            node = r.choice(self.nodes)
            if node.alive and not node.paused:
                self.stats["pauses"] += 1
                node.paused, node.missed, node.resume_at = True, self.now, self.now + 1 + r.randrange(60)
        elif x < 0.013:
            self.stats["partitions"] += 1
            side = set(r.sample(self.ids, 1 + r.randrange(len(self.ids) - 1)))
            for a in side:
                for b in self.ids:
                    if b not in side:
                        if r.random() < 0.5 or r.random() < 0.5:   # full, or one way at random
                            self.blocked.add((a, b))
                        if r.random() < 0.7:
                            self.blocked.add((b, a))
        elif x < 0.03:
            self.blocked.clear()

    def _resume(self, node: SimNode) -> None:
        node.paused = False
        assert node.member is not None
        for _ in range(self.now - node.missed):   # the ticks its clock counted while it was stopped
            node.member.tick()
        held, node.held = node.held, []
        for m in held:
            node.member.step(m)

    def heal(self) -> None:
        """Stop the faults: restart, resume, reconnect; messages still delayed but not lost."""
        self.faults = False
        self.blocked.clear()
        for node in self.nodes:
            if not node.alive:
                self._start(node)
            elif node.paused:
                self._resume(node)

    def liveness(self, bound: int = 400, catch_up: int = 3000) -> int:
        """After ``heal``: the ticks until a leader is elected and a new entry commits (at most
        ``bound``); then every member must apply it within ``catch_up`` more ticks (a member
        left far behind by the faults, in a seed with small batches, takes a while)."""
        self.heal()
        start = self.now
        marker = b"live-%d" % self.seed
        index = None
        by: tuple[Member | None, int] = (None, 0)
        committed_after = None
        while self.now - start < bound + catch_up:
            self.step()
            if index is not None and self.committed.get(index, (0, b""))[1] == marker:
                if committed_after is None:
                    committed_after = self.now - start
                if all(n.sm_index >= index for n in self.nodes):
                    return committed_after
                continue
            if committed_after is None and self.now - start >= bound:
                raise Violation(f"seed {self.seed}: nothing committed within {bound} ticks after the faults stopped")
            if index is not None and (by[0] is None or by[0].role != LEADER or by[0].term != by[1]):
                index = None   # its leader is gone: the entry may never commit
            if index is None:
                for node in self.nodes:
                    if node.member is not None and node.member.role == LEADER:
                        index = node.member.propose([marker])
                        if index is not None:
                            by = (node.member, node.member.term)
                            break
        raise Violation(f"seed {self.seed}: a member has not applied the entry committed {committed_after} ticks "
                        f"after the faults stopped, {catch_up} ticks later")

    # -- checks ----------------------------------------------------------------------------

    def _check_chain(self, index: int, h: int, what: str) -> None:
        known = self.chain.setdefault(index, h)
        if known != h:
            raise Violation(f"seed {self.seed}: {what}: state machine at {index} differs from another member's")

    def _check_ready(self, member: Member, rd: Ready) -> None:
        if rd.terms:
            prev_term = member.term_at(rd.first_index - 1) if rd.first_index - 1 >= member.snap_index else None
            index = rd.first_index
            for term, data in zip(rd.terms, rd.datas):
                known = self.entries.setdefault((index, term), (data, prev_term))
                if known[0] != data or (known[1] is not None and prev_term is not None and known[1] != prev_term):
                    raise Violation(f"seed {self.seed}: log matching: entry {index} of term {term} differs")
                prev_term = term
                index += 1
        if rd.committed:
            index = rd.commit_first
            for term, data in zip(rd.committed_terms, rd.committed):
                known_c = self.committed.setdefault(index, (term, data))
                if known_c != (term, data):
                    raise Violation(f"seed {self.seed}: committed entry {index} changed: {known_c} then {(term, data)}")
                index += 1
            self.commit_max = max(self.commit_max, index - 1)

    def _check_leaders(self) -> None:
        for node in self.nodes:
            m = node.member
            if m is None or m.role != LEADER:
                continue
            known = self.leaders.setdefault(m.term, node.id)
            if known != node.id:
                raise Violation(f"seed {self.seed}: two leaders in term {m.term}: {known} and {node.id}")
            if (node.id, m.term) not in self.checked:
                self.checked.add((node.id, m.term))
                self.stats["elections"] += 1
                self._check_complete(node.id, m)

    def _check_complete(self, id: int, m: Member) -> None:
        for index in range(max(m.snap_index, 1), self.commit_max + 1):
            want = self.committed.get(index)
            if want is None:
                continue
            if index == m.snap_index:
                if m.snap_term != want[0]:
                    raise Violation(f"seed {self.seed}: leader {id} (term {m.term}) snapshot differs at {index}")
                continue
            pos = index - m.snap_index - 1
            if pos >= len(m.terms) or m.terms[pos] != want[0] or m.datas[pos] != want[1]:
                raise Violation(f"seed {self.seed}: leader {id} of term {m.term} lacks committed entry {index}")
