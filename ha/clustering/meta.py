"""The metadata group: the cluster's definitions replicated by one Raft group (``meta``) with a
member on every node, over the node's links (``raft.hub``).

Consistency (see ARCHITECTURE.md, "the metadata group"): a change is checked by the node's own
broker, refused at once when this node cannot reach the group's leader (the minority side of a
partition, or no leader elected), else applied to the node's own broker, then proposed; an
AMQP -ok waits (``when_spread``, at most ``SPREAD_WAIT``) until every node reached has applied it. Every node applies each committed entry to its own
broker; the proposer skips an entry of its own that a later change of its own to the same
definition has superseded. Proposals carry (proposer, sequence number); a follower forwards
them to the leader on the link channel ``meta`` and sends every unacknowledged one again, in
order, until it sees them applied; an entry whose number is not the proposer's next is skipped,
so each is applied once and in the proposer's order.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from typing import Any, Callable

import trio

from mqemu.broker.errors import InternalError
from mqemu.ha.raft.records import Config
from mqemu.ha.raft.runtime import NotLeader, Runner
from mqemu.ha.raft.storage import FileStorage, MemoryStorage

from .state import LOCAL_QUEUE_PREFIXES, Definitions, apply_access, apply_to_broker, object_key, sync_broker, to_json

log = logging.getLogger("mqemu.ha.clustering")

GROUP = "meta"
CHANNEL = "meta"  # a follower's proposals to the leader
APPLIED = "meta-applied"  # each node's applied index, to its peers after each apply pass (u64)
SPREAD_WAIT = 2.0  # a -ok waits at most this long for the peers reached to apply its change
SPREAD_CHECK = 0.05  # while -oks wait: how often links and deadlines are looked at
RECORDS = ("cluster", "meta-applied")  # the store record: the last entry this broker holds
RETRY = 0.3  # seconds between sends of the proposals not yet seen applied
# 50 ms ticks: a new leader 0.5 to 1 s after silence, heartbeats every 0.1 s (an idle member's
# wake-ups are its cost: 20 ticks/s); a snapshot (the definitions) every 1 000 changes
TICK = 0.05
CONFIG = Config(election_ticks=10, heartbeat_ticks=2, snapshot_every=1000, commit_notify=True)
WATCH = 0.1  # how often the leader's name is looked at (status, events)

_VERBS = {"exchange.declare": "declare exchange", "exchange.delete": "delete exchange",
          "queue.declare": "declare queue", "queue.delete": "delete queue", "bind": "bind to", "unbind": "unbind from"}


class MetadataUnavailable(InternalError):
    """The metadata store cannot take a change here (RabbitMQ 4 with Khepri answers a declare
    on a minority with a 541 INTERNAL_ERROR connection exception once its command times out;
    mqemu refuses at once)."""


class ClusterMeta:
    """One node's member of the metadata group, and the broker's ``definitions_hook``."""

    def __init__(self, broker: Any, links: Any, hub: Any, data_dir: str | None,
                 on_change: Callable[[dict[str, Any]], None] | None = None, config: Config = CONFIG,
                 tick: float = TICK) -> None:
        self.broker = broker
        self.links = links
        # The stand-ins of classic queues homed on other nodes (``remote.RemoteQueues``); None:
        # every node holds its own copy of each queue (a test's metadata group alone).
        self.remote: Any = None
        self.hub = hub
        self.node = links.node
        self.on_change = on_change
        self.state = Definitions()
        self.proposer = f"{self.node}/{os.urandom(4).hex()}"  # a new one per process
        self.seq = 0
        self.unacked: dict[int, bytes] = {}
        self.pending: dict[str, int] = {}  # definition -> the latest sequence number of ours about it
        self.applying = False
        raw = broker.records.get(RECORDS[0], {}).get(RECORDS[1])
        self.skip_until = int(raw) if raw else 0  # entries up to here are in the broker's own store
        self.applied_index = 0
        self._base_access: dict[str, Any] | None = None
        storage = FileStorage(os.path.join(data_dir, "raft", GROUP)) if data_dir else MemoryStorage()
        self.runner = Runner(hub.id, hub.members, storage, hub.transport(GROUP), self, tick=tick, config=config)
        self._wake = trio.Event()
        self._leader_seen: int | None = None
        # declare-ok after the spread: the peers' applied indexes as they last told, and the
        # waiting -oks ([our seq, its entry's index once applied here or 0, deadline, callback])
        self.peer_applied: dict[str, int] = {}
        self._spreading: list[list[Any]] = []
        self._spread_wake = trio.Event()
        self._report_due = False
        links.on(CHANNEL, self._forwarded)
        links.on(APPLIED, self._peer_applied)

    # -- the task ---------------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        from mqemu.broker import definitions as defs
        self._base_access = {k: v for k, v in defs.export_definitions(self.broker).items()
                             if k in ("users", "vhosts", "permissions", "topic_permissions", "parameters",
                                      "global_parameters", "policies")}
        async with trio.open_nursery() as nursery:
            await nursery.start(self.runner.run)
            self.broker.set_definitions_hook(self)
            nursery.start_soon(self._resend)
            nursery.start_soon(self._spread)
            task_status.started()
            await self._watch()

    async def wait_for_leader(self, timeout: float) -> bool:
        with trio.move_on_after(timeout):
            while self.runner.leader is None:
                await trio.sleep(TICK)
            return True
        return False

    async def _watch(self) -> None:
        while True:
            await trio.sleep(WATCH)
            leader = self.runner.leader
            if leader != self._leader_seen:
                self._leader_seen = leader
                self._wake.set()
                log.info("metadata group leader: %s", self.hub.name_of(leader) if leader is not None else None)
                if self.on_change is not None:
                    self.on_change(self.status())

    async def _resend(self) -> None:
        """Every ``RETRY`` seconds in which none of ours was applied (or at once when the
        leader changes), everything of ours not yet applied goes to the leader again."""
        last_first = 0
        while True:
            changed = False
            with trio.move_on_after(RETRY):
                await self._wake.wait()
                changed = True
            self._wake = trio.Event()
            if self.unacked:
                first = next(iter(self.unacked))
                if changed or first == last_first:
                    self._push(list(self.unacked.values()))
                last_first = first

    # -- declare-ok once every node reached has the change ----------------------------------
    @property
    def changes(self) -> int:
        """How many changes this node has proposed: a protocol compares it before and after a
        declaration to know whether its -ok has to wait (``when_spread``)."""
        return self.seq

    def when_spread(self, seq: int, callback: Callable[[], None]) -> None:
        """``callback()`` once our change ``seq`` is applied here and by every peer this node
        reaches both ways (each tells its applied index, ``APPLIED``), or after ``SPREAD_WAIT``
        (a peer that does not answer in time counts as unreachable), as RabbitMQ's Mnesia
        transaction has the change on every running node when it answers."""
        index = 0 if seq in self.unacked else self.applied_index  # not yet applied here, or already
        self._spreading.append([seq, index, trio.current_time() + SPREAD_WAIT, callback])
        self._spread_wake.set()

    def _peer_applied(self, peer: str, payload: bytes) -> None:
        (index,) = struct.unpack(">Q", payload)
        self.peer_applied[peer] = index
        if self._spreading:
            self._spread_wake.set()

    async def _spread(self) -> None:
        """Tells the peers our applied index after each apply pass, and answers the -oks
        waiting for the spread of their change."""
        while True:
            if self._spreading:
                with trio.move_on_after(SPREAD_CHECK):
                    await self._spread_wake.wait()
            else:
                await self._spread_wake.wait()
            self._spread_wake = trio.Event()
            if self._report_due:
                self._report_due = False
                data = struct.pack(">Q", self.applied_index)
                for peer in self.hub.names:
                    if peer != self.node:
                        self.links.send(peer, APPLIED, data)
            if self._spreading:
                self._answer_spread()

    def _answer_spread(self) -> None:
        now = trio.current_time()
        reached = [n for n in self.hub.names if n != self.node and self.links.up(n)]
        for n in list(self.peer_applied):
            if n not in reached:  # a link down: what it told may be from before a restart
                del self.peer_applied[n]
        floor = min((self.peer_applied.get(n, 0) for n in reached), default=None)
        keep = []
        for w in self._spreading:
            index = w[1]
            if (index and (floor is None or floor >= index)) or now >= w[2]:
                w[3]()
            else:
                keep.append(w)
        self._spreading = keep

    def status(self) -> dict[str, Any]:
        m = self.runner.member
        leader = self.runner.leader
        return {"group": GROUP, "leader": self.hub.name_of(leader) if leader is not None else None,
                "members": list(self.hub.names), "term": m.term if m is not None else 0,
                "applied": self.applied_index}

    # -- the hook ---------------------------------------------------------------------------
    def reachable(self) -> list[str]:
        """This node and the peers it has both link directions with."""
        return [n for n in self.hub.names if n == self.node or self.links.up(n)]

    def available(self) -> bool:
        """Changes are taken while this node reaches a majority of the nodes (so a leader can
        commit them, now or once an election in progress ends: they are sent again until applied)."""
        return self.runner.member is not None and 2 * len(self.reachable()) > len(self.hub.names)

    def changing(self, vhost: str | None, op: str, item: dict[str, Any]) -> None:
        if self.applying or _node_local(op, item):
            return
        internal = bool(item.get("internal"))
        if internal:  # the broker's own deletion (x-expires): the home node's speaks for the cluster
            home = self.state.queues.get((vhost or "", item["name"]), {}).get("node")
            if home != self.node:
                return
        if not self.available():
            if internal:
                log.warning("metadata store unavailable: %s of %r in vhost %r stays on this node", op,
                            item.get("name"), vhost)
                return
            if op == "access":
                self._undo_access()
            raise MetadataUnavailable(self._refusal(vhost, op, item))
        self.seq += 1
        if op == "access":
            entry: dict[str, Any] = {"op": op, "access": item}
        else:
            entry = {"op": op, "vhost": vhost, **to_json(item)}
            if op == "queue.delete":
                del entry["internal"]
            if op == "queue.declare":
                entry["node"] = self.node
        self.pending[object_key(entry)] = self.seq
        entry["o"], entry["s"] = self.proposer, self.seq
        data = json.dumps(entry, separators=(",", ":")).encode()
        self.unacked[self.seq] = data
        self._push([data])

    def _refusal(self, vhost: str | None, op: str, item: dict[str, Any]) -> str:
        why = (f"the metadata store is unavailable: {self.node} cannot reach a majority of the cluster "
               f"(reachable: {', '.join(self.reachable())} of {', '.join(self.hub.names)})")
        if op == "access":
            return f"failed to change users, vhosts, permissions or policies because {why}"
        name = item.get("name") or f"{item.get('destination_type')} '{item.get('destination')}' " \
                                   f"from exchange '{item.get('source')}'"
        what = f"'{name}'" if "name" in item else name
        return f"failed to {_VERBS.get(op, op)} {what} in vhost '{vhost}' because {why}"

    def _undo_access(self) -> None:
        """A refused management API change is already made here: the committed state comes back."""
        access = self.state.access if self.state.access is not None else self._base_access
        if access is not None:
            self.applying = True
            try:
                apply_access(self.broker, access)
            finally:
                self.applying = False

    def _push(self, datas: list[bytes]) -> None:
        leader = self.runner.leader
        if leader is None:
            return
        if leader == self.hub.id:
            try:
                self.runner.propose(datas)
            except NotLeader:
                pass
        else:
            self.links.send(self.hub.name_of(leader), CHANNEL, b"\n".join(datas))

    def _forwarded(self, peer: str, payload: bytes) -> None:
        if self.runner.is_leader:
            try:
                self.runner.propose(payload.split(b"\n"))
            except NotLeader:
                pass  # the proposer sends it again to whoever leads

    # -- the state machine ----------------------------------------------------------------
    def apply(self, index: int, term: int, data: bytes) -> None:
        self.applied_index = index
        if not self._report_due:
            self._report_due = True
            self._spread_wake.set()
        if data:
            try:
                op = json.loads(data)
                proposer, seq = op.pop("o"), op.pop("s")
            except (ValueError, KeyError, AttributeError, TypeError):
                log.error("metadata entry %d is not an operation: skipped", index)
                return
            if seq == self.state.seqs.get(proposer, 0) + 1:
                self.state.seqs[proposer] = seq
                if proposer == self.proposer and self._spreading:
                    for w in self._spreading:  # ours apply in order: each up to seq is in
                        if w[0] <= seq and not w[1]:
                            w[1] = index
                self.state.apply(op)
                if index > self.skip_until:
                    self._apply_here(op, proposer, seq)
                if op["op"].startswith("queue.") or op["op"] == "access":
                    self.refresh_homes()
        if index > self.skip_until:
            self.broker.store.put_record(*RECORDS, str(index).encode())
        elif index == self.skip_until:  # caught up with what this broker held when it stopped
            self._sync(remove=False)

    def _apply_here(self, op: dict[str, Any], proposer: str, seq: int) -> None:
        if proposer == self.proposer:
            for s in [s for s in self.unacked if s <= seq]:
                del self.unacked[s]
            key = object_key(op)
            latest = self.pending.get(key)
            if latest is not None and latest > seq:
                return  # a later change of ours to the same definition is what this node holds
            self.pending.pop(key, None)
        self.applying = True
        try:
            apply_to_broker(self.broker, op, self.stand_in)
        except Exception:  # a bug here must not stop the node: the entry is logged and skipped
            log.exception("definitions: %s in vhost %r failed to apply here", op.get("op"), op.get("vhost"))
        finally:
            self.applying = False

    def snapshot(self) -> bytes:
        return json.dumps({**self.state.dump(), "index": self.applied_index}, separators=(",", ":")).encode()

    def restore(self, data: bytes) -> None:
        d = json.loads(data)
        index = d.pop("index")
        self.state = Definitions.load(d)
        self.applied_index = index
        self._report_due = True
        self._spread_wake.set()
        if index >= self.skip_until:
            self._sync(remove=index > self.skip_until)
            self.broker.store.put_record(*RECORDS, str(index).encode())

    def _sync(self, remove: bool) -> None:
        self.applying = True
        try:
            sync_broker(self.broker, self.state, remove, self.stand_in)
        finally:
            self.applying = False
        self.refresh_homes()

    def stand_in(self, vh: Any, op: dict[str, Any], arguments: dict[str, Any]) -> bool:
        """A classic queue homed on another node: this node holds a stand-in for it
        (``remote.RemoteQueues.stand_in``), never a copy. Quorum queues and this node's own
        queues take the ordinary path."""
        home = op.get("node")
        if self.remote is None or home is None or home == self.node or op.get("type", "classic") != "classic" \
                or home not in self.remote.peers:
            return False
        self.remote.stand_in(vh, op, arguments)
        return True

    # -- queues whose home node is down -----------------------------------------------------
    def refresh_homes(self) -> None:
        """Each vhost's ``unavailable``: its durable queues whose home node this node cannot
        reach (both link directions up is reachable). Consumers of a queue that just became
        unavailable are cancelled (AMQP basic.cancel, as RabbitMQ tells consumers of a queue
        whose node went down); declare, consume and get answer 404 until the node is back."""
        down = {n for n in self.hub.names if n != self.node and not self.links.up(n)}
        for vh in self.broker.vhosts.values():
            now = {name: q["node"] for (v, name), q in self.state.queues.items()
                   if v == vh.name and q.get("node") in down and q.get("durable")
                   and q.get("type") != "quorum"} if down else {}  # a quorum queue has a member everywhere
            if now == vh.unavailable:
                continue
            newly = [name for name in now if name not in vh.unavailable]
            vh.unavailable = now
            for name in newly:
                queue = vh.queues.get(name)
                if queue is None:
                    continue
                for consumer in list(queue.consumers):
                    queue.remove_consumer(consumer)
                    consumer.owner.consumer_cancelled(consumer)
            if newly:
                log.warning("home node down: %d queues of vhost %r unavailable here", len(newly), vh.name,
                            extra={"queues": sorted(newly)[:20]})


def _node_local(op: str, item: dict[str, Any]) -> bool:
    if op.startswith("queue."):
        return str(item["name"]).startswith(LOCAL_QUEUE_PREFIXES)
    if op in ("bind", "unbind") and item["destination_type"] == "queue":
        return str(item["destination"]).startswith(LOCAL_QUEUE_PREFIXES)
    return False
