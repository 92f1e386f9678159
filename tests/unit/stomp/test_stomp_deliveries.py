"""``acks.Deliveries``: the one part that counts a STOMP connection's delivery tags and keeps
its unsettled deliveries (subscriptions only ``record``; ACK/NACK ``take``)."""

from __future__ import annotations

import pytest

from mqemu.protocols.stomp.acks import Deliveries

pytestmark = pytest.mark.timeout(10)


class _Sub:
    def __init__(self, cumulative: bool) -> None:
        self.cumulative = cumulative


class _Consumer:
    def __init__(self, no_ack: bool = False) -> None:
        self.no_ack = no_ack


def test_tags_count_every_delivery_and_auto_ones_are_not_kept():
    d = Deliveries()
    sub, auto, manual = _Sub(False), _Consumer(no_ack=True), _Consumer()
    assert [d.record(sub, auto, "a"), d.record(sub, manual, "b"), d.record(sub, auto, "c")] == [1, 2, 3]
    assert len(d) == 1
    assert d.take(1) is None and d.take(3) is None
    assert d.take(2) == [(manual, "b")]
    assert len(d) == 0 and d.take(2) is None


def test_client_mode_takes_every_earlier_delivery_of_its_subscription_only():
    d = Deliveries()
    cum, ind = _Sub(True), _Sub(False)
    c1, c2 = _Consumer(), _Consumer()
    d.record(cum, c1, "m1")
    d.record(ind, c2, "x1")
    d.record(cum, c1, "m2")
    d.record(cum, c1, "m3")
    assert d.take(3) == [(c1, "m1"), (c1, "m2")]
    assert d.take_all() == {c2: ["x1"], c1: ["m3"]}
    assert len(d) == 0
