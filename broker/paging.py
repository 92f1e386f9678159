"""Queues larger than memory: the index a queue keeps of messages whose bodies are on disk,
and the node's memory budget.

A queue under its budget keeps every ready entry in memory (``Queue.ready``, a deque). Past
it, new messages go to the *paged tail*: the store keeps the body (``Store.page_out``) and
the queue keeps a ``PagedIndex``, chunks of compact arrays (store key, expiry; about 16
bytes a message, no Python object per message). Order is kept: the paged tail always
follows every in-memory entry, and while a queue has a paged tail every new message joins
it. When the in-memory head runs low (fewer than ``PAGE_BATCH`` entries and less than
``PAGE_BATCH_BYTES``) the queue asks the store for the next chunk (``Store.page_in``); the
store reads it in a worker thread and the callback appends the entries and dispatches.
When the tail is empty again the queue is back to plain memory.

Which queues page: classic and quorum queues without ``x-max-priority``, ``x-max-length`` or
``x-max-length-bytes`` (a priority queue or a queue that drops its head would need its paged
entries in memory). ``x-queue-mode: lazy`` pages from the first message (except one a
consumer takes at once); other queues page past the node's budget (``MemoryBudget``).
"""

from __future__ import annotations

from array import array
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any, Iterable

from .message import NEVER_MS, Message, QueueEntry

if TYPE_CHECKING:
    from .queue_args import QueueSettings

PAGE_BATCH = 512  # entries per chunk: one read from the store
PAGE_BATCH_BYTES = 1 << 20  # a chunk closes once its bodies reach this many bytes
NEVER = 1 << 62  # Queue._page_at of a queue that never pages
_INF = float("inf")


def paging_mode(settings: "QueueSettings") -> str:
    """"never", "lazy" or "budget" (pages past the node's memory budget)."""
    if settings.max_priority or settings.max_length is not None or settings.max_length_bytes is not None:
        return "never"
    return "lazy" if settings.queue_mode == "lazy" else "budget"


def arguments_paging_mode(arguments: dict[str, Any]) -> str:
    """paging_mode for a stored queue's arguments (recovery); "never" if they do not parse."""
    from .queue_args import QueueSettings
    try:
        return paging_mode(QueueSettings.parse("", "", arguments))
    except Exception:
        return "never"


class Chunk:
    """Consecutive paged messages, read back together: store keys, expiry deadlines (None
    until one message has one; inf = none) and their body bytes."""

    __slots__ = ("keys", "expires", "nbytes", "redelivered")

    def __init__(self, redelivered: bool = False) -> None:
        self.keys = array("q")
        self.expires: array | None = None
        self.nbytes = 0
        self.redelivered = redelivered  # recovered messages: all flagged redelivered

    def __len__(self) -> int:
        return len(self.keys)

    def expiry(self, i: int) -> float | None:
        exp = self.expires
        if exp is None:
            return None
        t = exp[i]
        return None if t == _INF else t


class PagedIndex:
    """A queue's paged tail: chunks in order, plus the chunk being read (``loading``)."""

    __slots__ = ("chunks", "count", "nbytes", "loading")

    def __init__(self) -> None:
        self.chunks: deque[Chunk] = deque()
        self.count = 0  # messages in chunks and in the chunk being read
        self.nbytes = 0
        self.loading: Chunk | None = None

    def append(self, key: int, size: int, expires_at: float | None) -> None:
        chunks = self.chunks
        c = chunks[-1] if chunks else None
        if c is None or c.redelivered or len(c.keys) >= PAGE_BATCH or c.nbytes >= PAGE_BATCH_BYTES:
            c = Chunk()
            chunks.append(c)
        if expires_at is not None:
            if c.expires is None:
                c.expires = array("d", [_INF]) * len(c.keys)
            c.expires.append(expires_at)
        elif c.expires is not None:
            c.expires.append(_INF)
        c.keys.append(key)
        c.nbytes += size
        self.count += 1
        self.nbytes += size

    def add_chunk(self, chunk: Chunk) -> None:
        self.chunks.append(chunk)
        self.count += len(chunk.keys)
        self.nbytes += chunk.nbytes

    def keys(self) -> list[int]:
        return [k for c in self.chunks for k in c.keys]


