"""The node's web page at ``/`` and the state it polls (``/ui/state.json``), over real HTTP,
with pika as the client whose queues and connection the page shows."""

import httpx
import pika
import pytest

pytestmark = pytest.mark.timeout(60)


def state(node, auth=("guest", "guest")):
    return httpx.get(f"http://127.0.0.1:{node.ports['http']}/ui/state.json", auth=auth, timeout=10)


def queue(doc, name):
    return next(q for q in doc["queues"] if q["name"] == name)


@pytest.mark.parametrize("engine", ["rabbitmq", "activemq"])
def test_page_served_on_every_engine_and_state_needs_a_login(mqemu_start, engine):
    node = mqemu_start(engine=engine, ports={"http": 0})
    page = httpx.get(f"http://127.0.0.1:{node.ports['http']}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert b"ui/state.json" in page.content and b"<script" in page.content
    assert b"http://" not in page.content and b"https://" not in page.content  # nothing fetched from elsewhere
    r = state(node, auth=None)
    assert r.status_code == 401 and "www-authenticate" not in r.headers  # the page's form, not the browser's dialog
    assert state(node, auth=("guest", "wrong")).json() == {"error": "not_authorized", "reason": "Login failed"}
    doc = state(node).json()
    assert (doc["engine"], doc["role"], doc["topology"]) == (engine, "active", None)
    assert doc["ports"]["http"] == node.ports["http"]
    if engine == "rabbitmq":  # the management API is still there beside the page
        api = httpx.get(f"http://127.0.0.1:{node.ports['http']}/api/overview", auth=("guest", "guest"), timeout=10)
        assert api.status_code == 200 and api.json()["node"] == f"rabbit@{doc['node']}"


def test_state_has_queues_counters_and_connections(mqemu_start):
    node = mqemu_start(ports={"http": 0})
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.ports["amqp"]))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("orders", durable=True)
        for i in range(5):
            ch.basic_publish("", "orders", f"m{i}".encode())
        doc = state(node).json()
        q = queue(doc, "orders")
        assert (q["vhost"], q["messages"], q["ready"], q["unacked"], q["consumers"]) == ("/", 5, 5, 0, 0)
        assert (q["enqueued"], q["delivered"]) == (5, 0)
        for _ in range(2):
            method, _, _ = ch.basic_get("orders", auto_ack=False)
        q = queue(state(node).json(), "orders")
        assert (q["messages"], q["ready"], q["unacked"], q["delivered"]) == (5, 3, 2, 2)
        ch.basic_ack(method.delivery_tag, multiple=True)
        ch.basic_qos(prefetch_count=10)
        got = []
        ch.basic_consume("orders", lambda c, m, p, b: got.append(b), auto_ack=True)
        while len(got) < 3:
            conn.process_data_events(time_limit=1)
        q = queue(state(node).json(), "orders")
        assert (q["messages"], q["consumers"], q["enqueued"], q["delivered"]) == (0, 1, 5, 5)
        doc = state(node).json()
        assert [v["name"] for v in doc["vhosts"]] == ["/"] and doc["vhosts"][0]["queues"] == 1
        [c] = doc["connections"]
        assert (c["protocol"], c["user"], c["vhost"]) == ("AMQP 0-9-1", "guest", "/")
    finally:
        conn.close()


def test_node_in_a_topology_shows_roles_and_fault_timeline(mqemu_topology):
    t = mqemu_topology(mode="single", protocols=("amqp",))
    [proc] = t.topology.nodes
    http = proc.last_status["ports"]["http"]  # the node's own listener (clients' ports are proxied)
    t.fault("down", "node-1")  # a network fault on the node's proxies: kept with its start
    doc = httpx.get(f"http://127.0.0.1:{http}/ui/state.json", auth=("guest", "guest"), timeout=10).json()
    topo = doc["topology"]
    assert topo["control"] == t.topology.control_url and topo["mode"] == "single"
    assert [(n["name"], n["role"]) for n in topo["nodes"]] == [("node-1", "active")]
    faults = [e for e in topo["timeline"] if e.get("kind") == "fault"]
    assert [(f["action"], f["target"]) for f in faults] == [("down", "node-1")]
    assert any(e.get("event") == "role" and e.get("node") == "node-1" for e in topo["timeline"])
