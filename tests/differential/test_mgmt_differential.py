"""The management API against RabbitMQ 3.10's management plugin: the same requests to both,
the same status codes, error bodies, keys and value types for the fields tools read; and a
definitions round trip (export from RabbitMQ, import into mqemu, export again).

Runs when ``MQEMU_REF_RABBIT_HTTP`` (``http://guest:guest@HOST:PORT/api/``) is set; every
object made on the reference broker has a unique name and is deleted afterwards.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from urllib.parse import quote, urlsplit

import httpx
import pytest

REF = os.environ.get("MQEMU_REF_RABBIT_HTTP")
pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(not REF, reason="MQEMU_REF_RABBIT_HTTP is not set (the reference RabbitMQ)")]

# Fields of a queue tools read (rabbitmqadmin's default columns, pyrabbit2, monitoring checks).
QUEUE_FIELDS = ("name", "vhost", "durable", "auto_delete", "exclusive", "arguments", "messages", "messages_ready",
                "messages_unacknowledged", "consumers", "state", "type", "node", "policy")


def _client(base: str) -> httpx.Client:
    parts = urlsplit(base)
    return httpx.Client(base_url=f"{parts.scheme}://{parts.hostname}:{parts.port}/api",
                        auth=(parts.username or "guest", parts.password or "guest"), timeout=15)


@pytest.fixture
def both(mqemu_start):
    node = mqemu_start(ports={"http": 0}, engine_version="3.10")
    with _client(REF) as ref, _client(f"http://guest:guest@127.0.0.1:{node.ports['http']}/api/") as ours:
        yield ref, ours, node


@pytest.fixture
def name():
    return f"mqemu-mgmt-{uuid.uuid4().hex[:8]}"


def _types(d: dict) -> dict:
    return {k: type(v).__name__ for k, v in d.items()}


def _view(r: httpx.Response) -> tuple:
    try:
        body = r.json()
    except ValueError:
        body = r.content
    return r.status_code, body


def test_status_codes_and_error_bodies(both, name):
    ref, ours, _ = both
    q = quote(name)
    cases = [
        ("GET", "/queues/nosuchvhost", None),
        ("GET", f"/queues/%2F/{q}", None),
        ("DELETE", f"/queues/%2F/{q}", None),
        ("PUT", f"/queues/nosuchvhost/{q}", "{}"),
        ("PUT", f"/queues/%2F/{q}", "{bad json"),
        ("POST", "/overview", None),
        ("GET", "/exchanges/%2F/nosuch", None),
        ("POST", "/exchanges/%2F/nosuch/publish", json.dumps({"properties": {}, "routing_key": "x", "payload": "",
                                                              "payload_encoding": "string"})),
        ("GET", "/vhosts/nosuchvhost", None),
        ("GET", "/users/nosuchuser", None),
        ("GET", "/health/checks/alarms", None),
        ("GET", "/health/checks/local-alarms", None),
        ("GET", "/health/checks/virtual-hosts", None),
        ("GET", "/aliveness-test/%2F", None),
        ("GET", "/whoami", None),
    ]
    for method, path, body in cases:
        got = [_view(c.request(method, path, content=body)) for c in (ref, ours)]
        assert got[0] == got[1], (method, path)
    for auth in (("guest", "wrong"), None):
        got = [httpx.get(f"{str(c.base_url).rstrip('/')}/overview", auth=auth) for c in (ref, ours)]
        assert [_view(r) for r in got][0] == [_view(r) for r in got][1]
        assert got[0].headers.get("www-authenticate") == got[1].headers.get("www-authenticate")
    for c in (ref, ours):  # the listener checks fail alike (their lists differ per broker)
        r = c.get("/health/checks/port-listener/1")
        assert r.status_code == 503 and set(r.json()) == {"status", "reason", "missing", "ports"}
        r = c.get("/health/checks/protocol-listener/nope")
        assert r.status_code == 503 and set(r.json()) == {"status", "reason", "missing", "protocols"}
        assert c.get("/health/checks/protocol-listener/amqp").json() == {"status": "ok", "protocol": "amqp"}


def test_declare_publish_get_shapes(both, name):
    ref, ours, _ = both
    q = quote(name)
    try:
        for c in (ref, ours):
            assert c.put(f"/queues/%2F/{q}", json={"durable": False, "auto_delete": False,
                                                   "arguments": {"x-max-length": 10}}).status_code == 201
            assert c.put(f"/queues/%2F/{q}", json={"durable": False, "auto_delete": False,
                                                   "arguments": {"x-max-length": 10}}).status_code == 204
        got = [_view(c.put(f"/queues/%2F/{q}", json={"durable": True})) for c in (ref, ours)]
        assert got[0] == got[1]
        for c in (ref, ours):
            r = c.post("/exchanges/%2F/amq.default/publish", json={
                "properties": {"headers": {"k": "v"}, "delivery_mode": 1}, "routing_key": name,
                "payload": "héllo", "payload_encoding": "string"})
            assert r.json() == {"routed": True}
        got = [c.post(f"/queues/%2F/{q}/get", json={"count": 2, "ackmode": "ack_requeue_true",
                                                     "encoding": "auto", "truncate": 50000}).json() for c in (ref, ours)]
        assert got[0] == got[1]
        got = [c.post(f"/queues/%2F/{q}/get", json={"count": 1, "ackmode": "ack_requeue_false",
                                                     "encoding": "base64"}).json() for c in (ref, ours)]
        assert got[0] == got[1]
        ref_q = _wait_for_stats(ref, f"/queues/%2F/{q}")
        our_q = ours.get(f"/queues/%2F/{q}").json()
        for field in QUEUE_FIELDS:
            assert type(ref_q[field]) is type(our_q[field]), field
            if field not in ("node",):
                assert ref_q[field] == our_q[field], field
    finally:
        for c in (ref, ours):
            c.delete(f"/queues/%2F/{q}")


def _wait_for_stats(client: httpx.Client, path: str) -> dict:
    """RabbitMQ fills a new queue's counters at its next statistics emission (5 s)."""
    deadline = time.monotonic() + 12
    while True:
        data = client.get(path).json()
        if all(f in data for f in QUEUE_FIELDS) or time.monotonic() > deadline:
            return data
        time.sleep(0.25)