class PagedDeque(deque):
    """``Queue.ready`` while the queue has a paged tail: the in-memory head entries.

    ``len()`` counts every ready message, paged ones included (it is the message count
    protocols report); truth, indexing and iteration are about the in-memory head only,
    which is what every loop of ``Queue`` works on.
    """

    __slots__ = ("index",)

    def __init__(self, entries: Any, index: PagedIndex) -> None:
        super().__init__(entries)
        self.index = index

    def __len__(self) -> int:
        return deque.__len__(self) + self.index.count

    def __bool__(self) -> bool:
        return deque.__len__(self) > 0

    def in_memory(self) -> int:
        return deque.__len__(self)


class MemoryBudget:
    """Bytes of ready message bodies the node's queues may keep in memory, together.

    A queue under budget appends in memory up to its ceiling (``Queue._page_at``); at the
    ceiling it asks ``grant`` for more: half of what the node has left, so a queue checks
    back a handful of times while it fills and many queues share what is left. When less
    than ``min_grant`` is left the budget is full: queues past their ceiling page until
    ``check`` (every 0.5 s, with the memory alarm) finds room again.
    """

    def __init__(self, limit: int, vhosts: dict[str, Any]) -> None:
        self.limit = max(0, limit)
        self.vhosts = vhosts
        self.min_grant = max(64 << 10, min(1 << 20, self.limit // 16))
        self.full = self.limit <= self.min_grant

    def in_memory(self) -> int:
        return sum(q.bytes_ready for vh in self.vhosts.values() for q in vh.queues.values())

    def grant(self, in_memory: int) -> int | None:
        """A queue holding ``in_memory`` bytes reached its ceiling: its new ceiling if the
        node has room (the queue raises it itself), None: the queue should page."""
        if self.full:
            return None
        free = self.limit - self.in_memory()
        if free <= self.min_grant:
            self.full = True
            return None
        return in_memory + free // 2

    def check(self, total: int | None = None) -> int:
        """The periodic look: clear or set ``full``; past the limit, make every queue in
        memory ask again before it grows. ``total``: the bytes in memory if the caller
        has just counted them. Returns the bytes in memory."""
        if total is None:
            total = self.in_memory()
        self.full = total >= self.limit - self.min_grant
        if total > self.limit:
            for vh in self.vhosts.values():
                for q in vh.queues.values():
                    lower = getattr(q, "lower_ceiling", None)  # a quorum queue never pages
                    if lower is not None:
                        lower()
        return total


class PagingQueue:
    """Mixed into ``Queue``: the paged tail of a queue past its memory budget, and what the
    store hands back. Its commands: ``paged_in`` (the store read a chunk), ``lower_ceiling``
    (the budget is spent), ``recovered`` and ``recovered_paged`` (recovery); paging out is
    part of ``enqueue``."""

    @property
    def bytes_paged(self) -> int:
        """Bytes of ready bodies the store keeps on disk for this queue."""
        return self._paged.nbytes if self._paged is not None else 0

    @property
    def messages_paged(self) -> int:
        return self._paged.count if self._paged is not None else 0

    def _page_out(self, entry: QueueEntry) -> bool:
        """publish's slow path, past the queue's ceiling: True when entry went to the paged
        tail, False when it stays in memory (budget granted, or a consumer takes it now)."""
        pg = self._paged
        if pg is None:
            mode = self._paging
            if mode == "never":
                return False
            if mode == "budget":
                ceiling = self.port.budget.grant(self.bytes_ready)
                if ceiling is not None:
                    self._page_at = ceiling
                    return False
            if not self.ready and self._consumer_ready():
                return False  # delivered at once: never worth a write
            if not self.port.can_page():
                # No paging task (a core without a running store): keep it in memory and
                # look again a MiB later.
                self._page_at = self.bytes_ready + PAGE_BATCH_BYTES
                return False
            pg = self._paged = PagedIndex()
            self.ready = PagedDeque(self.ready, pg)
            self._page_at = -1  # every publish joins the tail while there is one
        key = self.port.page_out(entry.message, entry.store_id)
        pg.append(key, entry.size, entry.expires_at)
        if pg.loading is None:
            self._page_in()
        return True

    def _consumer_ready(self) -> bool:
        for c in self.consumers:
            if not c.owner.blocked and (c.prefetch == 0 or c.unacked < c.prefetch):
                return True
        return False

    def _page_in(self) -> None:
        """Ask the store for the next chunk when the in-memory head runs low."""
        pg = self._paged
        if (pg is None or pg.loading is not None or not pg.chunks or self.deleted
                or self.bytes_ready >= PAGE_BATCH_BYTES or self.ready.in_memory() >= PAGE_BATCH):
            return
        chunk = pg.loading = pg.chunks.popleft()
        self.port.page_in(chunk.keys, partial(self.paged_in, chunk))

    def paged_in(self, chunk: Chunk, messages: list[Message | None]) -> None:
        """The paged_in command: the store read chunk; append its entries to the in-memory
        head and dispatch."""
        pg = self._paged
        if pg is None or pg.loading is not chunk or self.deleted:
            # Purged or deleted while it was read: settle what came back.
            if self._persist and not self.deleted:
                remove = self._store_remove
                for key, m in zip(chunk.keys, messages):
                    if m is not None and key > 0:  # a stored row (negative: the page file's)
                        remove(key)
            return
        pg.loading = None
        pg.count -= len(chunk.keys)
        pg.nbytes -= chunk.nbytes
        ready = self.ready
        redelivered = chunk.redelivered
        size = 0
        keys = chunk.keys
        for i, m in enumerate(messages):
            if m is None:
                continue  # its row is gone (cannot happen while the queue holds it)
            entry = QueueEntry(m, chunk.expiry(i))
            entry.redelivered = redelivered
            key = keys[i]
            if key > 0:  # the store's row for a persistent message: its handle
                entry.store_id = key
            ready.append(entry)
            size += entry.size
        self.bytes_ready += size
        if not pg.chunks:
            self._leave_paging()
        if self.ready and self.ready[0].expires_at is not None:
            self.expire(self._clock())
        if self.consumers:
            self.dispatch()
        elif self._paged is not None:
            self._page_in()

    def _leave_paging(self) -> None:
        """The paged tail is empty: back to a plain deque in memory."""
        self._paged = None
        self.ready = deque(self.ready)
        self._page_at = self._open_gate()

    def _open_gate(self) -> int:
        """publish's slow path starts at _page_at bytes in memory: at once (-1) for a queue
        with a length limit, 0 (ask the budget at the first message) for one that pages."""
        s = self.settings
        if s.max_length is not None or s.max_length_bytes is not None:
            return -1
        return NEVER if self._paging == "never" else 0

    def lower_ceiling(self) -> None:
        """The node is past its budget: a queue that keeps messages in memory asks the
        budget again before it grows."""
        if self._page_at != NEVER and self._page_at > self.bytes_ready:
            self._page_at = self.bytes_ready

    def recovered(self, messages: "list[Message]", ids: "list[int] | None", now: float) -> int:
        """Recovery: messages the store kept for this queue (``ids``: its handle for each, None
        from a store that gives none) join the ready entries, flagged redelivered, their TTL
        counted from now. Returns how many."""
        ttl = self.settings.message_ttl
        ready = self.ready
        size = 0
        for i, msg in enumerate(messages):
            msg_ttl = ttl
            exp = msg.properties.get("expiration") if msg.properties else None
            if exp is not None:
                try:
                    per_msg = int(exp)
                    if (msg_ttl is None or per_msg < msg_ttl) and per_msg < NEVER_MS:
                        msg_ttl = per_msg
                except (TypeError, ValueError):
                    pass
            entry = QueueEntry(msg, None if msg_ttl is None else now + msg_ttl / 1000.0)
            entry.redelivered = True
            if ids is not None:
                entry.store_id = ids[i]
            ready.append(entry)
            size += entry.size
        self.bytes_ready += size
        if ready and ready[0].expires_at is not None:
            self.expire(now)
        return len(messages)

    def recovered_paged(self, chunks: Iterable[Chunk]) -> None:
        """Recovery: chunks of messages left on disk follow the in-memory entries; the head
        is read at once (consumers and basic.get find it in memory)."""
        pg = self._paged
        if pg is None:
            pg = self._paged = PagedIndex()
            self.ready = PagedDeque(self.ready, pg)
            self._page_at = -1
        for c in chunks:
            pg.add_chunk(c)
        if not pg.count:
            self._leave_paging()
        self._page_in()
