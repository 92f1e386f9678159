"""``VirtualHost.publish_safe`` returns the core's promise of when a message is safe (on disk
for a durable classic queue), and the protocols wait for it instead of asking the store.
A store whose batches the test commits by hand shows what waits and what does not."""

from __future__ import annotations

from typing import Callable

import pytest

from mqemu.broker.core import Broker
from mqemu.broker.message import Message
from mqemu.broker.promise import AllOf, Promise, StoreWrites, both
from mqemu.broker.store.memory import MemoryStore

pytestmark = pytest.mark.timeout(10)

PERSISTENT = {"delivery_mode": 2}


class BatchStore(MemoryStore):
    """Keeps messages; a batch is on disk only when the test calls ``commit``."""

    keeps_messages = True

    def __init__(self) -> None:
        super().__init__()
        self.ticket = 1  # the open batch
        self.durable = 0
        self.waiting: list[tuple[int, Callable[[], None]]] = []
        self.added: list[bytes] = []

    def add_message(self, queue, message):
        self.added.append(message.body)
        return len(self.added)

    def remove_message(self, queue, handle):
        pass

    def barrier(self) -> int:
        return self.ticket

    def when_durable(self, ticket, callback):
        if ticket <= self.durable:
            callback()
        else:
            self.waiting.append((ticket, callback))

    def commit(self) -> None:
        self.durable = self.ticket
        self.ticket += 1
        waiting, self.waiting = self.waiting, []
        for _, cb in waiting:
            cb()


@pytest.fixture
def vhost():
    store = BatchStore()
    vh = Broker(store=store).vhosts["/"]
    vh.declare_queue("durable", durable=True)
    vh.declare_queue("transient")
    vh.declare_queue("limited", durable=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    vh.declare_exchange("both", "fanout")
    vh.bind("both", "durable", "")
    vh.bind("both", "transient", "")
    return vh


def kept(promise: Promise | None) -> list[bool]:
    """A flag set when promise is kept (None: kept at once)."""
    flag = [promise is None]
    if promise is not None:
        promise.then(lambda: flag.__setitem__(0, True))
    return flag


def test_a_persistent_message_in_a_durable_queue_is_safe_once_its_batch_is_on_disk(vhost):
    routed, refused, safe = vhost.publish_safe("", "durable", Message("", "durable", b"p", dict(PERSISTENT)))
    assert (routed, refused) == (1, False)
    assert isinstance(safe, StoreWrites) and safe.ticket == 1
    flag = kept(safe)
    assert flag == [False]
    vhost.store.commit()
    assert flag == [True]
    assert kept(safe) == [True]  # kept already: at once


def test_nothing_to_wait_for_when_no_queue_keeps_the_message(vhost):
    assert vhost.publish_safe("", "durable", Message("", "durable", b"t", {})) == (1, False, None)
    assert vhost.publish_safe("", "transient", Message("", "transient", b"p", dict(PERSISTENT))) == (1, False, None)
    assert vhost.publish_safe("", "nowhere", Message("", "nowhere", b"p", dict(PERSISTENT))) == (0, False, None)
    assert vhost.store.added == []


def test_one_promise_per_store_batch_and_fanout_waits_for_the_durable_queue(vhost):
    _, _, a = vhost.publish_safe("both", "", Message("both", "", b"1", dict(PERSISTENT)))
    _, _, b = vhost.publish_safe("", "durable", Message("", "durable", b"2", dict(PERSISTENT)))
    assert a is b  # the same batch: one object, one store callback for a run of publishes
    vhost.store.commit()
    _, _, c = vhost.publish_safe("", "durable", Message("", "durable", b"3", dict(PERSISTENT)))
    assert c is not a and c.ticket == 2
    assert vhost.store.added == [b"1", b"2", b"3"]


def test_a_refused_message_has_no_promise(vhost):
    vhost.publish_safe("", "limited", Message("", "limited", b"1", dict(PERSISTENT)))
    assert vhost.publish_safe("", "limited", Message("", "limited", b"2", dict(PERSISTENT))) == (1, True, None)


def test_the_memory_store_promises_nothing():
    vh = Broker().vhosts["/"]
    vh.declare_queue("d", durable=True)
    assert vh.publish_safe("", "d", Message("", "d", b"p", dict(PERSISTENT))) == (1, False, None)
    assert vh.writes_safe() is None


class Manual(Promise):
    """A promise the test keeps, as a replicated queue's would be kept by a majority."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []

    def then(self, callback):
        self.callbacks.append(callback)

    def keep(self) -> None:
        for cb in self.callbacks:
            cb()


def test_both_keeps_the_later_batch_of_one_store_and_waits_for_all_of_mixed_ones():
    store = BatchStore()
    early, late = StoreWrites(store, 1), StoreWrites(store, 2)
    assert both(early, late) is late and both(late, early) is late
    assert both(None, early) is early and both(early, None) is early and both(None, None) is None
    quorum = Manual()
    joined = both(both(early, quorum), late)
    assert isinstance(joined, AllOf) and len(joined.promises) == 3
    flag = kept(joined)
    store.commit()
    store.commit()
    assert flag == [False]  # the replicated part is not kept yet
    quorum.keep()
    assert flag == [True]


class _Breakable(Promise):
    """A promise the test keeps or breaks (as a cluster's stand-in's batch)."""

    can_break = True

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[[], None], Callable[[], None]]] = []

    def then(self, callback: Callable[[], None]) -> None:
        self.calls.append((callback, lambda: None))

    def then_or(self, kept: Callable[[], None], broken: Callable[[], None]) -> None:
        self.calls.append((kept, broken))

    def settle(self, keep: bool) -> None:
        for kept, broken in self.calls:
            (kept if keep else broken)()


def test_then_or_of_a_promise_that_cannot_break_is_then():
    store = BatchStore()
    p = StoreWrites(store, store.barrier())
    seen: list[str] = []
    assert not p.can_break
    p.then_or(lambda: seen.append("kept"), lambda: seen.append("broken"))
    store.commit()
    assert seen == ["kept"]


@pytest.mark.parametrize("first, second, expected", [(True, True, ["kept"]), (True, False, ["broken"]),
                                                     (False, True, ["broken"]), (False, False, ["broken"])])
def test_all_of_breaks_once_when_a_part_breaks(first, second, expected):
    a, b = _Breakable(), _Breakable()
    p = both(a, b)
    assert isinstance(p, AllOf) and p.can_break
    seen: list[str] = []
    p.then_or(lambda: seen.append("kept"), lambda: seen.append("broken"))
    a.settle(first)
    b.settle(second)
    assert seen == expected
    store = BatchStore()
    assert not both(StoreWrites(store, 1), StoreWrites(BatchStore(), 1)).can_break
