"""A sans-IO Raft member: no trio, no sockets, no clock (issue 13 item 6).

The caller feeds it messages (``step``), ticks (``tick``: the caller's unit of time),
proposals (``propose``, a batch of commands), "persisted up to index N" notices
(``persisted``), snapshots of its state machine (``compact``), linearizable read requests
(``read``) and a graceful leadership transfer (``transfer``). After any of them it takes the
member's output with ``ready()`` and must handle it in this order:

1. persist ``hard_state`` (term, vote), ``snapshot`` (install: the log is replaced; or a
   local compaction: the log up to it is dropped), ``truncate_from`` and the appended entries
   (``first_index``, ``terms``, ``datas``);
2. only then send ``messages`` (a vote or an acknowledgement must not leave before what it
   promises is on disk; a leader's appends may leave first: ``sends_before_write``), and call
   ``persisted(last_index, last_term)`` when the Ready wrote entries (the leader counts itself
   in a majority only for what it has on disk);
3. restore the state machine from an installed ``snapshot``, apply ``committed`` entries
   (``commit_first`` ... ; an empty ``datas`` item is the no-op a new leader appends), then
   answer ``reads`` (``(ctx, index)``: serve once applied up to ``index``; ``index`` None:
   refused, ask the leader again).

Readies may be pipelined: the caller may take the next one while the previous is being
written, as long as it writes and sends them in order.

Membership is fixed: the members are given at creation (no joint consensus). Snapshots are
sent whole in one message (no chunks).
"""

from __future__ import annotations

from typing import Any

from mqemu.ha.raft.messages import (
    APPEND, APPEND_RESP, HEARTBEAT, HEARTBEAT_RESP, PRE, REJECT, SNAPSHOT, TIMEOUT_NOW, TRANSFER,
    VOTE, VOTE_RESP, Message,
)
from mqemu.ha.raft.records import (
    CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE, PROBE, REPLICATE, SNAPSHOTTING, Config, Progress, RandomSource,
    Ready, Recovered,
)

__all__ = ["CANDIDATE", "FOLLOWER", "LEADER", "PRE_CANDIDATE", "Config", "Member", "Ready", "Recovered",
           "sends_before_write"]


