"""The node's side of RabbitMQ's management API: ``overview``, ``nodes``, ``connections``
(DELETE closes one), ``channels``, ``consumers``, ``aliveness-test`` and the
``health/checks`` family (200 ``{"status": "ok"}`` / 503 ``{"status": "failed", ...}``)."""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import unquote

from starlette.responses import JSONResponse, Response

from mqemu.broker.message import Message

from . import cluster
from .cluster import lists_queue
from .common import Ctx, no_content, not_authorised, not_found, ok, segment
from .rates import NOT_COUNTED_NODE, merge, sampler_of
from .shapes import node_name, rate

EXCHANGE_TYPES = [
    {"name": t, "description": f"AMQP {t} exchange, as per the AMQP specification", "enabled": True}
    for t in ("direct", "fanout", "headers", "topic")
]
_STARTED = time.time()


def _listeners(node: Any) -> list[dict[str, Any]]:
    return [{"node": node_name(node), "protocol": proto, "ip_address": node.host, "port": port,
             "socket_opts": {}} for proto, port in node.ports.items()]


def overview_part(node: Any, vhost_names: list[str] | None, user: str | None) -> dict[str, Any]:
    """This node's share of the overview: statistics, lengths, queue and object totals of
    the vhosts named (None: all), connections of ``user`` only when one is given. Queues are
    those the node lists (``cluster.lists_queue``: in a cluster, the ones whose home it is)."""
    broker = node.broker
    vhosts = list(broker.vhosts.values()) if vhost_names is None else \
        [vh for name, vh in broker.vhosts.items() if name in vhost_names]
    sampler = sampler_of(node)
    if len(vhosts) == len(broker.vhosts):
        stats, lengths = sampler.node()
    else:
        stats, lengths = merge([sampler.vhost(vh) for vh in vhosts])
        for name in NOT_COUNTED_NODE:  # the node's own, in the overview even when no vhost is seen
            stats.setdefault(name, 0)
            stats.setdefault(name + "_details", {"rate": 0.0})
        stats = dict(sorted(stats.items()))
    queues = [q for vh in vhosts for q in vh.queues.values() if lists_queue(node, vh.name, q.name)]
    ready = sum(len(q.ready) for q in queues)
    unacked = sum(q.unacked for q in queues)
    conns = [i for _, i in local_connections(node) if user is None or i["user"] == user]
    return {"stats": stats, "lengths": lengths, "listeners": _listeners(node),
            "totals": {"messages": ready + unacked, "messages_ready": ready, "messages_unacknowledged": unacked},
            "objects": {"channels": sum(i["channels"] for i in conns), "connections": len(conns),
                        "consumers": sum(len(q.consumers) for vh in vhosts for q in vh.queues.values()),
                        "queues": len(queues)}}


async def overview(ctx: Ctx) -> Response:
    broker = ctx.broker
    vhosts = ctx.visible_vhosts()
    names = None if len(vhosts) == len(broker.vhosts) else [vh.name for vh in vhosts]
    user = None if ctx.is_monitor() else ctx.user.name
    parts = [overview_part(ctx.node, names, user)]
    parts += await cluster.gather(ctx.node, "overview", {"vhosts": names, "user": user})
    stats, lengths = merge([(p["stats"], p["lengths"]) for p in parts]) if len(parts) > 1 else \
        (parts[0]["stats"], parts[0]["lengths"])
    totals = {k: sum(p["totals"][k] for p in parts) for k in parts[0]["totals"]}
    objects = {k: sum(p["objects"][k] for p in parts) for k in parts[0]["objects"]}
    release = broker.profile.release
    return ok({
        "management_version": release, "rates_mode": "basic",
        "sample_retention_policies": {"global": [600, 3600, 28800, 86400], "basic": [600, 3600],
                                      "detailed": [600]},
        "exchange_types": EXCHANGE_TYPES, "product_version": release, "product_name": broker.profile.product,
        "rabbitmq_version": release, "cluster_name": cluster.cluster_name(ctx.node), "erlang_version": "mqemu",
        "erlang_full_version": "mqemu (Python)", "release_series_support_status": "supported",
        "disable_stats": False, "enable_queue_totals": False,
        "message_stats": stats, "churn_rates": {},
        "queue_totals": {"messages": totals["messages"], "messages_details": lengths["messages_details"],
                         "messages_ready": totals["messages_ready"],
                         "messages_ready_details": lengths["messages_ready_details"],
                         "messages_unacknowledged": totals["messages_unacknowledged"],
                         "messages_unacknowledged_details": lengths["messages_unacknowledged_details"]},
        "object_totals": {"channels": objects["channels"], "connections": objects["connections"],
                          "consumers": objects["consumers"],
                          "exchanges": sum(len(vh.exchanges) for vh in vhosts),  # the same on every node
                          "queues": objects["queues"]},
        "statistics_db_event_queue": 0, "node": node_name(ctx.node),
        "listeners": [x for p in parts for x in p["listeners"]], "contexts": [],
    })


