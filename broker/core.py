"""The broker: virtual hosts, users, the store and the clock, with no protocol inside.

Protocol sessions hold a ``Broker`` and call into its virtual hosts. ``Broker.run`` is the
one task the core needs: it fires timers (TTL, queue expiry) and watches memory, raising the
alarm that makes sessions stop reading from publishers (AMQP ``connection.blocked``).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import trio

from .auth import AuthRegistry, User
from .config import BrokerConfig
from .profile import EngineProfile
from .recovery import recover as recover_snapshot
from .errors import NotAllowed
from .paging import MemoryBudget, arguments_paging_mode
from .store.base import Snapshot, Store
from .store.memory import MemoryStore
from .timers import Timers
from .vhost import VirtualHost

log = logging.getLogger("mqemu.broker")

MEMORY_CHECK_INTERVAL = 0.5


class Broker:
    def __init__(
        self,
        config: BrokerConfig | None = None,
        store: Store | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or BrokerConfig()
        # The emulated engine and version, chosen once (``profile``); sessions read it.
        self.profile = EngineProfile.build(self.config.engine, self.config.engine_version, self.config)
        self.engine = self.profile.name  # the same as profile.name, for code that reads it
        self.store = store or MemoryStore()
        self.clock = clock
        self.timers = Timers()
        self.auth: AuthRegistry = self.config.auth
        self.vhosts: dict[str, VirtualHost] = {}
        # Queues larger than memory: past this many bytes of bodies in memory, queues page
        # (``paging``); recovery loads bodies only up to it. None: no paging.
        limit = self.config.memory_budget_bytes()
        self.budget: MemoryBudget | None = None if limit is None else MemoryBudget(limit, self.vhosts)
        self.store.memory_budget = limit
        self.store.queue_paging = arguments_paging_mode
        for name in self.config.vhosts:
            self.add_vhost(name)
        self.memory_alarm = False
        # True while the store cannot write (disk full): blocks publishers like the memory
        # alarm, as RabbitMQ's disk alarm does.
        self.store_alarm = False
        self.store.on_write_alarm = self.set_store_alarm
        self.alarm_listeners: set[Callable[[bool], None]] = set()
        # Protocol records loaded from the store at start (namespace -> key -> bytes).
        self.records: dict[str, dict[str, bytes]] = {}
        self._wake = trio.Event()
        self.timers.on_earlier = self._wake_timer_task

    def add_vhost(self, name: str) -> VirtualHost:
        vh = self.vhosts.get(name)
        if vh is None:
            vh = self.vhosts[name] = VirtualHost(
                name, self.timers, self.clock, self.store, profile=self.profile,
            )
            vh.budget = self.budget
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

    def recover(self, snapshot: Snapshot) -> "Any":
        """Rebuild durable definitions and messages from the store (before listeners start)."""
        self.records = snapshot.records
        return recover_snapshot(self, snapshot)

    def set_store_alarm(self, on: bool) -> None:
        self.store_alarm = on
        self.check_memory()

    @property
    def alarm_reason(self) -> str:
        """Why publishers are blocked, in RabbitMQ's words for connection.blocked."""
        return getattr(self.store, "alarm_reason", "low on disk") if self.store_alarm else "low on memory"

    def check_memory(self) -> None:
        queued = self.budget.check() if self.budget is not None else self.queued_bytes()
        high = self.store_alarm or queued >= self.config.watermark_bytes()
        if high != self.memory_alarm:
            self.memory_alarm = high
            log.warning("%s alarm %s", self.alarm_reason.split()[-1],
                        "set: publishers blocked" if high else "cleared",
                        extra={"queued_bytes": self.queued_bytes()})
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
