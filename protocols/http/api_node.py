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

from .common import Ctx, JsonList, no_content, not_authorised, not_found, ok, segment
from .rates import NOT_COUNTED_NODE, merge, sampler_of
from .shapes import node_name, rate

EXCHANGE_TYPES = [
    {"name": t, "description": f"AMQP {t} exchange, as per the AMQP specification", "enabled": True}
    for t in ("direct", "fanout", "headers", "topic")
]
_STARTED = time.time()


def _listeners(ctx: Ctx) -> list[dict[str, Any]]:
    return [{"node": node_name(ctx.node), "protocol": proto, "ip_address": ctx.node.host, "port": port,
             "socket_opts": {}} for proto, port in ctx.node.ports.items()]


def _totals(ctx: Ctx, vhosts: list[Any], lengths: dict[str, Any]) -> dict[str, Any]:
    ready = sum(len(q.ready) for vh in vhosts for q in vh.queues.values())
    unacked = sum(q.unacked for vh in vhosts for q in vh.queues.values())
    return {"messages": ready + unacked, "messages_details": lengths["messages_details"], "messages_ready": ready,
            "messages_ready_details": lengths["messages_ready_details"], "messages_unacknowledged": unacked,
            "messages_unacknowledged_details": lengths["messages_unacknowledged_details"]}


