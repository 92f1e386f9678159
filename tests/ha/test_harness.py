"""The harness end to end: a workload per protocol through the active/standby pair's
endpoints, a fault on the active while it runs, and the checker's verdict on the history:
nothing the broker acknowledged is lost, and the verdict says when deliveries came back."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("protocol", ["amqp", "stomp", "mqtt"])
@pytest.mark.parametrize("fault", ["kill", "stop"])
def test_nothing_acknowledged_is_lost_across_a_failover(mqemu_harness, protocol, fault):
    h = mqemu_harness
    w = h.workload(protocol, count=300, drain=3.0)
    assert w.wait_until(lambda w: w.confirmed >= 100, 30), w.confirmed
    h.fault(fault, "active")
    verdict = h.check()
    counts = verdict.counts
    assert counts.lost == 0, counts.lost_ids
    assert counts.unexpected == 0 and verdict.valid
    assert counts.acknowledged == 300 and counts.delivered >= 300
    (recovery,) = verdict.faults
    assert recovery.action == fault and recovery.first_delivery is not None  # it came back
    assert h.topology.node("active")["name"] == "node-2"
    # where the takeover's time went, from the nodes' own events, in the order they happened
    steps = [(p.process, p.event, p.detail) for p in recovery.phases]
    assert ("topology", "role", "node-1 down") in steps  # the supervisor saw it go
    order = [("node-2", "lock-acquired"), ("node-2", "store-loaded"), ("node-2", "recovered"), ("node-2", "role"),
             ("topology", "role")]
    assert [s[:2] for s in steps if s[:2] in order and s[2] != "node-1 down"] == order, steps
    assert ("node-2", "listening") in [s[:2] for s in steps]
    opened = next(p for p in recovery.phases if p.process == "topology" and p.detail == "node-2 active: its "
                  "endpoints open")
    assert recovery.seconds_after_reconnect is not None
    assert 0 < opened.at < recovery.seconds_after_reconnect  # they opened before deliveries on a new connection


def test_a_network_cut_is_a_window_the_checker_reports(mqemu_harness):
    h = mqemu_harness
    w = h.workload("amqp", count=200, drain=3.0)
    assert w.wait_until(lambda w: w.confirmed >= 50, 30)
    with h.topology.down("active", protocol="amqp"):
        h.fault("reset_peer", "active", protocol="amqp")  # and what reconnects meets resets
        h.topology.heal("active", name="reset_peer_downstream")
    verdict = h.check()
    assert verdict.counts.lost == 0 and verdict.valid
    # every fault the topology applied is a window, whoever asked for it (here the pair's own down())
    assert [(f.action, f.target) for f in verdict.faults] == [("down", "active"), ("reset_peer", "active")]
    assert verdict.windows[1].fault_end is not None  # down() healed: the window's fault has an end
    assert any(u.kind in ("connect", "enqueue") for u in verdict.unavailable)  # the cut was seen


def test_the_checker_catches_a_loss_it_is_shown(mqemu_harness):
    """A history with an acknowledged message removed from what the consumer saw: the
    verdict must say lost, or the tests above prove nothing."""
    from mqemu.ha.checker import check
    from mqemu.ha.history import read_history

    h = mqemu_harness
    w = h.workload("stomp", count=50, drain=2.0)
    assert w.wait(60)
    records = read_history(h.histories[0])
    victim = next(r["value"] for r in records if r["f"] == "enqueue" and r["type"] == "ok")
    doctored = [r for r in records if not (r["f"] == "dequeue" and r.get("value") == victim)]
    verdict = check(doctored)
    assert verdict.counts.lost == 1 and verdict.counts.lost_ids == [victim] and not verdict.valid