def test_exchange_and_binding_shapes(both, name):
    ref, ours, _ = both
    x, q = quote(name + "-x"), quote(name + "-q")
    try:
        for c in (ref, ours):
            assert c.put(f"/exchanges/%2F/{x}", json={"type": "topic", "durable": False}).status_code == 201
            c.put(f"/queues/%2F/{q}", json={"durable": False})
            for key in ("a.#", "", "x/y z"):
                assert c.post(f"/bindings/%2F/e/{x}/q/{q}", json={"routing_key": key, "arguments": {}}).status_code == 201
        got = [c.get(f"/exchanges/%2F/{x}").json() for c in (ref, ours)]
        for g in got:  # mqemu does not record who declared an exchange
            g.pop("user_who_performed_action")
        assert got[0] == got[1]
        got = [sorted(c.get(f"/bindings/%2F/e/{x}/q/{q}").json(), key=lambda b: b["routing_key"]) for c in (ref, ours)]
        assert got[0] == got[1]
        for side in ("source", "destination"):
            got2 = [sorted(c.get(f"/exchanges/%2F/{x}/bindings/{side}").json(), key=lambda b: b["routing_key"])
                    for c in (ref, ours)]
            assert got2[0] == got2[1], side
        for b in got[1]:
            path = f"/bindings/%2F/e/{x}/q/{q}/{b['properties_key']}"
            assert [_view(c.get(path)) for c in (ref, ours)][0] == [_view(c.get(path)) for c in (ref, ours)][1]
            assert [c.delete(path).status_code for c in (ref, ours)] == [204, 204]
        assert [c.get(f"/bindings/%2F/e/{x}/q/{q}").json() for c in (ref, ours)] == [[], []]
        for path in ("/overview", "/whoami", "/vhosts/%2F", "/users/guest", "/permissions/%2F/guest"):
            r, o = ref.get(path).json(), ours.get(path).json()
            missing = {k for k in r if k not in o}
            assert not missing, (path, missing)
            shared = [k for k in r if k in o and r[k] is not None and o[k] is not None]
            assert {k: _types(r)[k] for k in shared} == {k: _types(o)[k] for k in shared}, path
    finally:
        for c in (ref, ours):
            c.delete(f"/exchanges/%2F/{x}")
            c.delete(f"/queues/%2F/{q}")


