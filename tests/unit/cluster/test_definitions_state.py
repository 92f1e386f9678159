"""The replicated definitions (``ha/clustering/state.py``) and the core's definitions hook: table
values through JSON, the state's operations, the hook called only for a change of a replicated
definition (and a refusal leaving nothing changed), and a broker made to hold a state."""

from __future__ import annotations

import datetime
import decimal

import pytest

from mqemu.broker.core import Broker
from mqemu.broker.errors import InternalError
from mqemu.ha.clustering.state import Definitions, from_json, object_key, sync_broker, to_json

pytestmark = pytest.mark.timeout(30)


def test_table_values_survive_json():
    value = {"b": b"\x00\xff", "d": decimal.Decimal("1.25"), "t": datetime.datetime(2026, 1, 2, 3, 4, 5,
                                                                                    tzinfo=datetime.timezone.utc),
             "n": [1, "x", None, True, {"deep": b"y"}], "f": 1.5}
    j = to_json(value)
    assert j["b"] == {"$bytes": "AP8="} and j["d"] == {"$decimal": "1.25"}
    assert from_json(j) == value


def _q(name, vhost="/", node="node-1"):
    return {"op": "queue.declare", "vhost": vhost, "name": name, "durable": True, "auto_delete": False,
            "arguments": {}, "type": "classic", "node": node}


def _b(source, dest, key="k", kind="queue", vhost="/"):
    return {"op": "bind", "vhost": vhost, "source": source, "destination": dest, "destination_type": kind,
            "routing_key": key, "arguments": {}}


def _x(name, vhost="/"):
    return {"op": "exchange.declare", "vhost": vhost, "name": name, "type": "direct", "durable": True,
            "auto_delete": False, "internal": False, "arguments": {}}


def test_the_state_operations():
    d = Definitions()
    for op in (_x("x"), _x("y"), _q("q1"), _q("q2"), _b("x", "q1"), _b("x", "q2"), _b("y", "q1"),
               _b("x", "y", kind="exchange")):
        d.apply(op)
    d.apply(_q("q1", node="node-2"))  # a second declaration keeps the first (its home node)
    assert d.queues["/", "q1"]["node"] == "node-1" and "op" not in d.queues["/", "q1"]
    d.apply({"op": "queue.delete", "vhost": "/", "name": "q1"})  # and its bindings
    assert sorted(b["destination"] for b in d.bindings.values()) == ["q2", "y"]
    d.apply({"op": "exchange.delete", "vhost": "/", "name": "y"})  # bindings to and from it
    assert [b["destination"] for b in d.bindings.values()] == ["q2"]
    d.apply({**_b("x", "q2"), "op": "unbind"})
    assert d.bindings == {}
    d.apply({"op": "queue.delete", "vhost": "/", "name": "absent"})  # nothing there: nothing changes
    d.apply({"op": "nonsense"})
    d.apply(_q("other", vhost="v2"))
    d.apply({"op": "access", "access": {"vhosts": [{"name": "/"}], "users": []}})  # v2 went: its queue too
    assert set(d.queues) == {("/", "q2")}
    again = Definitions.load(d.dump())
    assert again.dump() == d.dump()
    assert object_key(_q("a")) != object_key(_x("a")) and object_key({"op": "access"}) == "access"
    assert object_key(_b("x", "q")) == object_key({**_b("x", "q"), "op": "unbind"})


class Recorder:
    def __init__(self):
        self.calls = []
        self.refuse = False

    def changing(self, vhost, op, item):
        if self.refuse:
            raise InternalError(f"refused {op}")
        self.calls.append((vhost, op, item))