class Member:
    def __init__(self, id: int, members: list[int], rng: RandomSource, config: Config | None = None,
                 recovered: Recovered | None = None) -> None:
        if id not in members:
            raise ValueError(f"member {id} is not in {members}")
        self.id = id
        self.peers = [m for m in members if m != id]
        self.quorum = len(members) // 2 + 1
        self.cfg = config or Config()
        self.rng = rng
        rec = recovered or Recovered()
        self.term = rec.term
        self.vote = rec.vote
        self.snap_index = rec.snap_index
        self.snap_term = rec.snap_term
        self.snap_data = rec.snapshot
        self.terms: list[int] = list(rec.terms)   # entries snap_index + 1 ... last_index
        self.datas: list[bytes] = list(rec.datas)
        self.commit = self.applied = self.snap_index
        last = self.last_index
        self.persisted_index = last
        self.unstable_from = last + 1
        self.truncated_from: int | None = None
        self.hard_dirty = False
        self.snap_out: tuple[int, int, bytes] | None = None
        self.snap_installed = False
        self.messages: list[tuple[int, Message]] = []
        self.reads: list[tuple[Any, int | None]] = []
        self.pending_reads: list[tuple[Any, int, int]] = []   # (ctx, index, round)
        self.role = FOLLOWER
        self.leader: int | None = None
        self.now = 0
        self.elapsed = 0
        self.hb_elapsed = 0
        self.timeout = self._random_timeout()
        self.progress: dict[int, Progress] = {}
        self.granted: set[int] = set()
        self.rejected: set[int] = set()
        self.round = 0
        self.round_start: dict[int, int] = {}
        self.transfer_target: int | None = None
        self.transfer_elapsed = 0
        self.unsent = False

    # -- log -------------------------------------------------------------------------------

    @property
    def last_index(self) -> int:
        return self.snap_index + len(self.terms)

    @property
    def last_term(self) -> int:
        return self.terms[-1] if self.terms else self.snap_term

    def term_at(self, index: int) -> int | None:
        """The term of entry ``index``; None if it is compacted (before the snapshot) or absent."""
        pos = index - self.snap_index - 1
        if pos < 0:
            return self.snap_term if pos == -1 else None
        return self.terms[pos] if pos < len(self.terms) else None

    def _truncate(self, index: int) -> None:
        """Drop entries ``index`` and after (never committed ones: the caller checks)."""
        assert index > self.commit, (index, self.commit)
        pos = index - self.snap_index - 1
        del self.terms[pos:], self.datas[pos:]
        if index < self.unstable_from:   # storage has entries from index on: it must drop them
            self.truncated_from = index if self.truncated_from is None else min(self.truncated_from, index)
        self.unstable_from = min(self.unstable_from, index)
        self.persisted_index = min(self.persisted_index, index - 1)

    # -- inputs ----------------------------------------------------------------------------

    def tick(self) -> None:
        self.now += 1
        self.elapsed += 1
        if self.role == LEADER:
            self.hb_elapsed += 1
            if self.hb_elapsed >= self.cfg.heartbeat_ticks:
                self.hb_elapsed = 0
                self._heartbeat_round()
            if self.transfer_target is not None:
                self.transfer_elapsed += 1
                if self.transfer_elapsed >= self.cfg.election_ticks:
                    self.transfer_target = None
            if self.elapsed >= self.cfg.election_ticks:
                self.elapsed = 0
                if self.cfg.check_quorum:
                    active = 1 + sum(1 for pr in self.progress.values() if pr.active)
                    for pr in self.progress.values():
                        pr.active = False
                    if active < self.quorum:
                        self._become_follower(self.term, None)
        elif self.elapsed >= self.timeout:
            self._campaign(self.cfg.pre_vote)

    def propose(self, datas: list[bytes]) -> int | None:
        """Append commands (non-empty bytes) as the leader: the index of the first, or None
        (not the leader, or handing leadership over). The commands commit at that index and
        the following ones if ``committed`` later shows them in this term."""
        if self.role != LEADER or self.transfer_target is not None:
            return None
        first = self.last_index + 1
        self.terms.extend([self.term] * len(datas))
        self.datas.extend(datas)
        self.unsent = True   # the APPENDs go out at ready(): proposals until then share them
        if self.quorum == 1:
            self._maybe_commit()
        return first

    def persisted(self, index: int, term: int) -> None:
        """The caller's storage holds entries up to ``index`` (whose term is ``term``)."""
        if index > self.persisted_index and self.term_at(index) == term:
            self.persisted_index = index
            if self.role == LEADER:
                self._maybe_commit()

    def compact(self, index: int, data: bytes) -> None:
        """The state machine's snapshot ``data`` holds every entry up to ``index`` (applied)."""
        if index <= self.snap_index:
            return
        if index > self.applied:
            raise ValueError(f"snapshot at {index} beyond applied {self.applied}")
        term = self.term_at(index)
        assert term is not None
        pos = index - self.snap_index
        del self.terms[:pos], self.datas[:pos]
        self.snap_index, self.snap_term, self.snap_data = index, term, data
        self.snap_out, self.snap_installed = (index, term, data), False
        self.unstable_from = max(self.unstable_from, index + 1)

    def read(self, ctx: Any) -> None:
        """A linearizable read: ``ready().reads`` gives ``(ctx, index)`` once this member is
        sure it was the leader when asked (its lease, or a majority answering a heartbeat round
        started after the request), or ``(ctx, None)``: refused."""
        if self.role != LEADER or self.transfer_target is not None or self.term_at(self.commit) != self.term:
            self.reads.append((ctx, None))
        elif self.quorum == 1 or self.lease_valid():
            self.reads.append((ctx, self.commit))
        else:
            self._heartbeat_round()
            self.pending_reads.append((ctx, self.commit, self.round))

    def transfer(self, target: int) -> bool:
        """Hand leadership to ``target`` (a graceful stop): proposals are refused meanwhile; the
        target is told to campaign at once when its log is complete. False if not the leader."""
        if self.role != LEADER or target not in self.progress:
            return False
        self.transfer_target, self.transfer_elapsed = target, 0
        pr = self.progress[target]
        if pr.match == self.last_index:
            self._send(target, Message(TIMEOUT_NOW, self.id, self.term))
        else:
            self._send_append(target, pr)
        return True

    def leader_down(self, leader: int, campaign: bool = True) -> bool:
        """The caller knows ``leader``'s node is gone (its link dropped: a killed process): a
        follower of it forgets it (so it grants a vote at once) and, with ``campaign``, stands
        at once, with a pre-vote. A peer that still hears the leader refuses the pre-vote
        (stickiness), so a flapping link alone deposes nobody. The callers pick one member to
        campaign (two at once split the vote and wait an election timeout). (It gives up the
        lease's promise: callers that read under a lease must not use it.)"""
        if self.role != FOLLOWER or self.leader != leader:
            return False
        self.leader = None
        if campaign:
            self._campaign(True)
        return True

    def campaign(self) -> None:
        """Stand for election now, bypassing the others' stickiness (as a transfer's target):
        a new group's preferred member, so that it leads first."""
        if self.role != LEADER:
            self._campaign(False, transfer=True)

    def lease_valid(self) -> bool:
        if self.role != LEADER:
            return False
        rounds = sorted([pr.acked_round for pr in self.progress.values()] + [self.round], reverse=True)
        start = self.round_start.get(rounds[self.quorum - 1])
        return start is not None and self.now < start + self.cfg.election_ticks - self.cfg.lease_margin

    def step(self, m: Message) -> None:
        kind = m.kind
        if m.term > self.term:
            if kind == VOTE:
                if (self.cfg.check_quorum and not m.flags & TRANSFER and self.elapsed < self.cfg.election_ticks
                        and (self.leader is not None or self.now < self.cfg.election_ticks)):
                    # A leader is alive (its lease): a rejoining member does not depose it. A member
                    # just (re)started may have acknowledged a lease it forgot: it waits as long.
                    return
                if not m.flags & PRE:
                    self._become_follower(m.term, None)
            elif kind == VOTE_RESP and m.flags & PRE and not m.flags & REJECT:
                pass
            else:
                self._become_follower(m.term, m.src if kind in (APPEND, HEARTBEAT, SNAPSHOT) else None)
        elif m.term < self.term:
            if kind in (APPEND, HEARTBEAT, SNAPSHOT):
                self._send(m.src, Message(HEARTBEAT_RESP, self.id, self.term))   # the stale leader steps down
            elif kind == VOTE and m.flags & PRE:
                self._send(m.src, Message(VOTE_RESP, self.id, self.term, flags=PRE | REJECT))
            return
        if kind == APPEND:
            self._follow(m.src)
            self._on_append(m)
        elif kind == APPEND_RESP:
            pr = self.progress.get(m.src) if self.role == LEADER else None
            if pr is not None:
                self._on_append_resp(m.src, pr, m)
        elif kind == HEARTBEAT:
            self._follow(m.src)
            self.commit = max(self.commit, min(m.commit, self.last_index))
            self._send(m.src, Message(HEARTBEAT_RESP, self.id, self.term, round=m.round))
        elif kind == HEARTBEAT_RESP:
            pr = self.progress.get(m.src) if self.role == LEADER else None
            if pr is not None:
                self._on_heartbeat_resp(m.src, pr, m)
        elif kind == VOTE:
            self._on_vote(m)
        elif kind == VOTE_RESP:
            self._on_vote_resp(m)
        elif kind == SNAPSHOT:
            self._follow(m.src)
            self._on_snapshot(m)
        elif kind == TIMEOUT_NOW:
            if self.role == FOLLOWER:
                self._campaign(False, transfer=True)

    # -- output ----------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(self.unsent or self.messages or self.hard_dirty or self.snap_out or self.unstable_from <= self.last_index
                    or self.truncated_from is not None or self.commit > self.applied or self.reads)

    def ready(self) -> Ready:
        if self.unsent:
            self.unsent = False
            if self.role == LEADER:
                for peer, pr in self.progress.items():
                    self._send_append(peer, pr)
        r = Ready()
        if self.hard_dirty:
            r.hard_state = (self.term, self.vote)
            self.hard_dirty = False
        if self.snap_out is not None:
            r.snapshot, r.snapshot_installed = self.snap_out, self.snap_installed
            self.snap_out = None
        if self.truncated_from is not None and not r.snapshot_installed:
            r.truncate_from = self.truncated_from
        self.truncated_from = None
        last = self.last_index
        if self.unstable_from <= last:
            pos = self.unstable_from - self.snap_index - 1
            r.first_index = self.unstable_from
            r.terms, r.datas = self.terms[pos:], self.datas[pos:]
            self.unstable_from = last + 1
        if r.terms or r.snapshot_installed:
            r.last_index, r.last_term = last, self.last_term
        r.messages, self.messages = self.messages, []
        if self.commit > self.applied:
            lo, hi = self.applied - self.snap_index, self.commit - self.snap_index
            r.commit_first = self.applied + 1
            r.committed, r.committed_terms = self.datas[lo:hi], self.terms[lo:hi]
            self.applied = self.commit
        r.reads = [rd for rd in self.reads if rd[1] is None or rd[1] <= self.applied]
        self.reads = [rd for rd in self.reads if rd[1] is not None and rd[1] > self.applied]
        r.want_snapshot = self.applied - self.snap_index >= self.cfg.snapshot_every
        return r

    # -- roles -----------------------------------------------------------------------------

    def _random_timeout(self) -> int:
        return self.cfg.election_ticks + self.rng.randrange(self.cfg.election_ticks)

    def _send(self, to: int, m: Message) -> None:
        self.messages.append((to, m))

    def _become_follower(self, term: int, leader: int | None) -> None:
        if term != self.term:
            self.term, self.vote, self.hard_dirty = term, None, True
        self.role = FOLLOWER
        self.leader = leader
        self.elapsed = 0
        self.timeout = self._random_timeout()
        self.progress = {}
        self.transfer_target = None
        for ctx, _index, _round in self.pending_reads:
            self.reads.append((ctx, None))
        self.pending_reads = []

    def _follow(self, leader: int) -> None:
        if self.role != FOLLOWER:
            self._become_follower(self.term, leader)
        self.leader = leader
        self.elapsed = 0

    def _campaign(self, pre: bool, transfer: bool = False) -> None:
        self.elapsed = 0
        self.timeout = self._random_timeout()
        self.leader = None
        self.granted, self.rejected = {self.id}, set()
        if pre:
            self.role = PRE_CANDIDATE
            term = self.term + 1
        else:
            self.role = CANDIDATE
            self.term += 1
            self.vote, self.hard_dirty = self.id, True
            term = self.term
        if len(self.granted) >= self.quorum:
            self._won(pre)
            return
        flags = (PRE if pre else 0) | (TRANSFER if transfer else 0)
        for peer in self.peers:
            self._send(peer, Message(VOTE, self.id, term, self.last_index, self.last_term, flags=flags))

    def _won(self, pre: bool) -> None:
        if pre:
            self._campaign(False)
        else:
            self._become_leader()

    def _on_vote(self, m: Message) -> None:
        pre = m.flags & PRE
        can = self.vote == m.src or (self.vote is None and self.leader is None) or (pre and m.term > self.term)
        up_to_date = m.log_term > self.last_term or (m.log_term == self.last_term and m.index >= self.last_index)
        if can and up_to_date:
            self._send(m.src, Message(VOTE_RESP, self.id, m.term, flags=pre))
            if not pre:
                self.vote, self.hard_dirty = m.src, True
                self.elapsed = 0
        else:
            self._send(m.src, Message(VOTE_RESP, self.id, self.term, flags=pre | REJECT))

    def _on_vote_resp(self, m: Message) -> None:
        pre = bool(m.flags & PRE)
        if pre:
            if self.role != PRE_CANDIDATE or m.term not in (self.term, self.term + 1):
                return
        elif self.role != CANDIDATE or m.term != self.term:
            return
        (self.rejected if m.flags & REJECT else self.granted).add(m.src)
        if len(self.granted) >= self.quorum:
            self._won(pre)
        elif len(self.rejected) >= self.quorum:
            self._become_follower(self.term, None)

    def _become_leader(self) -> None:
        self.role = LEADER
        self.leader = self.id
        self.elapsed = self.hb_elapsed = 0
        self.transfer_target = None
        nxt = self.last_index + 1
        self.progress = {p: Progress(nxt) for p in self.peers}
        self.terms.append(self.term)   # the no-op that commits the earlier terms' entries (§5.4.2)
        self.datas.append(b"")
        self._heartbeat_round()
        for peer, pr in self.progress.items():
            self._send_append(peer, pr)
        if self.quorum == 1:
            self._maybe_commit()

    # -- leader ----------------------------------------------------------------------------

    def _heartbeat_round(self) -> None:
        self.round += 1
        self.round_start[self.round] = self.now
        self.round_start.pop(self.round - 64, None)
        for peer, pr in self.progress.items():
            self._send(peer, Message(HEARTBEAT, self.id, self.term, commit=min(pr.match, self.commit),
                                     round=self.round))

    def _send_append(self, peer: int, pr: Progress) -> None:
        state = pr.state
        if state == SNAPSHOTTING or (state == PROBE and pr.paused):
            return
        last = self.last_index
        while True:
            if state == REPLICATE and (pr.next > last or len(pr.inflight) >= self.cfg.max_inflight):
                return
            prev = pr.next - 1
            prev_term = self.term_at(prev)
            if prev_term is None:   # compacted: the follower needs the snapshot
                assert self.snap_data is not None
                pr.state, pr.pending, pr.stall = SNAPSHOTTING, self.snap_index, 0
                pr.inflight.clear()
                self._send(peer, Message(SNAPSHOT, self.id, self.term, self.snap_index, self.snap_term,
                                         round=self.round, snapshot=self.snap_data))
                return
            lo = prev - self.snap_index
            hi = min(last - self.snap_index, lo + self.cfg.max_batch)
            self._send(peer, Message(APPEND, self.id, self.term, prev, prev_term, self.commit, round=self.round,
                                     terms=self.terms[lo:hi], datas=self.datas[lo:hi]))
            if state == PROBE:
                pr.paused = True
                return
            pr.next = hi + self.snap_index + 1
            pr.inflight.append(pr.next - 1)

    def _on_append_resp(self, peer: int, pr: Progress, m: Message) -> None:
        pr.active = True
        if m.round > pr.acked_round:
            pr.acked_round = m.round
            self._release_reads()
        if m.flags & REJECT:
            if pr.state == REPLICATE:
                if m.index <= pr.match:
                    return   # stale
                pr.probe()
            elif pr.state == PROBE:
                if m.index != pr.next - 1:
                    return   # stale
                pr.next = max(pr.match + 1, min(m.index, m.hint + 1))
                pr.paused = False
            else:
                return
            self._send_append(peer, pr)
            return
        told = pr.match  # the commit index this peer's heartbeats carried at most
        if m.index > pr.match:
            pr.match = m.index
            pr.stall = 0
            advanced = True
        else:
            advanced = False
        if pr.next <= m.index:
            pr.next = m.index + 1
        if pr.state == REPLICATE:
            inflight = pr.inflight
            while inflight and inflight[0] <= m.index:
                del inflight[0]
        elif pr.state == PROBE or pr.match >= pr.pending:
            pr.state, pr.paused = REPLICATE, False
            pr.next = max(pr.next, pr.match + 1)
            pr.inflight.clear()
        if advanced:
            commit = self.commit
            self._maybe_commit()
            if self.cfg.commit_notify and self.commit == commit and told < commit:  # a late follower
                self._send(peer, Message(HEARTBEAT, self.id, self.term, commit=min(pr.match, commit),
                                         round=self.round))
        if self.transfer_target == peer and pr.match == self.last_index:
            self._send(peer, Message(TIMEOUT_NOW, self.id, self.term))
        self._send_append(peer, pr)

    def _on_heartbeat_resp(self, peer: int, pr: Progress, m: Message) -> None:
        pr.active = True
        if m.round > pr.acked_round:
            pr.acked_round = m.round
            self._release_reads()
        if pr.match >= self.last_index:
            pr.stall = 0
            return
        if pr.state == PROBE:
            pr.paused = False
        else:
            pr.stall += 1
            if pr.stall >= 3:   # no progress for three rounds: an APPEND or the snapshot was lost
                pr.probe()
        self._send_append(peer, pr)

    def _maybe_commit(self) -> None:
        matches = sorted([pr.match for pr in self.progress.values()] + [self.persisted_index], reverse=True)
        n = matches[self.quorum - 1]
        if n > self.commit and self.term_at(n) == self.term:   # only entries of this term count (§5.4.2)
            self.commit = n
            if self.cfg.commit_notify and self.progress:
                self._heartbeat_round()

    def _release_reads(self) -> None:
        if not self.pending_reads:
            return
        rounds = sorted([pr.acked_round for pr in self.progress.values()] + [self.round], reverse=True)
        acked = rounds[self.quorum - 1]
        keep = []
        for rd in self.pending_reads:
            if rd[2] <= acked:
                self.reads.append((rd[0], rd[1]))
            else:
                keep.append(rd)
        self.pending_reads = keep

    # -- follower --------------------------------------------------------------------------

    def _on_append(self, m: Message) -> None:
        prev = m.index
        if prev < self.commit:
            self._send(m.src, Message(APPEND_RESP, self.id, self.term, self.commit, round=m.round))
            return
        if self.term_at(prev) != m.log_term:
            last = self.last_index
            if prev > last:
                hint = last
            else:
                t = self.term_at(prev)
                hint = prev - 1
                while hint > self.commit and self.term_at(hint) == t:
                    hint -= 1
            self._send(m.src, Message(APPEND_RESP, self.id, self.term, prev, hint=hint, round=m.round, flags=REJECT))
            return
        terms, n = m.terms, len(m.terms)
        k = 0
        if prev != self.last_index:
            last = self.last_index
            while k < n:
                i = prev + 1 + k
                if i > last:
                    break
                if self.term_at(i) != terms[k]:
                    self._truncate(i)
                    break
                k += 1
        if k < n:
            if k:
                self.terms.extend(terms[k:])
                self.datas.extend(m.datas[k:])
            else:
                self.terms.extend(terms)
                self.datas.extend(m.datas)
        new_last = prev + n
        if m.commit > self.commit:
            self.commit = max(self.commit, min(m.commit, new_last))
        self._send(m.src, Message(APPEND_RESP, self.id, self.term, new_last, round=m.round))

    def _on_snapshot(self, m: Message) -> None:
        if m.index <= self.commit:
            self._send(m.src, Message(APPEND_RESP, self.id, self.term, self.commit, round=m.round))
            return
        if self.term_at(m.index) == m.log_term:
            self.commit = m.index   # the log already has it: nothing to install
        else:
            self.snap_index, self.snap_term, self.snap_data = m.index, m.log_term, m.snapshot
            self.terms, self.datas = [], []
            self.commit = self.applied = m.index
            self.unstable_from = m.index + 1
            self.truncated_from = None
            self.persisted_index = m.index
            self.snap_out, self.snap_installed = (m.index, m.log_term, m.snapshot), True
            self.reads = [rd for rd in self.reads if rd[1] is None]
        self._send(m.src, Message(APPEND_RESP, self.id, self.term, m.index, round=m.round))


def sends_before_write(member: Member, rd: Ready) -> bool:
    """Whether ``rd``'s messages may leave before its writes are on disk: a leader's appends
    and heartbeats, with no term, vote, snapshot or truncation in the Ready (Raft allows it,
    thesis §10.2.1: the leader counts itself in a majority only once told ``persisted``, so
    the followers' writes overlap its own). Everything else waits for the write (step 2)."""
    return (member.role == LEADER and rd.hard_state is None and rd.snapshot is None and rd.truncate_from is None
            and bool(rd.messages) and all(m.kind == APPEND or m.kind == HEARTBEAT for _, m in rd.messages))