def test_definitions_round_trip_from_rabbitmq(both, name):
    """A vhost built on RabbitMQ, exported, imported into mqemu and exported again: the same
    topology; and the whole broker's export, with RabbitMQ's own password hashes."""
    ref, ours, node = both
    vh = quote(name, safe="")
    try:
        assert ref.put(f"/vhosts/{vh}", json={}).status_code == 201
        ref.put(f"/permissions/{vh}/guest", json={"configure": ".*", "write": ".*", "read": ".*"})
        ref.put(f"/exchanges/{vh}/events", json={"type": "topic", "durable": True})
        ref.put(f"/exchanges/{vh}/fan", json={"type": "fanout", "durable": True, "arguments": {"alternate-exchange": "x"}})
        ref.put(f"/queues/{vh}/audit", json={"durable": True, "arguments": {"x-message-ttl": 60000,
                                                                           "x-dead-letter-exchange": "events"}})
        ref.put(f"/queues/{vh}/jobs", json={"durable": True, "arguments": {"x-queue-type": "quorum"}})
        ref.post(f"/bindings/{vh}/e/events/q/audit", json={"routing_key": "a.*", "arguments": {}})
        ref.post(f"/bindings/{vh}/e/events/e/fan", json={"routing_key": "b.#", "arguments": {}})
        ref.put(f"/policies/{vh}/limits", json={"pattern": "^jobs$", "apply-to": "queues", "priority": 2,
                                                "definition": {"max-length": 100, "delivery-limit": 5}})
        ref.put(f"/users/{vh}", json={"password": "s3cret", "tags": "monitoring"})
        exported = ref.get("/definitions").json()
        assert ours.post("/definitions", content=json.dumps(exported)).status_code == 204
        again = ours.get("/definitions").json()

        def topology(d: dict, vhost: str) -> dict:
            pick = lambda section: sorted(json.dumps(i, sort_keys=True) for i in d[section] if i.get("vhost") == vhost)
            return {s: pick(s) for s in ("queues", "exchanges", "bindings", "policies", "permissions")}

        assert topology(again, name) == topology(exported, name)
        users = {u["name"]: u for u in again["users"]}
        for u in exported["users"]:
            assert {k: users[u["name"]][k] for k in ("password_hash", "hashing_algorithm", "tags")} == \
                {k: u[k] for k in ("password_hash", "hashing_algorithm", "tags")}
        # RabbitMQ's own hash of this user's password logs in to mqemu
        who = httpx.get(f"{str(ours.base_url).rstrip('/')}/whoami", auth=(name, "s3cret"))
        assert who.json().get("name") == name, who.text
        assert httpx.get(f"{str(ours.base_url).rstrip('/')}/whoami", auth=(name, "wrong")).status_code == 401
        per_vhost = ref.get(f"/definitions/{vh}").json()
        ours_vh = ours.get(f"/definitions/{vh}").json()
        for section in ("queues", "exchanges", "bindings", "policies"):
            assert sorted(map(json.dumps, ours_vh[section])) == sorted(map(json.dumps, per_vhost[section])), section
        assert node.broker.vhosts[name].queues["jobs"].settings.max_length == 100  # the policy acts
    finally:
        ref.delete(f"/vhosts/{vh}")
        ref.delete(f"/users/{vh}")


def _find_connection(client: httpx.Client, marker: str) -> dict:
    """The connection whose client named itself ``marker`` (RabbitMQ lists a new connection
    once its statistics arrive)."""
    deadline = time.monotonic() + 12
    while True:
        for c in client.get("/connections").json():
            if (c.get("client_properties") or {}).get("connection_name") == marker:
                return c
        assert time.monotonic() < deadline, f"connection {marker} not listed"
        time.sleep(0.25)


def test_a_connection_listed_and_forced_closed_alike(both, name):
    import pika

    ref, ours, node = both
    ref_url = urlsplit(os.environ.get("MQEMU_REF_AMQP", "amqp://guest:guest@127.0.0.1:5682/"))
    seen = []
    for client, port in ((ref, ref_url.port or 5672), (ours, node.ports["amqp"])):
        params = pika.ConnectionParameters("127.0.0.1", port, client_properties={"connection_name": name})
        conn = pika.BlockingConnection(params)
        conn.channel()
        listed = _find_connection(client, name)
        for key in ("name", "user", "vhost", "protocol", "channels", "peer_host", "peer_port", "host", "port",
                    "state", "node", "client_properties"):
            assert key in listed, key
        r = client.delete(f"/connections/{quote(listed['name'], safe='')}", headers={"X-Reason": "rehearsal"})
        with pytest.raises(pika.exceptions.ConnectionClosed) as closed:
            conn.process_data_events(time_limit=5)
        # (not "channels": RabbitMQ counts them at its next statistics emission)
        seen.append((r.status_code, listed["user"], listed["vhost"], listed["protocol"],
                     closed.value.reply_code, closed.value.reply_text))
    assert seen[0] == seen[1]


