"""The JSON RabbitMQ's management API gives for queues, exchanges, bindings and messages
(the keys and types tools read; statistics mqemu does not keep are zeros; message statistics
and rates from ``rates``)."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import quote_plus
from typing import Any

from .rates import sampler_of


def node_name(node: Any) -> str:
    """The node's name as RabbitMQ writes one (``rabbit@<name>``)."""
    return f"rabbit@{node.name}"


def rate(value: int | float = 0) -> dict[str, float]:
    return {"rate": float(value) * 0.0}


def json_value(v: Any) -> Any:
    """An argument or header value as JSON (bytes as text, tables and arrays inside)."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("utf-8", "replace")
    if isinstance(v, dict):
        return {str(k): json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_value(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def queue_json(node: Any, vhost: Any, q: Any, policy: Any = None) -> dict[str, Any]:
    ready = len(q.ready)
    paged = q._paged.nbytes if q._paged is not None else 0
    unacked = q.unacked
    consumers = len(q.consumers)
    owner = q.exclusive_owner
    effective = dict(policy.definition) if policy is not None else {}
    stats, lengths = sampler_of(node).queue(vhost.name, q)
    data = {
        "arguments": json_value(q.arguments),
        "auto_delete": q.auto_delete,
        "consumer_capacity": 1.0 if consumers else 0,
        "consumer_utilisation": 1.0 if consumers else 0,
        "consumers": consumers,
        "durable": q.durable,
        "effective_policy_definition": effective,
        "exclusive": owner is not None,
        "exclusive_consumer_tag": None,
        "head_message_timestamp": None,
        "memory": 0,
        "message_bytes": q.bytes_ready + paged,
        "message_bytes_paged_out": paged,
        "message_bytes_persistent": 0,
        "message_bytes_ram": q.bytes_ready,
        "message_bytes_ready": q.bytes_ready + paged,
        "message_bytes_unacknowledged": 0,
        "messages": ready + unacked,
        "messages_details": lengths["messages_details"],
        "messages_paged_out": q._paged.count if q._paged is not None else 0,
        "messages_persistent": 0,
        "messages_ram": ready,
        "messages_ready": ready,
        "messages_ready_details": lengths["messages_ready_details"],
        "messages_ready_ram": ready,
        "messages_unacknowledged": unacked,
        "messages_unacknowledged_details": lengths["messages_unacknowledged_details"],
        "messages_unacknowledged_ram": unacked,
        "name": q.name,
        "node": node_name(node),
        "operator_policy": None,
        "policy": policy.name if policy is not None else None,
        "recoverable_slaves": None,
        "single_active_consumer_tag": None,
        "state": "running",
        "type": q.settings.queue_type,
        "vhost": vhost.name,
    }
    if stats is not None:  # RabbitMQ shows them once the queue did something
        data["message_stats"] = stats
    placement = getattr(q, "placement", None)  # a cluster's quorum queue: leader, members, online
    found = placement() if placement is not None else None
    if found:
        data["leader"] = f"rabbit@{found['leader']}" if found["leader"] else None
        data["members"] = [f"rabbit@{n}" for n in found["members"]]
        data["online"] = [f"rabbit@{n}" for n in found["online"]]
    return data


def queue_down_json(vhost: Any, q: Any, home: str) -> dict[str, Any]:
    """A queue whose home node did not answer, as RabbitMQ lists one whose node is down:
    its definition, ``state: down``, no figures."""
    return {"arguments": json_value(q.arguments), "auto_delete": q.auto_delete, "durable": q.durable,
            "exclusive": False, "name": q.name, "node": f"rabbit@{home}", "state": "down",
            "type": q.settings.queue_type, "vhost": vhost.name}


def exchange_json(vhost: Any, ex: Any, stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """An exchange; ``stats`` its ``message_stats`` (``publish_in``/``publish_out``), shown
    once something was published to it, as RabbitMQ does."""
    data = {
        "arguments": json_value(ex.arguments),
        "auto_delete": ex.auto_delete,
        "durable": ex.durable,
        "internal": ex.internal,
        "name": ex.name,
        "type": ex.type,
        "user_who_performed_action": "rmq-internal",
        "vhost": vhost.name,
    }
    if stats is not None:
        data["message_stats"] = stats
    return data


def properties_key(routing_key: str, arguments: dict[str, Any]) -> str:
    """RabbitMQ's key naming a binding in the API: the routing key quoted as a URL
    segment (``quote_plus``: a client puts it in a path as it is), with ``~`` and a digest of the arguments when there are any (``~`` alone for
    an empty key with none)."""
    quoted = quote_plus(routing_key)
    if not arguments:
        return quoted or "~"
    digest = hashlib.sha1(repr(sorted(arguments.items())).encode()).digest()
    return f"{quoted}~{base64.urlsafe_b64encode(digest).decode().rstrip('=')}"


def binding_json(vhost: Any, b: Any) -> dict[str, Any]:
    args = b.args
    return {
        "source": b.source,
        "vhost": vhost.name,
        "destination": b.destination,
        "destination_type": b.destination_kind,
        "routing_key": b.routing_key,
        "arguments": json_value(args),
        "properties_key": properties_key(b.routing_key, args),
    }


def default_bindings(vhost: Any) -> list[dict[str, Any]]:
    """The default exchange's implicit binding of every queue (RabbitMQ lists them)."""
    return [{"source": "", "vhost": vhost.name, "destination": name, "destination_type": "queue",
             "routing_key": name, "arguments": {}, "properties_key": properties_key(name, {})}
            for name in vhost.queues]


def message_json(entry: Any, remaining: int, encoding: str, truncate: int | None) -> dict[str, Any]:
    """One message of ``POST /api/queues/VH/Q/get``."""
    msg = entry.message
    body = bytes(msg.body)
    shown = body if truncate is None else body[:truncate]
    payload: str
    kind = "string"
    if encoding == "base64":
        payload, kind = base64.b64encode(shown).decode(), "base64"
    else:
        try:
            payload = shown.decode("utf-8")
        except UnicodeDecodeError:
            payload, kind = base64.b64encode(shown).decode(), "base64"
    props = {k: json_value(v) for k, v in msg.properties.items() if v is not None}
    return {
        "payload_bytes": len(body),
        "redelivered": entry.redelivered,
        "exchange": msg.exchange,
        "routing_key": msg.routing_key,
        "message_count": remaining,
        "properties": props if props else [],
        "payload": payload,
        "payload_encoding": kind,
    }
