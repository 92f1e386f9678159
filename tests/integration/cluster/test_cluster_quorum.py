"""Quorum queues over real node processes (``mqemu ha up --mode cluster``): a member on every
node, a leader placed on the declaring node, publishes with confirms on a follower's node
reaching a consumer on another node; kill -9 of the leader's node: a new leader, publishing
resumes, nothing confirmed lost, unacked deliveries redelivered with ``x-delivery-count``;
the killed node returns and catches up; the queue deleted: its groups stop everywhere."""

from __future__ import annotations

import json
import os
import threading

import pika
import pytest
from cluster_helpers import api as _api, node_entry as _node

pytestmark = pytest.mark.timeout(240)

NODES = ("node-1", "node-2", "node-3")
QQ = {"x-queue-type": "quorum"}




def _pika(c, name):
    port = _node(c.status(), name)["ports"]["amqp"]
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, connection_attempts=1, socket_timeout=5, blocked_connection_timeout=10))




def _balanced(c):
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", c.status()["balancer"]["amqp"], connection_attempts=3, retry_delay=0.2, socket_timeout=5,
        blocked_connection_timeout=10))


def _members(status, queue):
    """node -> its quorum status of ``queue`` (nodes up only)."""
    return {n["name"]: (n.get("quorum") or {}).get(queue) for n in status["nodes"]
            if n["role"] == "member" and (n.get("quorum") or {}).get(queue)}


def _leader(status, queue, among=NODES):
    found = _members(status, queue)
    leaders = {m["leader"] for name, m in found.items() if name in among}
    if len(leaders) == 1 and None not in leaders and set(among) <= set(found):
        (leader,) = leaders
        return leader if found.get(leader, {}).get("role") == "leader" else None
    return None


def _drain(conn, ch, queue, n, timeout=30.0, ack=True):
    got = []

    def on(chan, method, props, body):
        got.append((method, props, body))
        if ack:
            chan.basic_ack(method.delivery_tag)
    tag = ch.basic_consume(queue, on)
    deadline = 0.0
    while len(got) < n and deadline < timeout:
        conn.process_data_events(0.1)
        deadline += 0.1
    ch.basic_cancel(tag)
    return got


