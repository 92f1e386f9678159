"""The failover benchmark's scenario (``bench/bench_failover.py``), short: two kill -9
failovers of an mqemu pair under the STOMP workload; every receipted message is delivered."""

from __future__ import annotations

import importlib.util
import io
import pathlib

import pytest

pytestmark = pytest.mark.timeout(120)

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "bench_failover.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_failover", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_kill_failovers_lose_nothing():
    bench = _bench()
    out = io.StringIO()
    results = bench.run({"mqemu-fast": 2}, rate=50, seed=7, out=out)
    r = results["mqemu-fast"]
    assert len(r["times"]) == 2, out.getvalue()
    assert r["receipted"] > 0
    assert r["lost"] == 0, out.getvalue()
    # each failover moved the consumer to a new connection on the standby
    assert r["consumer_connections"] >= 3


def test_schedule_interleaves_targets():
    bench = _bench()
    counts = bench.parse_targets("mqemu-fast:4,activemq-10s", cycles=9, slow_cycles=2)
    assert counts == {"mqemu-fast": 4, "activemq-10s": 2}
    order = bench.schedule(counts, seed=3)
    assert sorted(order) == ["activemq-10s"] * 2 + ["mqemu-fast"] * 4
    assert order == bench.schedule(counts, seed=3)  # seeded
    assert "activemq-10s" in order[:3] and "activemq-10s" in order[3:]
