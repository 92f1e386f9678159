"""The HA commands as a user runs them, each in its own process: ``mqemu ha up`` in one shell,
``mqemu workload`` in another, ``mqemu fault`` in a third; the fault shows up as a window in
the workload's history and in ``mqemu check``'s verdict, with the takeover's phases."""

from __future__ import annotations

import json
import os
import signal

import pytest
from ha_processes import HaUp, Process, mqemu, wait_for_lines

pytestmark = pytest.mark.timeout(150)


def test_a_fault_from_another_shell_is_a_window_in_the_workloads_verdict(tmp_path):
    up = HaUp(tmp_path)
    workloads: list[Process] = []
    try:
        info = up.ready()
        control = info["control"]
        # one workload merges the topology's facts itself (--control); the other's history
        # gets them only when checked with --control
        for protocol, extra in (("stomp", ["--control", control]), ("amqp", [])):
            workloads.append(Process(["workload", "--url", info["failover"][protocol], "--protocol", protocol,
                                      "--count", "1000", "--rate", "150", "--drain", "3", "--queue", f"q-{protocol}",
                                      "--history", str(tmp_path / f"{protocol}.jsonl"), *extra],
                                     str(tmp_path / f"workload-{protocol}.log")))
        for protocol in ("stomp", "amqp"):
            wait_for_lines(str(tmp_path / f"{protocol}.jsonl"), 256, 60)  # both are publishing and consuming
        fault = mqemu("fault", "kill", "active", "--control", control)
        assert fault.returncode == 0, fault.stderr
        assert json.loads(fault.stdout) == {"action": "kill", "nodes": ["node-1"]}
        for w in workloads:
            assert w.wait(90) == 0, w.output()
        assert "added" in workloads[0].output()  # the facts it merged

        stomp = mqemu("check", str(tmp_path / "stomp.jsonl"), "--json", "--timeline", str(tmp_path / "t.html"))
        amqp_alone = mqemu("check", str(tmp_path / "amqp.jsonl"), "--json")
        amqp = mqemu("check", str(tmp_path / "amqp.jsonl"), "--json", "--control", control)
    finally:
        for w in workloads:
            w.close()
        up.close()
    assert up.proc.returncode == 0, up.output()  # SIGTERM: a clean stop of the topology

    assert (stomp.returncode, amqp.returncode, amqp_alone.returncode) == (0, 0, 0), (stomp.stderr, amqp.stderr)
    assert json.loads(amqp_alone.stdout)["faults"] == []  # its file alone knows nothing of the kill
    for out in (stomp, amqp):
        verdict = json.loads(out.stdout)
        assert verdict["valid"] and verdict["counts"]["lost"] == 0
        assert verdict["counts"]["acknowledged"] == 1000
        assert [w["fault"] for w in verdict["windows"]] == [None, {"action": "kill", "target": "active"}]
        assert verdict["windows"][1]["fault_end"] is not None
        (kill,) = verdict["faults"]
        assert kill["first_delivery"] is not None
        steps = [(p["process"], p["event"]) for p in kill["phases"]]
        for step in (("node-2", "lock-acquired"), ("node-2", "recovered"), ("node-2", "listening"),
                     ("node-2", "role"), ("topology", "role")):
            assert step in steps, steps
    page = (tmp_path / "t.html").read_text()
    assert "node-2 lock-acquired (waited" in page and "<h2>Faults and takeovers</h2>" in page


def test_external_mode_puts_proxies_in_front_of_a_broker_it_does_not_run(tmp_path):
    """A node started apart stands for a real RabbitMQ or ActiveMQ: the topology only proxies
    it; network faults work, process faults are refused with the reason."""
    broker = Process(["serve", "--amqp-port", "0", "--stomp-port", "0", "--mqtt-port", "off", "--http-port", "off",
                      "--ready-file", str(tmp_path / "broker.json"), "--log-level", "warning"],
                     str(tmp_path / "broker.log"))
    up = w = None
    try:
        wait_for_lines(str(tmp_path / "broker.json"), 0, 30)
        ports = _ready_ports(tmp_path / "broker.json")
        up = HaUp(tmp_path, "--mode", "external", "--target", f"amqp=127.0.0.1:{ports['amqp']}",
                  "--target", f"stomp=127.0.0.1:{ports['stomp']}")
        info = up.ready()
        assert info["mode"] == "external"
        (node,) = info["nodes"]
        assert (node["name"], node["role"], sorted(node["ports"])) == ("node-1", "external", ["amqp", "stomp"])
        assert node["upstream"] == {"amqp": f"127.0.0.1:{ports['amqp']}", "stomp": f"127.0.0.1:{ports['stomp']}"}
        assert node["ports"]["amqp"] != ports["amqp"]  # clients use the proxy
        control = info["control"]

        refused = mqemu("fault", "kill", "node-1", "--control", control)
        assert refused.returncode == 1 and "only network faults apply" in refused.stderr
        refused = mqemu("fault", "down", "active", "--control", control)
        assert refused.returncode == 1 and "does not know its brokers' roles" in refused.stderr

        history = str(tmp_path / "h.jsonl")
        w = Process(["workload", "--url", f"127.0.0.1:{node['ports']['stomp']}", "--protocol", "stomp",
                     "--seconds", "90", "--rate", "150", "--drain", "3", "--history", history, "--control", control],
                    str(tmp_path / "workload.log"))
        wait_for_lines(history, 256, 60)
        down = mqemu("fault", "down", "node-1", "--protocol", "stomp", "--control", control)
        assert down.returncode == 0, down.stderr
        assert json.loads(down.stdout)["toxics"] == ["node-1/stomp:down"]
        with pytest.raises(ConnectionRefusedError):  # the proxy no longer listens
            import socket
            socket.create_connection(("127.0.0.1", node["ports"]["stomp"]), timeout=5).close()
        healed = mqemu("fault", "heal", "node-1", "--control", control)
        assert json.loads(healed.stdout)["removed"] == ["node-1/stomp:down"]
        wait_for_lines(history, _lines(history) + 512, 60)  # it goes on after the heal
        w.proc.send_signal(signal.SIGINT)  # Ctrl-C: no new publishes, the consumer drains, the facts are merged
        assert w.wait(60) == 0, w.output()
        check = mqemu("check", history, "--json")
    finally:
        for p in (w, up, broker):
            if p is not None:
                p.close()
    verdict = json.loads(check.stdout)
    # the test waited for 768 history lines, 5 per message: about 150 messages at least (how many
    # more depends on how long the fault commands took; 251 on a machine at load 10)
    assert check.returncode == 0 and verdict["valid"] and verdict["counts"]["acknowledged"] >= 100
    assert verdict["counts"]["delivered"] == verdict["counts"]["attempted"]  # drained before it ended
    assert [w["fault"] for w in verdict["windows"]] == [None, {"action": "down", "target": "node-1"}]
    assert verdict["windows"][1]["fault_end"] is not None  # healed
    assert any(u["kind"] == "connect" for u in verdict["unavailable"])  # the cut was felt
    assert verdict["faults"][0]["first_delivery"] is not None


def _lines(path: str) -> int:
    with open(path, "rb") as f:
        return f.read().count(b"\n")


def _ready_ports(path: os.PathLike[str]) -> dict[str, int]:
    with open(path) as f:
        info = json.load(f)
    return {p: info[p] for p in ("amqp", "stomp")}
