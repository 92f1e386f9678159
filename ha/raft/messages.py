"""Raft's messages between members: one record type with a kind (sans-IO, no trio).

One class for every kind keeps the codec to one header and the member's dispatch to one
attribute read; the fields each kind uses:

- APPEND: ``index``/``log_term`` = the entry before ``terms``/``datas``, ``commit``, ``round``.
- APPEND_RESP: ``index`` = the follower's last matching index (success) or the rejected
  ``index`` of the APPEND (``reject``), ``hint`` = where the leader should probe next - 1,
  ``round`` echoed.
- VOTE: ``index``/``log_term`` = the candidate's last entry; flags ``PRE`` (pre-vote) and
  ``TRANSFER`` (a leadership transfer: voters ignore their leader lease).
- VOTE_RESP: ``reject``, flag ``PRE``.
- HEARTBEAT: ``commit`` (bounded by the follower's known match), ``round``.
- HEARTBEAT_RESP: ``round`` echoed.
- SNAPSHOT: ``index``/``log_term`` = the snapshot's last entry, ``snapshot`` = its bytes,
  ``round``.
- TIMEOUT_NOW: the leader asks the transfer's target to start an election now.
"""

from __future__ import annotations

APPEND = 1
APPEND_RESP = 2
VOTE = 3
VOTE_RESP = 4
HEARTBEAT = 5
HEARTBEAT_RESP = 6
SNAPSHOT = 7
TIMEOUT_NOW = 8

KIND_NAMES = {
    APPEND: "append", APPEND_RESP: "append-resp", VOTE: "vote", VOTE_RESP: "vote-resp",
    HEARTBEAT: "heartbeat", HEARTBEAT_RESP: "heartbeat-resp", SNAPSHOT: "snapshot",
    TIMEOUT_NOW: "timeout-now",
}

# flags
PRE = 1
TRANSFER = 2
REJECT = 4

_EMPTY: list = []


class Message:
    """One message from ``src``; ``terms[i]``/``datas[i]`` are entry ``index + 1 + i``."""

    __slots__ = ("kind", "flags", "src", "term", "index", "log_term", "commit", "hint", "round",
                 "terms", "datas", "snapshot")

    def __init__(self, kind: int, src: int, term: int, index: int = 0, log_term: int = 0,
                 commit: int = 0, hint: int = 0, round: int = 0, flags: int = 0,
                 terms: list[int] = _EMPTY, datas: list[bytes] = _EMPTY, snapshot: bytes = b"") -> None:
        self.kind = kind
        self.flags = flags
        self.src = src
        self.term = term
        self.index = index
        self.log_term = log_term
        self.commit = commit
        self.hint = hint
        self.round = round
        self.terms = terms
        self.datas = datas
        self.snapshot = snapshot

    @property
    def reject(self) -> bool:
        return bool(self.flags & REJECT)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self) -> str:
        extra = f" entries={len(self.terms)}" if self.terms else ""
        return (f"<{KIND_NAMES.get(self.kind, self.kind)} src={self.src} term={self.term} index={self.index} "
                f"log_term={self.log_term} commit={self.commit} hint={self.hint} round={self.round} "
                f"flags={self.flags}{extra}>")
