"""The management API's cluster-wide view over real node processes (``mqemu ha up --mode
cluster``): every node answers with the whole cluster's queues (each from its home node, with
its depth there), connections, channels, consumers, exchange statistics and totals; a
connection on one node is closed through another node's API (320 CONNECTION_FORCED); a killed
node is listed not running."""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request

import pika
import pika.exceptions
import pytest
from cluster_helpers import api as _api, node_entry as _node

pytestmark = pytest.mark.timeout(180)

NODES = ("node-1", "node-2", "node-3")




def _pika(c, name, tag):
    port = _node(c.status(), name)["ports"]["amqp"]
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, credentials=pika.PlainCredentials("guest", "guest"), connection_attempts=1,
        socket_timeout=5, blocked_connection_timeout=5, client_properties={"connection_name": tag}))




def _until(check, what, timeout=30.0):
    """Ask ``check()`` (an API call) until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _by_tag(items, tag):
    return [c for c in items if (c.get("client_properties") or {}).get("connection_name") == tag]


def test_every_node_answers_with_the_whole_cluster(cluster):
    c = cluster
    three = _pika(c, "node-3", "conn-on-3")
    ch3 = three.channel()
    ch3.confirm_delivery()
    ch3.queue_declare("homed-on-3", durable=True)
    ch3.basic_consume("homed-on-3", lambda *a: None, auto_ack=True)
    ch3.exchange_declare("fan", "fanout", durable=True)
    ch3.queue_bind("homed-on-3", "fan")
    ch3.basic_publish("fan", "", b"from-3")
    one = _pika(c, "node-1", "conn-on-1")
    ch1 = one.channel()
    ch1.confirm_delivery()
    ch1.queue_declare("depth-q", durable=True)
    for i in range(5):
        ch1.basic_publish("", "depth-q", b"m%d" % i)
    _until(lambda: _api(c, "node-1", "GET", "bindings/%2F/e/fan/q/homed-on-3")[1], "the binding on node-1")
    for i in range(2):  # counted by node-1's exchange
        ch1.basic_publish("fan", "", b"f%d" % i)

    # queues: each once, from its home node, with the depth there
    def queues():
        status, data = _api(c, "node-2", "GET", "queues")
        assert status == 200
        mine = {q["name"]: q for q in data if q["name"] in ("depth-q", "homed-on-3")}
        if len(mine) == 2 and mine["depth-q"]["messages"] == 5 and mine["homed-on-3"]["consumers"] == 1:
            return data
        return None
    data = _until(queues, "both queues with their figures on node-2")
    assert [q["name"] for q in data].count("depth-q") == 1
    (dq,) = [q for q in data if q["name"] == "depth-q"]
    assert dq["node"] == "rabbit@node-1" and dq["messages_ready"] == 5 and dq["message_stats"]["publish"] == 5
    (h3,) = [q for q in data if q["name"] == "homed-on-3"]
    assert h3["node"] == "rabbit@node-3"
    status, one_q = _api(c, "node-2", "GET", "queues/%2F/depth-q")
    assert status == 200 and one_q["node"] == "rabbit@node-1" and one_q["messages"] == 5
    status, q3 = _api(c, "node-1", "GET", "queues/%2F/homed-on-3")
    assert status == 200 and q3["node"] == "rabbit@node-3" and len(q3["consumer_details"]) == 1

    # connections, channels and consumers of node-1 and node-3, listed by node-2 (asked again
    # while a node's answer missed the 1 s timeout: a loaded machine)
    def listed(node, path, complete):
        def check():
            status, data = _api(c, node, "GET", path)
            assert status == 200
            return data if complete(data) else None
        return _until(check, f"{path} complete on {node}")
    conns = listed("node-2", "connections", lambda cs: _by_tag(cs, "conn-on-1") and _by_tag(cs, "conn-on-3"))
    (on1,) = _by_tag(conns, "conn-on-1")
    (on3,) = _by_tag(conns, "conn-on-3")
    assert on1["node"] == "rabbit@node-1" and on3["node"] == "rabbit@node-3"
    names = (on1["name"], on3["name"])
    channels = listed("node-2", "channels",
                      lambda chs: len([ch for ch in chs if ch["connection_details"]["name"] in names]) == 2)
    assert {ch["node"] for ch in channels if ch["connection_details"]["name"] in names} == \
        {"rabbit@node-1", "rabbit@node-3"}
    consumers = listed("node-2", "consumers", lambda cs: any(x["queue"]["name"] == "homed-on-3" for x in cs))
    (cons,) = [x for x in consumers if x["queue"]["name"] == "homed-on-3"]
    assert cons["channel_details"]["node"] == "rabbit@node-3"
    got = _until(lambda: _api(c, "node-2", "GET", "connections/" + urllib.parse.quote(on3["name"], safe=""))[1],
                 "node-3's connection through node-2")
    assert got["node"] == "rabbit@node-3"

    # the overview's totals and the exchange's statistics are the cluster's
    ov = listed("node-2", "overview", lambda o: len({lst["node"] for lst in o["listeners"]}) == 3)
    assert ov["object_totals"]["connections"] >= 2 and ov["queue_totals"]["messages"] >= 5
    assert ov["object_totals"]["consumers"] >= 1
    fan = listed("node-2", "exchanges/%2F/fan", lambda x: x.get("message_stats", {}).get("publish_in") == 3)
    assert fan["message_stats"]["publish_in"] == 3  # node-1's two and node-3's one
    assert fan["message_stats"]["publish_out"] == 3
    listed_x = listed("node-2", "exchanges/%2F", lambda xs: any(x["name"] == "fan" and x.get("message_stats") ==
                                                                fan["message_stats"] for x in xs))
    assert [x["name"] for x in listed_x].count("fan") == 1

    # every node is listed, running, by every node
    for name in NODES:
        nodes = listed(name, "nodes", lambda ns: all(n["running"] for n in ns))
        assert [n["name"] for n in nodes] == [f"rabbit@{n}" for n in NODES]
        assert all(n["partitions"] == [] for n in nodes)
    status, n3 = _api(c, "node-1", "GET", "nodes/rabbit%40node-3")
    assert status == 200 and n3["name"] == "rabbit@node-3"

    # a connection on node-1 closed through node-3's API (asked again only while node-1's
    # answer misses the timeout and the connection is still listed)
    path = "connections/" + urllib.parse.quote(on1["name"], safe="")
    while True:
        status, _ = _api(c, "node-3", "DELETE", path, headers={"X-Reason": "closed from node-3"})
        if status == 204 or not _by_tag(listed("node-3", "connections", lambda cs: _by_tag(cs, "conn-on-3")),
                                        "conn-on-1"):
            break
        assert status == 404
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        one.sleep(5)
    assert closed.value.reply_code == 320 and "closed from node-3" in closed.value.reply_text
    listed("node-3", "connections", lambda cs: _by_tag(cs, "conn-on-3") and not _by_tag(cs, "conn-on-1"))
    status, _ = _api(c, "node-3", "DELETE", path)  # gone from node-1: no node has it
    assert status == 404
    three.close()


def test_a_killed_node_is_listed_not_running(cluster):
    """... and its queues are listed ``down``, as RabbitMQ lists a queue whose node is down."""
    c = cluster
    conn = _pika(c, "node-3", "on-3")
    # classic: a quorum queue (the default type of the default engine version) lives on
    conn.channel().queue_declare("lives-on-3", durable=True, arguments={"x-queue-type": "classic"})
    conn.close()
    _until(lambda: any(q["name"] == "lives-on-3" for q in _api(c, "node-2", "GET", "definitions")[1]["queues"]),
           "the declaration on node-2")
    c.kill("node-3")
    c.wait_until(lambda s: _node(s, "node-3")["role"] == "down", what="node-3 down")

    def down():
        status, nodes = _api(c, "node-2", "GET", "nodes")
        assert status == 200
        return nodes if {n["name"]: n["running"] for n in nodes} == {
            "rabbit@node-1": True, "rabbit@node-2": True, "rabbit@node-3": False} else None
    nodes = _until(down, "node-3 listed not running")
    assert [n["name"] for n in nodes] == [f"rabbit@{n}" for n in NODES]
    _until(lambda: {lst["node"] for lst in _api(c, "node-1", "GET", "overview")[1]["listeners"]} ==
           {"rabbit@node-1", "rabbit@node-2"}, "the overview of the two running nodes")
    status, queues = _api(c, "node-2", "GET", "queues/%2F")
    (down,) = [q for q in queues if q["name"] == "lives-on-3"]
    assert (down["state"], down["node"], down["durable"]) == ("down", "rabbit@node-3", True)
    status, one = _api(c, "node-1", "GET", "queues/%2F/lives-on-3")
    assert status == 200 and (one["state"], one["node"]) == ("down", "rabbit@node-3")
