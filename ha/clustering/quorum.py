"""Quorum queues across the cluster's nodes: one member per node, one Raft group per queue.

``ClusterQuorum`` is a node's replicator factory (``Broker.replicators``): whenever the node
makes a quorum queue (a client's declare here, or the metadata group applying another
node's, or a restart rebuilding one) it gives the queue a ``RaftReplicator`` whose group runs
over the node's ``RaftHub`` (group ``q/`` + 24 hex digits of the SHA-1 of vhost and name: the
same on every node, under the hub's 255 bytes), with its log in
``DATA_DIR/raft/quorum/<40 hex digits>`` (``FileStorage``; memory without a data dir). Member
ids are the hub's (the index of the node's name among the sorted names).

- **Forwarding.** A follower's entries travel to the leader on the link channel ``quorum``:
  ``group_length:u8 | group | payload`` (``RaftReplicator.forwarded`` takes the payload).
- **Placement** (``x-queue-leader-locator``): the member on the node where a client declared
  the queue campaigns at once and, until the node it places leads, asks the leader to hand
  over (``client-local``, the default: this node; ``balanced``: the reachable node that leads
  the fewest of this node's groups).
- **Node loss.** When a link to a peer drops, every group whose leader is that peer forgets
  it and the first of the members this node still reaches campaigns at once
  (``Runner.leader_down``, with a pre-vote: a peer that still hears the leader refuses), and every queue this node leads removes the consumers of the peers it does not
  reach (both link directions), so what they held comes back redelivered; also every
  ``CHECK`` seconds, which is also when each member removes its own node's consumers of an
  earlier process (``QuorumQueue.drop_stale``).
- **Restart.** The node's recovery makes a stored quorum queue a classic ``Queue``;
  ``rebuild`` (before the listeners open) replaces each by a ``QuorumQueue`` whose state comes
  from its Raft snapshot and log, then from the leader.
- **Deletion.** A deleted queue's replicator is closed: its tasks stop, its transport leaves the
  hub and its log directory is removed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from typing import Any, Callable

import trio

from mqemu.broker import policies
from mqemu.broker.quorum import QuorumQueue
from mqemu.ha.raft.records import Config
from mqemu.ha.raft.replicator import RaftReplicator
from mqemu.ha.raft.storage import FileStorage, MemoryStorage, Storage

log = logging.getLogger("mqemu.ha.clustering")

CHANNEL = "quorum"
# 50 ms ticks: an election after 0.5 to 1 s of silence (a silent partition, a paused node;
# 0.2 s, tried first, let a loaded machine's stalls depose healthy leaders); heartbeats every
# 0.1 s; a clean node death is seen by the links at once (``links_changed``).
TICK = 0.05
CONFIG = Config(election_ticks=10, heartbeat_ticks=2, snapshot_every=2000)
LEAD_CHANNEL = "quorum-lead"
PLACE_TRIES = 50  # looks (every WATCH) before a placement is given up
CHECK = 0.5  # seconds between the leader's checks of unreachable owners and stale tags
WATCH = 0.1  # seconds between looks at the groups' leaders (status, events)


def group_key(vhost: str, queue: str) -> str:
    return hashlib.sha1(f"{vhost}\0{queue}".encode()).hexdigest()


class _Member(RaftReplicator):
    """A queue's member on this node, with what the manager needs to run and stop it."""

    def __init__(self, manager: "ClusterQuorum", vhost: str, queue: str, directory: str | None,
                 *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.manager = manager
        self.vhost = vhost
        self.queue_name = queue
        self.directory = directory
        self.group = ""
        self.scope = trio.CancelScope()
        self.closed = False
        self.campaign_first = False
        self.local_declare = False
        self.place_target: int | None = None  # the member that should lead first (placement pending)
        self.placement_tries = 0

    def start(self, member: Any) -> None:
        super().start(member)
        if self.local_declare:  # the queue's constructor: its arguments are known now
            self.local_declare = False
            self.manager._place(self, getattr(member, "arguments", None) or {})

    def placement(self) -> dict[str, Any]:
        hub = self.manager.hub
        leader = self.runner.leader
        online = [n for n in hub.names if n == self.manager.node or self.manager.links.up(n)]
        return {"leader": hub.name_of(leader) if leader is not None else None, "members": list(hub.names),
                "online": online}

    def leader_reachable(self) -> bool:
        """This node and the group's leader reach each other both ways (the leader's own test
        for removing this node's consumers): only then does the queue register again a
        consumer the leader removed (``QuorumQueue.rejoin``), so a one-way partition does not
        make the leader remove and this node register it over and over."""
        leader = self.runner.leader
        if leader is None:
            return False
        return leader == self.runner.id or self.manager.links.up(self.manager.hub.name_of(leader))

    def close(self) -> None:
        """The queue was deleted: stop, and remove the log."""
        if not self.closed:
            self.closed = True
            self.manager._closed(self)


class ClusterQuorum:
    """A node's quorum queue members (see the module docstring)."""

    def __init__(self, broker: Any, links: Any, hub: Any, data_dir: str | None,
                 is_local_declare: Callable[[], bool] = lambda: True,
                 on_change: Callable[[], None] | None = None, tick: float = TICK, config: Config = CONFIG) -> None:
        self.broker = broker
        self.links = links
        self.hub = hub
        self.node = links.node
        self.data_dir = data_dir
        self.is_local_declare = is_local_declare
        self.on_change = on_change
        self.tick = tick
        self.config = config
        self.members: dict[tuple[str, str], _Member] = {}
        self._by_group: dict[bytes, _Member] = {}
        self._nursery: trio.Nursery | None = None
        self._waiting: list[_Member] = []
        self._leaders: dict[tuple[str, str], Any] = {}
        self._rebuilding = False
        links.on(CHANNEL, self._received)
        links.on(LEAD_CHANNEL, self._lead_asked)

    # -- the factory ------------------------------------------------------------------------
    def __call__(self, vhost: str, queue: str) -> RaftReplicator:
        key = group_key(vhost, queue)
        group = "q/" + key[:24]
        directory = os.path.join(self.data_dir, "raft", "quorum", key) if self.data_dir else None
        storage: Storage = FileStorage(directory) if directory else MemoryStorage()
        hub = self.hub
        old = self.members.pop((vhost, queue), None)
        if old is not None:
            old.close()
        member = _Member(self, vhost, queue, directory, hub.id, hub.members, storage, hub.transport(group),
                         tick=self.tick, config=self.config, forward=self._forwarder(group.encode()),
                         owner=self.node)
        member.group = group
        member.local_declare = not self._rebuilding and self.is_local_declare()
        self.members[(vhost, queue)] = member
        self._by_group[group.encode()] = member
        if self._nursery is not None:
            self._nursery.start_soon(self._run, member)
        else:
            self._waiting.append(member)
        return member

    def _place(self, member: _Member, arguments: dict[str, Any]) -> None:
        """A client declared the queue on this node: its member campaigns first, and with
        ``balanced`` hands the leadership on to the node that leads the fewest groups."""
        member.campaign_first = True
        member.place_target = self.hub.id
        if arguments.get("x-queue-leader-locator") == "balanced":
            member.place_target = self._least_leading()

    def _placing(self, member: _Member) -> None:
        """Until the placed member leads (for up to ``PLACE_TRIES`` looks): a leader that is
        this member hands over; another is asked to (``lead`` on the link channel
        ``quorum-lead``: ``group_length:u8 | group | target:u8``)."""
        target = member.place_target
        leader = member.runner.leader
        if target is None or leader is None:
            return
        member.placement_tries += 1
        if leader == target or member.placement_tries > PLACE_TRIES:
            member.place_target = None
        elif leader == self.hub.id:
            member.runner.transfer(target)
        else:
            group = member.group.encode()
            self.links.send(self.hub.name_of(leader), LEAD_CHANNEL, b"%c%s%c" % (len(group), group, target))

    def _lead_asked(self, peer: str, payload: bytes) -> None:
        n = payload[0] if payload else 0
        member = self._by_group.get(bytes(payload[1:1 + n])) if n else None
        if member is not None and len(payload) == n + 2 and member.runner.is_leader:
            member.runner.transfer(payload[n + 1])

    def _least_leading(self) -> int:
        reachable = [self.hub.ids[n] for n in self.hub.names if n == self.node or self.links.up(n)]
        counts = dict.fromkeys(reachable, 0)
        for m in self.members.values():
            leader = m.runner.leader
            if leader in counts:
                counts[leader] += 1
        return min(reachable, key=lambda i: (counts[i], i))

    def _forwarder(self, group: bytes) -> Callable[[int, bytes], None]:
        prefix = b"%c%s" % (len(group), group)
        links = self.links
        name_of = self.hub.name_of

        def forward(leader: int, payload: bytes) -> None:
            links.send(name_of(leader), CHANNEL, prefix + payload)
        return forward

    def _received(self, peer: str, payload: bytes) -> None:
        n = payload[0] if payload else 0
        member = self._by_group.get(bytes(payload[1:1 + n])) if n else None
        if member is not None:
            member.forwarded(payload[1 + n:])

    # -- tasks ------------------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            waiting, self._waiting = self._waiting, []
            for member in waiting:
                nursery.start_soon(self._run, member)
            nursery.start_soon(self._check)
            task_status.started()
            await self._watch()

    async def _run(self, member: _Member) -> None:
        with member.scope:
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(member.run)
                    if member.campaign_first:
                        member.runner.campaign()
            except Exception:
                log.exception("quorum queue %r in vhost %r: its member stopped", member.queue_name, member.vhost)
        if member.closed and member.directory:
            await trio.to_thread.run_sync(shutil.rmtree, member.directory, True)

    def _closed(self, member: _Member) -> None:
        member.scope.cancel()
        if self.members.get((member.vhost, member.queue_name)) is member:
            del self.members[(member.vhost, member.queue_name)]
        if self._by_group.get(member.group.encode()) is member:
            del self._by_group[member.group.encode()]
            self.hub._groups.pop(member.group, None)

    async def _watch(self) -> None:
        while True:
            await trio.sleep(WATCH)
            for m in list(self.members.values()):
                if m.place_target is not None:
                    self._placing(m)
            now = {k: (m.runner.leader, m.runner.member.term if m.runner.member else 0, m.leading)
                   for k, m in self.members.items()}
            if now != self._leaders:
                for k, v in now.items():
                    if self._leaders.get(k) != v:
                        log.info("quorum queue %r in vhost %r: leader %s, term %d%s", k[1], k[0],
                                 self.hub.name_of(v[0]) if v[0] is not None else None, v[1],
                                 " (this node)" if v[2] else "")
                self._leaders = now
                if self.on_change is not None:
                    self.on_change()

    async def _check(self) -> None:
        while True:
            await trio.sleep(CHECK)
            self.tidy()

    # -- node loss --------------------------------------------------------------------------
    def unreachable(self) -> set[str]:
        return {n for n in self.hub.names if n != self.node and not self.links.up(n)}

    def links_changed(self, peer: str, up: bool) -> None:
        if not up:
            dead = self.hub.ids.get(peer)
            # one survivor stands (the first of those this node reaches), the others only
            # forget the dead leader: two candidates at once would split the vote
            live = [self.hub.ids[n] for n in self.hub.names
                    if n != peer and (n == self.node or self.links.up(n))]
            campaign = bool(live) and live[0] == self.hub.id
            for m in self.members.values():
                if dead is not None and m.runner.leader == dead:
                    m.runner.leader_down(dead, campaign)
        self.tidy()

    def tidy(self) -> None:
        down = self.unreachable()
        for m in list(self.members.values()):
            q = m.member
            if isinstance(q, QuorumQueue) and not q.deleted:
                if down:
                    q.drop_owners(down)
                q.drop_stale()
                q.rejoin()

    # -- restart ----------------------------------------------------------------------------
    def rebuild(self) -> int:
        """Every recovered quorum queue that recovery made a classic queue becomes a
        ``QuorumQueue`` on its Raft log (the node's store keeps no message of it)."""
        n = 0
        self._rebuilding = True
        try:
            for vh in self.broker.vhosts.values():
                for name, q in list(vh.queues.items()):
                    if isinstance(q, QuorumQueue) or not q.settings.quorum or not q.durable:
                        continue
                    fresh = QuorumQueue(vh.queue_port(name, False), name, self(vh.name, name), q.arguments,
                                        q.settings)
                    vh.queues[name] = fresh  # type: ignore[assignment]
                    if vh.policies:  # its limits reach the machine through the log once it leads
                        policies.apply_to_queue(vh, fresh)
                    n += 1
        finally:
            self._rebuilding = False
        return n

    # -- status -----------------------------------------------------------------------------
    def status(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for (vhost, name), m in sorted(self.members.items()):
            r = m.runner
            leader = r.leader
            out[f"{vhost}/{name}" if vhost != "/" else name] = {
                "vhost": vhost, "name": name, "role": "leader" if m.leading else "follower",
                "leader": self.hub.name_of(leader) if leader is not None else None,
                "term": r.member.term if r.member is not None else 0, "members": list(self.hub.names)}
        return out

    def critical(self) -> list[tuple[str, str]]:
        """(vhost, queue) of the quorum queues that stopping this node would leave without a
        majority of online members (RabbitMQ's node-is-quorum-critical)."""
        online = 1 + sum(1 for n in self.hub.names if n != self.node and self.links.up(n))
        size = len(self.hub.names)
        if 2 * (online - 1) > size:
            return []
        return sorted(self.members)