def test_a_quorum_queue_serves_every_node_and_survives_its_leader_s_kill(cluster, capsys):
    from mqemu.ha.cli import main

    c = cluster
    # declared on node-2: its member leads (client-local, the default)
    home = _pika(c, "node-2")
    home.channel().queue_declare("qq", durable=True, arguments=QQ)
    home.close()
    c.wait_until(lambda s: _leader(s, "qq") == "node-2", what="node-2 leads qq (client-local)")
    status = c.status()
    leader = _leader(status, "qq")
    members = _members(status, "qq")
    assert set(members) == set(NODES) and all(m["members"] == list(NODES) for m in members.values())
    assert status["queues"]["qq"]["leader"] == leader
    assert status["queues"]["qq"]["members"] == status["queues"]["qq"]["online"] == list(NODES)
    assert main(["ha", "status", "--control", status["control"]]) == 0  # mqemu ha status
    shown = json.loads(capsys.readouterr().out)["queues"]["qq"]
    assert shown["leader"] == leader and shown["members"] == list(NODES)
    # declared through the balancer with balanced placement: a node that leads nothing leads it
    lb = _balanced(c)
    lb.channel().queue_declare("qb", durable=True, arguments={**QQ, "x-queue-leader-locator": "balanced"})
    lb.close()
    c.wait_until(lambda s: _leader(s, "qb") in ("node-1", "node-3"), what="qb led by node-1 or node-3 (balanced)")
    follower, consumer_node = [n for n in NODES if n != leader]
    # basic.get on every node: the leader's answers itself, a follower's takes the head through
    # the log (answered when the take applies there); settled on the node that got it
    gets = {name: _pika(c, name).channel() for name in NODES}
    gets[leader].confirm_delivery()
    for k in range(4):
        gets[leader].basic_publish("", "qq", b"g%d" % k, pika.BasicProperties(delivery_mode=2))
    taken = {}
    for k, name in enumerate([follower, leader, consumer_node]):
        method, props, body = gets[name].basic_get("qq", auto_ack=False)
        assert (body, method.message_count, method.redelivered) == (b"g%d" % k, 3 - k, False)
        assert props.headers["x-delivery-count"] == 0
        taken[name] = method.delivery_tag
    gets[consumer_node].basic_reject(taken[consumer_node], requeue=True)  # back from a follower's node
    # a reject has no answer: wait until the requeue applied on the node that gets next (its
    # take of the head is proposed after it, so it finds g2 back at the head)
    c.wait_until(lambda s: gets[follower].queue_declare("qq", durable=True, passive=True).method.message_count == 2,
                 what="the requeue applied on the follower's node")
    method, props, body = gets[follower].basic_get("qq", auto_ack=False)
    assert (body, method.message_count, method.redelivered) == (b"g2", 1, True)
    assert props.headers["x-delivery-count"] == 1
    gets[follower].basic_ack(taken[follower])
    gets[follower].basic_ack(method.delivery_tag)
    gets[leader].basic_ack(taken[leader])
    method, _props, body = gets[consumer_node].basic_get("qq", auto_ack=True)
    assert (body, method.message_count) == (b"g3", 0)
    assert gets[follower].basic_get("qq", auto_ack=True) == (None, None, None)  # basic.get-empty
    for ch in gets.values():
        ch.connection.close()
    # publishes with confirms on a follower's node, consumed on the other follower's node
    pub = _pika(c, follower)
    pch = pub.channel()
    pch.confirm_delivery()
    for k in range(200):
        pch.basic_publish("", "qq", b"m%d" % k, pika.BasicProperties(delivery_mode=2), mandatory=True)
    con = _pika(c, consumer_node)
    cch = con.channel()
    cch.basic_qos(prefetch_count=50)
    got = _drain(con, cch, "qq", 200)
    assert [b for _, _, b in got] == [b"m%d" % k for k in range(200)]
    assert not any(m.redelivered for m, _, _ in got)
    # unacked deliveries on the leader's node; then kill -9 of that node
    lcon = _pika(c, leader)
    lch = lcon.channel()
    lch.confirm_delivery()
    for k in range(20):
        lch.basic_publish("", "qq", b"u%d" % k, pika.BasicProperties(delivery_mode=2))
    held = _drain(lcon, lch, "qq", 20, ack=False)
    assert len(held) == 20
    # the fault targets by role (resolved from the status; a loaded machine may move the
    # leadership meanwhile, so the node holding the deliveries is killed by its name)
    def roles_agree(s):
        try:
            leaders = [n.name for n in c.topology.resolve("leader-of:qq")]
            followers = sorted(n.name for n in c.topology.resolve("follower-of:qq"))
        except Exception:  # noqa: BLE001 - no leader at this moment (TopologyError)
            return False
        return len(leaders) == 1 and followers == sorted(set(NODES) - set(leaders))
    c.wait_until(roles_agree, what="leader-of:qq and follower-of:qq")
    c.kill(leader)
    c.wait_until(lambda s: _node(s, leader)["role"] == "down", what=f"{leader} down")
    survivors = [n for n in NODES if n != leader]
    c.wait_until(lambda s: _leader(s, "qq", survivors) is not None, what="a new leader")
    # what the dead node held comes back, once the new leader has removed its consumer (a
    # publish before that removal may be delivered first: the same race on RabbitMQ)
    got = _drain(con, cch, "qq", 20)
    assert sorted(b for _, _, b in got) == sorted(b"u%d" % k for k in range(20))
    assert all(m.redelivered and p.headers["x-delivery-count"] == 1 for m, p, _ in got)
    for k in range(50):
        pch.basic_publish("", "qq", b"after%d" % k, pika.BasicProperties(delivery_mode=2), mandatory=True)
    got = _drain(con, cch, "qq", 50)
    assert [b for _, _, b in got] == [b"after%d" % k for k in range(50)]
    assert not any(m.redelivered for m, _, _ in got)
    # one node down: stopping another would leave qq without a majority (RabbitMQ's health check)
    status, body = _api(c, consumer_node, "GET", "health/checks/node-is-quorum-critical")
    assert status == 503 and body["status"] == "failed"
    assert body["reason"] == "There are quorum queues that would lose their quorum if the target node is shut down"
    assert {"readable_name": "queue 'qq' in vhost '/'", "name": "qq", "virtual_host": "/",
            "type": "quorum"} in body["queues"]
    code, shown = _api(c, consumer_node, "GET", "queues/%2F/qq")
    assert code == 200 and shown["type"] == "quorum" and shown["members"] == [f"rabbit@{n}" for n in NODES]
    assert shown["online"] == [f"rabbit@{n}" for n in NODES if n != leader]
    assert shown["leader"] in [f"rabbit@{n}" for n in survivors]
    # the killed node returns and catches up
    for k in range(5):  # left in the queue while the node is down
        pch.basic_publish("", "qq", b"left%d" % k, pika.BasicProperties(delivery_mode=2))
    c.start_node(leader)
    c.wait_until(lambda s: _node(s, leader)["role"] == "member" and _node(s, leader)["management"]
                 and _api(c, leader, "GET", "queues/%2F/qq")[1].get("messages") == 5, what=f"{leader} caught up")
    assert _api(c, leader, "GET", "queues/%2F/qq")[1]["type"] == "quorum"  # rebuilt on its log, not classic
    # deleted: every node's group stops
    c.wait_until(lambda s: all(state["out"] == state["in"] == "up" for n in s["nodes"]
                               for state in n["links"].values()), what="every link up")
    assert _api(c, consumer_node, "GET", "health/checks/node-is-quorum-critical") == (200, {"status": "ok"})
    pch.queue_delete("qq")
    pch.queue_delete("qb")
    c.wait_until(lambda s: all(not (n.get("quorum") or {}) for n in s["nodes"]), what="the groups gone")
    data_dir = c.status()["data_dir"]
    for name in NODES if data_dir else ():
        d = os.path.join(data_dir, name, "raft", "quorum")
        c.wait_until(lambda s, d=d: not os.path.isdir(d) or not os.listdir(d), what=f"{d} emptied")
    pub.close()
    con.close()