def test_lifecycle_status_codes(both, name):
    """The same sequence of writes on both: the same status codes and error kinds."""
    ref, ours, _ = both
    n = quote(name, safe="")
    perm = {"configure": ".*", "write": ".*", "read": ".*"}
    steps = [
        ("PUT", f"/vhosts/{n}", {}), ("PUT", f"/vhosts/{n}", {}), ("GET", f"/permissions/{n}/guest", None),
        ("PUT", f"/users/{n}", {"password": "p", "tags": "management"}),
        ("PUT", f"/users/{n}", {"password": "p", "tags": "management"}),
        ("PUT", f"/permissions/{n}/{n}", perm), ("PUT", f"/permissions/{n}/{n}", perm),
        ("PUT", f"/permissions/{n}/nosuchuser", perm), ("PUT", f"/permissions/nosuchvhost/{n}", perm),
        ("PUT", f"/policies/{n}/p", {"pattern": ".*", "definition": {"max-length": 1}}),
        ("PUT", f"/policies/{n}/p", {"pattern": ".*", "definition": {"max-length": 2}, "priority": 1}),
        ("PUT", f"/policies/{n}/bad", {"pattern": ".*", "definition": {"message-ttl": -1}}),
        ("PUT", "/policies/nosuchvhost/p", {"pattern": ".*", "definition": {"max-length": 1}}),
        ("GET", f"/policies/{n}/p", None), ("DELETE", f"/policies/{n}/p", None), ("DELETE", f"/policies/{n}/p", None),
        ("PUT", f"/exchanges/{n}/x", {"type": "direct"}), ("PUT", f"/exchanges/{n}/x", {"type": "fanout"}),
        ("PUT", f"/queues/{n}/q", {"arguments": {"x-max-length": "ten"}}),
        ("DELETE", f"/exchanges/{n}/x", None), ("DELETE", f"/exchanges/{n}/x", None),
        ("DELETE", f"/permissions/{n}/{n}", None), ("DELETE", f"/permissions/{n}/{n}", None),
        ("DELETE", f"/users/{n}", None), ("DELETE", f"/users/{n}", None),
        ("DELETE", f"/vhosts/{n}", None), ("DELETE", f"/vhosts/{n}", None),
    ]
    try:
        for method, path, body in steps:
            got = []
            for c in (ref, ours):
                r = c.request(method, path, content=None if body is None else json.dumps(body))
                kind = r.json().get("error") if r.status_code >= 400 and r.content else None
                got.append((r.status_code, kind))
            assert got[0] == got[1], (method, path, body)
    finally:
        for c in (ref, ours):
            c.delete(f"/users/{n}")
            c.delete(f"/vhosts/{n}")


def test_pagination_and_sorting(both, name):
    ref, ours, _ = both
    names = [f"{name}-{i}" for i in (3, 1, 2, 5, 4)]
    try:
        for c in (ref, ours):
            for n in names:
                c.put(f"/exchanges/%2F/{n}", json={"type": "direct"})
        for query in (f"page=2&page_size=2&name={name}&columns=name",
                      f"page=1&page_size=3&name={name}-[135]&use_regex=true&columns=name",
                      f"page=1&page_size=2&name={name}&sort=name&sort_reverse=true&columns=name",
                      f"page=9&page_size=2&name={name}", "page=0", "page=1&page_size=600"):
            got = [_view(c.get(f"/exchanges/%2F?{query}")) for c in (ref, ours)]
            if got[0][0] == 200:  # the counts of everything differ between the brokers
                for g in got:
                    g[1].pop("total_count")
            assert got[0] == got[1], query
    finally:
        for c in (ref, ours):
            for n in names:
                c.delete(f"/exchanges/%2F/{n}")


