"""The records a Raft member shares with its caller: roles, its configuration, what it
restarts from (``Recovered``), what it gives out (``Ready``) and the leader's view of a
follower (``Progress``). See ``member`` for the order a Ready is handled in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from mqemu.ha.raft.messages import Message

FOLLOWER = "follower"
PRE_CANDIDATE = "pre-candidate"
CANDIDATE = "candidate"
LEADER = "leader"

PROBE, REPLICATE, SNAPSHOTTING = 0, 1, 2


class RandomSource(Protocol):
    def randrange(self, stop: int, /) -> int: ...


@dataclass(slots=True)
class Config:
    election_ticks: int = 10      # a follower campaigns after [election_ticks, 2*election_ticks) silent ticks
    heartbeat_ticks: int = 1      # a leader starts a heartbeat round this often
    max_batch: int = 4096         # entries per APPEND
    max_inflight: int = 32        # pipelined APPENDs per follower
    lease_margin: int = 2         # ticks of clock drift the leader's read lease allows for
    snapshot_every: int = 10000   # ready.want_snapshot once this many entries follow the snapshot
    pre_vote: bool = True
    check_quorum: bool = True
    # the leader tells the followers a new commit index at once (a heartbeat round) rather
    # than with the next append or heartbeat: for a group whose clients wait for every
    # member to apply (the metadata group's declare-ok), not for a busy one
    commit_notify: bool = False


@dataclass(slots=True)
class Recovered:
    """What a member restarts from: its storage's durable state."""

    term: int = 0
    vote: int | None = None
    snap_index: int = 0
    snap_term: int = 0
    snapshot: bytes | None = None
    terms: list[int] = field(default_factory=list)   # entries snap_index + 1 ...
    datas: list[bytes] = field(default_factory=list)


class Ready:
    __slots__ = ("hard_state", "snapshot", "snapshot_installed", "truncate_from", "first_index", "terms",
                 "datas", "last_index", "last_term", "messages", "commit_first", "committed", "committed_terms",
                 "reads", "want_snapshot")

    def __init__(self) -> None:
        self.hard_state: tuple[int, int | None] | None = None
        self.snapshot: tuple[int, int, bytes] | None = None
        self.snapshot_installed = False
        self.truncate_from: int | None = None
        self.first_index = 0
        self.terms: list[int] = []
        self.datas: list[bytes] = []
        self.last_index = 0          # with last_term: what persisted() is told after writing
        self.last_term = 0
        self.messages: list[tuple[int, Message]] = []
        self.commit_first = 0
        self.committed: list[bytes] = []
        self.committed_terms: list[int] = []
        self.reads: list[tuple[Any, int | None]] = []
        self.want_snapshot = False

    @property
    def writes(self) -> bool:
        return bool(self.hard_state or self.snapshot or self.terms or self.truncate_from is not None)


class Progress:
    """The leader's view of one follower."""

    __slots__ = ("match", "next", "state", "paused", "inflight", "pending", "active", "acked_round", "stall")

    def __init__(self, next_index: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = PROBE
        self.paused = False
        self.inflight: list[int] = []   # last index of each APPEND in flight (REPLICATE)
        self.pending = 0                # the snapshot's index (SNAPSHOTTING)
        self.active = False             # heard from since the last check-quorum
        self.acked_round = 0
        self.stall = 0                  # heartbeat answers without progress

    def probe(self) -> None:
        self.state = PROBE
        self.next = self.match + 1
        self.paused = False
        self.inflight.clear()
        self.stall = 0
