"""RabbitMQ's management API on a node's HTTP listener, through real HTTP (httpx) and pika."""

import json
from urllib.parse import quote

import httpx
import pika
import pytest

from mqemu.broker.auth import Permission, User

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def node(mqemu_start):
    return mqemu_start(ports={"http": 0})


@pytest.fixture
def api(node):
    with httpx.Client(base_url=f"http://127.0.0.1:{node.ports['http']}/api", auth=("guest", "guest"),
                      timeout=10) as client:
        yield client


def amqp(node):
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.ports["amqp"]))


def test_queue_declare_publish_get_purge_delete(api):
    assert api.put("/queues/%2F/orders", json={"durable": True, "arguments": {"x-queue-type": "classic"}}).status_code == 201
    assert api.put("/queues/%2F/orders", json={"durable": True, "arguments": {"x-queue-type": "classic"}}).status_code == 204
    r = api.put("/queues/%2F/orders", json={"durable": False})
    assert r.status_code == 400 and "inequivalent arg 'durable'" in r.json()["reason"]
    for i in range(3):
        r = api.post("/exchanges/%2F/amq.default/publish", json={
            "properties": {"delivery_mode": 2, "headers": {"n": i}}, "routing_key": "orders",
            "payload": f"m{i}", "payload_encoding": "string"})
        assert r.json() == {"routed": True}
    assert api.post("/exchanges/%2F/amq.default/publish", json={
        "properties": {}, "routing_key": "nowhere", "payload": "x", "payload_encoding": "string"}).json() == {"routed": False}
    q = api.get("/queues/%2F/orders").json()
    assert (q["name"], q["vhost"], q["durable"], q["messages_ready"], q["type"]) == ("orders", "/", True, 3, "classic")
    got = api.post("/queues/%2F/orders/get", json={"count": 2, "ackmode": "ack_requeue_true", "encoding": "auto",
                                                    "truncate": 50000}).json()
    assert [m["payload"] for m in got] == ["m0", "m1"] and got[0]["properties"]["headers"] == {"n": 0}
    assert got[1]["message_count"] == 1
    got = api.post("/queues/%2F/orders/get", json={"count": 1, "ackmode": "ack_requeue_false",
                                                    "encoding": "base64"}).json()
    assert got[0]["payload"] == "bTA=" and got[0]["payload_encoding"] == "base64" and got[0]["redelivered"]
    assert api.get("/queues/%2F/orders").json()["messages_ready"] == 2
    assert api.delete("/queues/%2F/orders/contents").status_code == 204
    assert api.get("/queues/%2F/orders").json()["messages_ready"] == 0
    assert api.delete("/queues/%2F/orders").status_code == 204
    assert api.get("/queues/%2F/orders").status_code == 404
    assert api.delete("/queues/%2F/orders").json() == {"error": "Object Not Found", "reason": "Not Found"}


def test_exchanges_and_bindings(api):
    assert api.put("/exchanges/%2F/ev", json={"type": "topic", "durable": True}).status_code == 201
    assert api.put("/queues/%2F/evq", json={"durable": True}).status_code == 201
    r = api.post("/bindings/%2F/e/ev/q/evq", json={"routing_key": "a.#", "arguments": {}})
    assert r.status_code == 201
    between = api.get("/bindings/%2F/e/ev/q/evq").json()
    assert [b["routing_key"] for b in between] == ["a.#"]
    key = between[0]["properties_key"]
    assert key == "a.%23"  # quote_plus, as RabbitMQ packs it
    assert api.get(f"/bindings/%2F/e/ev/q/evq/{key}").json()["destination"] == "evq"
    assert api.post("/exchanges/%2F/ev/publish", json={"properties": {}, "routing_key": "a.b", "payload": "x",
                                                        "payload_encoding": "string"}).json() == {"routed": True}
    names = {(e["name"], e["type"]) for e in api.get("/exchanges/%2F").json()}
    assert ("ev", "topic") in names and ("amq.direct", "direct") in names
    assert {b["source"] for b in api.get("/queues/%2F/evq/bindings").json()} == {"", "ev"}
    assert api.delete(f"/bindings/%2F/e/ev/q/evq/{key}").status_code == 204
    assert api.get("/bindings/%2F/e/ev/q/evq").json() == []
    assert api.delete("/exchanges/%2F/ev").status_code == 204
    assert api.get("/exchanges/%2F/ev").status_code == 404


