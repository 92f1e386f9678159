"""The broker: virtual hosts, users, the store and the clock, with no protocol inside.

Protocol sessions hold a ``Broker`` and call into its virtual hosts. ``Broker.run`` is the
one task the core needs: it fires timers (TTL, queue expiry) and watches memory, raising the
alarm that makes sessions stop reading from publishers (AMQP ``connection.blocked``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import trio

from .auth import AuthRegistry, User
from .config import BrokerConfig
from .definition_hook import DefinitionHook
from .profile import EngineProfile
from .recovery import recover as recover_snapshot
from .errors import NotAllowed
from .paging import MemoryBudget, arguments_paging_mode
from .store.base import Snapshot, Store
from .store.memory import MemoryStore
from .timers import Timers
from .vhost import VirtualHost

if TYPE_CHECKING:
    from .quorum_replication import ReplicatorFactory

log = logging.getLogger("mqemu.broker")

MEMORY_CHECK_INTERVAL = 0.5
INDEX_BYTES = 16  # memory per paged message: its place in its queue's index (paging.Chunk)
T = TypeVar("T")


class Broker:
    def __init__(
        self,
        config: BrokerConfig | None = None,
        store: Store | None = None,
        clock: Callable[[], float] = time.monotonic,
        replicators: "ReplicatorFactory | None" = None,
    ) -> None:
        self.config = config or BrokerConfig()
        # (vhost, queue) -> the Replicator of a new quorum queue (``quorum_replication``);
        # None (one node): quorum queues are classic queues with quorum delivery counts.
        self.replicators = replicators
        # The emulated engine and version, chosen once (``profile``); sessions read it.
        self.profile = EngineProfile.build(self.config.engine, self.config.engine_version, self.config)
        self.engine = self.profile.name  # the same as profile.name, for code that reads it
        self.store = store or MemoryStore()
        self.clock = clock
        self.timers = Timers()
        self.auth: AuthRegistry = self.config.auth
        self.auth.simple = self.profile.simple_authentication  # whose login and authorisation rules
        self.vhosts: dict[str, VirtualHost] = {}
        # A cluster member's hook for definition changes (``definition_hook``); None alone.
        self.definitions_hook: DefinitionHook | None = None
        # Queues larger than memory: past this many bytes of bodies in memory, queues page
        # (``paging``); recovery loads bodies only up to it. None: no paging.
        limit = self.config.memory_budget_bytes()
        self.budget: MemoryBudget | None = None if limit is None else MemoryBudget(limit, self.vhosts)
        self.store.memory_budget = limit
        self.store.queue_paging = arguments_paging_mode
        for name in self.config.vhosts:
            self.add_vhost(name)
        self.memory_alarm = False
        self._alarm_name = "memory"  # which alarm is on: "memory" or "disk" (for the log line)
        self._alarm_flow = False  # it is the store's back-pressure only (logged at debug)
        #: bytes the last memory check counted (``memory_used``)
        self.memory_in_use = 0
        #: Sessions whose outbound buffer is past its high-water mark (a client that does not
        #: read): the memory check counts their buffers. Sessions add and remove themselves
        #: as they cross the mark, so the check visits only these.
        self.held_outbound: set = set()
        #: Sessions holding a partial frame or body past ``HELD_INPUT_MIN`` (they add and
        #: remove themselves at the end of each read); the check adds their ``input_held()``.
        self.held_input: set = set()
        #: deliveries a protocol dropped for a client that does not read (MQTT QoS 0)
        self.messages_dropped = 0
        # True while the store cannot write (disk full): blocks publishers like the memory
        # alarm, as RabbitMQ's disk alarm does.
        self.store_alarm = False
        self.store.on_write_alarm = self.set_store_alarm
        self.alarm_listeners: set[Callable[[bool], None]] = set()
        # Protocol records loaded from the store at start (namespace -> key -> bytes).
        self.records: dict[str, dict[str, bytes]] = {}
        # State a protocol keeps per node (MQTT: sessions by client id, retained messages),
        # by protocol name; the core never looks inside (``protocol_state``).
        self._protocol_state: dict[str, Any] = {}
        # What a RabbitMQ definitions file holds that the core does not act on, kept for the
        # next export (``definitions``): vhost descriptions and tags, topic permissions,
        # runtime and global parameters.
        self.vhost_metadata: dict[str, dict[str, Any]] = {}
        self.topic_permissions: list[dict[str, Any]] = []
        self.parameters: list[dict[str, Any]] = []
        self.global_parameters: list[dict[str, Any]] = []
        self._wake = trio.Event()
        self.timers.on_earlier = self._wake_timer_task

    def set_definitions_hook(self, hook: DefinitionHook | None) -> None:
        """Every vhost, and every one made later, tells ``hook`` of its definition changes."""
        self.definitions_hook = hook
        for vh in self.vhosts.values():
            vh.definitions_hook = hook

    def add_vhost(self, name: str) -> VirtualHost:
        vh = self.vhosts.get(name)
        if vh is None:
            vh = self.vhosts[name] = VirtualHost(
                name, self.timers, self.clock, self.store, profile=self.profile,
            )
            vh.budget = self.budget
            vh.definitions_hook = self.definitions_hook
            vh.replicators = self.replicators
            if self.auth.deny_subscribe:  # topics no one may read reach no one (AuthRegistry.check_topic)
                vh.exchanges["amq.topic"].hide_keys(self.auth.topic_unreadable)
        return vh

    def open_vhost(self, user: User, name: str) -> VirtualHost:
        """The vhost a connection opens. Raises NotAllowed (absent) or AccessRefused."""
        vh = self.vhosts.get(name)
        if vh is None:
            raise NotAllowed(f"vhost {name} not found")
        self.auth.check_vhost(user, name)
        return vh

    # -- memory alarm -------------------------------------------------------------------
    def queued_bytes(self) -> int:
        """Bytes of ready message bodies in memory (paged ones, on disk, do not count)."""
        return sum(q.bytes_ready for vh in self.vhosts.values() for q in vh.queues.values())

    def memory_used(self) -> tuple[int, int]:
        """What the memory alarm counts, as (ready bodies in memory, everything else): the
        paged queues' indexes, bodies the store holds on their way to disk (the pager's
        backlog, uncommitted writes), the outbound buffers of clients that do not read
        (what they hold and what their writer is sending) and large partial frames and
        message bodies received."""
        ready = paged = 0
        for vh in self.vhosts.values():
            for q in vh.queues.values():
                ready += q.bytes_ready
                if q._paged is not None:
                    paged += q._paged.count
        outbound = sum(s.outbound_bytes + s.sending_bytes for s in self.held_outbound)
        partial = sum(s.input_held() for s in self.held_input)
        return ready, paged * INDEX_BYTES + self.store.memory_held() + outbound + partial

    def protocol_state(self, name: str, factory: Callable[[], T]) -> T:
        """The state protocol ``name`` keeps for this node, made by ``factory`` on first use.
        Nodes in one process (tests) so keep separate state; the core never looks inside."""
        state = self._protocol_state.get(name)
        if state is None:
            state = self._protocol_state[name] = factory()
        return state

    def recover(self, snapshot: Snapshot) -> "Any":
        """Rebuild durable definitions and messages from the store (before listeners start)."""
        self.records = snapshot.records
        report = recover_snapshot(self, snapshot)
        self.declare_destinations()
        return report

    def declare_destinations(self) -> None:
        """The destinations the config makes at start (``activemq.xml``'s ``destinations``):
        durable queues in the default vhost; topics need no declaration, but count as
        existing for the authorization entries' ``admin``."""
        vh = self.vhosts.get("/")
        for kind, name in self.config.destinations:
            if kind == "topic":
                self.auth._created_topics.add(name)
            elif vh is not None and name not in vh.queues:
                vh.declare_queue(name, durable=True)

    def set_store_alarm(self, on: bool) -> None:
        self.store_alarm = on
        self.check_memory()

    @property
    def alarm_reason(self) -> str:
        """Why publishers are blocked, in RabbitMQ's words for connection.blocked."""
        return getattr(self.store, "alarm_reason", "low on disk") if self.store_alarm else "low on memory"

    def check_memory(self) -> None:
        """Set or clear the alarm (every MEMORY_CHECK_INTERVAL, and when the store's alarm
        changes); listeners (sessions) block or resume their publishers."""
        ready, other = self.memory_used()
        if self.budget is not None:
            self.budget.check(ready)
        used = self.memory_in_use = ready + other
        over = used >= self.config.watermark_bytes()
        high = self.store_alarm or over
        if high and self.memory_alarm and (over or not self.store_alarm):
            self._alarm_name, self._alarm_flow = "memory", False  # memory holds it now
        if high != self.memory_alarm:
            self.memory_alarm = high
            if high:
                self._alarm_name = self.alarm_reason.split()[-1]
                # The store's back-pressure (its backlog past its bound, memory under the
                # watermark) comes and goes with a flood: flow control, logged at debug.
                self._alarm_flow = self._alarm_name == "memory" and not over
            log.log(logging.DEBUG if self._alarm_flow else logging.WARNING, "%s alarm %s", self._alarm_name,
                    "set: publishers blocked" if high else "cleared",
                    extra={"memory_used": used, "ready_bytes": ready})
            for listener in list(self.alarm_listeners):
                listener(high)

    # -- the core's task ----------------------------------------------------------------
    def _wake_timer_task(self) -> None:
        self._wake.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Fire timers and watch memory until cancelled."""
        task_status.started()
        next_memory_check = self.clock()
        while True:
            now = self.clock()
            self.timers.run_due(now)
            if now >= next_memory_check:
                self.check_memory()
                next_memory_check = now + MEMORY_CHECK_INTERVAL
            deadline = self.timers.next_deadline()
            wake_at = next_memory_check if deadline is None else min(deadline, next_memory_check)
            self._wake = trio.Event()
            with trio.move_on_after(max(0.0, wake_at - self.clock())):
                await self._wake.wait()