def _message_stats(ctx: Ctx, vhosts: list[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The node's statistics (``rates.Sampler``), or those of the vhosts this user sees."""
    sampler = sampler_of(ctx.node)
    if len(vhosts) == len(ctx.broker.vhosts):
        return sampler.node()
    stats, lengths = merge([sampler.vhost(vh) for vh in vhosts])
    for name in NOT_COUNTED_NODE:  # the node's own, in the overview even when no vhost is seen
        stats.setdefault(name, 0)
        stats.setdefault(name + "_details", {"rate": 0.0})
    return dict(sorted(stats.items())), lengths


async def overview(ctx: Ctx) -> Response:
    broker = ctx.broker
    vhosts = ctx.visible_vhosts()
    conns = _connections(ctx)
    release = broker.profile.release
    stats, lengths = _message_stats(ctx, vhosts)
    return ok({
        "management_version": release, "rates_mode": "basic",
        "sample_retention_policies": {"global": [600, 3600, 28800, 86400], "basic": [600, 3600],
                                      "detailed": [600]},
        "exchange_types": EXCHANGE_TYPES, "product_version": release, "product_name": broker.profile.product,
        "rabbitmq_version": release, "cluster_name": node_name(ctx.node), "erlang_version": "mqemu",
        "erlang_full_version": "mqemu (Python)", "release_series_support_status": "supported",
        "disable_stats": False, "enable_queue_totals": False,
        "message_stats": stats, "churn_rates": {},
        "queue_totals": _totals(ctx, vhosts, lengths),
        "object_totals": {"channels": sum(c[1]["channels"] for c in conns), "connections": len(conns),
                          "consumers": sum(len(q.consumers) for vh in vhosts for q in vh.queues.values()),
                          "exchanges": sum(len(vh.exchanges) for vh in vhosts),
                          "queues": sum(len(vh.queues) for vh in vhosts)},
        "statistics_db_event_queue": 0, "node": node_name(ctx.node),
        "listeners": _listeners(ctx), "contexts": [],
    })


def _node_json(ctx: Ctx) -> dict[str, Any]:
    broker = ctx.broker
    return {
        "name": node_name(ctx.node), "type": "disc", "running": True, "os_pid": str(os.getpid()),
        "partitions": [], "fd_total": 1024, "fd_used": len(ctx.node.sessions), "sockets_total": 1024,
        "sockets_used": len(ctx.node.sessions), "mem_limit": broker.config.watermark_bytes(),
        "mem_used": broker.memory_in_use, "mem_alarm": broker.memory_alarm and not broker.store_alarm,
        "disk_free_limit": 50_000_000, "disk_free": 10 ** 12, "disk_free_alarm": broker.store_alarm,
        "proc_total": 1048576, "proc_used": 0, "rates_mode": "basic",
        "uptime": int((time.time() - _STARTED) * 1000), "run_queue": 0, "processors": os.cpu_count() or 1,
        "exchange_types": EXCHANGE_TYPES, "auth_mechanisms": [], "applications": [], "contexts": [],
        "log_files": [], "config_files": [], "enabled_plugins": ["rabbitmq_management"], "net_ticktime": 60,
        "cluster_links": [], "db_dir": "", "mem_calculation_strategy": "rss",
    }


async def nodes(ctx: Ctx) -> Response:
    ctx.need_monitor()
    return ok([_node_json(ctx)])


async def get_node(ctx: Ctx) -> Response:
    ctx.need_monitor()
    if segment(ctx.request, "node") != node_name(ctx.node):
        raise not_found()
    return ok(_node_json(ctx))


# -- connections and channels ---------------------------------------------------------
def connection_name(session: Any) -> str:
    """RabbitMQ's connection name: ``peer host:port -> local host:port``."""
    addresses = session.addresses
    if addresses is None:
        return f"{session.peer or '?'}:0 -> ?:0 ({session.conn_id})"
    (ph, pp), (lh, lp) = addresses
    return f"{ph}:{pp} -> {lh}:{lp}"


def _connections(ctx: Ctx) -> list[tuple[Any, dict[str, Any]]]:
    """(session, info) of the open connections the user may see: all for monitoring users,
    their own for the others."""
    out = []
    for s in list(ctx.node.sessions):
        info = s.connection_info() if hasattr(s, "connection_info") else None
        if info is None:
            continue
        if not ctx.is_monitor() and info["user"] != ctx.user.name:
            continue
        out.append((s, info))
    return out


def _connection_json(ctx: Ctx, session: Any, info: dict[str, Any]) -> dict[str, Any]:
    addresses = session.addresses or (("", 0), ("", 0))
    return {
        "name": connection_name(session), "node": node_name(ctx.node), "vhost": info["vhost"],
        "user": info["user"], "user_who_performed_action": info["user"], "protocol": info["protocol"],
        "state": "running", "channels": info["channels"], "type": "network", "auth_mechanism": "PLAIN",
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
    return JsonList([(s, i) for s, i in _connections(ctx) if only is None or i["vhost"] == only],
                    lambda pair: _connection_json(ctx, *pair))


def _find_connection(ctx: Ctx) -> tuple[Any, dict[str, Any]]:
    name = segment(ctx.request, "name")
    for s, info in _connections(ctx):
        if connection_name(s) == name:
            return s, info
    raise not_found()


async def get_connection(ctx: Ctx) -> Response:
    s, info = _find_connection(ctx)
    return ok(_connection_json(ctx, s, info))


async def delete_connection(ctx: Ctx) -> Response:
    """Close the connection as the broker does when forced (AMQP 0-9-1: connection.close
    320 CONNECTION_FORCED with the ``X-Reason`` header's text)."""
    s, info = _find_connection(ctx)
    if not ctx.is_admin() and info["user"] != ctx.user.name:
        raise not_authorised("User not authorised to access object")
    reason = unquote(ctx.request.headers.get("x-reason", "Closed via management plugin"))
    s.server_close(reason)
    return no_content()


def _channels(ctx: Ctx) -> list[dict[str, Any]]:
    out = []
    for s, info in _connections(ctx):
        for number, ch in sorted(getattr(s, "channels", {}).items()):
            out.append({
                "name": f"{connection_name(s)} ({number})", "number": number, "node": node_name(ctx.node),
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
    return ok(_channels(ctx))


def consumer_json(ctx: Ctx, vh: Any, c: Any) -> dict[str, Any]:
    owner_conn = getattr(c.owner, "conn", c.owner)
    channel = {"name": f"{connection_name(owner_conn)} ({getattr(c.owner, 'number', 1)})"} \
        if hasattr(owner_conn, "addresses") else {}
    return {"consumer_tag": c.tag, "queue": {"name": c.queue.name, "vhost": vh.name}, "channel_details": channel,
            "ack_required": not c.no_ack, "exclusive": c.exclusive, "prefetch_count": c.prefetch,
            "active": True, "activity_status": "up", "arguments": _plain(c.arguments)}


async def list_consumers(ctx: Ctx) -> Any:
    return JsonList([(vh, c) for vh in ctx.vhosts_from_path() for q in vh.queues.values() for c in q.consumers],
                    lambda pair: consumer_json(ctx, *pair))


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