def test_message_stats_shapes(both, name):
    """A queue's, a vhost's and the overview's message_stats: the same keys and types once
    the queue published and delivered (RabbitMQ fills them at its next emission)."""
    from mqemu.protocols.http.rates import sampler_of

    ref, ours, node = both
    q = quote(name)
    sampler = sampler_of(node.node)
    node._thread.call(sampler.sample)
    try:
        for c in (ref, ours):
            assert c.put(f"/queues/%2F/{q}", json={"durable": False}).status_code == 201
            for _ in range(3):
                assert c.post("/exchanges/%2F/amq.default/publish", json={
                    "properties": {}, "routing_key": name, "payload": "x", "payload_encoding": "string"}).json() == {
                        "routed": True}
            assert len(c.post(f"/queues/%2F/{q}/get", json={"count": 2, "ackmode": "ack_requeue_false",
                                                            "encoding": "auto"}).json()) == 2
        deadline = time.monotonic() + 15
        while True:
            ref_q = ref.get(f"/queues/%2F/{q}").json()
            stats = ref_q.get("message_stats", {})
            if (stats.get("publish") == 3 and stats.get("deliver_get") == 2 and "messages_details" in ref_q) \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        node._thread.call(sampler.sample)
        our_q = ours.get(f"/queues/%2F/{q}").json()
        assert _types(ref_q["message_stats"]) == _types(our_q["message_stats"])
        for key in ("publish", "get", "get_no_ack", "deliver_get", "ack"):  # the API's get is a no-ack get
            assert ref_q["message_stats"][key] == our_q["message_stats"][key], key
        for field in ("messages_details", "messages_ready_details", "messages_unacknowledged_details"):
            assert _types(ref_q[field]) == _types(our_q[field])
        for path in ("/overview", "/vhosts/%2F"):
            got = [c.get(path).json()["message_stats"] for c in (ref, ours)]
            if got[0]:  # the reference's vhost shows them once its channels' stats are in
                assert _types(got[0]) == _types(got[1]), path
    finally:
        for c in (ref, ours):
            c.delete(f"/queues/%2F/{q}")


def test_exchange_message_stats(both, name):
    """An exchange's publish_in / publish_out after AMQP publishes: a fanout to two queues
    (each message counts out twice), one with no binding (no publish_out at all), the default
    exchange (the same keys)."""
    import pika

    ref, ours, node = both
    fan, empty = f"{name}-fan", f"{name}-empty"
    urls = {ref: os.environ.get("MQEMU_REF_AMQP", "amqp://guest:guest@127.0.0.1:5682/"),
            ours: f"amqp://guest:guest@127.0.0.1:{node.ports['amqp']}/"}
    try:
        for c in (ref, ours):
            conn = pika.BlockingConnection(pika.URLParameters(urls[c]))
            ch = conn.channel()
            ch.confirm_delivery()
            ch.exchange_declare(fan, "fanout")
            ch.exchange_declare(empty, "fanout")
            for s in ("a", "b"):
                ch.queue_declare(f"{name}-{s}", auto_delete=True, arguments={"x-expires": 60000})
                ch.queue_bind(f"{name}-{s}", fan)
            for _ in range(3):
                ch.basic_publish(fan, "", b"x")
            ch.basic_publish(empty, "", b"x")
            ch.basic_publish("", f"{name}-a", b"x")
            conn.close()
        deadline = time.monotonic() + 20
        while True:  # RabbitMQ fills them at its next emission
            got = [{x: c.get(f"/exchanges/%2F/{x}").json().get("message_stats") for x in (fan, empty)}
                   for c in (ref, ours)]
            if got[0][fan] and got[0][fan].get("publish_out") == 6 and got[0][empty] or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        assert got[1][fan] is not None and _types(got[0][fan]) == _types(got[1][fan])
        assert (got[1][fan]["publish_in"], got[1][fan]["publish_out"]) == (3, 6) == \
            (got[0][fan]["publish_in"], got[0][fan]["publish_out"])
        assert got[0][empty] == {"publish_in": 1, "publish_in_details": {"rate": 0.0}}
        assert got[1][empty] == {"publish_in": 1, "publish_in_details": {"rate": 0.0}}
        listed = [[x for x in c.get("/exchanges/%2F").json() if x["name"] in (fan, "")] for c in (ref, ours)]
        for r, o in zip(*[sorted(x, key=lambda e: e["name"]) for x in listed]):
            assert sorted(r) == sorted(o) and _types(r["message_stats"]) == _types(o["message_stats"])
    finally:
        for c in (ref, ours):
            for x in (fan, empty):
                c.delete(f"/exchanges/%2F/{x}")
            for s in ("a", "b"):
                c.delete(f"/queues/%2F/{name}-{s}")
