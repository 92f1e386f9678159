"""The seam between a quorum queue and whatever replicates its log (issue 13 item 5).

A ``QuorumQueue`` (``quorum``) hands every command, as bytes, to its ``Replicator`` and
changes its state only when the replicator gives a command back as committed. The
replicator of a cluster is ``mqemu.ha.raft.replicator.RaftReplicator`` (one Raft group per
queue); ``LocalReplicator`` here commits at once, in one process, for tests and a single
node that wants quorum semantics without peers.

The replicator calls its member (the queue) back:
- ``apply(command)``: a committed command, on every member, in log order;
- ``leadership(True)``: this member leads and has applied everything committed before its
  term, so it may act (deliver, arm timers); ``leadership(False)``: it does not any more;
- ``snapshot() -> bytes`` and ``restore(bytes)``: the member's whole state, for compaction
  and for a member that catches up from a snapshot.

``propose(command) -> Promise``: the promise is kept once the command is committed (on a
majority's disk) and applied here. Commands proposed while the member does not lead wait
until it does (they are never sent to another member here: the cluster's forwarding is not
in this layer). One promise object serves every command of one batch.

``is_open(command) -> bool`` (optional): ``command``, an object ``propose`` was given, is still
the newest command of the open batch, so its proposer may still change it (the queue adds a
consumer's next acks to the settle it proposed last: ``quorum_codec.add_ids``). A replicator
without it gets every ack as its own command.
"""

from __future__ import annotations

from typing import Callable, Protocol

from .promise import Promise
from .quorum_codec import join, split


class ReplicaMember(Protocol):
    def apply(self, command: bytes) -> None: ...

    def leadership(self, leading: bool) -> None: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


class Replicator(Protocol):
    @property
    def is_leader(self) -> bool: ...

    def start(self, member: ReplicaMember) -> None:
        """Serve ``member`` from now on (called once, by the queue it replicates)."""

    def propose(self, command: bytes | bytearray) -> Promise: ...


ReplicatorFactory = Callable[[str, str], Replicator]
"""(vhost name, queue name) -> the replicator of a new quorum queue."""


class Committed(Promise):
    """Kept when the batch it stands for is committed and applied here."""

    __slots__ = ("callbacks", "kept")
    # It never breaks, but may wait as long as the group has no leader: it forgets, and a
    # protocol takes the path of the promises that may not be kept (``then_or``)
    can_break = True
    forgets = True

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] | None = []
        self.kept = False

    def then(self, callback: Callable[[], None]) -> None:
        if self.kept:
            callback()
        else:
            assert self.callbacks is not None
            self.callbacks.append(callback)

    def forget(self, callback: Callable[[], None]) -> None:
        callbacks = self.callbacks
        if callbacks:
            try:
                callbacks.remove(callback)
            except ValueError:
                pass

    def keep(self) -> None:
        if self.kept:
            return
        self.kept = True
        callbacks, self.callbacks = self.callbacks, None
        for cb in callbacks or ():
            cb()

    def __repr__(self) -> str:
        return f"Committed(kept={self.kept})"


class LocalReplicator:
    """One member that always leads and commits a batch when ``flush()`` runs (the caller
    runs it once per scheduler pass, or a test does). Batches go through the same bytes as a
    replicated log (``join``/``split``), and ``log`` keeps them when given a list."""

    def __init__(self, on_pending: Callable[[], None] | None = None, log: list[bytes] | None = None) -> None:
        self.member: ReplicaMember | None = None
        self.pending: list[bytes | bytearray] = []
        self.promise: Committed | None = None
        self.on_pending = on_pending  # called when a batch opens (to schedule a flush)
        self.log = log

    @property
    def is_leader(self) -> bool:
        return True

    def start(self, member: ReplicaMember) -> None:
        self.member = member
        member.leadership(True)

    def is_open(self, command: bytes | bytearray) -> bool:
        """``command`` is the newest of the batch not yet committed (it may still grow)."""
        pending = self.pending
        return bool(pending) and pending[-1] is command

    def propose(self, command: bytes | bytearray) -> Promise:
        self.pending.append(command)
        p = self.promise
        if p is None:
            p = self.promise = Committed()
            if self.on_pending is not None:
                self.on_pending()
        return p

    def flush(self) -> int:
        """Commit and apply every pending command; returns how many."""
        n = 0
        member = self.member
        assert member is not None
        while self.pending:
            batch, self.pending = join(self.pending), []
            promise, self.promise = self.promise, None
            if self.log is not None:
                self.log.append(batch)
            for command in split(batch):
                member.apply(command)
                n += 1
            if promise is not None:
                promise.keep()
        return n
