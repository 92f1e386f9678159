"""Cluster-wide definitions over real node processes (``mqemu ha up --mode cluster``): what is
declared through one node (pika on its own port, the management API on its own HTTP port) is
on every node; a node killed with -9 finds on its return what was declared while it was down;
the minority side of a partition refuses definition changes, the majority's are taken, and
after the heal the nodes agree."""

from __future__ import annotations

import json

import pika
import pytest
from cluster_helpers import api as _api, node_entry as _node

pytestmark = pytest.mark.timeout(180)

NODES = ("node-1", "node-2", "node-3")




def _pika(c, name, user="guest", password="guest"):
    port = _node(c.status(), name)["ports"]["amqp"]
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, credentials=pika.PlainCredentials(user, password), connection_attempts=1,
        socket_timeout=5, blocked_connection_timeout=5))




def _definitions(c, name):
    status, data = _api(c, name, "GET", "definitions")
    assert status == 200
    return data


def _has(c, name, *, queue=None, exchange=None, user=None, policy=None, binding=None):
    d = _definitions(c, name)
    ok = True
    if queue is not None:
        ok &= any(q["name"] == queue for q in d["queues"])
    if exchange is not None:
        ok &= any(x["name"] == exchange for x in d["exchanges"])
    if user is not None:
        ok &= any(u["name"] == user for u in d["users"])
    if policy is not None:
        ok &= any(p["name"] == policy for p in d["policies"])
    if binding is not None:
        ok &= any((b["source"], b["destination"], b["routing_key"]) == binding for b in d["bindings"])
    return ok


def test_definitions_made_through_one_node_are_on_every_node(cluster, capsys):
    from mqemu.ha.cli import main

    c = cluster
    status = c.status()
    assert status["metadata"]["members"] == list(NODES)
    assert main(["ha", "status", "--control", status["control"]]) == 0  # mqemu ha status
    shown = json.loads(capsys.readouterr().out)["metadata"]
    assert shown["leader"] in NODES and shown["members"] == list(NODES) and shown["term"] >= 1
    assert all(n["metadata"]["members"] == list(NODES) for n in status["nodes"])
    conn = _pika(c, "node-1")
    ch = conn.channel()
    ch.exchange_declare("orders", "topic", durable=True)
    ch.queue_declare("orders.eu", durable=True, arguments={"x-max-length": 100, "x-dead-letter-exchange": "dlx"})
    ch.queue_bind("orders.eu", "orders", "eu.#")
    ch.queue_declare("", exclusive=True)  # node-local, never replicated
    exclusive = ch.queue_declare("", exclusive=True).method.queue
    assert _api(c, "node-1", "PUT", "users/alice", {"password": "wonder", "tags": ""})[0] == 201
    assert _api(c, "node-1", "PUT", "permissions/%2F/alice", {"configure": ".*", "write": ".*", "read": ".*"})[0] == 201
    assert _api(c, "node-1", "PUT", "policies/%2F/ttl", {"pattern": "^orders", "definition": {"message-ttl": 60000},
                                                         "apply-to": "queues"})[0] == 201
    for node in ("node-2", "node-3"):
        c.wait_until(lambda s, node=node: _has(c, node, queue="orders.eu", exchange="orders", user="alice",
                                               policy="ttl", binding=("orders", "orders.eu", "eu.#")),
                     what=f"the definitions on {node}")
        d = _definitions(c, node)
        (q,) = [q for q in d["queues"] if q["name"] == "orders.eu"]
        (home,) = [q for q in _definitions(c, "node-1")["queues"] if q["name"] == "orders.eu"]
        assert q == home and q["durable"] is True
        assert {"x-max-length": 100, "x-dead-letter-exchange": "dlx"}.items() <= q["arguments"].items()
        assert not any(q["name"] == exclusive for q in d["queues"])
    # the user logs in on node-3 with the password set on node-1 (the hash was replicated)
    other = _pika(c, "node-3", "alice", "wonder")
    och = other.channel()
    och.queue_declare("orders.eu", durable=True, passive=True)
    # a delete through node-3 reaches node-1
    och.queue_delete("orders.eu")
    c.wait_until(lambda s: not _has(c, "node-1", queue="orders.eu"), what="the delete on node-1")
    assert _has(c, "node-1", exchange="orders")
    other.close()
    conn.close()
    _declared_then_routable_everywhere(c)


def _declared_then_routable_everywhere(c, rounds=20):
    """declare-ok (queue, exchange, bind) waits until every node reached has applied the
    declaration: a publish with confirms and ``mandatory`` through another node right after it
    is routed (no basic.return) and delivered, for classic and quorum queues."""
    conn = _pika(c, "node-1")
    ch = conn.channel()
    others = {}
    for node in ("node-2", "node-3"):
        oc = _pika(c, node)
        och = oc.channel()
        och.confirm_delivery()
        others[node] = (oc, och)
    for i in range(rounds):
        for kind in ("classic", "quorum"):
            q, x = f"sync-{kind}-{i}", f"sync-x-{kind}-{i}"
            ch.queue_declare(q, durable=True, arguments={"x-queue-type": kind})
            for node, (_, och) in others.items():  # pika raises UnroutableError on a basic.return
                och.basic_publish("", q, f"{node} {i}".encode(), mandatory=True)
            ch.exchange_declare(x, "direct", durable=True)
            ch.queue_bind(q, x, "k")
            for node, (_, och) in others.items():
                och.basic_publish(x, "k", f"{node} {i} via x".encode(), mandatory=True)
            got = []
            for _ in range(20):
                method, _props, body = ch.basic_get(q, auto_ack=True)
                if method is not None:
                    got.append(body)
                if len(got) == 4:
                    break
                conn.sleep(0.05)
            assert sorted(got) == sorted(f"{n} {i}{via}".encode() for n in others for via in ("", " via x")), (kind, i)
            ch.queue_delete(q)
            ch.exchange_delete(x)
    for oc, _ in others.values():
        oc.close()
    conn.close()