_MECHANISMS = {"PLAIN": "SASL PLAIN authentication mechanism", "AMQPLAIN": "QPid AMQPLAIN mechanism",
               "EXTERNAL": "SASL EXTERNAL authentication mechanism using SSL certificates"}


def _mechanisms(broker: Any) -> list[dict[str, Any]]:
    """The AMQP login mechanisms the node knows, ``enabled`` when ``--auth-mechanisms`` has them."""
    on = broker.auth.mechanisms
    return [{"name": m, "description": text, "enabled": m in on} for m, text in _MECHANISMS.items()
            if m != "EXTERNAL" or m in on]  # RabbitMQ lists EXTERNAL once its plugin is enabled


def node_json(node: Any) -> dict[str, Any]:
    """This node as ``/api/nodes`` shows it (in a cluster, ``partitions`` is filled in by the
    node that answers the request: ``cluster.nodes``)."""
    broker = node.broker
    return {
        "name": node_name(node), "type": "disc", "running": True, "os_pid": str(os.getpid()),
        "partitions": [], "fd_total": 1024, "fd_used": len(node.sessions), "sockets_total": 1024,
        "sockets_used": len(node.sessions), "mem_limit": broker.config.watermark_bytes(),
        "mem_used": broker.memory_in_use, "mem_alarm": broker.memory_alarm and not broker.store_alarm,
        "disk_free_limit": 50_000_000, "disk_free": 10 ** 12, "disk_free_alarm": broker.store_alarm,
        "proc_total": 1048576, "proc_used": 0, "rates_mode": "basic",
        "uptime": int((time.time() - _STARTED) * 1000), "run_queue": 0, "processors": os.cpu_count() or 1,
        "exchange_types": EXCHANGE_TYPES, "auth_mechanisms": _mechanisms(broker), "applications": [], "contexts": [],
        "log_files": [], "config_files": [], "enabled_plugins": ["rabbitmq_management"], "net_ticktime": 60,
        "cluster_links": cluster.links_json(node), "db_dir": "", "mem_calculation_strategy": "rss",
    }


async def nodes(ctx: Ctx) -> Response:
    ctx.need_monitor()
    return ok(await cluster.nodes(ctx.node))


async def get_node(ctx: Ctx) -> Response:
    ctx.need_monitor()
    name = segment(ctx.request, "node")
    for item in await cluster.nodes(ctx.node, only=name):
        return ok(item)
    raise not_found()


# -- connections and channels ---------------------------------------------------------
def connection_name(session: Any) -> str:
    """RabbitMQ's connection name: ``peer host:port -> local host:port``."""
    addresses = session.addresses
    if addresses is None:
        return f"{session.peer or '?'}:0 -> ?:0 ({session.conn_id})"
    (ph, pp), (lh, lp) = addresses
    return f"{ph}:{pp} -> {lh}:{lp}"


def local_connections(node: Any) -> list[tuple[Any, dict[str, Any]]]:
    """(session, info) of the node's open connections that have logged in."""
    out = []
    for s in list(node.sessions):
        info = s.connection_info() if hasattr(s, "connection_info") else None
        if info is not None:
            out.append((s, info))
    return out


def _connections(ctx: Ctx) -> list[tuple[Any, dict[str, Any]]]:
    """(session, info) of the open connections the user may see: all for monitoring users,
    their own for the others."""
    if ctx.is_monitor():
        return local_connections(ctx.node)
    return [(s, i) for s, i in local_connections(ctx.node) if i["user"] == ctx.user.name]