def test_the_hook_hears_only_changes_of_replicated_definitions():
    broker = Broker()
    hook = Recorder()
    broker.set_definitions_hook(hook)
    vh = broker.vhosts["/"]
    assert broker.add_vhost("v2").definitions_hook is hook
    vh.declare_exchange("x", "topic", durable=True, arguments={"alternate-exchange": "ae"})
    vh.declare_exchange("x", "topic", durable=True)
    vh.declare_queue("q", durable=True, arguments={"x-max-length": 5, "x-queue-type": "classic"})
    vh.declare_queue("q", durable=True, arguments={"x-max-length": 5, "x-queue-type": "classic"})
    owner = object()
    local = [vh.declare_queue("", exclusive_owner=owner, owner=owner).name,
             vh.declare_queue("ad", auto_delete=True).name, vh.declare_queue("").name]
    vh.bind("x", "q", "a.#", {"x-k": [1, {"y": b"z"}]})
    vh.bind("x", "q", "a.#", {"x-k": [1, {"y": b"z"}]})
    for name in local:
        vh.bind("x", name, "a.#", owner=owner)
    vh.unbind("x", "q", "nothing")
    vh.unbind("x", "q", "a.#", {"x-k": [1, {"y": b"z"}]})
    vh.delete_queue("absent")
    vh.delete_queue(local[1])
    vh.delete_queue("q")
    vh.delete_exchange("x")
    vh.delete_exchange("x")
    assert hook.calls == [
        ("/", "exchange.declare", {"name": "x", "type": "topic", "durable": True, "auto_delete": False,
                                   "internal": False, "arguments": {"alternate-exchange": "ae"}}),
        ("/", "queue.declare", {"name": "q", "durable": True, "auto_delete": False,
                                "arguments": {"x-max-length": 5, "x-queue-type": "classic"}, "type": "classic"}),
        ("/", "bind", {"source": "x", "destination": "q", "destination_type": "queue", "routing_key": "a.#",
                       "arguments": {"x-k": [1, {"y": b"z"}]}}),
        ("/", "unbind", {"source": "x", "destination": "q", "destination_type": "queue", "routing_key": "a.#",
                         "arguments": {"x-k": [1, {"y": b"z"}]}}),
        ("/", "queue.delete", {"name": "q", "internal": False}),
        ("/", "exchange.delete", {"name": "x"}),
    ]
    # refused: nothing changes
    vh.declare_exchange("kept", "direct")
    vh.declare_queue("kept")
    hook.refuse = True
    for call in (lambda: vh.declare_exchange("nx", "direct"), lambda: vh.declare_queue("nq", durable=True),
                 lambda: vh.bind("kept", "kept", "k"), lambda: vh.delete_queue("kept"),
                 lambda: vh.delete_exchange("kept")):
        with pytest.raises(InternalError):
            call()
    assert "nx" not in vh.exchanges and "nq" not in vh.queues and "kept" in vh.queues and "kept" in vh.exchanges
    assert not vh.exchanges["kept"].bindings


def test_a_broker_made_to_hold_a_state():
    broker = Broker()
    vh = broker.vhosts["/"]
    vh.declare_exchange("gone", "direct", durable=True)
    vh.declare_queue("gone-q", durable=True)
    vh.declare_queue("kept", durable=True)
    vh.declare_queue("mqtt-subscription-c1qos1", durable=True)  # MQTT's: node-local
    vh.bind("amq.direct", "kept", "old")
    d = Definitions()
    for op in (_x("x"), _q("kept"), _q("new"), _b("x", "new"), {**_b("amq.direct", "kept", "old")}):
        d.apply(op)
    sync_broker(broker, d, remove=False)
    assert {"gone", "x"} <= set(vh.exchanges) and {"gone-q", "kept", "new"} <= set(vh.queues)
    sync_broker(broker, d, remove=True)
    assert "gone" not in vh.exchanges and "gone-q" not in vh.queues
    assert {"kept", "new", "mqtt-subscription-c1qos1"} <= set(vh.queues)
    assert {(b.source, b.destination, b.routing_key) for b in vh.bindings() if b.source} == {
        ("x", "new", "k"), ("amq.direct", "kept", "old")}


def test_a_queue_whose_home_node_is_down_is_not_found():
    from mqemu.broker.errors import NotFound

    vh = Broker().vhosts["/"]
    vh.declare_queue("q", durable=True)
    vh.declare_queue("other", durable=True)
    vh.unavailable = {"q": "node-3"}
    text = "home node 'node-3' of durable queue 'q' in vhost '/' is down or inaccessible"
    for call in (lambda: vh.declare_queue("q", durable=True), lambda: vh.declare_queue("q", passive=True),
                 lambda: vh.get_queue("q")):
        with pytest.raises(NotFound) as e:
            call()
        assert e.value.text == text
    assert vh.get_queue("other").name == "other"
    vh.unavailable = {}
    assert vh.get_queue("q").name == "q"
