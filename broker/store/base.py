"""The store interface: what the core asks of persistence.

Writes are plain calls that queue work; a back-end commits them in batches off the event
loop (group commit). ``barrier`` returns a ticket covering every write made so far, and
``when_durable(ticket, callback)`` calls back once that ticket's batch is on disk: a
publisher confirm, STOMP receipt or MQTT PUBACK for persistent data waits for it.

Message ids are assigned by the store (``message.id``) when a message is first written.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from ..exchange import Binding, Exchange
    from ..message import Message
    from ..queue import Queue


@dataclass(slots=True)
class Snapshot:
    """What a store holds when it is opened: durable definitions and persistent messages."""

    exchanges: list[dict[str, Any]] = field(default_factory=list)
    queues: list[dict[str, Any]] = field(default_factory=list)
    bindings: list[dict[str, Any]] = field(default_factory=list)
    messages: dict[tuple[str, str], list["Message"]] = field(default_factory=dict)


class Store(ABC):
    #: False for a store that keeps no messages (the memory store): queues then skip the calls.
    keeps_messages: bool = True

    @abstractmethod
    async def open(self) -> Snapshot: ...

    @abstractmethod
    async def close(self) -> None:
        """Flush pending writes and release the data directory."""

    async def run(self, *, task_status: Any = None) -> None:
        """The back-end's flusher task, if it has one; runs until cancelled."""
        if task_status is not None:
            task_status.started()

    # Definitions (durable ones only are passed in).
    @abstractmethod
    def save_exchange(self, vhost: str, exchange: "Exchange") -> None: ...
    @abstractmethod
    def delete_exchange(self, vhost: str, name: str) -> None: ...
    @abstractmethod
    def save_queue(self, vhost: str, queue: "Queue") -> None: ...
    @abstractmethod
    def delete_queue(self, vhost: str, name: str) -> None: ...
    @abstractmethod
    def save_binding(self, vhost: str, binding: "Binding") -> None: ...
    @abstractmethod
    def delete_binding(self, vhost: str, binding: "Binding") -> None: ...

    # Persistent messages in durable queues.
    @abstractmethod
    def add_message(self, queue: "Queue", message: "Message") -> None: ...
    @abstractmethod
    def remove_message(self, queue: "Queue", message: "Message") -> None: ...

    # Durability tickets.
    @abstractmethod
    def barrier(self) -> int: ...
    @abstractmethod
    def when_durable(self, ticket: int, callback: Callable[[], None]) -> None: ...
