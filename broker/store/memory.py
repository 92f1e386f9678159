"""The memory store: nothing outlives the process, so every write is durable at once.

Queues past their memory budget page bodies to a scratch SQLite file in a temporary
directory (``pagefile.Pager``), made on first use and deleted at close.
"""

from __future__ import annotations

from typing import Any, Callable

import trio

from .base import Snapshot, Store
from .pagefile import Pager


class MemoryStore(Store):
    keeps_messages = False

    def __init__(self) -> None:
        self.definitions: dict[tuple[str, str, Any], Any] = {}
        # Protocol records are kept so a protocol can use one code path with either store.
        self.records: dict[str, dict[str, bytes]] = {}
        self.pager = Pager()
        self.pager.on_backlog = self._pager_alarm

    async def open(self) -> Snapshot:
        return Snapshot()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The pager's task (nothing else to flush)."""
        await self.pager.run(task_status=task_status)

    async def close(self, flush: bool = True) -> None:
        self.pager.close()

    # -- paging -------------------------------------------------------------------------
    def _pager_alarm(self, on: bool) -> None:
        if self.on_write_alarm is not None:
            self.on_write_alarm(on)

    @property
    def alarm_reason(self) -> str:
        return "low on disk" if self.pager.failing else "low on memory"

    def memory_held(self) -> int:
        return self.pager.backlog_bytes

    @property
    def can_page(self) -> bool:
        return self.pager.running

    def page_out(self, queue, message, handle) -> int:
        return self.pager.put(message)

    def page_in(self, queue, keys, callback) -> None:
        self.pager.read(keys, callback)

    def page_discard(self, queue, keys) -> None:
        self.pager.discard(keys)

    def save_exchange(self, vhost, exchange) -> None:
        self.definitions[("exchange", vhost, exchange.name)] = exchange

    def delete_exchange(self, vhost, name) -> None:
        self.definitions.pop(("exchange", vhost, name), None)

    def save_queue(self, vhost, queue) -> None:
        self.definitions[("queue", vhost, queue.name)] = queue

    def delete_queue(self, vhost, name) -> None:
        self.definitions.pop(("queue", vhost, name), None)

    def save_binding(self, vhost, binding) -> None:
        self.definitions[("binding", vhost, binding)] = binding

    def delete_binding(self, vhost, binding) -> None:
        self.definitions.pop(("binding", vhost, binding), None)

    def add_message(self, queue, message) -> None:
        return None

    def remove_message(self, queue, handle) -> None:
        pass

    def put_record(self, namespace: str, key: str, value: bytes) -> None:
        self.records.setdefault(namespace, {})[key] = bytes(value)

    def delete_record(self, namespace: str, key: str) -> None:
        self.records.get(namespace, {}).pop(key, None)

    def barrier(self) -> int:
        return 0

    def when_durable(self, ticket: int, callback: Callable[[], None]) -> None:
        callback()
