"""One failover scenario replayed through an external topology (proxies only) in front of the
reference brokers and in front of mqemu: a workload runs, the link goes down until the
clients feel it, comes back, and the verdicts must agree (nothing lost, the fault a window,
the clients unavailable for a while, deliveries after it). Skips without ``MQEMU_REF_*``."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
from test_workload_reference import _clean_up

from mqemu.ha.harness import Harness, TopologyThread
from mqemu.ha.workload import parse_endpoints
from mqemu.ha.workload_clients import Settings

CASES = [("MQEMU_REF_AMQP", "amqp", "rabbitmq"), ("MQEMU_REF_RABBIT_STOMP", "stomp", "rabbitmq"),
         ("MQEMU_REF_ACTIVEMQ_STOMP", "stomp", "activemq")]
COUNT = 300


def _scenario(upstream: tuple[str, int], protocol: str, settings: Settings, tmp: Any) -> Any:
    """The verdict of: publish COUNT at 100/s, ``down`` the link once the clients have
    worked a while, heal it once a connection attempt was refused, let the run finish."""
    os.makedirs(tmp, exist_ok=True)
    t = TopologyThread(mode="external", targets={protocol: f"{upstream[0]}:{upstream[1]}"}, workdir=str(tmp))
    t.start()
    try:
        h = Harness(t, str(tmp))
        w = h.workload(protocol, count=COUNT, rate=100, drain=3.0, settings=settings)
        assert w.wait_until(lambda w: w.confirmed >= 30, 20), "no 30 confirms before the fault"
        with t.down("node-1"):
            assert w.wait_until(lambda w: w.connect_failures > 0, 20), "the cut was not felt"
        return h.check(timeout=60)
    finally:
        t.stop()


def _shape(verdict: Any) -> dict[str, Any]:
    c = verdict.counts
    return {"valid": verdict.valid, "acknowledged": c.acknowledged, "delivered": c.delivered, "lost": c.lost,
            "unexpected": c.unexpected, "faults": [(f.action, f.target) for f in verdict.faults],
            "healed": verdict.windows[1].fault_end is not None,
            "back after": verdict.faults[0].first_delivery is not None,
            "unavailable": {u.kind for u in verdict.unavailable} >= {"connect"}}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("var, protocol, engine", CASES, ids=[v.removeprefix("MQEMU_REF_").lower() for v, _, _ in CASES])
def test_a_network_fault_scenario_replays_on_the_reference_broker(var, protocol, engine, mqemu_start, tmp_path):
    if not os.environ.get(var):
        pytest.skip(f"{var} is not set (no reference broker)")
    (reference,), user, password = parse_endpoints(os.environ[var], protocol)
    queue = f"mqemu-external-{uuid.uuid4().hex[:8]}"
    settings = Settings(queue=queue, timeout=3.0, user=user or "guest", password=password or "guest",
                        client_id=queue)
    try:
        theirs = _scenario(reference, protocol, settings, tmp_path / "reference")
    finally:
        _clean_up(var, protocol, queue)
    node = mqemu_start(engine=engine)
    ours = _scenario(("127.0.0.1", node.ports[protocol]), protocol, settings, tmp_path / "mqemu")
    expected = {"valid": True, "acknowledged": COUNT, "delivered": COUNT, "lost": 0, "unexpected": 0,
                "faults": [("down", "node-1")], "healed": True, "back after": True, "unavailable": True}
    assert (_shape(theirs), _shape(ours)) == (expected, expected)
