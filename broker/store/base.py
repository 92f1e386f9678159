"""The store interface: what the core asks of persistence.

Writes are plain calls that queue work; a back-end commits them in batches off the event
loop (group commit). ``barrier`` returns a ticket covering every write made so far, and
``when_durable(ticket, callback)`` calls back once that ticket's batch is on disk: a
publisher confirm, STOMP receipt or MQTT PUBACK for persistent data waits for it.

Messages are kept per queue, the queue named by its key, the value ``(vhost name, queue
name)`` (``QueueKey``); the store never keeps a queue object. ``add_message(key, message)``
returns the store's handle for that queue's copy (its message row id; None when nothing was
kept), which the queue keeps on its ``QueueEntry.store_id`` and passes back to
``remove_message(key, handle)``: the store never writes on the ``Message``. A message routed
to several durable queues (added to each in turn, in the one publish call that routes it) is
written once, with one row per queue holding it; ``remove_message`` drops one queue's row
and the message itself with the last one.

Records: protocol state that is not a queue (MQTT retained messages and session records,
STOMP durable subscriptions) goes through a small key-value API, ``put_record(namespace,
key, value)`` and ``delete_record(namespace, key)``. A namespace is a short name owned by one
protocol (e.g. ``"mqtt.retained"``); keys are strings, values bytes the protocol encodes
itself. Records are written in the same group commits as messages, so a ``barrier`` taken
after ``put_record`` covers it, and ``open`` returns them all in ``Snapshot.records``.

Lifecycle: ``open()`` once (returns the ``Snapshot``), then ``run()`` as a task for as long
as the node lives (the flusher, if the back-end has one), then ``close()`` once, which
commits what is pending and releases the data directory. Vhosts, users and permissions
come from the config file and are not stored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from ..exchange import Binding, Exchange
    from ..message import Message
    from ..queue import Queue

#: A queue as the store knows it: (vhost name, queue name).
QueueKey = tuple[str, str]


class StoreError(Exception):
    """The store cannot be used; the text names the data directory or file and the reason."""


class StoreLocked(StoreError):
    """Another running node holds the data directory."""


class StoreCorrupt(StoreError):
    """The database file is damaged or truncated; nothing was loaded from it."""


@dataclass(slots=True)
class Snapshot:
    """What a store holds when it is opened: durable definitions, persistent messages, records.

    ``exchanges``: dicts with vhost, name, type, durable, auto_delete, internal, arguments.
    ``queues``: dicts with vhost, name, durable, exclusive, auto_delete, arguments.
    ``bindings``: dicts with vhost, source, destination, destination_kind, routing_key,
    arguments (the binding's frozen argument tuple, ``exchange.freeze_arguments``). ``messages``: per (vhost, queue) the queue's messages in queue order,
    and ``message_ids`` the store's handle of each (same order). ``records``: namespace -> key
    -> value.
    """

    exchanges: list[dict[str, Any]] = field(default_factory=list)
    queues: list[dict[str, Any]] = field(default_factory=list)
    bindings: list[dict[str, Any]] = field(default_factory=list)
    messages: dict[tuple[str, str], list["Message"]] = field(default_factory=dict)
    message_ids: dict[tuple[str, str], "array"] = field(default_factory=dict)
    #: per (vhost, queue) the messages loaded as an index only (the queue was past the
    #: memory budget): ``PagedRows`` following the messages in ``messages``.
    paged: dict[tuple[str, str], "PagedRows"] = field(default_factory=dict)
    records: dict[str, dict[str, bytes]] = field(default_factory=dict)


@dataclass(slots=True)
class PagedRows:
    """A recovered queue's messages left on disk: ids, body sizes and per-message TTL in ms
    (-1: none), in queue order."""

    ids: "array"
    sizes: "array"
    ttls: "array"


class Store(ABC):
    #: False for a store that keeps no messages (the memory store): queues then skip the calls.
    keeps_messages: bool = True
    #: Set by the broker: called with True when the store cannot write (disk full, I/O
    #: error) and with False once it can again. The broker blocks publishers meanwhile.
    on_write_alarm: Callable[[bool], None] | None = None

    @abstractmethod
    async def open(self) -> Snapshot:
        """Take the data directory and load it. Raises StoreLocked or StoreCorrupt (or
        StoreError); on error nothing is held and close() need not be called."""

    @abstractmethod
    async def close(self, flush: bool = True) -> None:
        """Flush pending writes (unless ``flush`` is False: the directory is no longer ours)
        and release the data directory."""

    def lock_held(self) -> bool:
        """Whether the store still holds its data directory (always, for a store without one)."""
        return True

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
    def delete_queue(self, vhost: str, name: str) -> None:
        """Forget the queue and every message row it holds."""
    @abstractmethod
    def save_binding(self, vhost: str, binding: "Binding") -> None: ...
    @abstractmethod
    def delete_binding(self, vhost: str, binding: "Binding") -> None: ...

    # Persistent messages in durable queues.
    @abstractmethod
    def add_message(self, queue: QueueKey, message: "Message") -> int | None:
        """Keep message in queue; returns the handle of this copy (None: nothing kept)."""
    @abstractmethod
    def remove_message(self, queue: QueueKey, handle: int) -> None:
        """Queue settled its copy ``handle`` (ack, drop, dead-letter move, purge)."""

    # Protocol records (key-value, see the module docstring).
    @abstractmethod
    def put_record(self, namespace: str, key: str, value: bytes) -> None: ...
    @abstractmethod
    def delete_record(self, namespace: str, key: str) -> None: ...

    # Durability tickets.
    @abstractmethod
    def barrier(self) -> int:
        """A ticket covering every write made so far."""
    @abstractmethod
    def when_durable(self, ticket: int, callback: Callable[[], None]) -> None:
        """Call callback (on the event loop) once the ticket's writes are on disk; at once if
        they are. A callback never runs if the node stops first."""

    # Paging: bodies of queues past their memory budget (see ``pagefile``). A key is a
    # message's handle in the store (positive: a persistent message the queue already stored)
    # or a page-file key (negative).
    #: Set by the broker before ``open``: bytes of message bodies recovery may load into
    #: memory (None: load every body), and which queues may page
    #: (``queue_paging(arguments)`` -> "never", "budget" or "lazy").
    memory_budget: int | None = None
    queue_paging: Callable[[dict[str, Any]], str] | None = None

    @property
    def can_page(self) -> bool:
        """True while the store can take bodies (its paging task runs)."""
        return False

    def page_out(self, queue: QueueKey, message: "Message", handle: int | None) -> int:
        """Keep message's body on disk for queue; returns its key. ``handle``: what
        ``add_message`` returned when the queue stored it (None: not stored)."""
        raise NotImplementedError

    def page_in(self, queue: QueueKey, keys: "Sequence[int]",
                callback: "Callable[[list[Message | None]], None]") -> None:
        """Read the messages for keys off the event loop; callback gets them in key order
        (None for a key that is gone)."""
        raise NotImplementedError

    def page_discard(self, queue: QueueKey, keys: "Sequence[int]") -> None:
        """queue settled paged messages without reading them (purge, delete, drop)."""
        raise NotImplementedError

    def memory_held(self) -> int:
        """Bytes of message bodies the store holds in memory on their way to disk
        (uncommitted writes, the pager's backlog); counted by the memory alarm."""
        return 0