def test_the_minority_side_confirms_nothing_the_majority_serves_and_the_heal_converges(cluster):
    c = cluster
    conn = _pika(c, "node-1")
    ch = conn.channel()
    ch.queue_declare("qp", durable=True, arguments=QQ)
    c.wait_until(lambda s: _leader(s, "qp") == "node-1", what="node-1 leads qp")
    ch.confirm_delivery()
    ch.basic_publish("", "qp", b"before", pika.BasicProperties(delivery_mode=2))
    c.partition("node-1", from_=["node-2", "node-3"])
    c.wait_until(lambda s: _leader(s, "qp", ("node-2", "node-3")) in ("node-2", "node-3"),
                 what="a leader of qp on the majority side")
    # the minority side: a publish is not confirmed (it waits), a consumer there gets nothing
    port = _node(c.status(), "node-1")["ports"]["amqp"]
    confirmed = []

    def publish_on_minority():
        m = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, connection_attempts=1))
        mch = m.channel()
        mch.confirm_delivery()
        mch.basic_publish("", "qp", b"minority", pika.BasicProperties(delivery_mode=2))
        confirmed.append(True)
        m.close()
    waiting = threading.Thread(target=publish_on_minority, daemon=True)
    waiting.start()
    waiting.join(2.0)
    assert confirmed == []
    assert _drain(conn, ch, "qp", 1, timeout=1.0) == []
    # the majority serves
    maj = _pika(c, "node-3")
    jch = maj.channel()
    jch.confirm_delivery()
    for k in range(10):
        jch.basic_publish("", "qp", b"maj%d" % k, pika.BasicProperties(delivery_mode=2))
    got = _drain(maj, jch, "qp", 11)
    assert [b for _, _, b in got] == [b"before"] + [b"maj%d" % k for k in range(10)]
    c.heal()
    waiting.join(30.0)
    assert confirmed == [True]  # confirmed late, once the heal let it reach the leader
    got = _drain(maj, jch, "qp", 1)
    assert [b for _, _, b in got] == [b"minority"]
    c.wait_until(lambda s: _leader(s, "qp") is not None and len(_members(s, "qp")) == 3
                 and all(_api(c, n, "GET", "queues/%2F/qp")[1].get("messages") == 0 for n in NODES),
                 what="every member agrees after the heal")
    jch.queue_delete("qp")
    maj.close()
