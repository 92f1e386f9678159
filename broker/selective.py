"""Dispatch with selectors and message groups: the ActiveMQ engine's queue semantics.

Mixed into ``Queue``. Each ready entry, in order, goes to the first consumer with credit whose
selector matches it (and, with ``JMSXGroupID``, to its group's owner); entries nobody takes
stay where they are for later consumers. The plain loop in ``Queue.dispatch`` runs instead
whenever no consumer has a selector and the engine profile has no message groups.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from .message import QueueEntry

if TYPE_CHECKING:
    from .consumer import Consumer

_ALL_FULL = object()  # _pick's answer when no consumer can take anything

# How many entries that nobody takes a scan looks at before it stops: ActiveMQ dispatches from
# at most ``maxPageSize`` (200) paged-in messages, so entries behind 200 that match no consumer
# wait there too. It also bounds the selector evaluations one scan makes (each is bounded by
# the selector's own limits), so a consumer that subscribes again and again over a deep
# queue of messages it does not match cannot stall the node.
SCAN_WINDOW = 200


class SelectiveDispatch:
    def _dispatch_selective(self, new_entry: bool) -> None:
        """Dispatch with selectors and message groups (ActiveMQ queue semantics): each ready
        entry, in order, goes to the first consumer (by priority, round-robin) with credit
        whose selector matches and that may take its group; entries nobody takes stay, in
        order, and later entries may pass them. ``new_entry``: only the tail entry is new,
        so when the scan before found no taker for every other entry, try the tail alone."""
        if self._dispatching or self.deleted:
            return
        self._dispatching = True
        try:
            ready = self.ready
            if new_entry and self._stuck_version == self._version and self._stuck >= SCAN_WINDOW:
                return  # the new entry is behind a full window of entries nobody takes
            if (new_entry and self._stuck_version == self._version and self._stuck == len(ready) - 1
                    and type(ready) is deque):
                entry = ready[-1]
                if entry.expires_at is None or entry.expires_at >= self._clock():
                    consumer = self._pick(entry)
                    if consumer is None:
                        self._stuck += 1
                    elif consumer is not _ALL_FULL:
                        ready.pop()
                        self.bytes_ready -= entry.size
                        self._hand_over(consumer, entry)
                    return
            self._scan()
        finally:
            self._dispatching = False
        if self._paged is not None:
            self._page_in()

    def _scan(self) -> None:
        ready = self.ready
        kept: list[QueueEntry] = []
        verified = 0
        while ready:
            entry = ready.popleft()
            self.bytes_ready -= entry.size
            if entry.expires_at is not None and entry.expires_at < self._clock():
                self.counts.expired += 1
                self._settle_dropped([entry])
                self._dead_letter(self, [entry], "expired")
                continue
            consumer = self._pick(entry)
            kept_here = consumer is None or consumer is _ALL_FULL
            if kept_here:
                kept.append(entry)
                if consumer is _ALL_FULL:
                    break
                verified += 1
                if verified >= SCAN_WINDOW:
                    break
                continue
            self._hand_over(consumer, entry)
        for entry in reversed(kept):
            ready.appendleft(entry)
            self.bytes_ready += entry.size
        self._stuck = verified if verified == len(kept) else -1
        self._stuck_version = self._version

    def _hand_over(self, consumer: Consumer, entry: QueueEntry) -> None:
        if consumer.no_ack:
            self._settle(entry)
        else:
            consumer.unacked += 1
            self.unacked += 1
        self.counts.delivered += 1
        consumer.owner.deliver(consumer, entry)

    def _pick(self, entry: QueueEntry) -> Any:
        """The consumer entry goes to (its group taken or released), None when no consumer
        with credit may take it, _ALL_FULL when no consumer has credit."""
        consumers = self.consumers
        n = len(consumers)
        if n and self.settings.single_active_consumer:
            n = 1
        message = entry.message
        group = None
        if self._grouping:
            headers = message.properties.get("headers")
            if headers:
                group = headers.get("JMSXGroupID")
                if group is not None:
                    return self._pick_grouped(entry, str(group), _group_seq(headers.get("JMSXGroupSeq")), n)
        best = None
        any_credit = False
        start = self._rr
        for i in range(n):
            idx = (start + i) % n
            c = consumers[idx]
            if c.owner.blocked or (c.prefetch and c.unacked >= c.prefetch):
                continue
            any_credit = True
            if best is not None and c.priority <= best.priority:
                continue
            sel = c.selector
            if sel is None or sel.matches(message, entry):
                best, best_i = c, idx
        if best is None:
            return None if any_credit else _ALL_FULL
        self._rr = best_i + 1
        return best

    def _pick_grouped(self, entry: QueueEntry, group: str, seq: int, n: int) -> Any:
        """ActiveMQ message groups (Queue.assignMessageGroup): the first consumer to get a
        group owns it until it goes away; JMSXGroupSeq 1 lets any consumer take the group
        over, and a negative JMSXGroupSeq delivered to the owner closes the group."""
        owner = self._groups.get(group)
        if owner is not None and seq != 1:
            if owner.owner.blocked or (owner.prefetch and owner.unacked >= owner.prefetch):
                return None if any(not c.owner.blocked and not (c.prefetch and c.unacked >= c.prefetch)
                                   for c in self.consumers[:n]) else _ALL_FULL
            if owner.selector is not None and not owner.selector.matches(entry.message, entry):
                return None
            if seq < 0:
                del self._groups[group]
                self._version += 1
            return owner
        self._grouping = False  # pick as for an ungrouped entry
        try:
            chosen = self._pick(entry)
        finally:
            self._grouping = True
        if chosen is not None and chosen is not _ALL_FULL:
            # ActiveMQ: a closing message with no owner still assigns the group.
            self._groups[group] = chosen
        return chosen


def _group_seq(value: Any) -> int:
    """JMSXGroupSeq as a number (STOMP sends a string); 0 when absent or not a number."""
    if value is None or isinstance(value, bool):
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
