"""A topology's facts (its faults with start and end, each node's events) in a history: the
records they become, on this machine's clock or moved from another's, merged once, listed per
fault as the takeover's phases and drawn in the timeline."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mqemu.ha.checker import check, summary
from mqemu.ha.cli import main
from mqemu.ha.history import append_facts, facts_records, merge_facts, read_histories, read_history

pytestmark = pytest.mark.timeout(30)


def _facts(**extra: Any) -> dict[str, Any]:
    """A kill of node-1 at 10.0 and node-2's takeover, as ``Topology.facts()`` gives them."""
    return {
        "clock": {"time": 100.0, "wall": 2e9},
        "faults": [{"id": 1, "action": "kill", "target": "active", "nodes": ["node-1"], "time": 10.0,
                    "wall": 2e9 - 90, "end": 10.01},
                   {"id": 2, "action": "down", "target": "node-2", "nodes": ["node-2"], "time": 13.0,
                    "wall": 2e9 - 87, "end": None, "toxics": ["node-2/amqp:down"]}],
        "events": [{"time": 0, "mono": 10.02, "event": "role", "node": "node-1", "role": "down", "pid": 7},
                   {"time": 0, "mono": 10.30, "event": "role", "node": "node-2", "role": "active", "pid": 8},
                   {"time": 0, "mono": 10.02, "event": "fault", "action": "kill"}],  # faults come from "faults"
        "nodes": {"node-1": [{"time": 0, "mono": 1.0, "event": "lock-acquired", "waited": 0.0}],
                  "node-2": [{"time": 0, "mono": 10.10, "event": "lock-acquired", "waited": 9.0},
                             {"time": 0, "mono": 10.25, "event": "recovered", "seconds": 0.15, "messages": 40},
                             {"time": 0, "mono": 10.26, "event": "listening", "protocol": "amqp", "port": 5},
                             {"time": 0, "mono": 10.27, "event": "role", "role": "active"}]},
        **extra,
    }


def _workload(t0: float = 5.0) -> list[dict[str, Any]]:
    """A publisher and a consumer from t0 to t0 + 10: one message before the kill, one after."""
    def rec(t: float, process: str, type: str, f: str, value: Any = None, **extra: Any) -> dict[str, Any]:
        return {"time": t, "wall": 0, "process": process, "type": type, "f": f, "value": value, **extra}
    return [rec(t0, "p", "invoke", "enqueue", "a"), rec(t0 + 0.1, "p", "ok", "enqueue", "a"),
            rec(t0 + 0.2, "c", "ok", "dequeue", "a"), rec(t0 + 5.1, "c", "info", "error", error="EOF"),
            rec(t0 + 5.2, "p", "invoke", "enqueue", "b"), rec(t0 + 5.6, "p", "ok", "enqueue", "b"),
            rec(t0 + 5.4, "c", "ok", "reconnect", "n2"), rec(t0 + 5.8, "c", "ok", "dequeue", "b"),
            rec(t0 + 10, "p", "info", "done")]


def test_facts_become_fault_and_node_records_within_the_span():
    records = facts_records(_facts(), 5.0, 15.0)
    faults = [(r["type"], r["value"], r["time"]) for r in records if r["f"] == "fault"]
    assert faults == [("invoke", {"action": "kill", "target": "active", "id": 1}, 10.0),
                      ("ok", {"action": "kill", "target": "active", "id": 1}, 10.01),
                      ("invoke", {"action": "down", "target": "node-2", "id": 2}, 13.0)]  # not healed: no end
    nodes = [(r["process"], r["value"]) for r in records if r["f"] == "node"]
    # node-1's start at 1.0 is before the span; the supervisor's fault event is not a node fact
    assert nodes == [("topology", "role"), ("node-2", "lock-acquired"), ("node-2", "recovered"),
                     ("node-2", "listening"), ("node-2", "role"), ("topology", "role")]
    assert all(r["type"] == "info" for r in records if r["f"] == "node")
    assert facts_records(_facts(), 10.5, 12.0) == []  # the kill was over, down not begun


