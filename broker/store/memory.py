"""The memory store: nothing outlives the process, so every write is durable at once."""

from __future__ import annotations

from typing import Any, Callable

from .base import Snapshot, Store


class MemoryStore(Store):
    keeps_messages = False

    def __init__(self) -> None:
        self.definitions: dict[tuple[str, str, Any], Any] = {}
        # Protocol records are kept so a protocol can use one code path with either store.
        self.records: dict[str, dict[str, bytes]] = {}

    async def open(self) -> Snapshot:
        return Snapshot()

    async def close(self) -> None:
        pass

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
        pass

    def remove_message(self, queue, message) -> None:
        pass

    def put_record(self, namespace: str, key: str, value: bytes) -> None:
        self.records.setdefault(namespace, {})[key] = bytes(value)

    def delete_record(self, namespace: str, key: str) -> None:
        self.records.get(namespace, {}).pop(key, None)

    def barrier(self) -> int:
        return 0

    def when_durable(self, ticket: int, callback: Callable[[], None]) -> None:
        callback()