def test_auth_and_tags(node, api):
    port = node.ports["http"]
    url = f"http://127.0.0.1:{port}/api"
    r = httpx.get(f"{url}/overview")
    assert r.status_code == 401 and r.headers["www-authenticate"] == 'Basic realm="RabbitMQ Management"'
    r = httpx.get(f"{url}/overview", auth=("guest", "wrong"))
    assert (r.status_code, r.json()) == (401, {"error": "not_authorized", "reason": "Login failed"})
    auth = node.broker.auth
    auth.users["plain"] = User("plain", "p")
    auth.users["mgr"] = User("mgr", "p", ("management",))
    auth.users["mon"] = User("mon", "p", ("monitoring",))
    assert httpx.get(f"{url}/overview", auth=("plain", "p")).json() == {"error": "not_authorised",
                                                                       "reason": "Not management user"}
    r = httpx.get(f"{url}/users", auth=("mgr", "p"))
    assert (r.status_code, r.json()["reason"]) == (401, "Not administrator user")
    assert httpx.get(f"{url}/nodes", auth=("mgr", "p")).json()["reason"] == "Not monitor user"
    assert httpx.get(f"{url}/vhosts", auth=("mgr", "p")).json() == []
    assert httpx.get(f"{url}/queues/%2F", auth=("mgr", "p")).status_code == 401
    assert httpx.get(f"{url}/nodes", auth=("mon", "p")).status_code == 200
    assert [v["name"] for v in httpx.get(f"{url}/vhosts", auth=("mon", "p")).json()] == ["/"]
    auth.permissions[("mgr", "/")] = Permission("^mine", ".*", ".*")
    assert httpx.get(f"{url}/queues/%2F", auth=("mgr", "p")).status_code == 200
    r = httpx.put(f"{url}/queues/%2F/theirs", auth=("mgr", "p"), json={})
    assert (r.status_code, r.json()["reason"]) == (401, "User not authorised to access object")
    assert httpx.put(f"{url}/queues/%2F/mine", auth=("mgr", "p"), json={}).status_code == 201
    assert api.get("/whoami").json() == {"name": "guest", "tags": ["administrator"]}


def test_bad_input(node, api):
    r = api.put("/queues/%2F/q", content=b"{not json", headers={"content-type": "application/json"})
    assert (r.status_code, r.json()) == (400, {"error": "bad_request", "reason": "not_json"})
    r = api.put("/queues/nosuch/q", json={})
    assert (r.status_code, r.json()) == (404, {"error": "not_found", "reason": "vhost_not_found"})
    assert api.get("/queues/nosuch").json() == {"error": "Object Not Found", "reason": "Not Found"}
    r = api.post("/overview")
    assert r.status_code == 405 and "GET" in r.headers["allow"] and r.content == b""
    r = api.put("/queues/%2F/big", content=b"[" + b" " * (21 * 1024 * 1024) + b"]")
    assert r.status_code == 413
    assert api.get("/no/such/path").status_code == 404
    r = api.post("/queues/%2F/q2/get", json={"count": 1, "ackmode": "bogus"})
    assert r.status_code == 404  # the queue does not exist
    api.put("/queues/%2F/q2", json={})
    r = api.post("/queues/%2F/q2/get", json={"count": 1, "ackmode": "bogus"})
    assert r.status_code == 400 and r.json()["error"] == "bad_request"


def test_connections_listed_and_forced_closed(node, api):
    conn = amqp(node)
    ch = conn.channel()
    ch.queue_declare("watched")
    ch.basic_consume("watched", lambda *a: None, consumer_tag="ctag-1")
    conns = api.get("/connections").json()
    assert len(conns) == 1 and conns[0]["user"] == "guest" and conns[0]["vhost"] == "/"
    assert conns[0]["protocol"] == "AMQP 0-9-1" and conns[0]["channels"] == 1
    assert [c["number"] for c in api.get("/channels").json()] == [1]
    assert [c["consumer_tag"] for c in api.get("/consumers").json()] == ["ctag-1"]
    assert api.get("/overview").json()["object_totals"]["connections"] == 1
    name = conns[0]["name"]
    r = api.delete(f"/connections/{quote(name, safe='')}", headers={"X-Reason": "rehearsal"})
    assert r.status_code == 204
    with pytest.raises(pika.exceptions.ConnectionClosed) as closed:
        conn.process_data_events(time_limit=5)
    assert closed.value.reply_code == 320 and "CONNECTION_FORCED - rehearsal" in closed.value.reply_text