def test_facts_from_another_machine_are_moved_to_our_clock():
    # our clock read 500.0 and 500.2 around the request; the topology's read 100.0: another machine
    records = facts_records(_facts(local_clock={"before": 500.0, "after": 500.2}))
    kill = next(r for r in records if r["f"] == "fault")
    assert kill["time"] == pytest.approx(410.1)
    # the same machine: the topology's reading falls inside our request, times are kept
    same = facts_records(_facts(local_clock={"before": 99.9, "after": 100.1}))
    assert next(r for r in same if r["f"] == "fault")["time"] == 10.0


def test_the_checker_lists_each_faults_takeover_phases():
    verdict = check(merge_facts(_workload(), _facts()))
    kill, down = verdict.faults
    assert (kill.action, down.action) == ("kill", "down")
    assert [(p.process, p.event, p.detail) for p in kill.phases] == [
        ("topology", "role", "node-1 down"), ("node-2", "lock-acquired", "waited 9.000 s"),
        ("node-2", "recovered", "in 0.150 s, 40 messages"), ("node-2", "listening", "amqp on 5"),
        ("node-2", "role", "active"), ("topology", "role", "node-2 active: its endpoints open")]
    assert [round(p.at, 3) for p in kill.phases] == [0.02, 0.1, 0.25, 0.26, 0.27, 0.3]
    assert down.phases == []
    assert verdict.windows[1].fault_end == 10.01 and verdict.windows[2].fault_end is None
    assert verdict.counts.lost == 0 and verdict.counts.attempted == 2  # node records count no message
    assert verdict.unavailable[0].process == "c"  # and open no unavailability window
    text = summary(verdict)
    assert "  +0.100 s node-2 lock-acquired (waited 9.000 s)" in text
    assert "  +0.300 s topology role (node-2 active: its endpoints open)" in text


def test_facts_merged_twice_or_from_two_files_count_once(tmp_path):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    for path in (one, two):
        path.write_text("".join(json.dumps(r) + "\n" for r in _workload()))
        assert append_facts(path, _facts()) == 9  # 3 fault records, 6 node records
        assert append_facts(path, _facts()) == 0  # already there
    assert len(read_history(one)) == len(_workload()) + 9
    merged = read_histories([one, two])
    assert len([r for r in merged if r["f"] == "fault" and r["type"] == "invoke"]) == 2
    assert len(check(merged).faults) == 2


def test_timeline_html_draws_the_node_events_and_lists_the_phases(tmp_path):
    hist = tmp_path / "h.jsonl"
    hist.write_text("".join(json.dumps(r) + "\n" for r in merge_facts(_workload(), _facts())))
    out = tmp_path / "t.html"
    assert main(["check", str(hist), "--timeline", str(out)]) == 0
    text = out.read_text()
    for lane in ("node-2", "topology"):
        assert f'text-anchor="end">{lane}</text>' in text  # a lane per node and the supervisor
    assert "5.100 s node-2 lock-acquired (waited 9.000 s)</title>" in text  # each event, at its time
    assert "5.300 s topology role (node-2 active: its endpoints open)</title>" in text
    assert "lock acquired</text>" in text and "endpoints open</text>" in text  # the legend
    assert "<h2>Faults and takeovers</h2>" in text
    assert "<li>+0.250 s node-2 recovered (in 0.150 s, 40 messages)</li>" in text


def test_timeline_png_draws_node_lanes(tmp_path):
    pytest.importorskip("matplotlib")
    hist = tmp_path / "h.jsonl"
    hist.write_text("".join(json.dumps(r) + "\n" for r in merge_facts(_workload(), _facts())))
    out = tmp_path / "t.png"
    assert main(["check", str(hist), "--timeline", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