def connection_json(node: Any, session: Any, info: dict[str, Any]) -> dict[str, Any]:
    addresses = session.addresses or (("", 0), ("", 0))
    return {
        "name": connection_name(session), "node": node_name(node), "vhost": info["vhost"],
        "user": info["user"], "user_who_performed_action": info["user"], "protocol": info["protocol"],
        "state": "running", "channels": info["channels"], "type": "network",
        "auth_mechanism": info.get("auth_mechanism", "PLAIN"),
        "peer_host": addresses[0][0], "peer_port": addresses[0][1], "host": addresses[1][0],
        "port": addresses[1][1], "ssl": False, "client_properties": _plain(info["client_properties"]),
        "connected_at": 0, "recv_oct": 0, "send_oct": 0, "recv_oct_details": rate(), "send_oct_details": rate(),
        "timeout": getattr(session, "heartbeat", 0), "frame_max": getattr(session, "frame_max", 0),
    }


def _plain(v: Any) -> Any:
    from .shapes import json_value

    return json_value(v)


async def list_connections(ctx: Ctx) -> Any:
    only = segment(ctx.request, "vhost") if "vhost" in ctx.request.path_params else None
    if only is not None:
        ctx.vhost(only)
    node = ctx.node
    mine = None if ctx.is_monitor() else ctx.user.name
    return await cluster.listing(
        node, [(s, i) for s, i in _connections(ctx) if only is None or i["vhost"] == only],
        lambda pair: connection_json(node, *pair), "connections", {},
        lambda c: (only is None or c["vhost"] == only) and (mine is None or c["user"] == mine))


def find_connection(node: Any, name: str) -> tuple[Any, dict[str, Any]] | None:
    for s, info in local_connections(node):
        if connection_name(s) == name:
            return s, info
    return None


async def get_connection(ctx: Ctx) -> Response:
    name = segment(ctx.request, "name")
    found = find_connection(ctx.node, name)
    if found is not None:
        data = connection_json(ctx.node, *found)
    else:
        data = await cluster.first(ctx.node, "connection", {"name": name})
    if data is None or (not ctx.is_monitor() and data["user"] != ctx.user.name):
        raise not_found()
    return ok(data)


def close_connection(node: Any, name: str, reason: str, user: str | None) -> str:
    """Close the named connection of this node as the broker does when forced (AMQP 0-9-1:
    connection.close 320 CONNECTION_FORCED with ``reason``): ``closed``, ``not_found``, or
    ``not_authorised`` when ``user`` (None: an administrator) is not its user."""
    found = find_connection(node, name)
    if found is None:
        return "not_found"
    s, info = found
    if user is not None and info["user"] != user:
        return "not_authorised"
    s.server_close(reason)
    return "closed"


async def delete_connection(ctx: Ctx) -> Response:
    """Close the connection, on this node or the one that has it (``X-Reason``'s text)."""
    name = segment(ctx.request, "name")
    reason = unquote(ctx.request.headers.get("x-reason", "Closed via management plugin"))
    user = None if ctx.is_admin() else ctx.user.name
    outcome = close_connection(ctx.node, name, reason, user)
    if outcome == "not_found":
        answers = await cluster.gather(ctx.node, "close", {"name": name, "reason": reason, "user": user})
        outcome = next((a for a in answers if a == "closed"), None) or \
            next((a for a in answers if a == "not_authorised"), "not_found")
    if outcome == "not_authorised" and ctx.is_monitor():  # others do not see the connection at all
        raise not_authorised("User not authorised to access object")
    if outcome != "closed":
        raise not_found()
    return no_content()