def test_health_checks(node, api):
    assert api.get("/aliveness-test/%2F").json() == {"status": "ok"}
    assert api.get("/health/checks/alarms").json() == {"status": "ok"}
    assert api.get("/health/checks/local-alarms").json() == {"status": "ok"}
    assert api.get(f"/health/checks/port-listener/{node.ports['amqp']}").json() == {
        "status": "ok", "port": node.ports["amqp"]}
    r = api.get("/health/checks/port-listener/1")
    assert r.status_code == 503 and r.json()["status"] == "failed" and r.json()["missing"] == 1
    assert api.get("/health/checks/protocol-listener/amqp").status_code == 200
    r = api.get("/health/checks/protocol-listener/nope")
    assert r.status_code == 503 and r.json()["reason"] == "No active listener"
    assert api.get("/health/checks/virtual-hosts").json() == {"status": "ok"}
    node.broker.memory_alarm = True
    try:
        r = api.get("/health/checks/alarms")
        assert r.status_code == 503 and r.json()["status"] == "failed"
    finally:
        node.broker.memory_alarm = False


def test_policies_act_on_queues(node, api):
    conn = amqp(node)
    ch = conn.channel()
    ch.queue_declare("lim.a")
    ch.queue_declare("lim.b", arguments={"x-max-length": 1})
    ch.queue_declare("dead")
    for i in range(4):
        ch.basic_publish("", "lim.a", f"a{i}".encode())
        ch.basic_publish("", "lim.b", f"b{i}".encode())
    ch.queue_declare("dead", passive=True)  # a round trip after the publishes: they are in
    r = api.put("/policies/%2F/limits", json={"pattern": "^lim\\.", "apply-to": "queues", "priority": 1,
                                                "definition": {"max-length": 2, "dead-letter-exchange": "",
                                                               "dead-letter-routing-key": "dead"}})
    assert r.status_code == 201
    a, b = api.get("/queues/%2F/lim.a").json(), api.get("/queues/%2F/lim.b").json()
    assert a["policy"] == "limits" and a["messages_ready"] == 2  # dropped at once, to the DLX
    assert b["messages_ready"] == 1  # the argument (1) is lower than the policy (2): it wins
    assert api.get("/queues/%2F/dead").json()["messages_ready"] == 2  # lim.a's two oldest
    assert [p["name"] for p in api.get("/policies/%2F").json()] == ["limits"]
    r = api.put("/policies/%2F/bad", json={"pattern": "x", "definition": {"message-ttl": -1}})
    assert r.status_code == 400 and r.json()["error"] == "bad_request"
    assert api.delete("/policies/%2F/limits").status_code == 204
    ch.basic_publish("", "lim.a", b"more")
    ch.queue_declare("lim.a", passive=True)  # a round trip: the publish is in
    assert api.get("/queues/%2F/lim.a").json()["messages_ready"] == 3
    conn.close()


def test_vhosts_users_permissions_and_hashed_login(node, api):
    assert api.put("/vhosts/team", json={"description": "a team"}).status_code == 201
    assert api.get("/permissions/team/guest").json()["configure"] == ".*"  # its maker's, as on RabbitMQ
    assert api.put("/users/alice", json={"password": "pw", "tags": "management"}).status_code == 201
    assert api.put("/permissions/team/alice", json={"configure": ".*", "write": ".*", "read": ".*"}).status_code == 201
    alice = api.get("/users/alice").json()
    assert alice["hashing_algorithm"] == "rabbit_password_hashing_sha256" and alice["tags"] == ["management"]
    from mqemu.broker.auth import hash_password
    api.put("/users/bob", json={"password_hash": hash_password("secret", "rabbit_password_hashing_sha512"),
                                "hashing_algorithm": "rabbit_password_hashing_sha512", "tags": ""})
    api.put("/permissions/team/bob", json={"configure": ".*", "write": ".*", "read": ".*"})
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", node.ports["amqp"], "team", pika.PlainCredentials("bob", "secret")))
    conn.close()
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", node.ports["amqp"], "team", pika.PlainCredentials("bob", "wrong")))
    assert {p["user"] for p in api.get("/vhosts/team/permissions").json()} == {"guest", "alice", "bob"}
    assert api.delete("/vhosts/team").status_code == 204
    assert api.get("/vhosts/team").status_code == 404
    assert api.delete("/users/alice").status_code == 204