def test_a_node_killed_finds_what_was_declared_while_it_was_down(cluster):
    c = cluster
    conn = _pika(c, "node-1")
    ch = conn.channel()
    ch.queue_declare("before", durable=True)
    home3 = _pika(c, "node-3")
    home3.channel().queue_declare("homed-on-3", durable=True, arguments={"x-queue-type": "classic"})
    c.wait_until(lambda s: _has(c, "node-3", queue="before") and _has(c, "node-1", queue="homed-on-3"),
                 what="'before' on node-3, 'homed-on-3' on node-1")
    tag = ch.basic_consume("homed-on-3", lambda *a: None)
    c.kill("node-3")
    c.wait_until(lambda s: _node(s, "node-3")["role"] == "down", what="node-3 down")
    # its queues: the consumer on node-1 is cancelled, declare and consume are 404 there
    for _ in range(100):
        conn.process_data_events(0.05)
        if tag not in ch.consumer_tags:
            break
    assert tag not in ch.consumer_tags
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as gone:
        conn.channel().queue_declare("homed-on-3", durable=True, passive=True)
    assert (gone.value.reply_code, gone.value.reply_text) == (
        404, "NOT_FOUND - home node 'node-3' of durable queue 'homed-on-3' in vhost '/' is down or inaccessible")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as gone:
        conn.channel().basic_consume("homed-on-3", lambda *a: None)
    assert gone.value.reply_code == 404
    ch.queue_declare("while-down", durable=True)
    ch.exchange_declare("x-while-down", "fanout", durable=True)
    ch.queue_bind("while-down", "x-while-down", "")
    ch.queue_delete("before")
    c.start_node("node-3")
    c.wait_until(lambda s: _node(s, "node-3")["management"] is not None and _node(s, "node-3")["role"] == "member",
                 what="node-3 back")
    c.wait_until(lambda s: _has(c, "node-3", queue="while-down", exchange="x-while-down",
                                binding=("x-while-down", "while-down", "")) and not _has(c, "node-3", queue="before"),
                 what="node-3 caught up")
    c.wait_until(lambda s: all(state["out"] == "up" and state["in"] == "up"
                               for state in _node(s, "node-1")["links"].values()), what="node-1's links up")
    conn.channel().queue_declare("homed-on-3", durable=True, passive=True)  # its home is back
    conn.close()


def test_the_minority_side_refuses_changes_and_the_nodes_agree_after_the_heal(cluster):
    c = cluster
    c.partition("node-1", from_=["node-2", "node-3"])
    c.wait_until(lambda s: (_node(s, "node-2")["metadata"] or {}).get("leader") in ("node-2", "node-3")
                 and (_node(s, "node-1")["links"].get("node-2") or {}).get("out") == "down",
                 what="node-1 cut off, a leader on the majority side")
    conn = _pika(c, "node-1")
    ch = conn.channel()
    ch.queue_declare("", exclusive=True)  # node-local: still works
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as refused:
        ch.queue_declare("minority-q", durable=True)
    assert refused.value.reply_code == 541
    assert "failed to declare queue 'minority-q' in vhost '/'" in refused.value.reply_text
    assert "metadata store is unavailable" in refused.value.reply_text
    code, _ = _api(c, "node-1", "PUT", "users/mallory", {"password": "x", "tags": ""})
    assert code == 500
    assert not _has(c, "node-1", user="mallory")  # the change was undone
    status, body = _api(c, "node-1", "PUT", "exchanges/%2F/minority-x", {"type": "direct", "durable": True})
    assert status == 400 and "metadata store is unavailable" in body["reason"]
    # the majority side takes changes
    maj = _pika(c, "node-2")
    mch = maj.channel()
    mch.queue_declare("majority-q", durable=True)
    assert _api(c, "node-3", "PUT", "users/bob", {"password": "b", "tags": ""})[0] == 201
    c.wait_until(lambda s: _has(c, "node-3", queue="majority-q"), what="majority-q on node-3")
    c.heal()
    for node in NODES:
        c.wait_until(lambda s, node=node: _has(c, node, queue="majority-q", user="bob")
                     and not _has(c, node, queue="minority-q"), what=f"{node} converged")
    names = [sorted(q["name"] for q in _definitions(c, n)["queues"]) for n in NODES]
    assert names[0] == names[1] == names[2]
    # node-1 takes changes again
    conn = _pika(c, "node-1")
    conn.channel().queue_declare("after-heal", durable=True)
    c.wait_until(lambda s: _has(c, "node-2", queue="after-heal"), what="after-heal on node-2")
    conn.close()
    maj.close()
