"""What the cluster tests share: a node's status entry and the management API of a node."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

import pika


def cluster_ready(status: dict[str, Any]) -> bool:
    """One metadata leader that every node names, every node's links up both ways to every
    other node, every node healthy behind the balancer and its management port known."""
    leader = (status.get("metadata") or {}).get("leader")
    nodes = status["nodes"]
    return leader is not None and all(
        (n.get("metadata") or {}).get("leader") == leader and n.get("management")
        and (n.get("health") or {}).get("amqp") == "healthy"
        and len(n.get("links") or {}) == len(nodes) - 1
        and all(st["out"] == "up" and st["in"] == "up" for st in n["links"].values())
        for n in nodes)


def node_entry(status: dict[str, Any], name: str) -> dict[str, Any]:
    (entry,) = [n for n in status["nodes"] if n["name"] == name]
    return entry


def api(c: Any, name: str, method: str, path: str, body: Any = None,
        headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """(status, JSON body) of ``/api/PATH`` on node ``name`` as guest; an error's body as
    JSON when it is JSON, else its bytes."""
    port = node_entry(c.status(), name)["management"]
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    req.add_header("content-type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw


def declared_everywhere(c: Any, name: str, durable: bool = True) -> None:
    """Wait until a passive declare of queue ``name`` works on every node of cluster ``c``."""
    for entry in c.status()["nodes"]:
        def there(_s: Any, node: str = entry["name"]) -> bool:
            port = node_entry(c.status(), node)["ports"]["amqp"]
            conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, connection_attempts=1,
                                                                     socket_timeout=5))
            try:
                conn.channel().queue_declare(name, durable=durable, passive=True)
                return True
            except pika.exceptions.ChannelClosedByBroker:
                return False
            finally:
                if conn.is_open:
                    conn.close()
        c.wait_until(there, what=f"{name} on {entry['name']}")