def channels_json(node: Any, pairs: list[tuple[Any, dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for s, info in pairs:
        for number, ch in sorted(getattr(s, "channels", {}).items()):
            out.append({
                "name": f"{connection_name(s)} ({number})", "number": number, "node": node_name(node),
                "vhost": info["vhost"], "user": info["user"], "user_who_performed_action": info["user"],
                "connection_details": {"name": connection_name(s), "peer_host": (s.addresses or (("", 0),))[0][0],
                                       "peer_port": (s.addresses or (("", 0),))[0][1]},
                "consumer_count": len(ch.consumers), "messages_unacknowledged": len(ch.unacked),
                "messages_unconfirmed": 0, "messages_uncommitted": 0, "acks_uncommitted": 0,
                "prefetch_count": ch.consumer_prefetch, "global_prefetch_count": ch.global_prefetch,
                "confirm": ch.confirm, "transactional": ch.tx is not None, "state": "running",
            })
    return out


async def list_channels(ctx: Ctx) -> Response:
    mine = None if ctx.is_monitor() else ctx.user.name
    peers = await cluster.gather(ctx.node, "channels", {})
    return ok(channels_json(ctx.node, _connections(ctx)) +
              [c for part in peers for c in part if mine is None or c["user"] == mine])


def consumer_json(node: Any, vh: Any, c: Any) -> dict[str, Any]:
    owner_conn = getattr(c.owner, "conn", c.owner)
    channel = {"name": f"{connection_name(owner_conn)} ({getattr(c.owner, 'number', 1)})",
               "node": node_name(node)} if hasattr(owner_conn, "addresses") else {}
    return {"consumer_tag": c.tag, "queue": {"name": c.queue.name, "vhost": vh.name}, "channel_details": channel,
            "ack_required": not c.no_ack, "exclusive": c.exclusive, "prefetch_count": c.prefetch,
            "active": True, "activity_status": "up", "arguments": _plain(c.arguments)}


def local_consumers(node: Any, vhosts: list[Any]) -> list[tuple[Any, Any]]:
    return [(vh, c) for vh in vhosts for q in list(vh.queues.values()) for c in q.consumers]


async def list_consumers(ctx: Ctx) -> Any:
    vhosts = ctx.vhosts_from_path()
    names = {vh.name for vh in vhosts}
    node = ctx.node
    return await cluster.listing(node, local_consumers(node, vhosts), lambda pair: consumer_json(node, *pair),
                                 "consumers", {}, lambda c: c["queue"]["vhost"] in names)


# -- health ---------------------------------------------------------------------------
def _failed(reason: str, **extra: Any) -> Response:
    return JSONResponse({"status": "failed", "reason": reason, **extra}, 503)


async def aliveness(ctx: Ctx) -> Response:
    """Declare ``aliveness-test`` in the vhost, publish to it and get the message back."""
    vh = ctx.vhost(segment(ctx.request, "vhost"))
    q = vh.declare_queue("aliveness-test", durable=False)
    vh.publish("", "aliveness-test", Message("", "aliveness-test", b"test_message", {}))
    entry = q.get(no_ack=True)
    if entry is None or entry.message.body != b"test_message":
        return _failed("aliveness-test: the message did not come back")
    return ok({"status": "ok"})


async def alarms(ctx: Ctx) -> Response:
    broker = ctx.broker
    if broker.memory_alarm or broker.store_alarm:
        kind = "disk" if broker.store_alarm else "memory"
        return _failed("resource alarm(s) in effect in the cluster",
                       alarms=[{"node": node_name(ctx.node), "resource": kind}])
    return ok({"status": "ok"})


async def port_listener(ctx: Ctx) -> Response:
    raw = segment(ctx.request, "port")
    ports = list(ctx.node.ports.values())
    try:
        port = int(raw)
    except ValueError:
        return JSONResponse({"error": "bad_request", "reason": f"{raw} is not a valid port"}, 400)
    if port in ports:
        return ok({"status": "ok", "port": port})
    return _failed("No active listener", missing=port, ports=ports)


async def protocol_listener(ctx: Ctx) -> Response:
    name = segment(ctx.request, "protocol")
    protocols = list(ctx.node.ports)
    if name in protocols:
        return ok({"status": "ok", "protocol": name})
    return _failed("No active listener", missing=name, protocols=protocols)


async def virtual_hosts(ctx: Ctx) -> Response:
    return ok({"status": "ok"})  # every vhost of a node runs while the node does


async def node_is_quorum_critical(ctx: Ctx) -> Response:
    critical = getattr(ctx.node, "quorum_critical", None)  # a cluster member's (``ha/node.py``)
    queues = critical() if critical is not None else []
    if queues:
        return _failed("There are quorum queues that would lose their quorum if the target node is shut down",
                       queues=queues)
    return ok({"status": "ok"})  # a single node holds no quorum another needs
