"""A node's roles on a shared data directory, in one process: the standby opens nothing until
the active lets go of the lock, then recovers what the active stored and listens; an active
whose lock is taken from it stops at once without writing."""

from __future__ import annotations

import logging
import os
import threading

import pika
import pytest
import trio

from mqemu.ha.node import TIMINGS, Node, NodeLockLost, NodeOptions, NodeStartError

pytestmark = pytest.mark.timeout(30)

ALL_ZERO = {"amqp": 0, "stomp": 0, "mqtt": 0}


def _node(data_dir: str, name: str, standby: bool = True, **kw) -> Node:
    return Node(NodeOptions(ports=dict(ALL_ZERO), data_dir=data_dir, name=name, standby=standby,
                            timing=TIMINGS["fast"], **kw))


def _publish_persistent(port: int, queue: str, bodies: list[bytes]) -> None:
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(queue, durable=True)
    for b in bodies:
        ch.basic_publish("", queue, b, pika.BasicProperties(delivery_mode=2))
    conn.close()


def _drain(port: int, queue: str) -> list[bytes]:
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = conn.channel()
    out = []
    while (got := ch.basic_get(queue, auto_ack=True))[0] is not None:
        out.append(got[2])
    conn.close()
    return out


async def test_standby_waits_then_takes_over_with_the_stored_messages(tmp_path):
    data = str(tmp_path / "shared")
    active, standby = _node(data, "node-1"), _node(data, "node-2")
    active_scope, standby_scope = trio.CancelScope(), trio.CancelScope()
    async with trio.open_nursery() as outer:
        await outer.start(_scoped, active, active_scope)
        assert active.role == "active" and active.ports["amqp"]
        await trio.to_thread.run_sync(_publish_persistent, active.ports["amqp"], "q", [b"1", b"2", b"3"])

        outer.start_soon(_scoped_run, standby, standby_scope)
        with trio.fail_after(5):
            while standby.role != "standby":
                await trio.sleep(0.01)
        assert standby.ports == {}  # a standby listens on nothing

        active_scope.cancel()  # the active goes: the standby gets the lock within a retry
        with trio.fail_after(5):
            while standby.role != "active":
                await trio.sleep(0.01)
        kinds = [e["event"] for e in standby.events]
        assert kinds.index("lock-acquired") < kinds.index("recovered") < kinds.index("listening")
        got = await trio.to_thread.run_sync(_drain, standby.ports["amqp"], "q")
        assert got == [b"1", b"2", b"3"]
        standby_scope.cancel()


async def _scoped(node: Node, scope: trio.CancelScope, task_status=trio.TASK_STATUS_IGNORED) -> None:
    with scope:
        await node.run(task_status=task_status)


async def _scoped_run(node: Node, scope: trio.CancelScope) -> None:
    with scope:
        await node.run()


async def test_without_standby_a_locked_directory_is_a_start_error(tmp_path):
    data = str(tmp_path / "d")
    first, second = _node(data, "node-1"), _node(data, "node-2", standby=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(first.run)
        with pytest.raises(NodeStartError, match="in use by another mqemu node"):
            await second.run()
        nursery.cancel_scope.cancel()


async def test_an_active_that_lost_its_lock_stops_at_once(tmp_path):
    data = str(tmp_path / "d")
    node = _node(data, "node-1")
    with pytest.RaisesGroup(pytest.RaisesExc(NodeLockLost, match="lost the lock"), flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            os.unlink(os.path.join(data, "LOCK"))  # another node could lock a new file now
            with trio.fail_after(5):  # the keep-alive (0.5 s in the fast timing) notices
                await trio.sleep_forever()
    assert [e["event"] for e in node.events][-1] == "lock-lost"


async def test_status_file_names_the_role_and_ports(tmp_path):
    import json

    status = tmp_path / "status.json"
    node = _node(str(tmp_path / "d"), "node-7", status_file=str(status))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        seen = json.loads(status.read_text())
        assert seen["name"] == "node-7" and seen["role"] == "active" and seen["pid"] == os.getpid()
        assert seen["ports"] == node.ports
        nursery.cancel_scope.cancel()


async def test_log_lines_carry_the_node_name(tmp_path, caplog):
    from mqemu.ha.logs import NodeNameFilter

    caplog.handler.addFilter(NodeNameFilter())
    root = logging.getLogger("mqemu")  # straight on mqemu's logger: a CLI run in this process
    root.addHandler(caplog.handler)    # may have stopped it propagating to the root logger
    level = root.level
    root.setLevel(logging.INFO)
    try:
        node = _node(str(tmp_path / "d"), "node-5")
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            nursery.cancel_scope.cancel()
    finally:
        root.removeHandler(caplog.handler)
        root.setLevel(level)
    here = threading.get_ident()  # other tests' threads may still be logging as they stop
    mine = [r for r in caplog.records if r.name.startswith("mqemu") and r.thread == here]
    assert mine and all(getattr(r, "node", None) == "node-5" for r in mine)


def test_a_node_keeps_its_latest_events_only(tmp_path, monkeypatch):
    """A cluster member records every link change; the status file carries the events, so
    a flapping link must not grow them (and each status write) without end."""
    import mqemu.ha.node

    MAX_EVENTS = 20
    monkeypatch.setattr(mqemu.ha.node, "MAX_EVENTS", MAX_EVENTS)
    node = _node(str(tmp_path), "node-1", status_file=str(tmp_path / "status.json"))
    for i in range(MAX_EVENTS + 5):
        node._link_changed("node-2", "out", i % 2 == 0)
    assert len(node.events) == MAX_EVENTS
    assert node.events[0]["state"] == "down" and node.events[-1]["state"] == "up"  # the 6th onwards
    with open(tmp_path / "status.json") as f:
        import json

        assert len(json.load(f)["events"]) == MAX_EVENTS