def test_definitions_export_import_round_trip(node, api, mqemu_start):
    api.put("/vhosts/app", json={})
    api.put("/permissions/app/guest", json={"configure": ".*", "write": ".*", "read": ".*"})
    api.put("/exchanges/app/events", json={"type": "fanout", "durable": True})
    api.put("/queues/app/audit", json={"durable": True, "arguments": {"x-message-ttl": 60000}})
    api.post("/bindings/app/e/events/q/audit", json={"routing_key": "", "arguments": {}})
    api.put("/policies/app/ttl", json={"pattern": "^audit$", "definition": {"max-length": 10}, "apply-to": "queues"})
    exported = api.get("/definitions").json()
    other = mqemu_start(ports={"http": 0})
    with httpx.Client(base_url=f"http://127.0.0.1:{other.ports['http']}/api", auth=("guest", "guest"),
                      timeout=10) as api2:
        assert api2.post("/definitions", content=json.dumps(exported)).status_code == 204
        again = api2.get("/definitions").json()
        for section in ("users", "vhosts", "permissions", "policies", "queues", "exchanges", "bindings"):
            assert sorted(map(json.dumps, again[section])) == sorted(map(json.dumps, exported[section])), section
        per_vhost = api2.get("/definitions/app").json()
        assert [q["name"] for q in per_vhost["queues"]] == ["audit"] and "vhost" not in per_vhost["queues"][0]
        bad = dict(exported, bindings=[{"source": "events", "vhost": "app", "destination": "missing",
                                        "destination_type": "queue", "routing_key": "", "arguments": {}}],
                   queues=exported["queues"] + [{"name": "fresh", "vhost": "app", "durable": True,
                                                 "auto_delete": False, "arguments": {}}])
        r = api2.post("/definitions", content=json.dumps(bad))
        assert r.status_code == 400 and "missing" in r.json()["reason"]
        assert api2.get("/queues/app/fresh").status_code == 404  # nothing half applied


def test_stomp_and_mqtt_connections_are_listed_and_closed(node, api):
    import socket

    stomp = socket.create_connection(("127.0.0.1", node.ports["stomp"]), timeout=10)
    stomp.sendall(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00")
    assert stomp.recv(4096).startswith(b"CONNECTED")
    mqtt = socket.create_connection(("127.0.0.1", node.ports["mqtt"]), timeout=10)
    # MQTT 3.1.1 CONNECT, clean session, keep-alive 60, client id "m1", user guest/guest
    payload = b"\x00\x04MQTT\x04\xc2\x00\x3c" + b"\x00\x02m1" + b"\x00\x05guest" + b"\x00\x05guest"
    mqtt.sendall(bytes([0x10, len(payload)]) + payload)
    assert mqtt.recv(4) == b"\x20\x02\x00\x00"  # CONNACK accepted
    conns = {c["protocol"]: c for c in api.get("/connections").json()}
    assert set(conns) == {"STOMP", "MQTT"} and conns["MQTT"]["user"] == "guest"
    assert api.delete(f"/connections/{quote(conns['MQTT']['name'], safe='')}").status_code == 204
    assert mqtt.recv(4096) == b""  # closed by the broker
    assert api.delete(f"/connections/{quote(conns['STOMP']['name'], safe='')}").status_code == 204
    data = b""
    while not data.endswith(b"\x00\n") and (chunk := stomp.recv(4096)):
        data += chunk
    assert data.startswith(b"ERROR")
    while stomp.recv(4096):  # then the broker closes the socket
        pass
    stomp.close()
    mqtt.close()


def test_a_failing_handler_is_a_500_and_the_node_serves_on(node, api, monkeypatch):
    from mqemu.protocols.http import api_access

    def broken(*args):
        raise RuntimeError("a bug")
    monkeypatch.setattr(api_access.definitions, "export_definitions", broken)
    assert api.get("/definitions").status_code == 500
    assert api.get("/whoami").status_code == 200
    amqp(node).close()


def test_a_revoked_write_permission_refuses_the_next_stomp_send(node, api):
    """A STOMP connection remembers the exchanges it may write to; a permission changed
    through the API makes it check again (RabbitMQ 3.10 refuses the next publish on the
    same connection)."""
    import socket

    api.put("/users/alice", json={"password": "pw", "tags": ""})
    assert api.put("/permissions/%2F/alice", json={"configure": ".*", "write": ".*", "read": ".*"}).status_code == 201
    stomp = socket.create_connection(("127.0.0.1", node.ports["stomp"]), timeout=10)

    def frames_until(marker: bytes) -> bytes:
        data = b""
        while marker not in data and (chunk := stomp.recv(4096)):
            data += chunk
        return data

    stomp.sendall(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:alice\npasscode:pw\n\n\x00")
    assert frames_until(b"\x00").startswith(b"CONNECTED")
    stomp.sendall(b"SEND\ndestination:/queue/granted\nreceipt:r1\n\nfirst\x00")
    assert b"receipt-id:r1" in frames_until(b"\x00")
    assert api.put("/permissions/%2F/alice", json={"configure": ".*", "write": "^nothing$",
                                                   "read": ".*"}).status_code == 204
    stomp.sendall(b"SEND\ndestination:/queue/granted\nreceipt:r2\n\nsecond\x00")
    refused = frames_until(b"\x00")
    assert refused.startswith(b"ERROR") and b"receipt-id:r2" not in refused
    assert b"access to exchange 'amq.default' in vhost '/' refused for user 'alice'" in refused
    stomp.close()
    assert api.get("/queues/%2F/granted").json()["messages_ready"] == 1
