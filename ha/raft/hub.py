"""Any number of Raft groups over one node's cluster links (``links.NodeLinks``).

``RaftHub(links, nodes)`` gives each group a ``runtime.Transport`` (``hub.transport(group)``).
Member ids are the index of the node's name in the sorted list of the cluster's node names
(``node-1, node-2, node-3`` -> 0, 1, 2), the same on every node without any exchange.

Everything travels on the link channel ``raft``. One link frame carries any number of
records, of any groups, for one peer::

    group_length:u8 | group (UTF-8) | message_length:u32 | message (the Raft codec's bytes)

A runner's ``send`` only queues the record for the peer; the hub's task sends each peer's
queue as one link frame once the caller yields (after the runner's whole Ready has been
handled), so a Ready's messages to one peer, whatever their group, cost one ``links.send``.
A record for a group this node does not run is dropped (Raft retries). Sends are dropped,
never blocking, when the link is down (``NodeLinks.send`` returns False).
"""

from __future__ import annotations

import logging
import struct
from typing import Any

import trio

log = logging.getLogger("mqemu.ha.raft")

CHANNEL = "raft"
_LEN = struct.Struct(">I")
MAX_INBOX = 10000  # messages waiting for one group's runner before the hub drops more


class HubFramingError(ValueError):
    """A ``raft`` payload that is not a sequence of whole records."""


def encode_record(group: bytes, message: bytes) -> bytes:
    """One record; ``group`` is the group's UTF-8 name (1 to 255 bytes)."""
    return b"%c%s%s%s" % (len(group), group, _LEN.pack(len(message)), message)


def decode_records(payload: bytes) -> list[tuple[str, bytes]]:
    """Every (group, message) of a ``raft`` payload; raises HubFramingError."""
    out: list[tuple[str, bytes]] = []
    pos, end = 0, len(payload)
    view = memoryview(payload)
    while pos < end:
        glen = payload[pos]
        mstart = pos + 1 + glen + 4
        if glen == 0 or mstart > end:
            raise HubFramingError(f"a record cut short at byte {pos}")
        try:
            group = bytes(view[pos + 1:pos + 1 + glen]).decode()
        except UnicodeDecodeError:
            raise HubFramingError(f"a group name that is not UTF-8 at byte {pos}") from None
        (mlen,) = _LEN.unpack_from(payload, mstart - 4)
        if mstart + mlen > end:
            raise HubFramingError(f"a message cut short at byte {mstart}")
        out.append((group, bytes(view[mstart:mstart + mlen])))
        pos = mstart + mlen
    return out


class HubTransport:
    """One group's ``runtime.Transport`` on a hub."""

    def __init__(self, hub: RaftHub, group: str) -> None:
        self.hub = hub
        self.group = group
        self.prefix = group.encode()
        if not 0 < len(self.prefix) < 256:
            raise ValueError(f"a group name is 1 to 255 bytes of UTF-8, not {group!r}")
        self.inbox: list[tuple[int, bytes]] = []
        self.wake = trio.Event()
        self.dropped = 0

    def send(self, peer: int, data: bytes) -> None:
        self.hub._queue(peer, encode_record(self.prefix, data))

    async def receive(self) -> list[tuple[int, bytes]]:
        while not self.inbox:
            await self.wake.wait()
            self.wake = trio.Event()
        batch, self.inbox = self.inbox, []
        return batch

    def _deliver(self, sender: int, data: bytes) -> None:
        if len(self.inbox) >= MAX_INBOX:
            self.dropped += 1
            return
        self.inbox.append((sender, data))
        self.wake.set()


class RaftHub:
    """Raft groups over ``links`` (a ``NodeLinks``, or anything with its ``node``, ``send``
    and ``on``); ``nodes``: every node of the cluster, this one included. Run ``run`` in a
    nursery (it sends what the groups queued)."""

    def __init__(self, links: Any, nodes: list[str]) -> None:
        self.links = links
        self.names = sorted(nodes)
        if links.node not in self.names:
            raise ValueError(f"{links.node} is not one of the nodes {self.names}")
        self.ids = {name: i for i, name in enumerate(self.names)}
        self.id = self.ids[links.node]
        self.members = list(range(len(self.names)))
        self._groups: dict[str, HubTransport] = {}
        self._pending: dict[int, list[bytes]] = {}
        self._wake = trio.Event()
        self.frames_sent = 0  # link frames (one per peer per flush)
        self.records_sent = 0
        self.dropped = 0  # records the links refused (down or full)
        links.on(CHANNEL, self._received)

    def name_of(self, member: int) -> str:
        return self.names[member]

    def transport(self, group: str) -> HubTransport:
        t = self._groups.get(group)
        if t is None:
            t = self._groups[group] = HubTransport(self, group)
        return t

    def _queue(self, peer: int, record: bytes) -> None:
        parts = self._pending.get(peer)
        if parts is None:
            self._pending[peer] = [record]
            self._wake.set()
        else:
            parts.append(record)

    def flush(self) -> None:
        """Send each peer's queued records as one link frame."""
        pending, self._pending = self._pending, {}
        for peer, parts in pending.items():
            self.records_sent += len(parts)
            if self.links.send(self.names[peer], CHANNEL, b"".join(parts)):
                self.frames_sent += 1
            else:
                self.dropped += len(parts)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await trio.lowlevel.cancel_shielded_checkpoint()  # the sender's whole Ready first
            self.flush()

    def _received(self, peer: str, payload: bytes) -> None:
        sender = self.ids.get(peer)
        if sender is None:
            return
        try:
            records = decode_records(payload)
        except HubFramingError as e:
            log.warning("a bad raft payload from %s: %s", peer, e)
            return
        groups = self._groups
        for group, message in records:
            t = groups.get(group)
            if t is not None:
                t._deliver(sender, message)
